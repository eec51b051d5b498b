"""``lossflow traffic`` without a service: rows, unit ids, labelling, JSON records, accounting."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import os
from collections import Counter
from datetime import datetime
from pathlib import Path

import httpx
import numpy as np
import orjson
import pandas as pd
import pytest
from rich.console import Console
from typer.testing import CliRunner

from lossflow.cli import app
from lossflow.replay.client import replay_traffic
from lossflow.replay.errors import TrafficError
from lossflow.replay.report import TrafficReport, summary_table
from lossflow.replay.requests import (
    DEFAULT_UNITS,
    ServiceInfo,
    TrafficOptions,
    due_offset,
    is_labelled,
    plan_requests,
    retry_after_s,
    unit_id,
)
from lossflow.replay.rows import (
    ROW_INDEX,
    find_production_data,
    json_value,
    label_value,
    production_rows,
    records_of,
)

TIME = "scheduled_departure"
INFO = ServiceInfo(
    features=("distance", "carrier"),
    target="delayed",
    task="binary",
    prediction_log=True,
    max_records=4,
    variants=("champion", "challenger"),
)


def _rows(n: int = 8) -> pd.DataFrame:
    """``n`` flights whose file order is the reverse of their time order, over Sep-Dec."""
    times = pd.date_range("2013-09-01", "2013-12-31", periods=n)[::-1]
    return pd.DataFrame(
        {
            "distance": np.arange(n, dtype=np.int64) * 100,
            "carrier": ["AA", None, "DL", "UA"] * (n // 4),
            "temp": [np.nan, 1.5] * (n // 2),
            "delayed": [0, 1] * (n // 2),
            TIME: times,
        }
    )


def _frame(n: int = 8) -> pd.DataFrame:
    frame = _rows(n)
    frame.index.name = ROW_INDEX
    return frame


# --- unit ids and labelling ------------------------------------------------------------------


def test_unit_ids_are_pinned_stable_and_spread_over_the_units() -> None:
    ids = [unit_id(i) for i in range(10_000)]
    # Pinned: BLAKE2b, not Python's randomised hash(), so every machine and run agrees.
    assert ids[:3] == ["unit-1475", "unit-3424", "unit-2919"]
    assert ids == [unit_id(i, DEFAULT_UNITS) for i in range(10_000)]
    counts = Counter(ids)
    assert all(0 <= int(u.removeprefix("unit-")) < DEFAULT_UNITS for u in counts)
    # 10k rows into 5000 buckets: about 5000 * (1 - e^-2) = 4323 distinct units.
    assert 4_100 <= len(counts) <= 4_550
    assert max(counts.values()) <= 12


def test_unit_ids_respect_the_unit_count() -> None:
    assert {unit_id(i, 1) for i in range(100)} == {"unit-0"}
    assert len({unit_id(i, 10) for i in range(1_000)}) == 10
    with pytest.raises(ValueError, match="units must be >= 1"):
        unit_id(0, 0)


@pytest.mark.parametrize("fraction", [0.1, 0.3, 0.5, 0.9])
def test_labelled_fraction_is_close_to_the_requested_one_and_deterministic(
    fraction: float,
) -> None:
    chosen = [is_labelled(k, fraction, seed=7) for k in range(10_000)]
    assert abs(sum(chosen) / len(chosen) - fraction) <= 0.02
    assert chosen == [is_labelled(k, fraction, seed=7) for k in range(10_000)]
    assert chosen != [is_labelled(k, fraction, seed=8) for k in range(10_000)]


def test_labelled_extremes_and_invalid_fraction() -> None:
    assert all(is_labelled(k, 1.0) for k in range(1_000))
    assert not any(is_labelled(k, 0.0) for k in range(1_000))
    with pytest.raises(ValueError, match=r"within \[0, 1\]"):
        is_labelled(0, 1.5)


# --- JSON values and labels ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (None, None),
        (float("nan"), None),
        (np.float32("nan"), None),
        (float("inf"), None),
        (pd.NA, None),
        (pd.NaT, None),
        (np.int64(7), 7),
        (np.int8(-3), -3),
        (np.float64(1.5), 1.5),
        (np.float32(0.25), 0.25),
        (np.bool_(True), True),
        ("JFK", "JFK"),
        (pd.Timestamp("2013-09-01 06:00"), "2013-09-01T06:00:00"),
    ],
)
def test_json_value_turns_pandas_and_numpy_cells_into_python(
    value: object, expected: object
) -> None:
    converted = json_value(value)
    assert converted == expected
    assert type(converted) is type(expected)


def test_json_value_rejects_what_a_record_cannot_carry() -> None:
    with pytest.raises(TypeError, match="cannot send a list value"):
        json_value([1, 2])


def test_records_hold_exactly_the_features_in_order_as_plain_json() -> None:
    frame = _frame(4)
    records = records_of(frame, ["temp", "carrier", "distance"])
    assert [list(r) for r in records] == [["temp", "carrier", "distance"]] * 4
    assert records[0] == {"temp": None, "carrier": "AA", "distance": 0}
    assert records[1] == {"temp": 1.5, "carrier": None, "distance": 100}
    assert json.loads(json.dumps(records)) == records  # strict JSON: no NaN
    with pytest.raises(TrafficError, match=r"lack features the service takes: \['wind'\]"):
        records_of(frame, ["distance", "wind"])


def test_labels_take_the_form_of_the_task() -> None:
    assert label_value(np.int64(1), "binary") == 1
    assert label_value(True, "binary") == 1
    assert label_value(0.0, "binary") == 0
    assert label_value(np.float64("nan"), "binary") is None
    assert label_value(np.int64(3), "multiclass") == 3
    assert label_value(3.0, "multiclass") == 3
    assert label_value("setosa", "multiclass") == "setosa"
    assert label_value(np.int64(12), "regression") == 12.0
    assert isinstance(label_value(np.int64(12), "regression"), float)
    with pytest.raises(ValueError, match="binary targets are 0 or 1"):
        label_value(2, "binary")
    with pytest.raises(ValueError, match="regression targets are numbers"):
        label_value("late", "regression")


# --- rows ------------------------------------------------------------------------------------


def test_rows_come_in_time_order_indexed_by_their_position_in_the_file(tmp_path: Path) -> None:
    path = tmp_path / "production.parquet"
    _rows(8).to_parquet(path, index=False)
    frame = production_rows(path)
    assert frame.index.tolist() == [7, 6, 5, 4, 3, 2, 1, 0]
    assert frame[TIME].is_monotonic_increasing
    assert production_rows(path, limit=3).index.tolist() == [7, 6, 5]


def test_month_filter_keeps_only_those_months(tmp_path: Path) -> None:
    path = tmp_path / "production.parquet"
    rows = _rows(40)
    rows.to_parquet(path, index=False)
    frame = production_rows(path, months=[9, 12])
    assert set(frame[TIME].dt.month) == {9, 12}
    expected = rows.index[rows[TIME].dt.month.isin([9, 12])]
    assert sorted(frame.index) == sorted(expected)
    assert production_rows(path, months=[1]).empty


def test_csv_rows_with_text_timestamps_and_a_named_time_column(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    rows = _rows(8).rename(columns={TIME: "when"})
    rows.to_csv(path, index=False)
    frame = production_rows(path, months=[10], time_column="when")
    assert not frame.empty
    assert set(frame["when"].dt.month) == {10}
    with pytest.raises(ValueError, match="no known time column"):
        production_rows(path, months=[10])
    with pytest.raises(ValueError, match="time column 'at' is not in"):
        production_rows(path, time_column="at")


def test_row_arguments_are_checked(tmp_path: Path) -> None:
    path = tmp_path / "production.parquet"
    _rows(8).to_parquet(path, index=False)
    with pytest.raises(ValueError, match=r"months are 1 to 12; got \[13\]"):
        production_rows(path, months=[13])
    with pytest.raises(ValueError, match="limit must be >= 0"):
        production_rows(path, limit=-1)
    other = tmp_path / "rows.json"
    other.write_text("[]")
    with pytest.raises(ValueError, match=r"unsupported file type; give a \.parquet or \.csv"):
        production_rows(other)


def test_missing_data_tells_the_user_to_train(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="run `lossflow train`"):
        production_rows(tmp_path / "nope.parquet")
    with pytest.raises(FileNotFoundError, match=r"run `lossflow train` first .* --data PATH"):
        find_production_data(tmp_path)


def test_the_newest_production_file_is_found(tmp_path: Path) -> None:
    paths = []
    for i, run in enumerate(["b", "a", "c"]):
        path = tmp_path / "runs" / run / "prepared" / "production.parquet"
        path.parent.mkdir(parents=True)
        path.write_bytes(b"")
        os.utime(path, (1_000_000 + i, 1_000_000 + i))
        paths.append(path)
    os.utime(paths[1], (2_000_000, 2_000_000))
    assert find_production_data(tmp_path) == paths[1]


# --- planning --------------------------------------------------------------------------------


def test_plan_groups_rows_labels_and_units() -> None:
    frame = _frame(8).sort_values(TIME)  # positions 7, 6, ..., 0
    plan = plan_requests(frame, INFO, TrafficOptions(records_per_request=3, seed=1))
    assert [p.rows for p in plan] == [(7, 6, 5), (4, 3, 2), (1, 0)]
    assert [p.position for p in plan] == [0, 1, 2]
    assert [p.unit_id for p in plan] == [unit_id(7), unit_id(4), unit_id(1)]
    body = orjson.loads(plan[2].body)
    assert body == {
        "unit_id": unit_id(1),
        "records": [{"distance": 100, "carrier": None}, {"distance": 0, "carrier": "AA"}],
    }
    assert plan[0].labels == (1, 0, 1)
    assert plan[2].labels == (1, 0)


def test_a_replay_clock_sends_each_requests_own_time() -> None:
    frame = _frame(4).sort_values(TIME)
    clocked = dataclasses.replace(INFO, replay_clock=True)
    plan = plan_requests(frame, clocked, TrafficOptions(records_per_request=2, clock=TIME))
    first = orjson.loads(plan[0].body)
    assert first["ts"] == "2013-09-01T00:00:00+00:00" == plan[0].ts
    assert [orjson.loads(p.body)["ts"] for p in plan] == [p.ts for p in plan]
    assert plan[1].ts is not None
    assert plan[1].ts > plan[0].ts
    with pytest.raises(ValueError, match="replay_clock=true"):
        plan_requests(frame, INFO, TrafficOptions(clock=TIME))
    with pytest.raises(ValueError, match="no such column"):
        plan_requests(frame, clocked, TrafficOptions(clock="when"))
    assert "ts" not in orjson.loads(plan_requests(frame, clocked, TrafficOptions())[0].body)


def test_plan_labels_a_deterministic_fraction() -> None:
    frame = _frame(400)
    options = TrafficOptions(fraction=0.25, seed=5)
    plan = plan_requests(frame, INFO, options)
    labelled = [p.position for p in plan if p.labels is not None]
    assert labelled == [k for k in range(400) if is_labelled(k, 0.25, seed=5)]
    assert labelled == [p.position for p in plan_requests(frame, INFO, options) if p.labels]


def test_plan_without_a_target_or_a_log_has_no_feedback() -> None:
    frame = _frame(4)
    assert all(
        p.labels is None
        for p in plan_requests(frame.drop(columns="delayed"), INFO, TrafficOptions())
    )
    no_log = dataclasses.replace(INFO, prediction_log=False)
    assert all(p.labels is None for p in plan_requests(frame, no_log, TrafficOptions()))
    frame.loc[1, "delayed"] = np.nan
    plan = plan_requests(frame, INFO, TrafficOptions())
    assert [p.labels for p in plan] == [(0,), None, (0,), (1,)]


def test_plan_refuses_requests_larger_than_the_service_takes() -> None:
    with pytest.raises(ValueError, match="exceeds the service's limit of 4 records"):
        plan_requests(_frame(8), INFO, TrafficOptions(records_per_request=5))


def test_plan_needs_rows_indexed_by_position() -> None:
    frame = _frame(4).set_index(TIME)
    with pytest.raises(ValueError, match="read the rows with production_rows"):
        plan_requests(frame, INFO, TrafficOptions())


def test_service_info_must_come_from_a_lossflow_service() -> None:
    with pytest.raises(TrafficError, match="did not describe a lossflow service"):
        ServiceInfo.from_json({"status": "ok"})
    info = ServiceInfo.from_json(
        {
            "features": ["distance", "carrier"],
            "target": "delayed",
            "task": "binary",
            "prediction_log": True,
            "limits": {"max_records": 4, "max_body_bytes": 1024},
            "variants": {"champion": {}, "challenger": {}},
        }
    )
    assert info == INFO


# --- schedule and options --------------------------------------------------------------------


def test_schedule_is_open_loop() -> None:
    assert [due_offset(k, 20.0) for k in (0, 1, 20, 200)] == [0.0, 0.05, 1.0, 10.0]


@pytest.mark.parametrize(
    ("header", "expected"),
    [("3", 3.0), ("0.5", 0.5), (" 2 ", 2.0), ("-1", 1.0), ("nan", 1.0), ("soon", 1.0)],
)
def test_retry_after_seconds(header: str, expected: float) -> None:
    assert retry_after_s(header, cap=30.0) == expected


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0.0}, "rate must be a positive number"),
        ({"rate": math.inf}, "rate must be a positive number"),
        ({"concurrency": 0}, "concurrency must be >= 1"),
        ({"records_per_request": 0}, "records_per_request must be >= 1"),
        ({"fraction": -0.1}, r"fraction must be within \[0, 1\]"),
        ({"delay_s": -1.0}, "delay_s must be a finite number >= 0"),
        ({"units": 0}, "units must be >= 1"),
    ],
)
def test_options_are_checked(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        TrafficOptions(**kwargs)  # type: ignore[arg-type]


# --- accounting of answers the real service cannot be made to give on demand -----------------


def _info_payload() -> dict[str, object]:
    return {
        "features": list(INFO.features),
        "target": INFO.target,
        "task": INFO.task,
        "prediction_log": True,
        "limits": {"max_records": 4},
        "variants": {"champion": {}},
    }


def test_503_is_retried_and_every_outcome_is_counted() -> None:
    """A stand-in transport: the real service's 503 (log backpressure) and dropped connections
    cannot be produced deterministically; the integration test replays against the real one."""
    attempts: Counter[int] = Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json=_info_payload())
        if request.url.path == "/feedback":
            request_id = orjson.loads(request.content)["request_id"]
            return httpx.Response(404 if request_id == "r-3" else 201, json={"stored": True})
        distance = orjson.loads(request.content)["records"][0]["distance"]
        k = distance // 100
        attempts[k] += 1
        if k == 1 and attempts[k] == 1:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"})
        if k == 2:
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"detail": "busy"})
        if k == 4:
            return httpx.Response(422, json={"detail": [{"msg": "bad distance"}]})
        if k == 5:
            raise httpx.ConnectError("connection reset", request=request)
        return httpx.Response(200, json={"request_id": f"r-{k}", "variant": "champion"})

    frame = _frame(8).sort_index()
    options = TrafficOptions(rate=1_000.0, delay_s=0.0, max_retries=2)
    report = asyncio.run(
        replay_traffic(frame, "http://svc", options, transport=httpx.MockTransport(handler))
    )
    assert (report.requests, report.sent, report.not_sent) == (8, 8, 0)
    assert report.answered == 5
    assert report.failed_by_status == {"503": 1, "422": 1, "ConnectError": 1}
    assert report.failed == 3
    assert (attempts[1], attempts[2]) == (2, 3)
    assert report.retries == 3
    assert report.answered_by_variant == {"champion": 5}
    assert [a.rows for a in report.answers] == [(0,), (1,), (3,), (6,), (7,)]
    assert report.feedback_due == report.feedback_posted == 5
    assert report.feedback_by_status == {"201": 4, "404": 1}
    assert any("bad distance" in e for e in report.errors)
    assert report.latency_p50_ms is not None
    assert not report.interrupted


def test_a_stopped_replay_reports_what_was_not_sent() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json=_info_payload())
        return httpx.Response(200, json={"request_id": "r", "variant": "champion"})

    async def stopped() -> TrafficReport:
        stop = asyncio.Event()
        stop.set()
        return await replay_traffic(
            _frame(8), "http://svc", stop=stop, transport=httpx.MockTransport(handler)
        )

    report = asyncio.run(stopped())
    assert report.interrupted
    assert (report.sent, report.not_sent) == (0, 8)


def test_summary_is_json_and_the_table_shows_it() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/info":
            return httpx.Response(200, json={**_info_payload(), "prediction_log": False})
        return httpx.Response(200, json={"request_id": "r", "variant": "champion"})

    report = asyncio.run(
        replay_traffic(
            _frame(4),
            "http://svc",
            TrafficOptions(rate=1_000.0),
            transport=httpx.MockTransport(handler),
        )
    )
    summary = report.summary()
    assert "answers" not in summary
    assert json.loads(json.dumps(summary))["answered"] == 4
    datetime.fromisoformat(summary["started_at"])
    console = Console(record=True, width=200)
    console.print(summary_table(report))
    text = console.export_text()
    assert "champion: 4" in text
    assert "without a prediction log" in text


# --- command line (no service needed) --------------------------------------------------------


def test_cli_names_missing_data(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["traffic", "--data", str(tmp_path / "none.parquet")])
    assert result.exit_code == 2, result.output
    assert "lossflow train" in result.output


def test_cli_rejects_bad_options(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["traffic", "--rate", "0", "--data", str(tmp_path)])
    assert result.exit_code == 2, result.output
    assert "rate must be a positive number" in result.output
