"""The MLflow adapter (runs, the model registry, their factories) against a real sqlite-backed
MLflow store and registry in tmp_path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from matplotlib.figure import Figure
from onnx import TensorProto, helper, numpy_helper

from lossflow.config.common import TrackingConfig
from lossflow.export import read_metadata
from lossflow.onnx_runner import OnnxRunner
from lossflow.tracking import (
    ERROR_TAG,
    ModelRegistry,
    RegistryError,
    Runs,
    WritableModelRegistry,
    default_tracking_uri,
    flatten,
    git_commit,
    open_registry,
    open_runs,
    resolve_tracking_uri,
    ui_command,
)
from lossflow.tracking.store import TRUNCATION_MARKER

EXPERIMENT = "lossflow-test"
METADATA = {"loss_id": "focal-3f2a", "feature_schema": '{"numeric": ["a", "b", "c"]}'}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("store") / "data" / "nested"


@pytest.fixture(scope="module")
def tracker(data_dir: Path) -> Runs:
    """One real store per module: creating an MLflow sqlite DB runs its migrations (seconds)."""
    return Runs(default_tracking_uri(data_dir), EXPERIMENT)


@pytest.fixture(scope="module")
def registry(tracker: Runs) -> WritableModelRegistry:
    """The registry of the same store."""
    return WritableModelRegistry(tracker.tracking_uri)


def write_linear_onnx(path: Path) -> Path:
    """A tiny ONNX graph with the exported models' contract: named inputs, dynamic batch."""
    w_num = np.array([[0.5], [-1.0], [2.0]], dtype=np.float32)
    w_cat = np.array([[0.25], [-0.75]], dtype=np.float32)
    graph = helper.make_graph(
        [
            helper.make_node("MatMul", ["numeric", "w_num"], ["num_out"]),
            helper.make_node("Cast", ["categorical"], ["cat_float"], to=TensorProto.FLOAT),
            helper.make_node("MatMul", ["cat_float", "w_cat"], ["cat_out"]),
            helper.make_node("Add", ["num_out", "cat_out"], ["sum"]),
            helper.make_node("Squeeze", ["sum", "axis"], ["output"]),
        ],
        "linear",
        [
            helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["batch", 3]),
            helper.make_tensor_value_info("categorical", TensorProto.INT64, ["batch", 2]),
        ],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch"])],
        initializer=[
            numpy_helper.from_array(w_num, "w_num"),
            numpy_helper.from_array(w_cat, "w_cat"),
            numpy_helper.from_array(np.array([1], dtype=np.int64), "axis"),
        ],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, METADATA)
    onnx.checker.check_model(model)
    onnx.save_model(model, path)
    return path


def example_inputs(rows: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(rows)
    return {
        "numeric": rng.normal(size=(rows, 3)).astype(np.float32),
        "categorical": rng.integers(0, 5, size=(rows, 2)).astype(np.int64),
    }


@pytest.fixture(scope="module")
def registered(
    tracker: Runs, registry: WritableModelRegistry, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, str]:
    """Two versions of one registered ONNX model, logged from two runs; cwd is an empty dir."""
    workdir = tmp_path_factory.mktemp("cwd")
    onnx_path = write_linear_onnx(tmp_path_factory.mktemp("model") / "model.onnx")
    runner = OnnxRunner(onnx_path)
    inputs = example_inputs(4)
    ids: dict[str, str] = {"onnx_path": str(onnx_path), "workdir": str(workdir)}
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(workdir)
        for key in ("v1", "v2"):
            with tracker.start_run(f"train-{key}", {"stage": key}) as run_id:
                ids[f"run_{key}"] = run_id
                logged = tracker.log_onnx_model(run_id, onnx_path, inputs, runner.run(inputs))
                ids[key] = registry.register("flights-delay", logged)
    return ids


def test_tracking_uri_resolution(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    expected_default = f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert default_tracking_uri(tmp_path) == expected_default
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path) == expected_default
    assert resolve_tracking_uri("", tmp_path) == expected_default
    assert resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://mlflow:5000"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-env:5000")
    assert resolve_tracking_uri("http://mlflow:5000", tmp_path) == "http://from-env:5000"
    assert not (tmp_path / "mlflow.db").exists()


def test_runs_create_data_dir_and_explicit_artifact_location(tracker: Runs, data_dir: Path) -> None:
    assert (data_dir / "mlflow.db").is_file()
    experiment = tracker.client.get_experiment(tracker.experiment_id)
    assert experiment.name == EXPERIMENT
    assert (
        experiment.artifact_location == (data_dir.resolve() / "mlartifacts" / EXPERIMENT).as_uri()
    )
    again = Runs(tracker.tracking_uri, EXPERIMENT)
    assert again.experiment_id == tracker.experiment_id


def test_two_experiments_in_one_process_do_not_share_runs(tracker: Runs) -> None:
    other = Runs(tracker.tracking_uri, "lossflow-other")
    assert other.experiment_id != tracker.experiment_id
    with other.start_run("other", {}) as other_run, tracker.start_run("mine", {}) as mine:
        other.log_metrics(other_run, {"val/auc": 0.7}, step=0)
        tracker.log_metrics(mine, {"val/auc": 0.9}, step=0)
    assert tracker.client.get_run(other_run).info.experiment_id == other.experiment_id
    assert tracker.client.get_run(mine).info.experiment_id == tracker.experiment_id
    assert other.get_run_metrics(other_run) == {"val/auc": 0.7}
    assert tracker.get_run_metrics(mine) == {"val/auc": 0.9}


def test_stores_in_one_process_do_not_interfere(
    tracker: Runs, registry: WritableModelRegistry, registered: dict[str, str], tmp_path: Path
) -> None:
    other = Runs(default_tracking_uri(tmp_path / "other"), EXPERIMENT)
    other_registry = WritableModelRegistry(other.tracking_uri)
    onnx_path = Path(registered["onnx_path"])
    inputs = example_inputs(2)
    with other.start_run("elsewhere", {}) as other_run:
        other.log_metrics(other_run, {"val/auc": 0.6}, step=0)
        logged = other.log_onnx_model(
            other_run, onnx_path, inputs, OnnxRunner(onnx_path).run(inputs)
        )
        version = other_registry.register("flights-delay", logged)
    assert version == "1"
    assert other_registry.run_of_version("flights-delay", "1") == other_run
    assert registry.run_of_version("flights-delay", "1") == registered["run_v1"]
    assert other.get_run_metrics(other_run) == {"val/auc": 0.6}
    assert not tracker.client.search_runs(
        [tracker.experiment_id], filter_string="attributes.run_name = 'elsewhere'"
    )
    other_location = other.client.get_experiment(other.experiment_id).artifact_location
    assert other_location == (tmp_path.resolve() / "other" / "mlartifacts" / EXPERIMENT).as_uri()


def test_flatten_dotted_keys_and_list_indices() -> None:
    config = {"loss": {"name": "focal", "params": {"gamma": 2.0}}, "terms": [{"w": 1}, 3], "e": []}
    assert flatten(config) == {
        "loss.name": "focal",
        "loss.params.gamma": 2.0,
        "terms.0.w": 1,
        "terms.1": 3,
        "e": [],
    }
    assert flatten({"a": {"b": 1}}, prefix="cfg") == {"cfg.a.b": 1}
    assert flatten({"x": (1, 2)}) == {"x.0": 1, "x.1": 2}


def test_params_are_flattened_stringified_batched_and_truncated(tracker: Runs) -> None:
    many = {f"grid.p{i:03d}": i for i in range(250)}
    config = {"loss": {"name": "focal", "gamma": 2.0}, "layers": [64, 32], "note": "x" * 7000}
    with tracker.start_run("params", {"kind": "test"}) as run_id:
        tracker.log_params(run_id, flatten(config))
        tracker.log_params(run_id, many)
    params = tracker.client.get_run(run_id).data.params
    assert params["loss.name"] == "focal"
    assert params["loss.gamma"] == "2.0"
    assert params["layers.1"] == "32"
    assert params["grid.p249"] == "249"
    assert len(params) == 4 + 1 + 250
    assert params["note"].endswith(TRUNCATION_MARKER)
    assert params["note"].startswith("x" * 100)
    assert len(params["note"]) == 6000


def test_metrics_are_logged_per_step(tracker: Runs) -> None:
    with tracker.start_run("metrics", {}) as run_id:
        for epoch, loss in enumerate([0.9, 0.5, 0.3]):
            tracker.log_metrics(run_id, {"train/loss": loss, "val/auc": 0.5 + epoch / 10}, epoch)
        tracker.log_metrics(run_id, {"test/auc": np.float64(0.75)}, step=None)
    history = tracker.client.get_metric_history(run_id, "train/loss")
    assert sorted((m.step, m.value) for m in history) == [(0, 0.9), (1, 0.5), (2, 0.3)]
    metrics = tracker.get_run_metrics(run_id)
    assert metrics["train/loss"] == pytest.approx(0.3)
    assert metrics["val/auc"] == pytest.approx(0.7)
    assert metrics["test/auc"] == pytest.approx(0.75)
    assert tracker.get_run_status(run_id) == "FINISHED"


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_metrics_are_rejected_and_nothing_is_logged(tracker: Runs, bad: float) -> None:
    with tracker.start_run("nonfinite", {}) as run_id:
        with pytest.raises(ValueError, match=r"finite.*'val/loss'"):
            tracker.log_metrics(run_id, {"val/auc": 0.8, "val/loss": bad}, step=1)
        with pytest.raises(TypeError, match="'val/auc' must be a number"):
            tracker.log_metrics(run_id, {"val/auc": "high"}, step=1)  # type: ignore[dict-item]
    assert tracker.get_run_metrics(run_id) == {}


def _train_and_diverge(tracker: Runs, run_ids: list[str]) -> None:
    with tracker.start_run("failing", {"lossflow.loss_id": "abc"}) as run_id:
        run_ids.append(run_id)
        raise RuntimeError("loss diverged at epoch 3")


def test_run_fails_with_error_tag_and_exception_propagates(tracker: Runs) -> None:
    run_ids: list[str] = []
    with pytest.raises(RuntimeError, match="loss diverged"):
        _train_and_diverge(tracker, run_ids)
    (failed,) = run_ids
    assert tracker.get_run_status(failed) == "FAILED"
    run = tracker.client.get_run(failed)
    assert run.data.tags[ERROR_TAG] == "RuntimeError: loss diverged at epoch 3"
    assert run.data.tags["lossflow.loss_id"] == "abc"
    assert run.info.run_name == "failing"


def test_tags_and_artifacts(tracker: Runs, tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text("<html>drift</html>")
    figure = Figure(figsize=(2, 2))
    figure.subplots().plot([0, 1], [1, 0])
    with tracker.start_run("artifacts", {}) as run_id:
        tracker.set_tags(run_id, {"git_commit": "abc123", "epochs": 3})
        tracker.log_dict(run_id, {"loss": {"name": "focal"}}, "config/resolved.json")
        tracker.log_text(run_id, "hello", "notes/readme.txt")
        tracker.log_artifact(run_id, report, artifact_path="reports")
        tracker.log_figure(run_id, figure, "plots/curve.png")
        with pytest.raises(ValueError, match=r"\.png"):
            tracker.log_figure(run_id, figure, "plots/curve.svg")
        with pytest.raises(FileNotFoundError, match="does not exist"):
            tracker.log_artifact(run_id, tmp_path / "absent.txt")
    tags = tracker.client.get_run(run_id).data.tags
    assert tags["git_commit"] == "abc123"
    assert tags["epochs"] == "3"
    dst = Path(tracker.client.download_artifacts(run_id, "", str(tmp_path / "dl")))
    assert (dst / "config" / "resolved.json").read_text().replace(" ", "").replace("\n", "") == (
        '{"loss":{"name":"focal"}}'
    )
    assert (dst / "notes" / "readme.txt").read_text() == "hello"
    assert (dst / "reports" / "report.html").read_text() == "<html>drift</html>"
    assert (dst / "plots" / "curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_registered_onnx_model_round_trips(
    tracker: Runs, registry: WritableModelRegistry, registered: dict[str, str], tmp_path: Path
) -> None:
    assert registered["v1"] == "1"
    assert registered["v2"] == "2"
    assert registry.run_of_version("flights-delay", "2") == registered["run_v2"]
    assert tracker.get_run_status(registered["run_v2"]) == "FINISHED"
    downloaded = registry.download_onnx("flights-delay", "1", tmp_path / "v1")
    assert downloaded.suffix == ".onnx"
    assert downloaded.is_relative_to(tmp_path / "v1")
    assert read_metadata(downloaded) == METADATA
    inputs = example_inputs(1000)
    original = OnnxRunner(Path(registered["onnx_path"])).run(inputs)
    np.testing.assert_array_equal(OnnxRunner(downloaded).run(inputs), original)
    assert downloaded.read_bytes() == Path(registered["onnx_path"]).read_bytes()


def test_registration_leaves_global_mlflow_state_alone(registered: dict[str, str]) -> None:
    assert list(Path(registered["workdir"]).iterdir()) == []


def test_logged_model_has_signature_and_example(
    registry: WritableModelRegistry, registered: dict[str, str], tmp_path: Path
) -> None:
    downloaded = registry.download_onnx("flights-delay", "2", tmp_path / "v2")
    mlmodel = (downloaded.parent / "MLmodel").read_text()
    assert '"name": "numeric"' in mlmodel
    assert '"name": "categorical"' in mlmodel
    assert "int64" in mlmodel
    assert (downloaded.parent / "input_example.json").is_file()


def test_aliases(
    registry: WritableModelRegistry, registered: dict[str, str], tmp_path: Path
) -> None:
    assert registry.alias_version("flights-delay", "champion") is None
    assert registry.alias_version("no-such-model", "champion") is None
    registry.set_alias("flights-delay", "champion", registered["v1"])
    registry.set_alias("flights-delay", "challenger", registered["v2"])
    assert registry.alias_version("flights-delay", "champion") == "1"
    assert registry.alias_version("flights-delay", "challenger") == "2"
    registry.set_alias("flights-delay", "champion", registered["v2"])
    assert registry.alias_version("flights-delay", "champion") == "2"
    reader = ModelRegistry(registry.tracking_uri)
    assert reader.aliases("flights-delay") == {"champion": "2", "challenger": "2"}
    assert reader.challenger_under_test("flights-delay") is None
    by_alias = reader.download_onnx("flights-delay", "champion", tmp_path / "champion")
    assert read_metadata(by_alias) == METADATA
    with pytest.raises(RegistryError, match="no alias 'canary'"):
        reader.download_onnx("flights-delay", "canary", tmp_path / "canary")
    with pytest.raises(RegistryError, match="has no version 99"):
        reader.download_onnx("flights-delay", "99", tmp_path / "v99")
    registry.set_alias("flights-delay", "challenger", registered["v1"])
    assert reader.challenger_under_test("flights-delay") == "1"
    registry.delete_alias("flights-delay", "challenger")
    registry.delete_alias("flights-delay", "challenger")  # already gone: nothing
    assert reader.aliases("flights-delay") == {"champion": "2"}


def test_version_tags(registry: WritableModelRegistry, registered: dict[str, str]) -> None:
    registry.set_version_tags("flights-delay", registered["v1"], {"note": "x" * 9000, "n": 3})
    tags = ModelRegistry(registry.tracking_uri).version_tags("flights-delay", registered["v1"])
    assert tags["n"] == "3"
    assert tags["note"].endswith(TRUNCATION_MARKER)
    with pytest.raises(RegistryError, match="has no version 99"):
        registry.version_tags("flights-delay", "99")
    with pytest.raises(RegistryError, match="has no version 99"):
        registry.run_of_version("flights-delay", "99")


def test_the_factories_open_each_process_s_experiment_and_the_registry(tmp_path: Path) -> None:
    tracking = TrackingConfig(registered_model="hotels", experiment="hotels-train")
    training = open_runs(tracking, tmp_path / "data", "training")
    monitoring = open_runs(tracking, tmp_path / "data", "monitoring")
    assert training.experiment == "hotels-train"
    assert monitoring.experiment == "hotels-monitoring"
    assert training.tracking_uri == default_tracking_uri(tmp_path / "data")
    reader = open_registry(tracking, tmp_path / "data")
    writer = open_registry(tracking, tmp_path / "data", writable=True)
    assert type(reader) is ModelRegistry
    assert isinstance(writer, WritableModelRegistry)
    assert reader.tracking_uri == writer.tracking_uri == training.tracking_uri
    for write in ("register", "set_alias", "delete_alias", "set_version_tags"):
        assert not hasattr(reader, write), write


def test_the_read_only_registry_creates_no_store(tmp_path: Path) -> None:
    """A reader on an embedded store that does not exist yet (a service started before the first
    training) reads an empty registry and creates nothing: no directory, no database."""
    data_dir = tmp_path / "fresh" / "data"
    reader = open_registry(TrackingConfig(), data_dir)
    assert reader.aliases("lossflow-flights") == {}
    assert reader.alias_version("lossflow-flights", "champion") is None
    assert reader.challenger_under_test("lossflow-flights") is None
    with pytest.raises(RegistryError, match="has no version 1"):
        reader.version_tags("lossflow-flights", "1")
    with pytest.raises(RegistryError, match="has no version 1"):
        reader.download_onnx("lossflow-flights", "1", tmp_path / "dl")
    assert reader.download_run_artifact("0123", "config.json", tmp_path / "dl") is None
    assert not (tmp_path / "fresh").exists()


def _git(cwd: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
        cwd=cwd,
        check=True,
        capture_output=True,
    )


def test_git_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    outside = tmp_path / "outside"
    repo.mkdir()
    outside.mkdir()
    assert git_commit(outside) is None
    _git(repo, "init", "-q")
    assert git_commit(repo) is None
    (repo / "a.txt").write_text("1")
    _git(repo, "add", "a.txt")
    _git(repo, "commit", "-q", "-m", "first")
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert git_commit(repo) == head
    (repo / "untracked.txt").write_text("new")
    assert git_commit(repo) == head
    (repo / "a.txt").write_text("2")
    assert git_commit(repo) == f"{head}-dirty"


def test_ui_command(tmp_path: Path) -> None:
    mlflow_exe = str(Path(sys.executable).parent / "mlflow")
    embedded = ui_command(default_tracking_uri(tmp_path), port=5001)
    assert embedded == [
        mlflow_exe,
        "ui",
        "--backend-store-uri",
        f"sqlite:///{tmp_path.resolve()}/mlflow.db",
        "--default-artifact-root",
        (tmp_path.resolve() / "mlartifacts").as_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
    ]
    with pytest.raises(ValueError, match="already serves the UI"):
        ui_command("http://mlflow:5000")
    postgres = ui_command("postgresql://u@db/mlflow", host="0.0.0.0")
    assert "--default-artifact-root" not in postgres
    assert postgres[2:6] == ["--backend-store-uri", "postgresql://u@db/mlflow", "--host", "0.0.0.0"]
