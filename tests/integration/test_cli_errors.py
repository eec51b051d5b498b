"""A user's mistake is one message on the terminal, whichever command and wherever it is found
(config, data inside a Prefect task, the service's startup); the traceback is in the log file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LOSSFLOW = Path(sys.executable).parent / "lossflow"

pytestmark = pytest.mark.slow


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOSSFLOW_LOG_FILE": str(tmp_path / "lossflow.log"), "COLUMNS": "200"}
    return subprocess.run(
        [str(LOSSFLOW), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def _csv_overrides(tmp_path: Path, numeric: str) -> list[str]:
    path = tmp_path / "rows.csv"
    lines = ["a,b,y"] + [f"{i},{'xy'[i % 2]},{i % 2}" for i in range(60)]
    path.write_text("\n".join(lines) + "\n")
    return [
        f"data_dir={tmp_path / 'data'}",
        "data.source=csv",
        f"data.path={path}",
        "data.task=binary",
        f"data.columns={{numeric: [{numeric}], categorical: [b], target: y}}",
        "data.split={kind: random}",
        "data.augment={}",
        "trainer.max_epochs=1",
    ]


def test_a_data_error_inside_the_flow_is_one_message(tmp_path: Path) -> None:
    result = _run(tmp_path, "train", *_csv_overrides(tmp_path, "a, c"))
    assert result.returncode == 2, result.stdout + result.stderr
    output = result.stdout + result.stderr
    assert "Traceback" not in output
    message = "missing column(s) 'c'; the frame has 'a', 'b', 'y'"
    assert output.count(message) == 1, output
    assert "lossflow train:" in result.stderr
    # Besides Prefect's and MLflow's INFO lines (server start, flow run), only the message and
    # where its traceback is.
    others = [
        line
        for line in result.stderr.strip().splitlines()
        if " INFO " not in line and "prefect.io/docs" not in line
    ]
    assert len(others) == 2, result.stderr
    log = (tmp_path / "lossflow.log").read_text()
    assert "Traceback (most recent call last)" in log
    assert "DataValidationError" in log


def test_a_config_error_is_one_message_and_debug_shows_the_traceback(tmp_path: Path) -> None:
    result = _run(tmp_path, "train", "trainer.max_epoch=3")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "trainer.max_epoch: unknown key (did you mean 'max_epochs'?)" in result.stderr
    debug = _run(tmp_path, "--debug", "train", "trainer.max_epoch=3")
    assert debug.returncode != 0
    assert "ConfigError" in debug.stderr


def test_a_service_that_cannot_load_its_models_says_why_once(tmp_path: Path) -> None:
    result = _run(tmp_path, "serve", f"data_dir={tmp_path / 'empty'}", "--port", "0")
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "lossflow serve: registered model 'lossflow-flights' has no alias 'champion'" in (
        result.stderr
    )
