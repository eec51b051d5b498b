"""Reading windows of the prediction log fast: one row per served **record**, in chunks.

Monitoring reads up to millions of records per window. Building a DataFrame of request rows with
their JSON columns decoded in Python costs seconds per hundred thousand rows, so this reader takes
each request's records as the JSON text they were stored as, splits a request into its records
(without parsing when it holds one, as most do), and hands the records of a chunk to pyarrow's
C++ JSON reader as newline-delimited JSON. The range is a scan of the ``(variant, ts)`` index.

This module imports pyarrow (the ``train`` set): the service never imports it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Generator, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import sqlalchemy as sa

from lossflow.predlog.records import require_utc
from lossflow.predlog.schema import UTCDateTime
from lossflow.predlog.store import PredictionLog

CHUNK_ROWS: Final = 200_000  # requests per chunk


@dataclass(frozen=True)
class VersionRows:
    """How many records a variant's model version served in a window, and when it last did."""

    variant: str
    model_version: str
    loss_id: str
    requests: int
    first_ts: datetime
    last_ts: datetime


def versions_in_window(
    log: PredictionLog, start: datetime, end: datetime, experiment: str | None = None
) -> list[VersionRows]:
    """Per variant and model version, the requests served in ``[start, end)`` (shadow included).

    Raises:
        ValueError: the window is not aware or ends before it starts.
    """
    start, end = _window(start, end)
    p = log.predictions
    query = (
        sa.select(
            p.c.variant,
            p.c.model_version,
            sa.func.max(p.c.loss_id),
            sa.func.count(),
            sa.func.min(p.c.ts),
            sa.func.max(p.c.ts),
        )
        .where(p.c.ts >= start, p.c.ts < end)
        .group_by(p.c.variant, p.c.model_version)
    )
    if experiment is not None:
        query = query.where(p.c.experiment == experiment)
    with log.engine.connect() as conn:
        rows = conn.execute(query).all()
    ts_type = UTCDateTime()
    dialect = log.engine.dialect
    return [
        VersionRows(
            str(v),
            str(mv),
            str(lid),
            int(n),
            _aware(ts_type.process_result_value(_parse_ts(first), dialect)),
            _aware(ts_type.process_result_value(_parse_ts(last), dialect)),
        )
        for v, mv, lid, n, first, last in rows
    ]


def _parse_ts(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def _utc(value: Any) -> datetime:
    """A stored time as aware UTC (SQLite keeps naive UTC text)."""
    ts = _parse_ts(value)
    return ts.replace(tzinfo=UTC) if ts.tzinfo is None else ts.astimezone(UTC)


def _aware(value: datetime | None) -> datetime:
    if value is None:
        raise ValueError("a logged prediction has no time")
    return value


def _window(start: datetime, end: datetime) -> tuple[datetime, datetime]:
    start, end = require_utc(start, "start"), require_utc(end, "end")
    if end < start:
        raise ValueError(f"end={end.isoformat()} is before start={start.isoformat()}")
    return start, end


@dataclass(frozen=True)
class RecordChunk:
    """Records of one chunk of a window.

    Attributes:
        records: the raw feature records as newline-delimited JSON.
        outputs: the model's outputs, one JSON object per record, newline-delimited.
        labels: the feedback label of each record (``None`` where none arrived).
        label_delay_s: seconds from the answer to its feedback (NaN where none arrived).
        model_version: the version that answered each record.
        rows: records in the chunk.
        requests: the request (0, 1, ... within the chunk) each record came in: a ranking
            model's list.
    """

    records: bytes
    outputs: bytes
    labels: list[Any]
    label_delay_s: npt.NDArray[np.float64]
    model_version: list[str]
    rows: int
    requests: npt.NDArray[np.int64]

    def features(self, numeric: Sequence[str], categorical: Sequence[str]) -> pa.Table:
        """The records as a table: ``numeric`` columns as float64 (null where missing or
        absent), ``categorical`` ones as strings; other fields are ignored."""
        schema = pa.schema(
            [*((n, pa.float64()) for n in numeric), *((c, pa.string()) for c in categorical)]
        )
        return _ndjson(self.records, schema)

    def output_table(self, schema: pa.Schema) -> pa.Table:
        """The outputs as a table with ``schema`` (``probability``/``label``/``value``...)."""
        return _ndjson(self.outputs, schema)


def _ndjson(data: bytes, schema: pa.Schema) -> pa.Table:
    if not data:
        return schema.empty_table()
    options = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    return pj.read_json(io.BytesIO(data), parse_options=options)


def numeric_column(table: pa.Table, name: str) -> npt.NDArray[np.float64]:
    """A float64 column with NaN where null."""
    return np.asarray(pc.fill_null(table[name], np.nan).to_numpy(), dtype=np.float64)


# One row per request: its records, outputs and labels as the JSON text they were stored as.
# Most requests hold one record, whose JSON is the array's text without its brackets; unnesting
# in SQL (json_each) re-serialises every record and costs more than the rest of the read.
_SQLITE: Final = """
SELECT p.features, p.outputs, f.labels,
       CASE WHEN f.ts IS NULL THEN NULL
            ELSE (julianday(f.ts) - julianday(p.ts)) * 86400.0 END,
       p.model_version, p.n_records
FROM {predictions} p
LEFT JOIN {feedback} f ON f.request_id = p.request_id
WHERE p.variant = :variant AND p.ts >= :start AND p.ts < :end {filters}
"""
_POSTGRES: Final = """
SELECT p.features::text, p.outputs::text, f.labels::text,
       EXTRACT(EPOCH FROM (f.ts - p.ts)),
       p.model_version, p.n_records
FROM {predictions} p
LEFT JOIN {feedback} f ON f.request_id = p.request_id
WHERE p.variant = :variant AND p.ts >= :start AND p.ts < :end {filters}
"""


def iter_records(
    log: PredictionLog,
    start: datetime,
    end: datetime,
    variant: str,
    *,
    model_version: str | None = None,
    experiment: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[RecordChunk]:
    """The records ``variant`` served in ``[start, end)``, chunk by chunk.

    Args:
        log: the prediction log.
        start: window start (aware).
        end: window end (aware, exclusive).
        variant: the variant.
        model_version: only records of this model version.
        experiment: only records of this routing experiment.
        chunk_rows: requests per chunk.

    Raises:
        ValueError: the window is not aware or ends before it starts.
    """
    start, end = _window(start, end)
    preparer = log.engine.dialect.identifier_preparer
    postgres = log.engine.dialect.name == "postgresql"
    filters = ""
    params: dict[str, Any] = {"variant": variant, "start": start, "end": end}
    if model_version is not None:
        filters += " AND p.model_version = :model_version"
        params["model_version"] = model_version
    if experiment is not None:
        filters += " AND p.experiment = :experiment"
        params["experiment"] = experiment
    sql = (_POSTGRES if postgres else _SQLITE).format(
        predictions=preparer.format_table(log.predictions),
        feedback=preparer.format_table(log.feedback),
        filters=filters,
    )
    for rows in _fetch(log, sql, params, chunk_rows):
        yield _chunk(rows)


def _elements(text: str, count: int) -> list[str]:
    """The JSON texts of an array's ``count`` elements (one element: no parsing needed)."""
    if count == 1:
        return [text[1:-1]]
    return [orjson.dumps(item).decode() for item in orjson.loads(text)]


def _label(stored: str | None) -> Any:
    return None if stored is None else orjson.loads(stored[1:-1])


def _chunk(rows: Sequence[Any]) -> RecordChunk:
    counts = np.array([row[5] for row in rows], dtype=np.int64)
    requests = np.repeat(np.arange(len(rows), dtype=np.int64), counts)
    if all(row[5] == 1 for row in rows):  # one record per request: slicing, no parsing
        records = [row[0][1:-1] for row in rows]
        outputs = [row[1][1:-1] for row in rows]
        labels = [_label(row[2]) for row in rows]
        delays = [np.nan if row[3] is None else row[3] for row in rows]
        versions = [row[4] for row in rows]
    else:
        records, outputs, labels, delays, versions = [], [], [], [], []
        for features, outs, stored, delay, version, count in rows:
            records.extend(_elements(features, count))
            outputs.extend(_elements(outs, count))
            labels.extend([None] * count if stored is None else orjson.loads(stored))
            delays.extend([np.nan if delay is None else delay] * count)
            versions.extend([version] * count)
    return RecordChunk(
        "\n".join(records).encode(),
        "\n".join(outputs).encode(),
        labels,
        np.asarray(delays, dtype=np.float64),
        [str(v) for v in versions],
        len(records),
        requests,
    )


@dataclass(frozen=True)
class OutcomeChunk:
    """What the A/B analysis needs of a chunk of requests (no features).

    Attributes:
        unit_id: the routed unit of each request.
        variant: the variant that answered.
        ts: when it was answered (aware UTC).
        latency_ms: time to answer.
        outputs: the request's outputs (one per record).
        labels: its feedback labels (one per record), ``None`` when none arrived.
    """

    unit_id: list[str]
    variant: list[str]
    ts: list[datetime]
    latency_ms: npt.NDArray[np.float64]
    outputs: list[list[dict[str, Any]]]
    labels: list[list[Any] | None]


_OUTCOMES: Final = """
SELECT p.unit_id, p.variant, p.ts, p.latency_ms, {outputs}, {labels}
FROM {predictions} p
LEFT JOIN {feedback} f ON f.request_id = p.request_id
WHERE p.experiment = :experiment AND p.ts >= :start AND p.ts < :end AND ({arms})
"""

_FAILURES: Final = """
SELECT p.unit_id, p.variant, p.ts FROM {failures} p
WHERE p.experiment = :experiment AND p.ts >= :start AND p.ts < :end AND ({arms})
"""


def _arms_filter(arms: dict[str, str], params: dict[str, Any]) -> str:
    """``(variant, model_version)`` pairs as SQL (parameters added to ``params``)."""
    if not arms:
        raise ValueError("no arms to read")
    terms = []
    for i, (variant, version) in enumerate(sorted(arms.items())):
        params[f"v{i}"], params[f"m{i}"] = variant, version
        terms.append(f"(p.variant = :v{i} AND p.model_version = :m{i})")
    return " OR ".join(terms)


def iter_outcomes(
    log: PredictionLog,
    start: datetime,
    end: datetime,
    experiment: str,
    arms: dict[str, str],
    *,
    chunk_rows: int = CHUNK_ROWS,
) -> Generator[OutcomeChunk, None, None]:
    """The requests of ``experiment`` answered in ``[start, end)`` by the ``arms`` (variant ->
    model version; other versions of a variant are not part of the test), with their outputs
    and labels.

    Raises:
        ValueError: the window is not aware or ends before it starts.
    """
    start, end = _window(start, end)
    postgres = log.engine.dialect.name == "postgresql"
    preparer = log.engine.dialect.identifier_preparer
    params: dict[str, Any] = {"experiment": experiment, "start": start, "end": end}
    sql = _OUTCOMES.format(
        outputs="p.outputs::text" if postgres else "p.outputs",
        labels="f.labels::text" if postgres else "f.labels",
        predictions=preparer.format_table(log.predictions),
        feedback=preparer.format_table(log.feedback),
        arms=_arms_filter(arms, params),
    )
    for rows in _fetch(log, sql, params, chunk_rows):
        yield OutcomeChunk(
            unit_id=[str(r[0]) for r in rows],
            variant=[str(r[1]) for r in rows],
            ts=[_utc(r[2]) for r in rows],
            latency_ms=np.asarray([float(r[3]) for r in rows], dtype=np.float64),
            outputs=[orjson.loads(r[4]) for r in rows],
            labels=[None if r[5] is None else orjson.loads(r[5]) for r in rows],
        )


def failures(
    log: PredictionLog, start: datetime, end: datetime, experiment: str, arms: dict[str, str]
) -> list[tuple[str, str, datetime]]:
    """``(unit_id, variant, ts)`` of every request the ``arms`` failed to answer in the window."""
    start, end = _window(start, end)
    params: dict[str, Any] = {"experiment": experiment, "start": start, "end": end}
    sql = _FAILURES.format(
        failures=log.engine.dialect.identifier_preparer.format_table(log.failures),
        arms=_arms_filter(arms, params),
    )
    return [
        (str(r[0]), str(r[1]), _utc(r[2]))
        for rows in _fetch(log, sql, params, CHUNK_ROWS)
        for r in rows
    ]


def _fetch(
    log: PredictionLog, sql: str, params: dict[str, Any], chunk_rows: int
) -> Iterator[Sequence[Any]]:
    """Rows of ``sql`` in chunks, through the driver's cursor (``:name`` parameters; aware
    ``start``/``end`` stored as SQLAlchemy stores them)."""
    if log.engine.dialect.name == "postgresql":  # psycopg takes %(name)s and aware datetimes
        sql = re.sub(r"(?<!:):(\w+)", r"%(\1)s", sql)  # not the ::text casts
    else:  # as SQLAlchemy stores them on SQLite: naive UTC text with microseconds
        for name in ("start", "end"):
            params[name] = params[name].replace(tzinfo=None).isoformat(" ", "microseconds")
    # The driver's cursor directly: SQLAlchemy's row objects cost more than the query.
    with log.engine.connect() as conn:
        cursor = conn.connection.dbapi_connection.cursor()  # type: ignore[union-attr]
        try:
            cursor.execute(sql, params)
            while rows := cursor.fetchmany(chunk_rows):
                yield rows
        finally:
            cursor.close()
