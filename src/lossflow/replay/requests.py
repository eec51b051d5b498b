"""The requests of a replay: one ``POST /predict`` body per chunk of rows, with its stable unit,
its labels (or none), and when it is due."""

from __future__ import annotations

import contextlib
import hashlib
import math
from dataclasses import dataclass, field
from typing import Any, Final

import orjson
import pandas as pd

from lossflow.replay.errors import TrafficError
from lossflow.replay.rows import JsonScalar, label_value, records_of

DEFAULT_UNITS: Final = 5000
_SCALE: Final = float(1 << 64)
_UNIT_SALT: Final = "lossflow-traffic-unit"
_LABEL_SALT: Final = "lossflow-traffic-label"


def _hash_unit(text: str) -> float:
    digest = hashlib.blake2b(text.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


def unit_id(row: int, units: int = DEFAULT_UNITS) -> str:
    """The stable unit id ``unit-<n>`` of the row at position ``row`` of the file.

    ``n`` is a BLAKE2b hash of the position modulo ``units``: the same on every run and machine
    (unlike Python's randomised ``hash``), spread evenly over the units.

    Raises:
        ValueError: ``units`` < 1.
    """
    if units < 1:
        raise ValueError(f"units must be >= 1; got {units}")
    digest = hashlib.blake2b(f"{_UNIT_SALT}:{row}".encode(), digest_size=8).digest()
    return f"unit-{int.from_bytes(digest, 'big') % units}"


def is_labelled(position: int, fraction: float, seed: int = 0) -> bool:
    """Whether the request at ``position`` of a replay gets feedback (deterministic).

    About ``fraction`` of positions are chosen, by a hash of the seed and the position.

    Raises:
        ValueError: ``fraction`` is not within [0, 1].
    """
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"the labelled fraction must be within [0, 1]; got {fraction}")
    if fraction == 1.0:
        return True
    return _hash_unit(f"{_LABEL_SALT}:{seed}:{position}") < fraction


@dataclass(frozen=True)
class ServiceInfo:
    """What :func:`plan_requests` needs from the service's ``GET /info``.

    Attributes:
        features: the record fields, in the service's order.
        target: the target column of the training data (feedback labels come from it).
        task: ``binary``, ``multiclass``, ``regression`` or ``ranking``.
        prediction_log: whether the service logs predictions (feedback needs it).
        max_records: the most records one request may carry (``None``: not advertised).
        variants: the names of the variants answering traffic.
        replay_clock: whether the service takes the requests' own times (``ts``).
        group: a ranking model's query column (its rows are ranked as one list).
    """

    features: tuple[str, ...]
    target: str
    task: str
    prediction_log: bool
    max_records: int | None
    variants: tuple[str, ...]
    replay_clock: bool = False
    group: str | None = None

    @classmethod
    def from_json(cls, payload: Any) -> ServiceInfo:
        """Read a ``GET /info`` answer.

        Raises:
            TrafficError: it is not a lossflow service's ``/info``.
        """
        try:
            features = tuple(str(f) for f in payload["features"])
            limits = payload.get("limits") or {}
            max_records = limits.get("max_records")
            return cls(
                features=features,
                target=str(payload["target"]),
                task=str(payload["task"]),
                prediction_log=bool(payload.get("prediction_log", True)),
                max_records=None if max_records is None else int(max_records),
                variants=tuple(str(v) for v in payload.get("variants") or ()),
                replay_clock=bool(payload.get("replay_clock", False)),
                group=None if payload.get("group") is None else str(payload["group"]),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise TrafficError(
                f"GET /info did not describe a lossflow service (missing or bad {err}); check --url"
            ) from None


@dataclass(frozen=True)
class PlannedRequest:
    """One ``POST /predict`` (or, for a ranking model, ``POST /rank``) of a replay.

    Attributes:
        position: 0-based position in the replay; it is due ``position / rate`` s after start.
        rows: the file positions of its records' rows.
        unit_id: the unit it is sent for (that of its first row).
        body: the JSON body.
        labels: the labels to post as feedback, one per record; ``None`` when it is not labelled.
        ts: the request's own time (a replay clock), ISO 8601 UTC; ``None``: the service's.
        path: the endpoint: ``/predict``, or ``/rank`` for one list of a ranking model.
    """

    position: int
    rows: tuple[int, ...]
    unit_id: str
    body: bytes = field(repr=False)
    labels: tuple[JsonScalar, ...] | None
    ts: str | None = None
    path: str = "/predict"


@dataclass(frozen=True)
class TrafficOptions:
    """How to replay.

    Attributes:
        rate: requests per second (open-loop schedule).
        concurrency: most ``/predict`` requests in flight (and, separately, ``/feedback``).
        records_per_request: rows per request (consecutive in time order).
        units: number of distinct unit ids.
        delay_s: seconds between a prediction's answer and its feedback.
        fraction: share of answered requests that get feedback, in [0, 1].
        seed: picks which requests are labelled.
        max_retries: retries of a request answered 503, after its ``Retry-After``.
        max_retry_after_s: the longest ``Retry-After`` honoured.
        timeout_s: per-request HTTP timeout.
        ready_timeout_s: how long to wait for a service that is starting (``/info`` 503 or
            connection refused) before giving up.
        clock: a time column of the rows: each request carries its first row's time as ``ts``
            and its feedback that time plus ``delay_s`` (the service must run with
            ``replay_clock: true``); ``None``: the service's own clock.
    """

    rate: float = 20.0
    concurrency: int = 16
    records_per_request: int = 1
    units: int = DEFAULT_UNITS
    delay_s: float = 5.0
    fraction: float = 1.0
    seed: int = 0
    max_retries: int = 3
    max_retry_after_s: float = 30.0
    timeout_s: float = 30.0
    ready_timeout_s: float = 15.0
    clock: str | None = None

    def __post_init__(self) -> None:
        problems = []
        if not (math.isfinite(self.rate) and self.rate > 0):
            problems.append(f"rate must be a positive number of requests/s (got {self.rate})")
        for name in ("concurrency", "records_per_request", "units"):
            if getattr(self, name) < 1:
                problems.append(f"{name} must be >= 1 (got {getattr(self, name)})")
        if not 0.0 <= self.fraction <= 1.0:
            problems.append(f"fraction must be within [0, 1] (got {self.fraction})")
        if self.max_retries < 0:
            problems.append(f"max_retries must be >= 0 (got {self.max_retries})")
        for name in ("delay_s", "max_retry_after_s", "ready_timeout_s"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                problems.append(f"{name} must be a finite number >= 0 (got {value})")
        if not (math.isfinite(self.timeout_s) and self.timeout_s > 0):
            problems.append(f"timeout_s must be > 0 (got {self.timeout_s})")
        if problems:
            raise ValueError("traffic options: " + "; ".join(problems))


def _row_positions(frame: pd.DataFrame) -> list[int]:
    index = frame.index
    if not pd.api.types.is_integer_dtype(index.dtype):
        raise ValueError(
            "the frame's index must hold the rows' positions in their file (integers); "
            "read the rows with production_rows()"
        )
    return [int(i) for i in index]


def plan_requests(
    frame: pd.DataFrame, info: ServiceInfo, options: TrafficOptions
) -> list[PlannedRequest]:
    """The requests replaying ``frame``'s rows, in order, with units and labels decided.

    Feedback labels come from ``info.target``; requests get none when the rows lack that column,
    when the service has no prediction log, or when a row's target is missing. A ranking
    model's rows become one ``/rank`` list per value of its group column (in order of first
    appearance), with each item's relevance as feedback.

    Raises:
        TrafficError: the rows lack a feature the service takes.
        ValueError: more records per request than the service accepts, a target value that is
            not a label of the task, or a frame not indexed by row positions.
    """
    size = options.records_per_request
    if info.max_records is not None and size > info.max_records:
        raise ValueError(
            f"records_per_request={size} exceeds the service's limit of {info.max_records} "
            "records per request"
        )
    records = records_of(frame, info.features)
    positions = _row_positions(frame)
    times = _clock(frame, info, options.clock)
    targets: list[JsonScalar] | None = None
    if info.prediction_log and info.target in frame.columns:
        targets = [label_value(v, info.task) for v in frame[info.target].tolist()]
    field_name, path = "records", "/predict"
    chunks = [list(range(start, min(start + size, len(records))))
              for start in range(0, len(records), size)]  # fmt: skip
    if info.task == "ranking":
        field_name, path = "items", "/rank"
        chunks = _lists(frame, info.group)
    plan: list[PlannedRequest] = []
    for k, chunk_rows in enumerate(chunks):
        rows = tuple(positions[i] for i in chunk_rows)
        unit = unit_id(rows[0], options.units)
        labels: tuple[JsonScalar, ...] | None = None
        if targets is not None and is_labelled(k, options.fraction, options.seed):
            chunk = tuple(targets[i] for i in chunk_rows)
            labels = None if any(label is None for label in chunk) else chunk
        payload: dict[str, Any] = {"unit_id": unit, field_name: [records[i] for i in chunk_rows]}
        ts = None if times is None else times[chunk_rows[0]]
        if ts is not None:
            payload["ts"] = ts
        plan.append(PlannedRequest(k, rows, unit, orjson.dumps(payload), labels, ts, path))
    return plan


def _lists(frame: pd.DataFrame, group: str | None) -> list[list[int]]:
    """The positions (in ``frame``) of each list's rows, lists in order of first appearance.

    Raises:
        TrafficError: the rows lack the ranking model's group column.
    """
    if group is None or group not in frame.columns:
        raise TrafficError(
            f"a ranking model ranks the rows of each {group or 'group'} as one list, and the "
            f"rows have no {group!r} column; replay the production rows of its training data"
        )
    codes = pd.factorize(frame[group].astype(str))[0]
    lists: dict[int, list[int]] = {}
    for i, code in enumerate(codes.tolist()):
        lists.setdefault(code, []).append(i)
    return list(lists.values())


def _clock(frame: pd.DataFrame, info: ServiceInfo, column: str | None) -> list[str] | None:
    """The rows' times in ``column`` as ISO 8601 UTC (naive times are taken as UTC)."""
    if column is None:
        return None
    if not info.replay_clock:
        raise ValueError(
            f"--clock {column}: the service does not take request times; start it with "
            "replay_clock=true (only for replays)"
        )
    if column not in frame.columns:
        raise ValueError(
            f"--clock {column}: the rows have no such column; they have {list(frame.columns)}"
        )
    times = pd.to_datetime(frame[column])
    if times.isna().any():
        raise ValueError(f"--clock {column}: {int(times.isna().sum())} rows have no time")
    times = times.dt.tz_localize("UTC") if times.dt.tz is None else times.dt.tz_convert("UTC")
    return [t.isoformat() for t in times]


def due_offset(position: int, rate: float) -> float:
    """Seconds after the start at which request ``position`` is due (open-loop schedule).

    >>> [due_offset(k, 4.0) for k in range(3)]
    [0.0, 0.25, 0.5]
    """
    return position / rate


def retry_after_s(header: str | None, cap: float, default: float = 1.0) -> float:
    """Seconds to wait from a ``Retry-After`` header (seconds form), within ``[0, cap]``.

    >>> retry_after_s("2", cap=30.0), retry_after_s(None, cap=30.0), retry_after_s("99", cap=5.0)
    (2.0, 1.0, 5.0)
    """
    seconds = default
    if header is not None:
        with contextlib.suppress(ValueError):
            seconds = float(header.strip())
    if not math.isfinite(seconds) or seconds < 0:
        seconds = default
    return min(seconds, cap)
