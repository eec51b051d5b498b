"""The prediction log against real SQLite (WAL, in tmp_path) and a real PostgreSQL server."""

from __future__ import annotations

import os
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa

from lossflow.predlog import (
    READ_COLUMNS,
    BatchWriter,
    FeedbackConflictError,
    LogBackpressureError,
    LogWriteError,
    PredictionLog,
    PredictionLogError,
    PredictionRecord,
    UnknownRequestError,
)

PG_URL = os.environ.get(
    "LOSSFLOW_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def _record(
    i: int,
    *,
    variant: str = "champion",
    n: int = 2,
    ts: datetime | None = None,
    experiment: str = "loss-ab",
) -> PredictionRecord:
    return PredictionRecord(
        request_id=f"req-{i}",
        unit_id=f"unit-{i % 7}",
        ts=ts if ts is not None else T0 + timedelta(seconds=i),
        experiment=experiment,
        variant=variant,
        model_version="3",
        loss_id="focal-1a2b",
        features=[{"x": float(i), "cat": "a", "k": k} for k in range(n)],
        outputs=[{"p": 0.25 + k / 10} for k in range(n)],
        latency_ms=1.5 + i,
    )


@pytest.fixture(scope="module")
def pg_schema() -> Iterator[str]:
    """A fresh schema on the test PostgreSQL server for this module, dropped afterwards."""
    engine = sa.create_engine(PG_URL)
    schema = f"lossflow_test_{uuid.uuid4().hex}"
    try:
        with engine.begin() as conn:
            conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
    except sa.exc.OperationalError as exc:
        engine.dispose()
        message = f"PostgreSQL at {PG_URL} is unreachable: {exc.orig}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message + "; start it or set LOSSFLOW_TEST_POSTGRES_URL")
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA "{schema}" CASCADE'))
        engine.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def plog(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[PredictionLog]:
    """An empty prediction log on each backend (PostgreSQL: fresh tables in the module schema)."""
    if request.param == "sqlite":
        log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    else:
        schema: str = request.getfixturevalue("pg_schema")
        log = PredictionLog(PG_URL.replace("+psycopg", ""), schema=schema)
        log.tables.metadata.drop_all(log.engine)
    log.create_schema()
    try:
        yield log
    finally:
        log.dispose()


def test_sqlite_runs_in_wal_mode_with_normal_sync(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}")
    log.create_schema()
    with log.engine.connect() as conn:
        assert conn.execute(sa.text("PRAGMA journal_mode")).scalar() == "wal"
        assert conn.execute(sa.text("PRAGMA synchronous")).scalar() == 1  # NORMAL
        assert conn.execute(sa.text("PRAGMA foreign_keys")).scalar() == 1
    log.dispose()


def test_sqlite_rejects_schema_and_unknown_backend(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="SQLite has no schemas"):
        PredictionLog(f"sqlite:///{tmp_path / 'p.db'}", schema="x")
    with pytest.raises(ValueError, match="unsupported prediction-log backend 'mysql'"):
        PredictionLog("mysql://u@localhost/db")


def test_record_validation() -> None:
    with pytest.raises(ValueError, match="naive"):
        _record(1, ts=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="2 feature records but 1 outputs"):
        PredictionRecord("r", "u", T0, "e", "a", "1", "l", [{"x": 1}, {"x": 2}], [{"p": 0.1}], 1.0)
    with pytest.raises(ValueError, match=r"latency_ms=-1\.0"):
        PredictionRecord("r", "u", T0, "e", "a", "1", "l", [], [], -1.0)
    shifted = _record(1, ts=datetime(2026, 1, 1, 16, 0, tzinfo=timezone(timedelta(hours=2))))
    assert shifted.ts.tzinfo is UTC
    assert shifted.ts.hour == 14


def test_create_schema_is_idempotent(plog: PredictionLog) -> None:
    plog.write_batch([_record(1)])
    plog.create_schema()
    assert len(plog.read(T0, T0 + timedelta(hours=1))) == 1


def test_round_trip_window_and_variant(plog: PredictionLog) -> None:
    records = [_record(i, variant="champion" if i % 2 else "challenger") for i in range(10)]
    plog.write_batch(list(reversed(records)))

    frame = plog.read(T0 + timedelta(seconds=2), T0 + timedelta(seconds=7))
    assert list(frame.columns) == list(READ_COLUMNS)
    assert list(frame["request_id"]) == [f"req-{i}" for i in range(2, 7)]  # [start, end), by ts
    first = frame.iloc[0]
    assert first["ts"] == T0 + timedelta(seconds=2)
    assert str(frame["ts"].dt.tz) == "UTC"
    assert first["features"] == records[2].features
    assert first["outputs"] == records[2].outputs
    assert first["latency_ms"] == pytest.approx(3.5)
    assert first["unit_id"] == "unit-2"
    assert first["model_version"] == "3"
    assert first["loss_id"] == "focal-1a2b"
    assert first["labels"] is None

    champions = plog.read(T0, T0 + timedelta(hours=1), variant="champion")
    assert list(champions["request_id"]) == [f"req-{i}" for i in (1, 3, 5, 7, 9)]
    assert set(champions["variant"]) == {"champion"}

    empty = plog.read(T0 - timedelta(days=1), T0)
    assert empty.empty
    assert list(empty.columns) == list(READ_COLUMNS)

    with pytest.raises(ValueError, match="naive"):
        plog.read(datetime(2026, 1, 1), T0)


def test_window_bounds_respect_timezones(plog: PredictionLog) -> None:
    plog.write_batch([_record(0)])
    plus_two = timezone(timedelta(hours=2))
    local_start = (T0 - timedelta(minutes=1)).astimezone(plus_two)
    local_end = (T0 + timedelta(minutes=1)).astimezone(plus_two)
    assert list(plog.read(local_start, local_end)["request_id"]) == ["req-0"]
    assert plog.read(local_start, T0.astimezone(plus_two)).empty


def test_duplicate_request_id_writes_nothing(plog: PredictionLog) -> None:
    plog.write_batch([_record(1)])
    with pytest.raises(sa.exc.IntegrityError):
        plog.write_batch([_record(2), _record(1)])
    assert list(plog.read(T0, T0 + timedelta(hours=1))["request_id"]) == ["req-1"]


def test_feedback_idempotent_conflict_unknown_and_count(plog: PredictionLog) -> None:
    plog.write_batch([_record(1, n=2), _record(2, n=3)])

    assert plog.record_feedback("req-1", [1, 0]) is True
    assert plog.record_feedback("req-1", [1, 0]) is False
    with pytest.raises(FeedbackConflictError, match="already has feedback"):
        plog.record_feedback("req-1", [0, 0])
    with pytest.raises(UnknownRequestError, match="req-404"):
        plog.record_feedback("req-404", [1])
    with pytest.raises(ValueError, match="had 3 records but feedback has 2 labels"):
        plog.record_feedback("req-2", [1, 0])

    frame = plog.read(T0, T0 + timedelta(hours=1)).set_index("request_id")
    assert frame.loc["req-1", "labels"] == [1, 0]
    assert frame.loc["req-2", "labels"] is None


def test_batch_writer_four_threads_all_written(plog: PredictionLog) -> None:
    writer = BatchWriter(plog, max_batch=256, max_delay_s=0.02)
    per_thread = 1250
    errors: list[BaseException] = []

    def produce(worker: int) -> None:
        try:
            for j in range(per_thread):
                writer.submit(_record(worker * per_thread + j, n=1))
        except BaseException as exc:  # re-raised in the main thread below
            errors.append(exc)

    threads = [threading.Thread(target=produce, args=(w,)) for w in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    writer.close(timeout=30)
    assert writer.pending == 0

    frame = plog.read(T0, T0 + timedelta(days=1))
    assert len(frame) == 5000
    assert frame["request_id"].is_unique
    assert frame["ts"].is_monotonic_increasing


def test_flush_makes_records_readable(plog: PredictionLog) -> None:
    with BatchWriter(plog, max_batch=1000, max_delay_s=30.0) as writer:
        for i in range(3):
            writer.submit(_record(i))
        writer.flush(timeout=10)  # well before max_delay_s: flush must not wait for it
        assert writer.pending == 0
        assert len(plog.read(T0, T0 + timedelta(hours=1))) == 3
        writer.submit(_record(3))
        writer.flush(timeout=10)
        assert len(plog.read(T0, T0 + timedelta(hours=1))) == 4
    with pytest.raises(PredictionLogError, match="closed"):
        writer.submit(_record(4))


def test_backpressure_raises_and_failed_writes_are_kept(
    plog: PredictionLog, caplog: pytest.LogCaptureFixture
) -> None:
    log = plog
    log.tables.metadata.drop_all(log.engine)  # no tables: every write fails until they come back
    writer = BatchWriter(log, max_batch=1, max_delay_s=0.0, max_queue=5, retry_backoff_s=0.01)
    accepted = 0
    refusal = ""
    for i in range(20):
        try:
            writer.submit(_record(i))
        except LogBackpressureError as exc:
            refusal = str(exc)
            break
        accepted += 1
    else:
        pytest.fail("20 submits into a queue of 5 with a failing database never raised")
    assert "queue is full (5 records waiting)" in refusal
    assert 5 <= accepted <= 6  # queue bound plus at most the one batch in flight
    assert writer.pending == accepted
    with pytest.raises(TimeoutError, match="not yet written"):
        writer.flush(timeout=0.3)

    log.create_schema()  # the database recovers: the held and queued records are written
    writer.close(timeout=30)
    assert writer.pending == 0
    frame = log.read(T0, T0 + timedelta(hours=1))
    assert list(frame["request_id"]) == [f"req-{i}" for i in range(accepted)]
    assert any(
        "failed 3 times" in r.getMessage() and r.exc_info is not None for r in caplog.records
    )


def test_close_hands_back_records_it_could_not_write(plog: PredictionLog) -> None:
    plog.tables.metadata.drop_all(plog.engine)  # no tables: writes keep failing
    writer = BatchWriter(plog, max_batch=2, max_delay_s=0.0, retry_backoff_s=0.01)
    for i in range(5):
        writer.submit(_record(i))
    with pytest.raises(LogWriteError, match="5 prediction records could not be written") as info:
        writer.close(timeout=0.5)
    assert sorted(r.request_id for r in info.value.records) == [f"req-{i}" for i in range(5)]


def test_every_row_carries_its_experiment_and_reads_filter_by_it(plog: PredictionLog) -> None:
    plog.write_batch(
        [_record(i, experiment="loss-ab" if i < 6 else "loss-ab-2") for i in range(10)]
    )
    window = (T0, T0 + timedelta(hours=1))
    frame = plog.read(*window)
    assert frame["experiment"].tolist() == ["loss-ab"] * 6 + ["loss-ab-2"] * 4
    current = plog.read(*window, variant="champion", experiment="loss-ab-2")
    assert current["request_id"].tolist() == [f"req-{i}" for i in range(6, 10)]


def _plan(plog: PredictionLog, start: datetime, end: datetime) -> str:
    p = plog.predictions
    query = sa.select(p.c.request_id).where(
        p.c.variant == "champion", p.c.ts >= start, p.c.ts < end
    )
    compiled = query.compile(plog.engine, compile_kwargs={"literal_binds": True})
    with plog.engine.connect() as conn:
        if plog.engine.dialect.name == "postgresql":
            conn.execute(sa.text("SET enable_seqscan = off"))  # a tiny table would be scanned
            conn.execute(
                sa.text("ANALYZE " + plog.engine.dialect.identifier_preparer.format_table(p))
            )
            rows = conn.execute(sa.text(f"EXPLAIN {compiled}")).scalars().all()
        else:
            rows = [r[-1] for r in conn.execute(sa.text(f"EXPLAIN QUERY PLAN {compiled}"))]
    return "\n".join(str(r) for r in rows)


def test_a_variant_window_is_a_range_scan_of_the_variant_ts_index(plog: PredictionLog) -> None:
    plog.write_batch([_record(i, variant=("champion", "challenger")[i % 2]) for i in range(200)])
    plan = _plan(plog, T0 + timedelta(seconds=20), T0 + timedelta(seconds=80))
    assert "ix_predictions_variant_ts" in plan, plan
    if plog.engine.dialect.name == "sqlite":
        assert "variant=? AND ts>? AND ts<?" in plan.replace("'", "?"), plan


def test_a_log_written_by_an_older_lossflow_is_upgraded_in_place(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as conn:  # the layout lossflow wrote before the experiment column
        conn.execute(
            sa.text(
                "CREATE TABLE predictions (request_id VARCHAR(128) PRIMARY KEY, unit_id "
                "VARCHAR(256) NOT NULL, ts DATETIME NOT NULL, variant VARCHAR(64) NOT NULL, "
                "model_version VARCHAR(64) NOT NULL, loss_id VARCHAR(128) NOT NULL, features "
                "JSON NOT NULL, outputs JSON NOT NULL, latency_ms FLOAT NOT NULL, n_records "
                "INTEGER NOT NULL)"
            )
        )
        conn.execute(sa.text("CREATE INDEX ix_predictions_ts ON predictions (ts)"))
        conn.execute(sa.text("CREATE INDEX ix_predictions_variant ON predictions (variant)"))
        conn.execute(
            sa.text(
                "INSERT INTO predictions VALUES ('old-1', 'u', '2026-03-01 12:00:00.000000', "
                "'champion', '1', 'focal-1', '[{\"x\": 1}]', '[{\"p\": 0.5}]', 1.0, 1)"
            )
        )
    engine.dispose()
    log = PredictionLog(f"sqlite:///{path}")
    log.create_schema()
    log.write_batch([_record(1)])
    frame = log.read(T0, T0 + timedelta(hours=1))
    assert frame.set_index("request_id")["experiment"].to_dict() == {
        "old-1": "",
        "req-1": "loss-ab",
    }
    indexes = {ix["name"] for ix in sa.inspect(log.engine).get_indexes("predictions")}
    assert indexes == {"ix_predictions_ts", "ix_predictions_variant_ts"}
    log.create_schema()  # idempotent
    log.dispose()


def test_a_poison_record_is_dead_lettered_and_the_rest_are_written(plog: PredictionLog) -> None:
    plog.write_batch([_record(3)])  # req-3 exists: a batch holding it again can never commit
    with BatchWriter(plog, max_batch=64, max_delay_s=0.5) as writer:
        for i in range(10):
            writer.submit(_record(i))
        writer.flush(timeout=30)
        assert writer.running
        assert writer.dead_lettered == 1
        writer.submit(_record(42))  # the writer keeps going
        writer.flush(timeout=30)
    frame = plog.read(T0, T0 + timedelta(hours=1))
    assert sorted(frame["request_id"]) == sorted([f"req-{i}" for i in range(10)] + ["req-42"])
    letters = plog.read_dead_letters()
    assert letters["request_id"].tolist() == ["req-3"]
    assert "IntegrityError" in letters["error"].iloc[0]
    assert letters["record"].iloc[0]["features"] == _record(3).features
    assert plog.replay_dead_letters() == (0, 1), "still a duplicate: it stays"
    with plog.engine.begin() as conn:  # the operator removes the conflicting row
        conn.execute(sa.delete(plog.predictions).where(plog.predictions.c.request_id == "req-3"))
    assert plog.replay_dead_letters() == (1, 0)
    assert plog.read_dead_letters().empty
    replayed = plog.read(T0, T0 + timedelta(hours=1)).set_index("request_id").loc["req-3"]
    assert replayed["experiment"] == "loss-ab"
    assert replayed["latency_ms"] == _record(3).latency_ms


def test_a_value_too_long_for_its_column_is_dead_lettered_on_postgresql(
    pg_schema: str,
) -> None:
    log = PredictionLog(PG_URL, schema=pg_schema)
    log.tables.metadata.drop_all(log.engine)
    log.create_schema()
    try:
        with BatchWriter(log, max_batch=8, max_delay_s=0.2) as writer:
            writer.submit(_record(1))
            writer.submit(_record(2, variant="v" * 100))  # variant is VARCHAR(64): a DataError
            writer.submit(_record(3))
            writer.flush(timeout=30)
            assert writer.dead_lettered == 1
        assert sorted(log.read(T0, T0 + timedelta(hours=1))["request_id"]) == ["req-1", "req-3"]
        assert "DataError" in log.read_dead_letters()["error"].iloc[0]
    finally:
        log.dispose()
