"""The README's main job, through the real ``lossflow`` entry point, on a subsample."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_lossflow_train_prints_run_model_version_and_ui(tmp_path: Path) -> None:
    lossflow = Path(sys.executable).parent / "lossflow"
    env = {k: v for k, v in os.environ.items() if k != "MLFLOW_TRACKING_URI"}
    result = subprocess.run(
        [
            str(lossflow),
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
    out = result.stdout
    assert re.search(r"run id:\s+[0-9a-f]{32}", out), out
    assert re.search(r"loss id:\s+focal-[0-9a-f]{12}", out), out
    assert "model version: lossflow-flights v1 (aliases: challenger, champion)" in out
    assert "lossflow ui" in out
    assert re.search(r"test/roc_auc\s+│\s+0\.\d+", out), out
    assert (tmp_path / "mlflow.db").is_file()
    assert list((tmp_path / "runs").glob("*/model/model.onnx"))


def test_bad_override_exits_2_with_the_key_named(tmp_path: Path) -> None:
    lossflow = Path(sys.executable).parent / "lossflow"
    result = subprocess.run(
        [str(lossflow), "train", "loss.gama=3", f"data_dir={tmp_path}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 2
    assert "unknown option 'gama'" in result.stderr
    assert not (tmp_path / "mlflow.db").exists(), "nothing runs on a bad config"
