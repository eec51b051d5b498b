"""Small real flights models for the serving tests: exported ONNX files and a registry holding
two versions trained with different losses (``champion`` = focal v1, ``challenger`` = bce v2)."""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lossflow.config.training import load_training_config
from lossflow.data.prepare import PreparedData, prepare_data
from lossflow.flows.server import child, free_port
from lossflow.losses import loss_id
from lossflow.models.build import resolved_loss_spec
from lossflow.replay.client import run_traffic
from lossflow.replay.report import TrafficReport
from lossflow.replay.requests import TrafficOptions
from lossflow.replay.rows import records_of
from lossflow.usecases import training as steps

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
PG_URL = os.environ.get("LOSSFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
SMALL = ("data.subsample=2000", "trainer.max_epochs=1", "trainer.batch_size=512")


@dataclass(frozen=True)
class Registry:
    """A data dir whose MLflow store has ``champion`` and ``challenger`` versions."""

    data_dir: Path
    model_name: str
    champion: Path
    challenger: Path
    records: list[dict[str, Any]]
    labels: list[int]


def export_small_model(root: Path, *overrides: str) -> tuple[Path, PreparedData]:
    """Prepare, train one epoch, evaluate and export a small model (the training use cases)."""
    cfg = load_training_config([f"data_dir={root}", *SMALL, *overrides], CONFIG_DIR)
    prepared = prepare_data(cfg, root / "prepared")
    trained = steps.train_model(cfg, prepared, root / "checkpoints")
    evaluation = steps.evaluate_model(cfg, prepared, trained)
    lid = loss_id(resolved_loss_spec(cfg, prepared.class_counts), cfg.regularizers)
    result = steps.export_model(cfg, prepared, trained, evaluation, lid, root / "model")
    return result.onnx_path, prepared


def json_records(
    prepared: PreparedData, features: tuple[str, ...], part: str = "test"
) -> list[dict[str, Any]]:
    """Rows of a raw split as JSON request records."""
    return records_of(prepared.raw(part), features)


@dataclass(frozen=True)
class Registered:
    """A version registered by :func:`register_model`."""

    version: str
    onnx_path: Path
    prepared: PreparedData
    exported: Any
    overrides: tuple[str, ...]

    def register_again(self, root: Path) -> str:
        """The same model file as one more version (an A/A test's identical challenger)."""
        cfg = load_training_config([f"data_dir={root}", *SMALL, *self.overrides], CONFIG_DIR)
        with steps.runs_of(cfg).start_run("again", {}) as run_id:
            model, version = steps.register_version(cfg, self.prepared, self.exported, run_id)
            steps.store_reference_profile(cfg, self.prepared, self.exported, run_id, model, version)
        return version


def register_model(root: Path, name: str, *overrides: str, alias: bool = True) -> Registered:
    """Train, evaluate, export and register a small flights model in ``root``'s registry the way
    the training flow does (reference profile included); ``alias``: let the training config's
    aliases move as after a training run (champion when none, else challenger)."""
    cfg = load_training_config([f"data_dir={root}", *SMALL, *overrides], CONFIG_DIR)
    work = root / "work" / name
    prepared = prepare_data(cfg, work / "prepared")
    trained = steps.train_model(cfg, prepared, work / "checkpoints")
    evaluation = steps.evaluate_model(cfg, prepared, trained)
    lid = loss_id(resolved_loss_spec(cfg, prepared.class_counts), cfg.regularizers)
    exported = steps.export_model(cfg, prepared, trained, evaluation, lid, work / "model")
    tracker = steps.runs_of(cfg)
    with tracker.start_run(name, {}) as run_id:
        steps.log_run_inputs(cfg, prepared, tracker, run_id)  # the version's recipe
        model, version = steps.register_version(cfg, prepared, exported, run_id)
        steps.store_reference_profile(cfg, prepared, exported, run_id, model, version)
        if alias:
            steps.assign_aliases(cfg, model, version)
    return Registered(version, exported.onnx_path, prepared, exported, overrides)


def build_registry(root: Path) -> Registry:
    """Register focal (v1: champion + challenger) then bce (v2: challenger) in ``root``."""
    from lossflow.serving.predictor import OnnxPredictor

    focal = register_model(root, "focal", "loss=focal")
    bce = register_model(root, "bce", "loss=bce")
    features = OnnxPredictor.from_path(focal.onnx_path).feature_columns
    prepared = bce.prepared
    test = prepared.raw("test")
    cfg = load_training_config([f"data_dir={root}"], CONFIG_DIR)
    return Registry(
        data_dir=root,
        model_name=cfg.tracking.registered_model,
        champion=focal.onnx_path,
        challenger=bce.onnx_path,
        records=json_records(prepared, features),
        labels=[int(v) for v in test[prepared.preprocessor().target].tolist()],
    )


def copy_registry(source: Registry, root: Path) -> Registry:
    """A private copy of ``source`` under ``root`` (the store, artifacts and training outputs;
    not what a service wrote there), so tests that move aliases or log predictions stay apart."""
    shutil.copytree(
        source.data_dir,
        root,
        dirs_exist_ok=True,
        ignore=shutil.ignore_patterns("predictions.db*", "serving-cache", "*.log"),
    )
    return dataclasses.replace(
        source,
        data_dir=root,
        champion=root / source.champion.relative_to(source.data_dir),
        challenger=root / source.challenger.relative_to(source.data_dir),
    )


READY_TIMEOUT_S = 180.0


@contextmanager
def live_service(data_dir: Path, *overrides: str) -> Iterator[str]:
    """``lossflow serve`` in a subprocess on a free loopback port, ready; yields its URL and
    stops it with SIGTERM (as a container runtime does)."""
    port = free_port()
    output = data_dir / f"serve-{port}.log"
    command = [
        str(Path(sys.executable).parent / "lossflow"), "serve", "--config-dir", str(CONFIG_DIR),
        f"data_dir={data_dir}", *overrides,
        "--host", "127.0.0.1", "--port", str(port),  # the flags every Python server takes
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    output.unlink(missing_ok=True)
    with child(command, output, cwd=data_dir) as process:
        wait_for(
            lambda: _ready(process, url, output), "the service to be ready", READY_TIMEOUT_S,
            lambda: output.read_text(),
        )  # fmt: skip
        yield url


def replay_all(url: str, rows: Any, **options: Any) -> TrafficReport:
    """Replay every row of ``rows`` against ``url`` with ``lossflow traffic``'s client, labels
    posted back as feedback; fail, naming why, unless every request was answered and every due
    label posted. The tests share two cores with the service: the client waits long (a 120 s
    timeout, 20 retries of a 503) so that load slows a fixture down without losing a request."""
    patient = TrafficOptions(timeout_s=120.0, max_retries=20, **options)
    report = run_traffic(rows.reset_index(drop=True), url, patient)
    why = {
        "failed_by_status": report.failed_by_status, "errors": report.errors,
        "not_sent": report.not_sent, "notes": report.notes,
    }  # fmt: skip
    assert report.answered == len(rows), why
    assert report.feedback_posted == report.feedback_due, report.feedback_by_status
    return report


def _ready(process: subprocess.Popen[bytes], url: str, output: Path) -> bool:
    if process.poll() is not None:
        raise RuntimeError(f"the service exited ({process.returncode}):\n{output.read_text()}")
    try:
        return httpx.get(f"{url}/ready", timeout=5.0).status_code == 200
    except httpx.TransportError:
        return False


def wait_for(
    check: Callable[[], Any],
    what: str,
    timeout_s: float = 60.0,
    log: Callable[[], str] | None = None,
) -> Any:
    """Poll ``check`` until it returns something truthy (returned); fail after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}" + (f":\n{log()}" if log else ""))
        time.sleep(0.25)
