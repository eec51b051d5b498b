"""Structured logs: one JSON object per line on stderr.

Every line has ``ts`` (UTC, ISO 8601), ``level``, ``logger`` and ``message``; fields passed with
``extra={"event": ..., ...}`` are added as keys (``extra_<key>`` where one would overwrite a
standard key), and exceptions as ``exc_info`` text. Nothing
here reads request headers, so bearer tokens never reach a log line.
"""

from __future__ import annotations

import logging
import sys
from datetime import UTC, datetime
from typing import Any, Final

import orjson

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD: Final = frozenset(
    logging.LogRecord("", 0, "", 0, "", None, None).__dict__.keys() | {"message", "asctime"}
)

_DROPPED: Final = frozenset({"color_message"})  # uvicorn's ANSI-coloured copy of the message


class JsonFormatter(logging.Formatter):
    """Formats a record as one JSON line (see the module docstring)."""

    def format(self, record: logging.LogRecord) -> str:
        """The JSON line for ``record``."""
        line: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key not in _DROPPED and not key.startswith("_"):
                line[f"extra_{key}" if key in line else key] = value
        if record.exc_info:
            line["exc_info"] = self.formatException(record.exc_info)
        return orjson.dumps(line, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def configure_json_logging(level: int = logging.INFO) -> None:
    """Send the root logger (and uvicorn's loggers) to stderr as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
        logger.disabled = False  # an earlier logging.config.dictConfig may have disabled it
        logger.setLevel(logging.NOTSET)
