"""The prediction log: written by the service, read by monitoring and A/B analysis.

- ``records``: :class:`PredictionRecord` (one answered request) and the log's errors;
- ``schema``: the tables (predictions, feedback, dead letters) and their upgrade;
- ``store``: :func:`open_log` (how every reader and writer opens it) and
  :class:`PredictionLog`, the SQLAlchemy store (SQLite or PostgreSQL): writes,
  feedback, windows of predictions joined with their labels, dead letters;
- ``writer``: :class:`BatchWriter`, the service's background writer.

It imports SQLAlchemy, pandas and orjson only (no torch, no web framework).
"""

from lossflow.predlog.records import (
    FeedbackConflictError,
    LogBackpressureError,
    LogNotFoundError,
    LogUnreachableError,
    LogWriteError,
    PredictionLogError,
    PredictionRecord,
    UnknownRequestError,
)
from lossflow.predlog.store import READ_COLUMNS, PredictionLog, default_log_url, open_log, reading
from lossflow.predlog.writer import BatchWriter

__all__ = [
    "READ_COLUMNS",
    "BatchWriter",
    "FeedbackConflictError",
    "LogBackpressureError",
    "LogNotFoundError",
    "LogUnreachableError",
    "LogWriteError",
    "PredictionLog",
    "PredictionLogError",
    "PredictionRecord",
    "UnknownRequestError",
    "default_log_url",
    "open_log",
    "reading",
]
