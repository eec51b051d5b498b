"""Structured JSON log lines of the service."""

from __future__ import annotations

import io
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from lossflow.serving.jsonlog import JsonFormatter, configure_json_logging


@pytest.fixture
def emit() -> Iterator[tuple[logging.Logger, io.StringIO]]:
    """A logger of its own whose records go through JsonFormatter into a string buffer."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("lossflow.test.jsonlog")
    logger.handlers[:] = [handler]
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    try:
        yield logger, stream
    finally:
        logger.handlers.clear()
        logger.propagate = True


def _lines(stream: io.StringIO) -> list[dict[str, Any]]:
    text = stream.getvalue()
    assert text.endswith("\n")
    return [json.loads(line) for line in text.splitlines()]


def test_a_record_is_one_json_line_with_the_standard_keys(
    emit: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = emit
    before = datetime.now(UTC)
    logger.warning("scored %d records for %s", 3, "champion")
    [line] = _lines(stream)
    assert set(line) == {"ts", "level", "logger", "message"}
    assert line["level"] == "warning"
    assert line["logger"] == "lossflow.test.jsonlog"
    assert line["message"] == "scored 3 records for champion"
    ts = datetime.fromisoformat(line["ts"])
    assert ts.utcoffset() == timedelta(0)
    assert abs(ts - before) < timedelta(minutes=1)
    assert len(line["ts"].split(".")[1]) == len("123+00:00")  # milliseconds


def test_extra_fields_become_keys(emit: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = emit
    logger.info(
        "predict",
        extra={
            "event": "predict",
            "request_id": "abc123",
            "records": 2,
            "latency_ms": 1.25,
            "variants": {"champion": {"weight": 50.0}},
            "features": ["distance", "carrier"],
            "path": Path("/srv/model.onnx"),  # not JSON: written as its str()
            "_internal": "hidden",  # private attributes are not log fields
        },
    )
    [line] = _lines(stream)
    assert line["message"] == "predict"
    assert line["event"] == "predict"
    assert line["request_id"] == "abc123"
    assert line["records"] == 2
    assert line["latency_ms"] == 1.25
    assert line["variants"] == {"champion": {"weight": 50.0}}
    assert line["features"] == ["distance", "carrier"]
    assert line["path"] == "/srv/model.onnx"
    assert "_internal" not in line
    for standard in ("args", "msg", "levelno", "pathname", "lineno", "exc_text", "thread"):
        assert standard not in line


def test_exceptions_are_included_in_the_same_line(
    emit: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = emit
    try:
        raise ValueError("boom: the model file is gone")
    except ValueError:
        logger.exception("reload failed", extra={"event": "reload_failed"})
    [line] = _lines(stream)  # the multi-line traceback stays inside one JSON string
    assert line["level"] == "error"
    assert line["message"] == "reload failed"
    assert line["event"] == "reload_failed"
    assert line["exc_info"].startswith("Traceback (most recent call last):")
    assert "ValueError: boom: the model file is gone" in line["exc_info"]


def test_uvicorns_color_message_is_dropped(emit: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = emit
    logger.info("Started server process [%d]", 42, extra={"color_message": "\x1b[36m%d\x1b[0m"})
    [line] = _lines(stream)
    assert line["message"] == "Started server process [42]"
    assert "color_message" not in line


def test_each_record_gets_its_own_line(emit: tuple[logging.Logger, io.StringIO]) -> None:
    logger, stream = emit
    logger.info("one\ntwo")
    logger.debug("three", extra={"event": "x"})
    lines = _lines(stream)
    assert [line["message"] for line in lines] == ["one\ntwo", "three"]
    assert [line["level"] for line in lines] == ["info", "debug"]


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """configure_json_logging changes global loggers: put them back afterwards."""
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    root = logging.getLogger()
    saved_root = (root.handlers[:], root.level)
    saved = {n: (logging.getLogger(n).handlers[:], logging.getLogger(n).propagate) for n in names}
    try:
        yield
    finally:
        root.handlers[:], level = saved_root
        root.setLevel(level)
        for name, (handlers, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers[:] = handlers
            logger.propagate = propagate


@pytest.mark.usefixtures("restore_logging")
def test_configure_sends_root_and_uvicorn_logs_to_stderr_as_json(
    capsys: pytest.CaptureFixture[str],
) -> None:
    access = logging.getLogger("uvicorn.access")
    access.addHandler(logging.StreamHandler(sys.stdout))  # uvicorn installs its own handlers
    access.propagate = False
    configure_json_logging(logging.INFO)
    root = logging.getLogger()
    assert root.level == logging.INFO
    [handler] = root.handlers
    assert isinstance(handler.formatter, JsonFormatter)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        assert logging.getLogger(name).handlers == []
        assert logging.getLogger(name).propagate is True

    logging.getLogger("uvicorn.error").info(
        "Application startup complete.", extra={"color_message": "\x1b[1mok\x1b[0m"}
    )
    logging.getLogger("lossflow.serving").debug("below the level: not written")
    captured = capsys.readouterr()
    assert captured.out == ""
    [line] = [json.loads(text) for text in captured.err.splitlines()]
    assert line["logger"] == "uvicorn.error"
    assert line["message"] == "Application startup complete."
    assert "color_message" not in line


def test_extras_with_non_string_keys_still_give_a_line(
    emit: tuple[logging.Logger, io.StringIO],
) -> None:
    logger, stream = emit
    logger.warning("weights", extra={"weights": {1: 0.5, 2: 0.5}})
    [line] = _lines(stream)
    assert line["weights"] == {"1": 0.5, "2": 0.5}
