"""Data-parallel training (``trainer.strategy: ddp``) with real processes: gloo on CPU here, the
same configuration on GPUs where there are some (``gpu``-marked, skipped without CUDA)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lossflow.config import OptimizerConfig, SchedulerConfig, TrainerConfig
from lossflow.config.training import load_training_config
from lossflow.data.prepare import prepare_data
from lossflow.losses import build_loss
from lossflow.models.system import LossflowSystem, NonFiniteLossError
from lossflow.tracking import Runs, default_tracking_uri
from lossflow.training import FitResult, TensorBatches, fit
from lossflow.usecases import training as steps

from .test_training_loop import _ExplodesAtStep

pytestmark = pytest.mark.slow

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _data(rows: int, seed: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 6, generator=gen)
    y = (x[:, 0] - 0.7 * x[:, 1] + 0.3 * torch.randn(rows, generator=gen) > 0).float()
    return x, y


def _system(loss: nn.Module | None = None) -> LossflowSystem:
    from lossflow.models.build import TaskMetrics

    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 1))
    return LossflowSystem(
        net=net,
        loss=loss if loss is not None else build_loss({"name": "focal"}),
        regularizers={},
        task="binary",
        optimizer=OptimizerConfig(name="adamw", lr=0.01),
        scheduler=SchedulerConfig(name="none"),
        max_epochs=4,
        epoch_metrics=TaskMetrics("binary", None),
        predict=nn.Sigmoid(),
    )


def _fit(
    tmp: Path, devices: int, loss: nn.Module | None = None, accelerator: str = "cpu"
) -> tuple[FitResult, nn.Module]:
    x, y = _data(1000, 1)
    vx, vy = _data(400, 2)
    system = _system(loss)
    cfg = TrainerConfig(
        max_epochs=4,
        batch_size=100,
        accelerator=accelerator,  # type: ignore[arg-type]
        devices=devices,
        strategy="ddp" if devices > 1 else "auto",
        early_stopping=None,
    )
    train = TensorBatches((x,), y, 100, shuffle=True, seed=3)
    val = TensorBatches((vx,), vy, 400)
    if accelerator == "gpu" and devices == 1:  # a multi-process fit moves each rank's copy
        train.to("cuda")
        val.to("cuda")
    result = fit(system, train, val, cfg, tmp / f"{accelerator}-{devices}")
    return result, system.net


def test_two_gloo_processes_follow_the_single_process_run(tmp_path: Path) -> None:
    one, net_one = _fit(tmp_path, 1)
    two, net_two = _fit(tmp_path, 2)
    # The same optimizer steps on the same rows (each process takes half of every batch).
    assert two.global_step == one.global_step == 4 * 10
    assert two.epochs == one.epochs
    for key in ("val/auc", "val/log_loss", "val/loss", "train/loss"):
        assert two.history[key] == pytest.approx(one.history[key], rel=1e-4, abs=1e-5), key
    # The caller's module holds rank 0's trained weights, equal to the single-process ones.
    for a, b in zip(net_one.parameters(), net_two.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert two.best_checkpoint is not None
    assert two.best_checkpoint.is_file()
    assert two.last_checkpoint is not None


def test_a_user_error_in_a_training_process_is_raised_as_itself(tmp_path: Path) -> None:
    with pytest.raises(NonFiniteLossError, match=r"non-finite training loss at step 3"):
        _fit(tmp_path, 2, loss=_ExplodesAtStep(step=3))


def test_training_step_with_ddp_logs_each_epoch_once_from_rank_zero(tmp_path: Path) -> None:
    overrides = [
        f"data_dir={tmp_path}",
        "data.subsample=3000",
        "trainer.max_epochs=2",
        "trainer.batch_size=512",
        "model.dropout=0",
    ]
    single = load_training_config(overrides, CONFIG_DIR)
    prepared = prepare_data(single, tmp_path / "prepared")
    parallel = [*overrides, "trainer.strategy=ddp", "trainer.devices=2"]
    ddp = load_training_config(parallel, CONFIG_DIR)
    tracker = Runs(default_tracking_uri(tmp_path), single.tracking.experiment)
    # The network is built (and initialised) before the fit seeds: same start for both runs.
    torch.manual_seed(0)
    with tracker.start_run("ddp", {}) as run_id:
        two = steps.train_model(ddp, prepared, tmp_path / "ckpt-ddp", run_id=run_id)
    torch.manual_seed(0)
    one = steps.train_model(single, prepared, tmp_path / "ckpt-one")
    history = tracker.client.get_metric_history(run_id, "val/auc")
    assert [m.step for m in history] == [0, 1], "rank 0 alone logs, once per epoch"
    got = json.loads(two.history_path.read_text())
    want = json.loads(one.history_path.read_text())
    for key in ("val/auc", "val/loss", "train/loss"):
        assert got[key] == pytest.approx(want[key], rel=1e-3, abs=1e-4), key
    assert [m.value for m in history] == pytest.approx(got["val/auc"])
    assert two.global_step == one.global_step
    assert two.checkpoint.is_file()


@pytest.mark.gpu
def test_two_gpus_follow_the_single_gpu_run(tmp_path: Path) -> None:
    if torch.cuda.device_count() < 2:
        pytest.skip("needs two CUDA devices")
    one, _ = _fit(tmp_path, 1, accelerator="gpu")
    two, _ = _fit(tmp_path, 2, accelerator="gpu")
    assert two.global_step == one.global_step
    assert two.history["val/auc"] == pytest.approx(one.history["val/auc"], abs=1e-3)
