"""The ``training`` flow end to end on real flights data (subsampled) with a real MLflow store,
the real Prefect test harness, real ONNX export and onnxruntime."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from lossflow.config.training import load_training_config
from lossflow.data.prepare import PreparedData, prepare_data
from lossflow.data.preprocessing import Preprocessor
from lossflow.evaluation.metrics import binary_metrics
from lossflow.export import ParityError, read_metadata
from lossflow.flows.training import TrainingOutcome, training
from lossflow.onnx_runner import OnnxRunner
from lossflow.tracking import ERROR_TAG, ModelRegistry, Runs, default_tracking_uri
from lossflow.usecases import training as steps

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _overrides(data_dir: Path, *extra: str) -> list[str]:
    return [
        f"data_dir={data_dir}",
        "data.subsample=3000",
        "trainer.max_epochs=2",
        "trainer.batch_size=512",
        *extra,
    ]


def _tracker(data_dir: Path, experiment: str = "lossflow-flights") -> Runs:
    return Runs(default_tracking_uri(data_dir), experiment)


def _registry(data_dir: Path) -> ModelRegistry:
    return ModelRegistry(default_tracking_uri(data_dir))


@pytest.fixture(scope="module")
def first_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, TrainingOutcome]:
    data_dir = tmp_path_factory.mktemp("flow")
    outcome = training(overrides=_overrides(data_dir), config_dir=str(CONFIG_DIR))
    return data_dir, outcome


def test_flow_logs_the_run_and_registers_champion_and_challenger(
    first_run: tuple[Path, TrainingOutcome],
) -> None:
    data_dir, outcome = first_run
    tracker = _tracker(data_dir)
    run = tracker.client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    tags = run.data.tags
    assert tags["lossflow.loss"] == "focal"
    assert tags["lossflow.loss_id"] == outcome.loss_id
    assert outcome.loss_id.startswith("focal-")
    assert len(tags["lossflow.dataset_fingerprint"]) == 16
    params = run.data.params
    assert params["loss.gamma"] == "2.0"
    assert params["trainer.max_epochs"] == "2"
    assert params["data.rows.train"] == "3000"
    history = tracker.client.get_metric_history(outcome.run_id, "train/loss")
    assert [m.step for m in history] == [0, 1]
    for key in ("val/auc", "grad/total", "test/roc_auc", "test/pr_auc", "val/threshold"):
        assert key in run.data.metrics, key
    artifacts = {a.path for a in tracker.client.list_artifacts(outcome.run_id, "plots")}
    assert {"plots/roc.png", "plots/pr.png", "plots/calibration.png"} <= artifacts
    assert "plots/training_curves.png" in artifacts
    assert outcome.model_version == "1"
    assert set(outcome.aliases) == {"champion", "challenger"}


def test_registered_onnx_reproduces_the_logged_test_metrics(
    first_run: tuple[Path, TrainingOutcome], tmp_path: Path
) -> None:
    data_dir, outcome = first_run
    tracker = _tracker(data_dir)
    path = _registry(data_dir).download_onnx("lossflow-flights", "champion", tmp_path)
    meta = read_metadata(path)
    assert meta["lossflow.loss_id"] == outcome.loss_id
    pre = Preprocessor.from_dict(json.loads(meta["lossflow.preprocessor"]))
    threshold = json.loads(meta["lossflow.threshold"])
    # Raw test rows, as a service receives them, through the preprocessing the model carries.
    prepared = data_dir / "runs" / outcome.run_id / "prepared"
    raw = PreparedData(prepared, "", {}, None).raw("test")
    records = raw.drop(columns=[pre.target]).to_dict(orient="records")
    prob = OnnxRunner(path).run(pre.model_inputs(pre.encode(records)))
    metrics = binary_metrics(pre.encode_target(raw), prob, threshold)
    logged = tracker.get_run_metrics(outcome.run_id)
    for key in ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall"):
        assert metrics[key] == pytest.approx(logged[f"test/{key}"], abs=1e-5), key


def test_second_run_becomes_challenger_and_champion_stays(
    first_run: tuple[Path, TrainingOutcome],
) -> None:
    data_dir, first = first_run
    outcome = training(
        overrides=_overrides(data_dir, "loss=bce", "trainer.max_epochs=1"),
        config_dir=str(CONFIG_DIR),
    )
    registry = _registry(data_dir)
    assert outcome.model_version == "2"
    assert outcome.aliases == ("challenger",)
    assert registry.alias_version("lossflow-flights", "champion") == "1"
    assert registry.alias_version("lossflow-flights", "challenger") == "2"
    assert outcome.loss_id != first.loss_id


def test_parity_failure_fails_the_run_and_registers_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_export = steps.export_onnx

    def export_then_tamper(*args: object, **kwargs: object) -> Path:
        path = real_export(*args, **kwargs)  # type: ignore[arg-type]
        model = onnx.load(str(path))
        init = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)))
        values = numpy_helper.to_array(init).copy()
        values.flat[0] += 0.5
        init.CopyFrom(numpy_helper.from_array(values, init.name))
        onnx.save(model, str(path))
        return path

    monkeypatch.setattr(steps, "export_onnx", export_then_tamper)
    with pytest.raises(ParityError, match="differs from torch"):
        training(overrides=_overrides(tmp_path, "trainer.max_epochs=1"), config_dir=str(CONFIG_DIR))
    tracker = _tracker(tmp_path)
    runs = tracker.client.search_runs([tracker.experiment_id])
    assert [r.info.status for r in runs] == ["FAILED"]
    assert "ParityError" in runs[0].data.tags[ERROR_TAG]
    assert tracker.client.search_model_versions("name='lossflow-flights'") == []


def test_resume_continues_from_the_last_checkpoint(tmp_path: Path) -> None:
    cfg = load_training_config(_overrides(tmp_path, "trainer.max_epochs=1"), CONFIG_DIR)
    prepared = prepare_data(cfg, tmp_path / "prepared")
    first = steps.train_model(cfg, prepared, tmp_path / "ckpt")
    assert first.epochs == 1
    longer = load_training_config(_overrides(tmp_path, "trainer.max_epochs=3"), CONFIG_DIR)
    resumed = steps.train_model(longer, prepared, tmp_path / "ckpt", resume=True)
    assert resumed.global_step == 3 * first.global_step
    history = json.loads(resumed.history_path.read_text())
    assert history["epoch"] == [1.0, 2.0], "the resumed run trains only the missing epochs"
