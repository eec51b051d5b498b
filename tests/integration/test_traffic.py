"""``lossflow traffic`` against the real service: uvicorn subprocess, real models, SQLite log."""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
from typer.testing import CliRunner

from lossflow.cli import app
from lossflow.predlog import PredictionLog
from lossflow.replay.client import run_traffic
from lossflow.replay.report import TrafficReport
from lossflow.replay.requests import TrafficOptions, is_labelled, unit_id
from lossflow.replay.rows import find_production_data, production_rows, records_of

from .serving_models import Registry, copy_registry, live_service

pytestmark = pytest.mark.slow

TARGET = "delayed"
LOG_TIMEOUT_S = 30.0


@pytest.fixture(scope="module")
def registry(built_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """Two registered versions, and the production rows where a training run keeps them."""
    built = copy_registry(built_registry, tmp_path_factory.mktemp("traffic"))
    source = built.data_dir / "work" / "bce" / "prepared" / "production.parquet"
    target = built.data_dir / "runs" / "replay" / "prepared" / "production.parquet"
    target.parent.mkdir(parents=True)
    shutil.copy(source, target)
    return built


@pytest.fixture(scope="module")
def service(registry: Registry) -> Iterator[str]:
    """``lossflow serve`` on a free port (the ``--host``/``--port`` flags), ready."""
    with live_service(registry.data_dir) as url:
        yield url


def _logged(registry: Registry, report: TrafficReport) -> pd.DataFrame:
    """The log rows of the report's answers, once all are written (the writer batches)."""
    wanted = {a.request_id for a in report.answers}
    log = PredictionLog(f"sqlite:///{registry.data_dir / 'predictions.db'}")
    start = datetime.fromisoformat(report.started_at) - timedelta(minutes=1)
    try:
        deadline = time.monotonic() + LOG_TIMEOUT_S
        while True:
            frame = log.read(start, datetime.now(UTC) + timedelta(minutes=1))
            frame = frame[frame["request_id"].isin(wanted)].set_index("request_id")
            if len(frame) == len(wanted) or time.monotonic() > deadline:
                return frame
            time.sleep(0.2)
    finally:
        log.dispose()


def test_replay_logs_every_answer_with_stable_units_and_delayed_labels(
    registry: Registry, service: str
) -> None:
    frame = production_rows(find_production_data(registry.data_dir), limit=200)
    assert len(frame) == 200
    options = TrafficOptions(rate=200.0, delay_s=0.5, fraction=0.5, seed=3)
    report = run_traffic(frame, service, options)

    assert report.answered == 200, report.errors
    assert (report.sent, report.failed, report.not_sent) == (200, 0, 0)
    assert set(report.answered_by_variant) == {"champion", "challenger"}
    expected_labelled = [k for k in range(200) if is_labelled(k, 0.5, seed=3)]
    assert [a.position for a in report.answers if a.labels is not None] == expected_labelled
    assert report.feedback_due == report.feedback_posted == len(expected_labelled)
    assert report.feedback_by_status == {"201": len(expected_labelled)}
    assert report.latency_p50_ms is not None

    logged = _logged(registry, report)
    assert len(logged) == 200
    features = list(registry.records[0])
    for answer in report.answers:
        row = logged.loc[answer.request_id]
        (position,) = answer.rows
        assert answer.unit_id == row["unit_id"] == unit_id(position)
        assert row["variant"] == answer.variant
        assert row["features"] == records_of(frame.loc[[position]], features)
        if answer.labels is None:
            assert row["labels"] is None
        else:
            assert row["labels"] == [int(frame.loc[position, TARGET])]

    # A second replay of the same rows: the same units, so the same variants (sticky A/B).
    again = run_traffic(frame, service, TrafficOptions(rate=200.0, fraction=0.0))
    assert again.feedback_due == 0
    assert [(a.rows, a.unit_id, a.variant) for a in again.answers] == [
        (a.rows, a.unit_id, a.variant) for a in report.answers
    ]


def test_rejected_rows_are_counted_and_multi_record_feedback_is_stored(
    registry: Registry, service: str
) -> None:
    frame = production_rows(find_production_data(registry.data_dir), months=[12], limit=20)
    frame["distance"] = frame["distance"].astype(object)
    bad = [frame.index[3], frame.index[10]]  # in requests 1 and 5 (two rows per request)
    frame.loc[bad, "distance"] = "far"
    options = TrafficOptions(rate=500.0, delay_s=0.0, records_per_request=2)
    report = run_traffic(frame, service, options)

    assert (report.requests, report.answered, report.not_sent) == (10, 8, 0)
    assert report.failed_by_status == {"422": 2}
    assert any("distance" in error for error in report.errors), report.errors
    assert report.feedback_by_status == {"201": 8}
    logged = _logged(registry, report)
    assert len(logged) == 8
    for answer in report.answers:
        expected = [int(frame.loc[r, TARGET]) for r in answer.rows]
        assert logged.loc[answer.request_id, "labels"] == expected


def test_command_line_replays_and_writes_the_report(
    registry: Registry, service: str, tmp_path: Path
) -> None:
    data = str(find_production_data(registry.data_dir))
    report_path = tmp_path / "report.json"
    runner = CliRunner()
    args = ["traffic", "--url", service, "--data", data, "--rate", "100", "--delay", "0"]
    result = runner.invoke(
        app, [*args, "--months", "11", "--limit", "10", "--json", str(report_path)]
    )
    assert result.exit_code == 0, result.output
    assert "answered" in result.output
    summary = json.loads(report_path.read_text())
    assert (summary["answered"], summary["feedback_by_status"]) == (10, {"201": 10})

    nothing = runner.invoke(app, [*args, "--limit", "0"])
    assert nothing.exit_code == 1, nothing.output
    assert "no rows to replay" in nothing.output
