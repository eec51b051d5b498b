"""Reading windows of the prediction log fast: one row per served **record**, in chunks.

Monitoring reads up to millions of records per window. Building a DataFrame of request rows with
their JSON columns decoded in Python costs seconds per hundred thousand rows, so this reader lets
the database unnest the JSON (SQLite's ``json_each``, PostgreSQL's ``json_array_elements ... WITH
ORDINALITY``), joins each record with its output and its label, and hands the records of a
chunk to pyarrow's C++ JSON reader as newline-delimited JSON. The range is a scan of the
``(variant, ts)`` index.

This module imports pyarrow (the ``train`` set): the service never imports it.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj
import sqlalchemy as sa

from lossflow.predlog.records import require_utc
from lossflow.predlog.schema import UTCDateTime
from lossflow.predlog.store import PredictionLog

CHUNK_ROWS: Final = 200_000


@dataclass(frozen=True)
class VersionRows:
    """How many records a variant's model version served in a window, and when it last did."""

    variant: str
    model_version: str
    loss_id: str
    requests: int
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
            _aware(ts_type.process_result_value(_parse_ts(last), dialect)),
        )
        for v, mv, lid, n, last in rows
    ]


def _parse_ts(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


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
    """

    records: bytes
    outputs: bytes
    labels: list[Any]
    label_delay_s: npt.NDArray[np.float64]
    model_version: list[str]
    rows: int

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


_SQLITE: Final = """
SELECT j.value, o.value, l.value,
       CASE WHEN f.ts IS NULL THEN NULL
            ELSE (julianday(f.ts) - julianday(p.ts)) * 86400.0 END,
       p.model_version
FROM {predictions} p
JOIN json_each(p.features) j
JOIN json_each(p.outputs) o ON o.key = j.key
LEFT JOIN {feedback} f ON f.request_id = p.request_id
LEFT JOIN json_each(f.labels) l ON l.key = j.key
WHERE p.variant = :variant AND p.ts >= :start AND p.ts < :end {filters}
"""
_POSTGRES: Final = """
SELECT r.rec::text, o.out::text, l.lab::text,
       EXTRACT(EPOCH FROM (f.ts - p.ts)),
       p.model_version
FROM {predictions} p
CROSS JOIN LATERAL json_array_elements(p.features) WITH ORDINALITY AS r(rec, ord)
JOIN LATERAL json_array_elements(p.outputs) WITH ORDINALITY AS o(out, ord2) ON o.ord2 = r.ord
LEFT JOIN {feedback} f ON f.request_id = p.request_id
LEFT JOIN LATERAL json_array_elements(f.labels) WITH ORDINALITY AS l(lab, ord3)
       ON l.ord3 = r.ord
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
        chunk_rows: records per chunk.

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
    statement = sa.text(sql).bindparams(
        sa.bindparam("start", type_=UTCDateTime()), sa.bindparam("end", type_=UTCDateTime())
    )
    with log.engine.connect() as conn:
        result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(
            statement, params
        )
        for rows in result.partitions(chunk_rows):
            yield _chunk(rows, postgres)


def _chunk(rows: Sequence[Any], postgres: bool) -> RecordChunk:
    records = "\n".join(r[0] for r in rows).encode()
    outputs = "\n".join(r[1] for r in rows).encode()
    if postgres:  # labels come as JSON text there ('1', '"cat"', NULL)
        import orjson

        labels = [None if r[2] is None else orjson.loads(r[2]) for r in rows]
    else:
        labels = [r[2] for r in rows]
    delay = np.array([np.nan if r[3] is None else float(r[3]) for r in rows], dtype=np.float64)
    return RecordChunk(records, outputs, labels, delay, [str(r[4]) for r in rows], len(rows))
