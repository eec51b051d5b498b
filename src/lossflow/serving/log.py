"""Prediction log: every served prediction and its later feedback, in SQLite or PostgreSQL.

One SQLAlchemy Core code path serves both backends. SQLite (the embedded default) runs in WAL mode
with ``synchronous=NORMAL`` and foreign keys on, set on every new connection; PostgreSQL URLs are
driven by psycopg 3 (``postgresql://`` is rewritten to ``postgresql+psycopg://``). Timestamps are
stored in UTC and always come back timezone-aware.

Writes leave the request path through :class:`BatchWriter`: ``submit`` is one non-blocking
``Queue.put``; a background thread writes batches of up to ``max_batch`` records, or whatever
arrived within ``max_delay_s`` of the first record of a batch, in one transaction each.

Durability:

* A record is persisted once its batch commits. Until then it lives only in process memory, so a
  SIGKILL (or power loss) loses at most what is queued or in flight: the current batch (at most
  ``max_batch`` records) plus whatever arrived since, which in steady state is what arrived within
  about ``max_delay_s``. While the database is failing, the backlog grows up to ``max_queue`` and
  then ``submit`` raises :class:`LogBackpressureError`, so the caller always knows.
* A failed write is retried with exponential backoff (``write_attempts`` tries). If every try
  fails the error is logged with ``logging.exception``, the batch is kept in memory and retried
  ahead of newer records (order is preserved) until it is written; nothing is dropped.
* ``close()`` (call it from the SIGTERM handler or the app's shutdown hook) drains the queue and
  stops the thread. If records still cannot be written within its timeout it raises
  :class:`LogWriteError` carrying the unwritten records, so the caller can dump them elsewhere.
"""

from __future__ import annotations

import json
import logging
import math
import queue
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.engine import Dialect
from sqlalchemy.exc import IntegrityError

_log = logging.getLogger(__name__)

READ_COLUMNS: tuple[str, ...] = (
    "request_id",
    "unit_id",
    "ts",
    "variant",
    "model_version",
    "loss_id",
    "features",
    "outputs",
    "latency_ms",
    "labels",
)


class PredictionLogError(RuntimeError):
    """Base class of the prediction log's errors."""


class UnknownRequestError(PredictionLogError, KeyError):
    """Feedback names a request id that was never logged (or is not written yet)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class FeedbackConflictError(PredictionLogError):
    """Feedback for a request already exists with different labels."""


class LogBackpressureError(PredictionLogError):
    """The writer's queue is full: the database is not keeping up or is failing."""


class LogWriteError(PredictionLogError):
    """Records could not be written before a deadline; they are in ``records``, not dropped."""

    def __init__(self, message: str, records: Sequence[PredictionRecord]) -> None:
        super().__init__(message)
        self.records: list[PredictionRecord] = list(records)


def _require_utc(value: datetime, name: str) -> datetime:
    if not isinstance(value, datetime):
        raise TypeError(f"{name} must be a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(
            f"{name}={value.isoformat()} is naive; pass a timezone-aware datetime "
            "(e.g. datetime.now(UTC))"
        )
    return value.astimezone(UTC)


@dataclass(frozen=True)
class PredictionRecord:
    """One served request.

    Args:
        request_id: unique id of the request; feedback joins on it.
        unit_id: the routed unit (user, session, device).
        ts: when the request was answered; timezone-aware, normalised to UTC.
        variant: A/B variant that answered (e.g. ``champion``).
        model_version: registry version of the model that answered.
        loss_id: stable id of the loss the model was trained with.
        features: the request's raw records (JSON-serialisable), one dict per record.
        outputs: the model's outputs, one dict per record.
        latency_ms: time to answer, milliseconds.
    """

    request_id: str
    unit_id: str
    ts: datetime
    variant: str
    model_version: str
    loss_id: str
    features: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    latency_ms: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", _require_utc(self.ts, "ts"))
        if not self.request_id:
            raise ValueError("request_id is empty; every prediction needs a unique request id")
        if len(self.outputs) != len(self.features):
            raise ValueError(
                f"request {self.request_id!r} has {len(self.features)} feature records but "
                f"{len(self.outputs)} outputs; log one output per record"
            )
        if not math.isfinite(self.latency_ms) or self.latency_ms < 0:
            raise ValueError(
                f"latency_ms={self.latency_ms} for request {self.request_id!r}; "
                "it must be finite and >= 0"
            )

    def to_row(self) -> dict[str, Any]:
        """The row written to the ``predictions`` table."""
        return {
            "request_id": self.request_id,
            "unit_id": self.unit_id,
            "ts": self.ts,
            "variant": self.variant,
            "model_version": self.model_version,
            "loss_id": self.loss_id,
            "features": self.features,
            "outputs": self.outputs,
            "latency_ms": float(self.latency_ms),
            "n_records": len(self.features),
        }


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (naive UTC text on SQLite, timestamptz elsewhere)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """SQLite stores naive text; give it a naive DateTime."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.DateTime())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive values; store UTC."""
        if value is None:
            return None
        utc = _require_utc(value, "timestamp")
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return aware UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


def _build_metadata(schema: str | None) -> tuple[sa.MetaData, sa.Table, sa.Table]:
    metadata = sa.MetaData(schema=schema)
    predictions = sa.Table(
        "predictions",
        metadata,
        sa.Column("request_id", sa.String(128), primary_key=True),
        sa.Column("unit_id", sa.String(256), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False, index=True),
        sa.Column("variant", sa.String(64), nullable=False, index=True),
        sa.Column("model_version", sa.String(64), nullable=False),
        sa.Column("loss_id", sa.String(128), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=False),
        sa.Column("n_records", sa.Integer(), nullable=False),
    )
    fk_target = f"{schema}.predictions.request_id" if schema else "predictions.request_id"
    feedback = sa.Table(
        "feedback",
        metadata,
        sa.Column(
            "request_id",
            sa.String(128),
            sa.ForeignKey(fk_target, ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("ts", UTCDateTime(), nullable=False),
    )
    return metadata, predictions, feedback


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=10000")
    finally:
        cursor.close()


_JSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS


def _json_text(value: Any) -> str:
    """JSON columns are written with orjson (the writer thread's main cost with stdlib json)."""
    return orjson.dumps(value, option=_JSON_OPTIONS).decode()


def _normalise_labels(labels: list[Any]) -> Any:
    try:
        return json.loads(json.dumps(labels))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"labels must be JSON-serialisable: {exc}") from exc


class PredictionLog:
    """The ``predictions`` and ``feedback`` tables behind one SQLAlchemy engine.

    Args:
        url: SQLAlchemy URL, e.g. ``sqlite:///data/predictions.db`` or
            ``postgresql+psycopg://user@host/db`` (``postgresql://`` gets the psycopg driver).
        schema: PostgreSQL schema holding the tables (default: the search path). SQLite has
            none; passing one there raises ``ValueError``.
    """

    def __init__(self, url: str, schema: str | None = None) -> None:
        parsed = sa.make_url(url)
        backend = parsed.get_backend_name()
        json_options: dict[str, Any] = {
            "json_serializer": _json_text,
            "json_deserializer": orjson.loads,
        }
        if backend in ("postgresql", "postgres"):
            parsed = parsed.set(drivername="postgresql+psycopg")
            self.engine = sa.create_engine(parsed, pool_pre_ping=True, **json_options)
        elif backend == "sqlite":
            if schema is not None:
                raise ValueError(
                    f"schema={schema!r} given for SQLite URL {url!r}; SQLite has no schemas, "
                    "use a separate database file instead"
                )
            self.engine = sa.create_engine(parsed, **json_options)
            sa.event.listen(self.engine, "connect", _sqlite_pragmas)
        else:
            raise ValueError(
                f"unsupported prediction-log backend {backend!r} in {url!r}; "
                "use sqlite:///path.db or postgresql+psycopg://..."
            )
        self.schema = schema
        self.metadata, self.predictions, self.feedback = _build_metadata(schema)
        preparer = self.engine.dialect.identifier_preparer
        columns = [preparer.quote(c.name) for c in self.predictions.columns]
        into = f"INSERT INTO {preparer.format_table(self.predictions)} ({', '.join(columns)}) "
        if backend == "sqlite":
            # One statement per batch over a JSON array of rows: sqlite3's executemany releases
            # and retakes the GIL once per row, which stalls the request path at every row.
            picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
            self._insert_sql = f"{into}SELECT {picks} FROM json_each(?)"
        else:
            self._insert_sql = f"{into}VALUES ({', '.join(['%s'] * len(columns))})"

    def create_schema(self) -> None:
        """Create the PostgreSQL schema (if named), tables and indexes when missing (idempotent)."""
        if self.schema is not None:
            with self.engine.begin() as conn:
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
        self.metadata.create_all(self.engine, checkfirst=True)

    def write_batch(self, records: Sequence[PredictionRecord]) -> None:
        """Insert records in one transaction (all or none): one statement on SQLite, one
        executemany on PostgreSQL.

        Raises:
            sqlalchemy.exc.IntegrityError: a request id is already logged (nothing is written).
        """
        if not records:
            return
        # Pre-encoded rows straight to the driver: SQLAlchemy's per-row parameter processing
        # cost 3x the insert itself, and this thread shares the GIL with the request path.
        if self.engine.dialect.name == "sqlite":
            # Stored as SQLAlchemy stores them on SQLite: naive UTC text with microseconds, JSON
            # columns as JSON text (json_extract returns nested JSON as text).
            payload = orjson.dumps(
                [
                    [
                        r.request_id,
                        r.unit_id,
                        r.ts.replace(tzinfo=None).isoformat(" ", "microseconds"),
                        r.variant,
                        r.model_version,
                        r.loss_id,
                        r.features,
                        r.outputs,
                        float(r.latency_ms),
                        len(r.features),
                    ]
                    for r in records
                ],
                option=_JSON_OPTIONS,
            ).decode()
            with self.engine.begin() as conn:
                conn.exec_driver_sql(self._insert_sql, (payload,))
            return
        rows = [
            (
                r.request_id,
                r.unit_id,
                r.ts,
                r.variant,
                r.model_version,
                r.loss_id,
                _json_text(r.features),
                _json_text(r.outputs),
                float(r.latency_ms),
                len(r.features),
            )
            for r in records
        ]
        with self.engine.begin() as conn:
            conn.exec_driver_sql(self._insert_sql, rows)

    def record_feedback(self, request_id: str, labels: list[Any]) -> bool:
        """Attach ground-truth labels (one per record of the request) to a logged prediction.

        Returns:
            ``True`` if stored, ``False`` if the same labels were already stored.

        Raises:
            UnknownRequestError: no prediction with this request id is logged.
            ValueError: the number of labels differs from the request's number of records.
            FeedbackConflictError: different labels are already stored for this request.
        """
        wanted = _normalise_labels(labels)
        with self.engine.begin() as conn:
            n_records = conn.execute(
                sa.select(self.predictions.c.n_records).where(
                    self.predictions.c.request_id == request_id
                )
            ).scalar_one_or_none()
            if n_records is None:
                raise UnknownRequestError(
                    f"no prediction logged with request_id={request_id!r}; feedback must name "
                    "the request id returned by the prediction (and its log write must be flushed)"
                )
            if len(wanted) != n_records:
                raise ValueError(
                    f"request {request_id!r} had {n_records} records but feedback has "
                    f"{len(wanted)} labels; send exactly one label per record"
                )
            existing = self._stored_labels(conn, request_id)
            if existing is not None:
                return self._same_or_conflict(request_id, existing, wanted)
        try:
            with self.engine.begin() as conn:
                conn.execute(
                    sa.insert(self.feedback),
                    {"request_id": request_id, "labels": wanted, "ts": datetime.now(UTC)},
                )
        except IntegrityError:
            with self.engine.connect() as conn:
                existing = self._stored_labels(conn, request_id)
            if existing is None:
                raise
            return self._same_or_conflict(request_id, existing, wanted)
        return True

    def _stored_labels(self, conn: sa.Connection, request_id: str) -> Any | None:
        row = conn.execute(
            sa.select(self.feedback.c.labels).where(self.feedback.c.request_id == request_id)
        ).first()
        return None if row is None else row[0]

    @staticmethod
    def _same_or_conflict(request_id: str, existing: Any, wanted: Any) -> bool:
        if existing == wanted:
            return False
        raise FeedbackConflictError(
            f"request {request_id!r} already has feedback {existing!r}, which differs from "
            f"{wanted!r}; feedback is write-once, correct it in the database explicitly"
        )

    def read(self, start: datetime, end: datetime, variant: str | None = None) -> pd.DataFrame:
        """Predictions with ``start <= ts < end`` (optionally one variant), with their labels.

        Returns:
            One row per prediction, ordered by ``ts``, with columns :data:`READ_COLUMNS`;
            ``labels`` is ``None`` where no feedback arrived; ``ts`` is UTC-aware.
        """
        start_utc = _require_utc(start, "start")
        end_utc = _require_utc(end, "end")
        if end_utc < start_utc:
            raise ValueError(
                f"end={end_utc.isoformat()} is before start={start_utc.isoformat()}; "
                "the window is [start, end)"
            )
        p, f = self.predictions, self.feedback
        query = (
            sa.select(
                p.c.request_id,
                p.c.unit_id,
                p.c.ts,
                p.c.variant,
                p.c.model_version,
                p.c.loss_id,
                p.c.features,
                p.c.outputs,
                p.c.latency_ms,
                f.c.labels,
            )
            .select_from(p.outerjoin(f, p.c.request_id == f.c.request_id))
            .where(p.c.ts >= start_utc, p.c.ts < end_utc)
            .order_by(p.c.ts, p.c.request_id)
        )
        if variant is not None:
            query = query.where(p.c.variant == variant)
        with self.engine.connect() as conn:
            rows = [tuple(row) for row in conn.execute(query)]
        frame = pd.DataFrame(rows, columns=list(READ_COLUMNS))
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["latency_ms"] = frame["latency_ms"].astype(float)
        return frame

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()


class BatchWriter:
    """Writes :class:`PredictionRecord` batches to a :class:`PredictionLog` off the request path.

    Args:
        log: where records go; its schema must exist (failures are retried, see module doc).
        max_batch: most records per transaction.
        max_delay_s: longest wait, from a batch's first record, before writing it.
        max_queue: most records waiting; beyond it ``submit`` raises.
        write_attempts: tries per batch before the failure is logged and the batch kept.
        retry_backoff_s: first wait between tries; doubles per try, capped at 5 s.
    """

    def __init__(
        self,
        log: PredictionLog,
        max_batch: int = 256,
        max_delay_s: float = 0.05,
        max_queue: int = 100_000,
        write_attempts: int = 3,
        retry_backoff_s: float = 0.05,
    ) -> None:
        for name, value in (
            ("max_batch", max_batch),
            ("max_queue", max_queue),
            ("write_attempts", write_attempts),
        ):
            if value < 1:
                raise ValueError(f"{name}={value}; it must be >= 1")
        for fname, fvalue in (("max_delay_s", max_delay_s), ("retry_backoff_s", retry_backoff_s)):
            if not math.isfinite(fvalue) or fvalue < 0:
                raise ValueError(f"{fname}={fvalue}; it must be finite and >= 0")
        self._log = log
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._write_attempts = write_attempts
        self._retry_backoff_s = retry_backoff_s
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=max_queue)
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._held: list[PredictionRecord] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """The writer accepts records and its thread is alive."""
        return not self._closed and self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Records submitted but not yet committed (queued, in flight or held after failures)."""
        with self._cond:
            return self._submitted - self._written

    def submit(self, record: PredictionRecord) -> None:
        """Enqueue one record without blocking.

        Raises:
            LogBackpressureError: the queue holds ``max_queue`` records already.
            PredictionLogError: the writer is closed.
        """
        with self._cond:
            if self._closed:
                raise PredictionLogError("BatchWriter is closed; create a new one to log records")
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                raise LogBackpressureError(
                    f"prediction-log queue is full ({self._queue.maxsize} records waiting); the "
                    "database is not keeping up or failing (see the writer's logged errors); "
                    "shed load or raise max_queue"
                ) from None
            self._submitted += 1

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record submitted before this call is committed.

        Raises:
            TimeoutError: not all of them were committed within ``timeout`` seconds.
        """
        with self._cond:
            target = self._submitted
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._written < target:
                if not self._thread.is_alive():
                    raise PredictionLogError(
                        f"writer thread stopped with {target - self._written} records unwritten"
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"flush timed out after {timeout} s with {target - self._written} records "
                        "not yet written; the database may be failing (see logged errors)"
                    )
                self._cond.wait(timeout=0.1 if remaining is None else min(remaining, 0.1))

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything submitted and stop the thread (idempotent).

        Raises:
            LogWriteError: records could not be written within ``timeout``; they are attached.
        """
        with self._cond:
            self._closed = True
            self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._wake.set()
            self._thread.join()
        leftover = self._held + self._drain_queue()
        self._held = []
        if leftover:
            raise LogWriteError(
                f"{len(leftover)} prediction records could not be written within {timeout} s; "
                "they are attached to this error as .records, persist them elsewhere",
                leftover,
            )

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drain_queue(self) -> list[PredictionRecord]:
        items: list[PredictionRecord] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _collect(self) -> list[PredictionRecord]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        # One wait per batch (not one per record): every wake-up of this thread takes the GIL
        # from the request path. flush() and close() set the event and cut the wait short.
        if self._queue.qsize() < self._max_batch - 1 and not self._stopping.is_set():
            self._wake.wait(self._max_delay_s)
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._abandon.is_set():
            if not self._held:
                if self._wake.is_set() and self._queue.empty():
                    self._wake.clear()
                self._held = self._collect()
                if not self._held:
                    if self._stopping.is_set() and self._queue.empty():
                        return
                    continue
            if self._write_with_retries(self._held):
                with self._cond:
                    self._written += len(self._held)
                    self._held = []
                    self._cond.notify_all()

    def _write_with_retries(self, batch: list[PredictionRecord]) -> bool:
        for attempt in range(1, self._write_attempts + 1):
            try:
                self._log.write_batch(batch)
            except Exception:
                if attempt == self._write_attempts:
                    _log.exception(
                        "prediction log write of %d records failed %d times; keeping the batch "
                        "in memory and retrying (%d records pending)",
                        len(batch),
                        attempt,
                        self.pending,
                    )
                    self._abandon.wait(min(5.0, self._retry_backoff_s * 2**attempt))
                    return False
                self._abandon.wait(min(5.0, self._retry_backoff_s * 2 ** (attempt - 1)))
            else:
                return True
        return False
