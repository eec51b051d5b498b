"""The prediction log's store: every served prediction and its later feedback, in SQLite or
PostgreSQL, behind one SQLAlchemy Core code path.

SQLite (the embedded default) runs in WAL mode with ``synchronous=NORMAL`` and foreign keys on,
set on every new connection; PostgreSQL URLs are driven by psycopg 3 (``postgresql://`` is
rewritten to ``postgresql+psycopg://``). Timestamps are stored in UTC and always come back
timezone-aware. The service writes through :class:`lossflow.predlog.writer.BatchWriter`;
monitoring and A/B analysis read with :meth:`PredictionLog.read`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import orjson
import pandas as pd
import sqlalchemy as sa
from sqlalchemy.exc import DataError, IntegrityError, SQLAlchemyError

from lossflow.predlog.records import (
    FeedbackConflictError,
    LogNotFoundError,
    LogUnreachableError,
    PredictionRecord,
    UnknownRequestError,
    require_utc,
)
from lossflow.predlog.schema import PREDICTION_COLUMNS, Tables, row_values

_log = logging.getLogger(__name__)

# What a read returns per prediction: its row (without the record count) and its labels.
READ_COLUMNS: tuple[str, ...] = (*(c for c in PREDICTION_COLUMNS if c != "n_records"), "labels")
# Errors that writing the same rows again cannot fix: the rows go to the dead letters.
PERMANENT_ERRORS: Final = (IntegrityError, DataError)
_TS: Final = PREDICTION_COLUMNS.index("ts")
_FEATURES: Final = PREDICTION_COLUMNS.index("features")
_OUTPUTS: Final = PREDICTION_COLUMNS.index("outputs")
_ERROR_CHARS: Final = 2000


def default_log_url(data_dir: Path) -> str:
    """The embedded prediction log: ``sqlite:///<data_dir>/predictions.db``."""
    return f"sqlite:///{(data_dir / 'predictions.db').resolve()}"


def open_log(
    url: str | None, db_schema: str | None, data_dir: Path, *, existing: bool = False
) -> PredictionLog:
    """The prediction log at ``url`` (with ``db_schema``), else the embedded SQLite file in
    ``data_dir``: how every reader and writer opens it.

    Args:
        url: the configured ``log.url`` (``None``: the embedded file).
        db_schema: the configured ``log.db_schema``.
        data_dir: the project's data directory.
        existing: a reader's call: the embedded file must exist already (else a writer's: the
            data directory is created).

    Raises:
        LogNotFoundError: ``existing`` and the embedded file does not exist.
    """
    if url is None:
        path = data_dir / "predictions.db"
        if existing and not path.is_file():
            raise LogNotFoundError(
                f"no prediction log at {path}: nothing has been served with this data_dir; "
                "start `lossflow serve` (it logs every prediction there, then send traffic) or "
                "set log.url"
            )
        data_dir.mkdir(parents=True, exist_ok=True)  # SQLite creates the file, not its folder
        url = default_log_url(data_dir)
    return PredictionLog(url, db_schema)


@contextmanager
def reading(log: PredictionLog, hint: str = "check log.url") -> Iterator[PredictionLog]:
    """Read ``log`` inside; a database error becomes one :class:`LogUnreachableError` that
    names the log's URL, the error and ``hint``."""
    try:
        yield log
    except SQLAlchemyError as err:
        raise LogUnreachableError(
            f"cannot read the prediction log at {log.engine.url.render_as_string()}: "
            f"{type(err).__name__}: {err.args[0]}; {hint}"
        ) from None


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
    """The log's tables (:mod:`lossflow.predlog.schema`) behind one SQLAlchemy engine.

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
        self.tables = Tables(schema)
        self.predictions = self.tables.predictions
        self.feedback = self.tables.feedback
        self.dead_letters = self.tables.dead_letters
        self.failures = self.tables.failures
        preparer = self.engine.dialect.identifier_preparer
        columns = [preparer.quote(name) for name in PREDICTION_COLUMNS]
        into = f"INSERT INTO {preparer.format_table(self.predictions)} ({', '.join(columns)}) "
        if backend == "sqlite":
            # One statement per batch over a JSON array of rows: sqlite3's executemany releases
            # and retakes the GIL once per row, which stalls the request path at every row.
            picks = ", ".join(f"json_extract(value, '$[{i}]')" for i in range(len(columns)))
            self._insert_sql = f"{into}SELECT {picks} FROM json_each(?)"
        else:
            self._insert_sql = f"{into}VALUES ({', '.join(['%s'] * len(columns))})"

    def create_schema(self) -> None:
        """Create the PostgreSQL schema (if named), tables and indexes when missing, and upgrade
        tables an older lossflow created (idempotent)."""
        with self.engine.begin() as conn:
            if self.schema is not None:
                conn.execute(sa.schema.CreateSchema(self.schema, if_not_exists=True))
            changed = self.tables.upgrade(conn)
            self.tables.metadata.create_all(conn, checkfirst=True)
        if changed:
            _log.warning("prediction log upgraded: %s", "; ".join(changed))

    def write_batch(self, records: Sequence[PredictionRecord]) -> None:
        """Insert records in one transaction (all or none): one statement on SQLite, one
        executemany on PostgreSQL.

        Raises:
            sqlalchemy.exc.IntegrityError: a request id is already logged (nothing is written).
            sqlalchemy.exc.DataError: a value does not fit its column (PostgreSQL).
        """
        if records:
            with self.engine.begin() as conn:
                self._insert(conn, records)

    def _insert(self, conn: sa.Connection, records: Sequence[PredictionRecord]) -> None:
        # Pre-encoded rows straight to the driver: SQLAlchemy's per-row parameter processing
        # cost 3x the insert itself, and this thread shares the GIL with the request path.
        rows = [row_values(r) for r in records]
        if self.engine.dialect.name == "sqlite":
            # Stored as SQLAlchemy stores them on SQLite: naive UTC text with microseconds, JSON
            # columns as JSON text (json_extract returns nested JSON as text).
            for row in rows:
                row[_TS] = row[_TS].replace(tzinfo=None).isoformat(" ", "microseconds")
            conn.exec_driver_sql(
                self._insert_sql, (orjson.dumps(rows, option=_JSON_OPTIONS).decode(),)
            )
            return
        for row in rows:
            row[_FEATURES] = _json_text(row[_FEATURES])
            row[_OUTPUTS] = _json_text(row[_OUTPUTS])
        conn.exec_driver_sql(self._insert_sql, [tuple(row) for row in rows])

    def record_feedback(
        self, request_id: str, labels: list[Any], ts: datetime | None = None
    ) -> bool:
        """Attach ground-truth labels (one per record of the request) to a logged prediction.

        ``ts`` is when the truth became known (default now; a replay gives its own clock).

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
                    {"request_id": request_id, "labels": wanted, "ts": ts or datetime.now(UTC)},
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

    def read(
        self,
        start: datetime,
        end: datetime,
        variant: str | None = None,
        experiment: str | None = None,
    ) -> pd.DataFrame:
        """Predictions with ``start <= ts < end`` (optionally one variant and one experiment),
        with their labels.

        Returns:
            One row per prediction, ordered by ``ts``, with columns :data:`READ_COLUMNS`;
            ``labels`` is ``None`` where no feedback arrived; ``ts`` is UTC-aware.
        """
        start_utc = require_utc(start, "start")
        end_utc = require_utc(end, "end")
        if end_utc < start_utc:
            raise ValueError(
                f"end={end_utc.isoformat()} is before start={start_utc.isoformat()}; "
                "the window is [start, end)"
            )
        p, f = self.predictions, self.feedback
        query = (
            sa.select(*(p.c[name] for name in READ_COLUMNS[:-1]), f.c.labels)
            .select_from(p.outerjoin(f, p.c.request_id == f.c.request_id))
            .where(p.c.ts >= start_utc, p.c.ts < end_utc)
            .order_by(p.c.ts, p.c.request_id)
        )
        if variant is not None:
            query = query.where(p.c.variant == variant)
        if experiment is not None:
            query = query.where(p.c.experiment == experiment)
        with self.engine.connect() as conn:
            rows = [tuple(row) for row in conn.execute(query)]
        frame = pd.DataFrame(rows, columns=list(READ_COLUMNS))
        frame["ts"] = pd.to_datetime(frame["ts"], utc=True)
        frame["latency_ms"] = frame["latency_ms"].astype(float)
        return frame

    def dead_letter(self, record: PredictionRecord, error: BaseException) -> None:
        """Keep a record the database refused (with the error) in ``prediction_dead_letters``.

        Raises:
            sqlalchemy.exc.SQLAlchemyError: the dead letter itself cannot be written.
        """
        row = record.to_row()
        row["ts"] = record.ts.isoformat()
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(self.dead_letters),
                {
                    "request_id": record.request_id,
                    "ts": datetime.now(UTC),
                    "error": f"{type(error).__name__}: {error}"[:_ERROR_CHARS],
                    "record": row,
                },
            )

    def record_failure(
        self,
        unit_id: str,
        experiment: str,
        variant: str,
        model_version: str,
        status: int,
        error: str,
    ) -> None:
        """Count a request ``variant`` was routed but failed to answer (``failures``).

        Raises:
            sqlalchemy.exc.SQLAlchemyError: it cannot be written.
        """
        with self.engine.begin() as conn:
            conn.execute(
                sa.insert(self.failures),
                {
                    "unit_id": unit_id,
                    "ts": datetime.now(UTC),
                    "experiment": experiment,
                    "variant": variant,
                    "model_version": model_version,
                    "status": status,
                    "error": error[:_ERROR_CHARS],
                },
            )

    def read_dead_letters(self) -> pd.DataFrame:
        """Every dead letter: ``id``, ``request_id``, ``ts`` (when it was refused), ``error``,
        ``record`` (the whole prediction record as JSON), oldest first."""
        d = self.dead_letters
        with self.engine.connect() as conn:
            rows = [tuple(r) for r in conn.execute(sa.select(*d.c).order_by(d.c.id))]
        return pd.DataFrame(rows, columns=[c.name for c in d.c])

    def replay_dead_letters(self) -> tuple[int, int]:
        """Write each dead letter to ``predictions`` again (after the operator fixed the cause);
        the ones written are deleted, the others keep their (updated) error.

        Returns:
            ``(replayed, still_failing)``.
        """
        replayed = failing = 0
        d = self.dead_letters
        for letter_id, raw in self.read_dead_letters()[["id", "record"]].itertuples(index=False):
            fields = {k: v for k, v in raw.items() if k != "n_records"}
            record = PredictionRecord(**{**fields, "ts": datetime.fromisoformat(raw["ts"])})
            try:
                with self.engine.begin() as conn:
                    self._insert(conn, [record])
                    conn.execute(sa.delete(d).where(d.c.id == letter_id))
            except PERMANENT_ERRORS as err:
                failing += 1
                with self.engine.begin() as conn:
                    conn.execute(
                        sa.update(d)
                        .where(d.c.id == letter_id)
                        .values(error=f"{type(err).__name__}: {err}"[:_ERROR_CHARS])
                    )
            else:
                replayed += 1
        return replayed, failing

    def dispose(self) -> None:
        """Close every pooled connection."""
        self.engine.dispose()
