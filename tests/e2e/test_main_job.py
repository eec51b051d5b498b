"""The README's main job, through the real ``lossflow`` entry point, on a subsample."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

ROOT = Path(__file__).resolve().parents[2]


LOSSFLOW = Path(sys.executable).parent / "lossflow"


@pytest.fixture(scope="module")
def main_job(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """``lossflow train`` on a subsample: the data dir and what the command printed."""
    tmp_path = tmp_path_factory.mktemp("main-job")
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [
            str(LOSSFLOW),
            "train",
            f"data_dir={tmp_path}",
            "data.subsample=5000",
            "trainer.max_epochs=2",
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return tmp_path, result.stdout


@pytest.mark.slow
def test_lossflow_train_prints_run_model_version_and_ui(main_job: tuple[Path, str]) -> None:
    tmp_path, out = main_job
    assert re.search(r"run id:\s+[0-9a-f]{32}", out), out
    assert re.search(r"loss id:\s+focal-[0-9a-f]{12}", out), out
    assert "model version: lossflow-flights v1 (aliases: challenger, champion)" in out
    assert "lossflow --project flights ui" in out
    assert "baseline:      log_loss" in out  # beside the training prior
    assert re.search(r"test/roc_auc\s+│\s+0\.\d+", out), out
    assert (tmp_path / "mlflow.db").is_file()
    assert list((tmp_path / "runs").glob("*/model/model.onnx"))


def _readme_request() -> dict[str, Any]:
    """The JSON body of the README's ``curl .../predict`` example."""
    readme = (ROOT / "README.md").read_text()
    match = re.search(
        r"curl -s -X POST http://127\.0\.0\.1:8000/predict .*? -d '(.*?)'", readme, re.S
    )
    assert match, "README lost its /predict curl example"
    body: dict[str, Any] = json.loads(match.group(1))
    return body


@pytest.mark.slow
def test_readme_curl_example_is_answered_by_the_served_main_job_model(
    main_job: tuple[Path, str],
) -> None:
    data_dir, _ = main_job
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [str(LOSSFLOW), "serve", f"data_dir={data_dir}", f"port={port}"],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read() if server.stderr else ""
            try:
                if httpx.get(f"{url}/ready").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "service not ready in 60 s"
            time.sleep(0.2)
        answer = httpx.post(f"{url}/predict", json=_readme_request())
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["variant"] == "champion"
        assert body["model_version"] == "1"
        assert body["loss_id"].startswith("focal-")
        (prediction,) = body["predictions"]
        assert 0.0 <= prediction["probability"] <= 1.0
        assert prediction["label"] in (0, 1)
        feedback = httpx.post(
            f"{url}/feedback", json={"request_id": body["request_id"], "labels": [0]}
        )
        assert feedback.status_code == 201, feedback.text
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(60)
    assert (data_dir / "predictions.db").is_file()


def test_bad_override_exits_2_with_the_key_named(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(LOSSFLOW), "train", "loss.gama=3", f"data_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown option 'gama'" in result.stderr
    assert not (tmp_path / "mlflow.db").exists(), "nothing runs on a bad config"
