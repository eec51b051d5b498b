"""``lossflow compare`` through the real entry point: a known answer on digits (the same loss with
another seed is no different), arms that fail without stopping the others, the corrected test
recomputed by hand from the fold scores logged in MLflow, and bad input refused as one message
before any training starts."""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from scipy import stats

from lossflow.tracking import ERROR_TAG, PARENT_RUN_TAG, Runs, default_tracking_uri

ROOT = Path(__file__).resolve().parents[2]
LOSSFLOW = Path(sys.executable).parent / "lossflow"

pytestmark = pytest.mark.slow

ARMS = (
    "arms={ce: {loss: ce}, ce_seed7: {loss: ce, overrides: [trainer.seed=7]}, "
    "diverges: {loss: ce, overrides: [optimizer.lr=1.0e30, trainer.gradient_clip_val=null]}, "
    "wrong_task: {loss: huber}}"
)


def _run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "LOSSFLOW_LOG_FILE": str(tmp_path / "lossflow.log"), "COLUMNS": "200"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run(
        [str(LOSSFLOW), "compare", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )


@pytest.fixture(scope="module")
def digits(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The shipped digits_seeds comparison (ce vs ce with another seed, 5 folds x 2) with two
    arms that cannot work beside them."""
    tmp = tmp_path_factory.mktemp("digits")
    result = _run(
        tmp,
        "compare=digits_seeds",
        ARMS,
        f"data_dir={tmp}",
        "trainer.max_epochs=6",
        "importance.enabled=false",
        "--workers",
        "2",
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    return tmp, result.stdout


def test_the_same_loss_with_another_seed_is_no_different(digits: tuple[Path, str]) -> None:
    _, out = digits
    assert "accuracy (higher is better): stratified CV, 5 folds x 2" in out
    assert "verdict: no detectable difference at this data size" in out
    assert "the design detects a difference of" in out
    for row in ("│ ce ", "│ ce_seed7 ", "│ diverges ", "│ wrong_task "):
        assert row in out, row
    assert "diverges failed: fold r0f0:" in out
    assert "non-finite" in out
    assert "wrong_task failed:" in out
    assert "loss 'huber' fits regression tasks, not a multiclass task" in out
    assert "Traceback" not in out


def _runs(data_dir: Path) -> tuple[Runs, str, list]:  # type: ignore[type-arg]
    tracker = Runs(default_tracking_uri(data_dir), "lossflow-compare")
    runs = tracker.client.search_runs([tracker.experiment_id], max_results=1000)
    parents = [r for r in runs if PARENT_RUN_TAG not in r.data.tags]
    assert len(parents) == 1
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parents[0].info.run_id]
    return tracker, parents[0].info.run_id, children


def test_mlflow_holds_one_parent_with_a_nested_run_per_arm_and_fold(
    digits: tuple[Path, str],
) -> None:
    tracker, parent, children = _runs(digits[0])
    assert tracker.get_run_status(parent) == "FINISHED"
    by_arm: dict[str, list] = {}  # type: ignore[type-arg]
    for run in children:
        by_arm.setdefault(run.data.tags["lossflow.arm"], []).append(run)
    assert {arm: len(runs) for arm, runs in by_arm.items()} == {
        "ce": 10,
        "ce_seed7": 10,
        "diverges": 10,
    }
    assert all(r.info.status == "FINISHED" for r in by_arm["ce"])
    assert all(r.info.status == "FAILED" and ERROR_TAG in r.data.tags for r in by_arm["diverges"])
    history = tracker.client.get_metric_history(by_arm["ce"][0].info.run_id, "val/accuracy")
    assert [m.step for m in history] == list(range(len(history)))
    artifacts = {a.path for a in tracker.client.list_artifacts(parent)}
    assert {"report.html", "comparison.json", "comparison.csv", "tests.csv", "plots"} <= artifacts
    plots = {a.path for a in tracker.client.list_artifacts(parent, "plots")}
    assert {"plots/fold_scores.png", "plots/landscape_1d.png", "plots/loss_vs_margin.png"} <= plots
    report = Path(
        tracker.client.download_artifacts(parent, "report.html", str(digits[0]))
    ).read_text()
    order = ["Verdict", "<h2>Arms</h2>", "Tests between arms", "Ablations", "Loss landscapes",
             "Slices", "Permutation importances"]  # fmt: skip
    positions = [report.index(heading) for heading in order]
    assert positions == sorted(positions)
    table = Path(tracker.client.download_artifacts(parent, "comparison.csv", str(digits[0])))
    rows = {row["arm"]: row for row in csv.DictReader(io.StringIO(table.read_text()))}
    assert rows["wrong_task"]["status"] == "failed"
    assert "fits regression tasks" in rows["wrong_task"]["error"]


def test_the_corrected_test_equals_a_hand_computation_from_the_logged_fold_scores(
    digits: tuple[Path, str],
) -> None:
    tracker, parent, children = _runs(digits[0])
    scores: dict[str, dict[str, float]] = {}
    for run in children:
        if run.info.status == "FINISHED":
            fold = run.data.tags["lossflow.fold"]
            scores.setdefault(run.data.tags["lossflow.arm"], {})[fold] = run.data.metrics[
                "fold/accuracy"
            ]
    folds = sorted(scores["ce"])
    d = [scores["ce"][f] - scores["ce_seed7"][f] for f in folds]
    summary = json.loads(
        Path(
            tracker.client.download_artifacts(parent, "comparison.json", str(digits[0]))
        ).read_text()
    )["comparison"]
    n1, n2, j = summary["n_train"], summary["n_test"], len(d)
    mean = sum(d) / j
    variance = sum((x - mean) ** 2 for x in d) / (j - 1)
    t = mean / math.sqrt((1 / j + n2 / n1) * variance)
    p = 2 * stats.t.sf(abs(t), j - 1)
    table = Path(tracker.client.download_artifacts(parent, "tests.csv", str(digits[0])))
    (row,) = list(csv.DictReader(io.StringIO(table.read_text())))
    assert (row["first"], row["second"]) == ("ce", "ce_seed7")
    assert float(row["t"]) == pytest.approx(t, rel=1e-9)
    assert float(row["p_value"]) == pytest.approx(p, rel=1e-9)
    assert float(row["p_value"]) > 0.05
    assert float(row["naive_p_value"]) < float(row["p_value"])  # the naive test is more confident


def test_too_few_folds_or_arms_are_one_message(tmp_path: Path) -> None:
    for args, message in (
        (
            ["--folds", "1"],
            "command line: cv.folds: cross-validation needs at least 2 folds; got 1",
        ),
        (["loss=focal"], "command line: arms: a comparison needs at least 2 arms (got 1: focal)"),
    ):
        result = _run(tmp_path, *args, f"data_dir={tmp_path}")
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stdout + result.stderr
        assert f"lossflow compare: invalid configuration:\n  {message}" in result.stderr


def test_a_fold_without_a_class_is_refused_before_any_training(tmp_path: Path) -> None:
    rows = tmp_path / "rows.csv"
    positives = (3, 11, 19, 27, 35, 43)
    lines = ["a,b,y"] + [f"{i},{'xy'[i % 2]},{int(i in positives)}" for i in range(60)]
    rows.write_text("\n".join(lines) + "\n")
    result = _run(
        tmp_path,
        "loss=focal,bce",
        f"data_dir={tmp_path / 'data'}",
        "data.source=csv",
        f"data.path={rows}",
        "data.task=binary",
        "data.columns={numeric: [a], categorical: [b], target: y}",
        "data.split={kind: stratified}",
        "data.augment={}",
        "--folds",
        "5",
    )
    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert "Traceback" not in output
    assert re.search(
        r"lossflow compare: class 1 of 'y' has \d rows .* use at most \d folds", result.stderr
    )
    assert not list((tmp_path / "data").glob("compare/*/units"))  # nothing was trained
