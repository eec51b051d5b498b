"""The LightningModule and the training loop on small in-memory data (real Lightning Trainer)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import Tensor, nn

from lossflow.config import OptimizerConfig, SchedulerConfig, TrainerConfig
from lossflow.losses import build_loss, build_regularizer
from lossflow.models.system import LossflowSystem, NonFiniteLossError
from lossflow.training import TensorBatches, fit


class _ExplodesAtStep(nn.Module):
    """BCE that turns NaN from a given call on: a stand-in for a diverging objective."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.inner = build_loss({"name": "bce"})
        self.step = step
        self.calls = 0

    def forward(self, out: Tensor, target: Tensor) -> Tensor:
        self.calls += 1
        value: Tensor = self.inner(out, target)
        return value * float("nan") if self.calls > self.step else value


def _data(rows: int = 256) -> tuple[tuple[Tensor, ...], Tensor]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(rows, 4, generator=gen)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).float()
    return (x,), y


def _system(loss: nn.Module, **kwargs: object) -> LossflowSystem:
    net = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1))
    return LossflowSystem(
        net=net,
        loss=loss,
        regularizers=kwargs.pop("regularizers", {}),  # type: ignore[arg-type]
        task="binary",
        optimizer=OptimizerConfig(name="adam", lr=0.05),
        scheduler=SchedulerConfig(name="cosine"),
        max_epochs=3,
    )


def test_non_finite_loss_stops_training_naming_step_and_term(tmp_path: Path) -> None:
    x, y = _data()
    system = _system(_ExplodesAtStep(step=5))
    train = TensorBatches(x, y, 32, shuffle=True)
    cfg = TrainerConfig(max_epochs=3, early_stopping=None, accelerator="cpu")
    with pytest.raises(NonFiniteLossError, match=r"at step 5 \(epoch 0\): data_loss=nan"):
        fit(system, train, TensorBatches(x, y, 64), cfg, tmp_path)


def test_fit_logs_objective_terms_penalties_and_gradient_norms(tmp_path: Path) -> None:
    x, y = _data()
    composite = build_loss(
        {
            "name": "composite",
            "terms": {"bce": {"loss": {"name": "bce"}}, "focal": {"loss": {"name": "focal"}}},
        }
    )
    system = _system(
        composite, regularizers={"l2": build_regularizer({"name": "l2", "strength": 1e-3})}
    )
    seen: list[dict[str, float]] = []
    result = fit(
        system,
        TensorBatches(x, y, 32, shuffle=True),
        TensorBatches(x, y, 64),
        TrainerConfig(max_epochs=3, early_stopping=None, accelerator="cpu"),
        tmp_path,
        sink=lambda metrics, step: seen.append(dict(metrics)),
    )
    assert result.epochs == 3
    assert [m["epoch"] for m in seen] == [0.0, 1.0, 2.0]
    last = seen[-1]
    for key in (
        "train/loss", "train/data_loss", "train/term/bce", "train/term/focal", "train/reg/l2",
        "val/loss", "grad/total", "grad/0.weight", "grad/2.bias",
    ):  # fmt: skip
        assert key in last, key
    # The objective is the data loss plus the penalty, averaged over the epoch's rows.
    assert last["train/loss"] == pytest.approx(
        last["train/data_loss"] + last["train/reg/l2"], rel=1e-4
    )
    assert last["train/data_loss"] == pytest.approx(
        last["train/term/bce"] + last["train/term/focal"], rel=1e-4
    )
    assert seen[-1]["train/loss"] < seen[0]["train/loss"], "the model learns"
    assert result.best_checkpoint is not None
    assert result.best_checkpoint.is_file()


def test_tensor_batches_cover_every_row_once_per_epoch_in_a_new_order() -> None:
    x, _ = _data(100)
    batches = TensorBatches(x, torch.arange(100), 32, shuffle=True, seed=3)
    epochs = [torch.cat([b[1] for b in batches]) for _ in range(2)]
    assert len(batches) == 4
    for order in epochs:
        assert sorted(order.tolist()) == list(range(100))
    assert not torch.equal(epochs[0], epochs[1])
    again = TensorBatches(x, torch.arange(100), 32, shuffle=True, seed=3)
    assert torch.equal(torch.cat([b[1] for b in again]), epochs[0]), "seeded order"
    with pytest.raises(ValueError, match="input 0 has 100 rows but the target has 5"):
        TensorBatches(x, torch.arange(5), 8)


def test_shards_split_every_batch_of_the_same_permutation() -> None:
    rows, batch, world = 104, 10, 3
    x = (torch.arange(rows).float().unsqueeze(1),)
    single = TensorBatches(x, torch.arange(rows), batch, shuffle=True, seed=5)
    shards = []
    for rank in range(world):
        part = TensorBatches(x, torch.arange(rows), batch, shuffle=True, seed=5)
        part.shard(rank, world)
        shards.append([b[1] for b in part])
    whole = [b[1] for b in single]
    assert [len(s) for s in shards] == [len(whole)] * world, "same number of batches everywhere"
    for b, expected in enumerate(whole):
        parts = [s[b] for s in shards]
        assert len({len(p) for p in parts}) == 1, "equal batch sizes across processes"
        got = torch.cat(parts)
        assert set(expected.tolist()) <= set(got.tolist())
        assert len(got) - len(expected) < world, "padding only to a multiple of world"
    # The last batch (4 rows) is padded to 6 with the epoch's first two rows.
    assert sorted(torch.cat([s[-1] for s in shards]).tolist()) == sorted(
        [*whole[-1].tolist(), *whole[0][:2].tolist()]
    )
    with pytest.raises(ValueError, match=r"rank must be in 0\.\.2"):
        single.shard(3, 3)


_TINY_TRAINING = """
import sys
from pathlib import Path

import torch
from torch import nn
from lossflow.config import OptimizerConfig, SchedulerConfig, TrainerConfig
from lossflow.losses import build_loss
from lossflow.models.system import LossflowSystem
from lossflow.training import TensorBatches, fit

x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0))
y = (x[:, 0] > 0).float()
system = LossflowSystem(
    net=nn.Linear(4, 1), loss=build_loss({"name": "bce"}), regularizers={}, task="binary",
    optimizer=OptimizerConfig(name="adam", lr=0.05), scheduler=SchedulerConfig(name="cosine"),
    max_epochs=1,
)
cfg = TrainerConfig(max_epochs=1, early_stopping=None, accelerator="cpu")
fit(system, TensorBatches((x,), y, 32), TensorBatches((x,), y, 64), cfg, Path(sys.argv[1]))
"""


def test_a_training_prints_no_advertisement(tmp_path: Path) -> None:
    """Lightning logs a tip to install its hosted logger (``litlogger``) from every Trainer
    without one; a lossflow training's output (in a fresh process, as a user sees it) has
    Lightning's own lines but not that one."""
    done = subprocess.run(
        [sys.executable, "-c", _TINY_TRAINING, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    output = done.stdout + done.stderr
    assert "GPU available" in output  # Lightning's information still reaches the user
    assert "litlogger" not in output.lower()
    assert "litmodels" not in output.lower()
