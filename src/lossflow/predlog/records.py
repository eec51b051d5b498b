"""What the prediction log stores: one :class:`PredictionRecord` per answered request, and the
errors its store and writer raise."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from lossflow.errors import UserError


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


def require_utc(value: datetime, name: str) -> datetime:
    """``value`` in UTC.

    Raises:
        TypeError: ``value`` is not a datetime.
        ValueError: ``value`` is naive (no time zone).
    """
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
        experiment: the routing experiment the unit was assigned in (the service's
            ``experiment``); A/B analysis counts only the rows of the current one.
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
    experiment: str
    variant: str
    model_version: str
    loss_id: str
    features: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    latency_ms: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "ts", require_utc(self.ts, "ts"))
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
            "experiment": self.experiment,
            "variant": self.variant,
            "model_version": self.model_version,
            "loss_id": self.loss_id,
            "features": self.features,
            "outputs": self.outputs,
            "latency_ms": float(self.latency_ms),
            "n_records": len(self.features),
        }


class LogNotFoundError(UserError, FileNotFoundError):
    """The embedded prediction log does not exist: nothing was served with this data_dir."""


class LogUnreachableError(UserError):
    """The prediction log cannot be read; the message names its URL and the database's error."""
