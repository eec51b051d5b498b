"""Small real flights models for the serving tests: exported ONNX files and a registry holding
two versions trained with different losses (``champion`` = focal v1, ``challenger`` = bce v2)."""

from __future__ import annotations

import dataclasses
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from lossflow import steps
from lossflow.config.training import load_training_config
from lossflow.data.prepare import PreparedData, prepare_data
from lossflow.losses import loss_id
from lossflow.models.build import resolved_loss_spec
from lossflow.replay.rows import records_of

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
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
    """Prepare, train one epoch, evaluate and export a small model with ``lossflow.steps``."""
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


def build_registry(root: Path) -> Registry:
    """Register focal (v1: champion + challenger) then bce (v2: challenger) in ``root``."""
    from lossflow.serving.predictor import OnnxPredictor

    paths: list[Path] = []
    prepared: PreparedData | None = None
    for loss in ("focal", "bce"):
        overrides = [f"data_dir={root}", *SMALL, f"loss={loss}"]
        cfg = load_training_config(overrides, CONFIG_DIR)
        work = root / "work" / loss
        prepared = prepare_data(cfg, work / "prepared")
        trained = steps.train_model(cfg, prepared, work / "checkpoints")
        evaluation = steps.evaluate_model(cfg, prepared, trained)
        lid = loss_id(resolved_loss_spec(cfg, prepared.class_counts), cfg.regularizers)
        exported = steps.export_model(cfg, prepared, trained, evaluation, lid, work / "model")
        tracker = steps.tracker_for(cfg)
        with tracker.start_run(loss, {}) as run_id:
            name, version = steps.register_version(cfg, prepared, exported, run_id)
            steps.store_reference_profile(cfg, prepared, exported, run_id, name, version)
            steps.assign_aliases(cfg, name, version)
        paths.append(exported.onnx_path)
    assert prepared is not None
    features = OnnxPredictor.from_path(paths[0]).feature_columns
    test = prepared.raw("test")
    cfg = load_training_config([f"data_dir={root}"], CONFIG_DIR)
    return Registry(
        data_dir=root,
        model_name=cfg.tracking.registered_model,
        champion=paths[0],
        challenger=paths[1],
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


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


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
    with output.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, cwd=data_dir)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(
                    f"the service exited ({process.returncode}):\n{output.read_text()}"
                )
            try:
                if httpx.get(f"{url}/ready", timeout=5.0).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"the service was not ready in time:\n{output.read_text()}")
            time.sleep(0.25)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
