"""The container images, built and run for real where a Docker daemon answers. Elsewhere they
skip with the reason, except under ``CI=true``: CI starts a daemon (``.ci/run``), so there a
missing daemon or base image fails them. Containers use the host network only and bind loopback,
so no traffic leaves 127.0.0.1. Each image is built once per session, when its first test runs.

Where no image registry is reachable, point the build at a local base image and pass the
build arguments the Dockerfile documents; ``.ci/docker.sh up`` starts a daemon, imports the base,
prepares the build context as CI does and prints the settings (README "Container images")::

    eval "$(.ci/docker.sh up)"     # DOCKER_HOST, LOSSFLOW_TEST_BASE_IMAGE, LOSSFLOW_TEST_BUILD_ARGS
    pytest tests/integration/test_images.py
    .ci/docker.sh down
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from lossflow.flows.server import free_port
from lossflow.predlog import PredictionLog
from lossflow.serving.predictor import OnnxPredictor

from .serving_models import export_small_model, json_records

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BASE_IMAGE = os.environ.get("LOSSFLOW_TEST_BASE_IMAGE", "python:3.11-slim")
BUILD_ARGS = os.environ.get("LOSSFLOW_TEST_BUILD_ARGS", "").split()
UID = "10001"


def _docker(
    *args: str, timeout: float = 120, check: bool = True
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        ["docker", *args], capture_output=True, text=True, timeout=timeout, check=False
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"docker {' '.join(args[:3])} failed:\n{proc.stderr[-4000:]}")
    return proc


def _daemon_reason() -> str | None:
    if shutil.which("docker") is None:
        return "no docker client on PATH"
    try:
        info = _docker("info", "--format", "{{.ServerVersion}}", timeout=20, check=False)
    except subprocess.TimeoutExpired:
        return "the Docker daemon did not answer within 20 s"
    if info.returncode != 0:
        return f"no Docker daemon reachable ({info.stderr.strip().splitlines()[-1:]})"
    # The test never pulls (no traffic to registries beyond the package index).
    if _docker("image", "inspect", BASE_IMAGE, check=False).returncode != 0:
        return (
            f"the base image {BASE_IMAGE} is not in the local image store: `docker pull` it, or "
            "import one and set LOSSFLOW_TEST_BASE_IMAGE (README, Container images)"
        )
    return None


@dataclass(frozen=True)
class Built:
    tag: str
    seconds: float
    size_bytes: int


@pytest.fixture(scope="session")
def docker_ready() -> None:
    """Skips the container tests where they cannot build, saying why; under ``CI=true`` fails."""
    reason = _daemon_reason()
    if reason is None:
        return
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"container tests cannot build: {reason} (CI=true requires it: see .ci/run)")
    pytest.skip(f"container tests cannot build here: {reason}")


def _build(target: str) -> Iterator[Built]:
    tag = f"lossflow-{target}:test-{uuid.uuid4().hex[:8]}"
    args = ["--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
    for arg in BUILD_ARGS:
        args += ["--build-arg", arg]
    start = time.monotonic()
    try:
        _docker(
            "build", "--network", "host", "--target", target, *args, "-t", tag, str(ROOT),
            timeout=3600,
        )  # fmt: skip
        seconds = time.monotonic() - start
        size = int(_docker("image", "inspect", "--format", "{{.Size}}", tag).stdout)
        print(f"{target}: {size / 1e6:,.0f} MB, built in {seconds:.0f} s")  # shown with -s or -rP
        yield Built(tag, seconds, size)
    finally:  # deleting the train image's 2.6 GB took over 2 min on a loaded 2-core machine
        _docker("image", "rm", "--force", tag, timeout=600, check=False)


@pytest.fixture(scope="session")
def serve_image(docker_ready: None) -> Iterator[Built]:
    """The serve target, built once per session (layers cached by Docker)."""
    yield from _build("serve")


@pytest.fixture(scope="session")
def train_image(docker_ready: None) -> Iterator[Built]:
    """The train target, built once per session after any serve build (shared base stages)."""
    yield from _build("train")


def _in(image: Built, *command: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return _docker("run", "--rm", "--network", "host", image.tag, *command, timeout=timeout,
                   check=False)  # fmt: skip


def test_serve_image_has_the_serving_set_only_and_a_non_root_user(serve_image: Built) -> None:
    assert _in(serve_image, "id", "-u").stdout.strip() == UID
    ok = _in(
        serve_image, "python3", "-c", "import onnxruntime, fastapi, psycopg, lossflow.serving.app"
    )
    assert ok.returncode == 0, ok.stderr
    for module in ("torch", "lightning", "prefect", "evidently", "optuna", "sklearn"):
        proc = _in(serve_image, "python3", "-c", f"import {module}")
        assert proc.returncode != 0, f"{module} is in the serve image"
    env = _docker("image", "inspect", "--format", "{{json .Config.Env}}", serve_image.tag).stdout
    assert "ORT_DISABLE_TELEMETRY=1" in env
    assert "MLFLOW_DISABLE_TELEMETRY=true" in env
    history = _docker("history", "--no-trunc", "--format", "{{.CreatedBy}}", serve_image.tag).stdout
    assert "host-ca" not in history, "the build's CA bundle must not reach the image"


@pytest.fixture(scope="module")
def model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[dict[str, Any]]]:
    root = tmp_path_factory.mktemp("image-model")
    onnx, prepared = export_small_model(root)
    features = OnnxPredictor.from_path(onnx).feature_columns
    return onnx, json_records(prepared, features)[:20]


def test_serve_image_answers_a_prediction_read_only_and_drains_its_log(
    serve_image: Built, model: tuple[Path, list[dict[str, Any]]], tmp_path: Path
) -> None:
    onnx, records = model
    models = tmp_path / "models"
    models.mkdir()
    shutil.copy2(onnx, models / "model.onnx")
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)  # the container's user (uid 10001) writes its log there
    port = free_port()
    name = f"lossflow-serve-test-{uuid.uuid4().hex[:8]}"
    _docker(
        "run", "--detach", "--name", name, "--network", "host", "--read-only",
        "--tmpfs", "/tmp", "-v", f"{data}:/app/data", "-v", f"{models}:/models:ro",
        "-e", "LOSSFLOW_HOST=127.0.0.1", "-e", f"LOSSFLOW_PORT={port}", serve_image.tag,
        "lossflow", "serve", "variants.a.path=/models/model.onnx", "variants.a.weight=100",
    )  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: _status(f"{url}/ready") == 200, 120, name, "a ready service")
        predictor = OnnxPredictor.from_path(onnx)
        ids = []
        for i, record in enumerate(records):
            response = httpx.post(
                f"{url}/predict", json={"unit_id": f"u{i}", "records": [record]}, timeout=10
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            (expected,) = predictor.predict([record])
            assert answer["predictions"][0]["probability"] == pytest.approx(
                expected.probability, abs=1e-6
            )
            ids.append(answer["request_id"])

        def healthy() -> bool:
            state = _docker("inspect", "--format", "{{.State.Health.Status}}", name)
            return state.stdout.strip() == "healthy"

        _wait(healthy, 120, name, "a healthy HEALTHCHECK")
        stop = _docker("stop", "--time", "60", name, timeout=120)
        assert stop.returncode == 0
        code = _docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
        assert code == "0", _docker("logs", name, check=False).stderr[-3000:]
    finally:
        _docker("rm", "--force", name, check=False)
    log = PredictionLog(f"sqlite:///{data / 'predictions.db'}")
    try:
        frame = log.read(datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC))
        logged = set(frame["request_id"])
    finally:
        log.dispose()
    assert logged == set(ids), "SIGTERM (docker stop) wrote every answer to the log"


def test_train_image_trains_and_registers_a_model(train_image: Built, tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    data.chmod(0o777)
    assert _in(train_image, "id", "-u").stdout.strip() == UID
    proc = _docker(
        "run", "--rm", "--network", "host", "-v", f"{data}:/app/data", train_image.tag,
        "lossflow", "train", "data.subsample=2000", "trainer.max_epochs=1",
        timeout=900, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "aliases: challenger, champion" in proc.stdout
    assert list(data.glob("runs/*/model/model.onnx"))


def _status(url: str) -> int | None:
    try:
        return httpx.get(url, timeout=2).status_code
    except httpx.HTTPError:
        return None


def _wait(condition: Any, timeout: float, container: str, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        running = _docker("inspect", "--format", "{{.State.Running}}", container, check=False)
        if running.stdout.strip() == "false":
            logs = _docker("logs", container, check=False)
            raise AssertionError(f"{container} exited before {what}:\n{logs.stderr[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{container}: no {what} after {timeout:.0f} s")
        time.sleep(0.5)
