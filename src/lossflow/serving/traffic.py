"""Replay production rows against a running service, with delayed feedback (``lossflow traffic``).

The training flow keeps the later months of the data apart as "production" rows
(``<data_dir>/runs/<run>/prepared/production.parquet``). This module replays them, in time order,
against a running ``lossflow serve`` so that the A/B split, the prediction log and the monitoring
see realistic traffic:

* :func:`production_rows` reads the rows (parquet or CSV), optionally keeps some months and the
  first ``limit`` rows, and orders them by time. Each row keeps its position in the file as its
  index: that position is the row's identity.
* :func:`plan_requests` turns rows into ``POST /predict`` bodies using the service's ``GET /info``
  (the exact feature names, the target column and the task). Each request gets a stable unit id
  (:func:`unit_id`: a BLAKE2b hash of the first row's position, modulo ``units``), so every replay
  of the same file sends the same rows as the same units, on every run and machine, and the
  service's sticky A/B assignment puts them in the same variants. A deterministic ``fraction`` of
  requests (:func:`is_labelled`: a hash of the request's position and a seed) is labelled.
* :func:`replay_traffic` sends the requests open-loop: request ``k`` is due ``k / rate`` seconds
  after the start, whatever happened to the earlier ones, with at most ``concurrency`` requests in
  flight over one keep-alive :class:`httpx.AsyncClient`. When the service cannot keep up, requests
  go out late rather than being skipped; the report says how late and what rate was achieved.
  A 503 answer (the service's log backpressure) is retried after its ``Retry-After`` a bounded
  number of times. The labels of a labelled request are posted to ``POST /feedback`` ``delay_s``
  seconds after its answer; feedback still due when the last prediction is answered is waited for.

Nothing is dropped silently: every planned request ends up answered, failed (counted by HTTP
status or transport error) or not sent (Ctrl-C), and every labelled answer ends up with a
feedback outcome or as not posted. :func:`run_traffic` is the blocking entry point used by the
command line; the first Ctrl-C stops sending and returns the report of what was done (in-flight
requests finish; feedback not yet posted is counted as not posted), a second one aborts.

Example:
    >>> unit_id(0) == unit_id(0)
    True
    >>> json_value(float("nan")) is None
    True
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import math
import signal
import threading
import time
from collections import Counter
from collections.abc import Coroutine, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import numpy as np
import orjson
import pandas as pd
from rich.table import Table

from lossflow.data.sources import flights_columns

_log = logging.getLogger(__name__)

DEFAULT_URL: Final = "http://127.0.0.1:8000"
DEFAULT_UNITS: Final = 5000
PRODUCTION_GLOB: Final = "runs/*/prepared/production.parquet"
ROW_INDEX: Final = "row"
KEPT_ERRORS: Final = 5
_SHOWN_CHARS: Final = 300
_SCALE: Final = float(1 << 64)
_UNIT_SALT: Final = "lossflow-traffic-unit"
_LABEL_SALT: Final = "lossflow-traffic-label"
_JSON_HEADERS: Final = {"content-type": "application/json"}
_READY_POLL_S: Final = 0.5
_LATE_WARNING_S: Final = 1.0

JsonScalar = bool | int | float | str | None


class TrafficError(RuntimeError):
    """The service cannot be replayed against (unreachable, not lossflow, data does not fit)."""


# --- rows --------------------------------------------------------------------------------------


def find_production_data(data_dir: Path) -> Path:
    """The newest (by modification time) ``<data_dir>/runs/*/prepared/production.parquet``.

    Raises:
        FileNotFoundError: no training run under ``data_dir`` has written production rows.
    """
    candidates = sorted(data_dir.glob(PRODUCTION_GLOB), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(
            f"no production rows under {data_dir / PRODUCTION_GLOB}; run `lossflow train` first "
            "(it keeps the later months apart as production rows) or pass --data PATH"
        )
    return candidates[-1]


def default_time_column(frame: pd.DataFrame) -> str | None:
    """The flights time column when ``frame`` has it, else ``None``."""
    name = flights_columns("binary").time
    return name if name is not None and name in frame.columns else None


def production_rows(
    path: Path,
    *,
    months: Sequence[int] | None = None,
    time_column: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Raw rows to replay, ordered by time.

    Args:
        path: a ``.parquet`` or ``.csv`` file of raw rows (features and, for feedback, target).
        months: keep only rows whose time falls in these months (1-12); ``None`` keeps all.
        time_column: the timestamp column; ``None`` uses the flights one when present. Rows are
            replayed in its order (stable; file order without a time column).
        limit: keep the first ``limit`` rows (after the month filter and ordering).

    Returns:
        The rows, indexed by their 0-based position in the file (their identity for unit ids).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported file type, unknown or unparseable time column, invalid
            ``months`` or ``limit``, or ``months`` given without any time column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no production data at {path}; pass a parquet or CSV file of raw rows, or run "
            "`lossflow train` to write <data_dir>/runs/<run>/prepared/production.parquet"
        )
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] in ([".parquet"], [".pq"]):
        frame = pd.read_parquet(path)
    elif ".csv" in suffixes[-2:]:
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported file type; give a .parquet or .csv file")
    frame = frame.reset_index(drop=True)
    frame.index.name = ROW_INDEX
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 rows; got {limit}")
    if time_column is not None and time_column not in frame.columns:
        raise ValueError(
            f"time column {time_column!r} is not in {path}; its columns: {list(frame.columns)}"
        )
    time_name = time_column or default_time_column(frame)
    if months:
        bad = sorted({m for m in months if not 1 <= m <= 12})
        if bad:
            raise ValueError(f"months are 1 to 12; got {bad}")
        if time_name is None:
            raise ValueError(
                f"cannot filter months: {path} has no known time column; name it (time_column, "
                "--time-column)"
            )
    if time_name is not None:
        try:
            times = pd.to_datetime(frame[time_name])
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"time column {time_name!r} of {path} does not hold timestamps: {err}"
            ) from None
        frame[time_name] = times
        if months:
            frame = frame[times.dt.month.isin(list(months))]
        frame = frame.sort_values(time_name, kind="stable")
    return frame if limit is None else frame.iloc[:limit]


# --- requests ----------------------------------------------------------------------------------


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


def json_value(value: Any) -> JsonScalar:
    """A pandas/numpy cell as a JSON scalar: missing (NaN, NA, NaT, inf) -> ``None``.

    Raises:
        TypeError: the value has no JSON form a record field can take.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    raise TypeError(
        f"cannot send a {type(value).__name__} value ({value!r}) in a JSON record; "
        "record fields are numbers, strings or null"
    )


def label_value(value: Any, task: str) -> JsonScalar:
    """The feedback label of a target cell: binary 0/1, multiclass class, regression float.

    Returns:
        ``None`` when the target is missing.

    Raises:
        ValueError: the value is not a label of ``task``.
    """
    label = json_value(value)
    if label is None:
        return None
    if task == "binary":
        if isinstance(label, bool) or (isinstance(label, int | float) and label in (0, 1)):
            return int(label)
        raise ValueError(f"binary targets are 0 or 1; got {value!r}")
    if task == "multiclass":
        if isinstance(label, float) and label.is_integer():
            return int(label)
        return label
    if isinstance(label, bool) or not isinstance(label, int | float):
        raise ValueError(f"{task} targets are numbers; got {value!r}")
    return float(label)


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
    """

    features: tuple[str, ...]
    target: str
    task: str
    prediction_log: bool
    max_records: int | None
    variants: tuple[str, ...]

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
            )
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise TrafficError(
                f"GET /info did not describe a lossflow service (missing or bad {err}); check --url"
            ) from None


@dataclass(frozen=True)
class PlannedRequest:
    """One ``POST /predict`` of a replay.

    Attributes:
        position: 0-based position in the replay; it is due ``position / rate`` s after start.
        rows: the file positions of its records' rows.
        unit_id: the unit it is sent for (that of its first row).
        body: the JSON body.
        labels: the labels to post as feedback, one per record; ``None`` when it is not labelled.
    """

    position: int
    rows: tuple[int, ...]
    unit_id: str
    body: bytes = field(repr=False)
    labels: tuple[JsonScalar, ...] | None


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


def records_of(frame: pd.DataFrame, features: Sequence[str]) -> list[dict[str, JsonScalar]]:
    """The rows of ``frame`` as JSON records holding exactly ``features``, in that order.

    Raises:
        TrafficError: ``frame`` lacks some of the features.
    """
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise TrafficError(
            f"the rows lack features the service takes: {missing}; replay the production rows "
            "of the data the served models were trained on (--data)"
        )
    names = list(features)
    return [
        {name: json_value(v) for name, v in zip(names, row, strict=True)}
        for row in frame[names].itertuples(index=False, name=None)
    ]


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
    when the service has no prediction log, or when a row's target is missing.

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
    targets: list[JsonScalar] | None = None
    if info.prediction_log and info.target in frame.columns:
        targets = [label_value(v, info.task) for v in frame[info.target].tolist()]
    plan: list[PlannedRequest] = []
    for k, start in enumerate(range(0, len(records), size)):
        rows = tuple(positions[start : start + size])
        unit = unit_id(rows[0], options.units)
        labels: tuple[JsonScalar, ...] | None = None
        if targets is not None and is_labelled(k, options.fraction, options.seed):
            chunk = tuple(targets[start : start + size])
            labels = None if any(label is None for label in chunk) else chunk
        body = orjson.dumps({"unit_id": unit, "records": records[start : start + size]})
        plan.append(PlannedRequest(k, rows, unit, body, labels))
    return plan


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


# --- report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Answer:
    """A request the service answered (200).

    Attributes:
        position: the request's position in the replay.
        request_id: the service's request id (the prediction log's key).
        unit_id: the unit it was sent for.
        variant: the variant that answered.
        rows: the file positions of its records' rows.
        labels: the labels due as feedback; ``None`` when the request is not labelled.
    """

    position: int
    request_id: str
    unit_id: str
    variant: str
    rows: tuple[int, ...]
    labels: tuple[JsonScalar, ...] | None


@dataclass
class TrafficReport:
    """What a replay did. Every planned request is answered, failed or not sent.

    Attributes:
        url: the service.
        started_at: UTC start (ISO 8601).
        rows: rows replayed (planned).
        requests: requests planned.
        sent: requests sent (at least once).
        answered: requests answered 200.
        failed: requests that finally failed.
        not_sent: requests never sent (stopped by Ctrl-C).
        failed_by_status: failures by HTTP status, or by transport error name.
        errors: the first few failure messages.
        retries: 503 answers retried.
        answered_by_variant: answered requests per variant.
        feedback_due: answered requests that are labelled.
        feedback_posted: feedback posts that got an outcome (any status or transport error).
        feedback_by_status: feedback outcomes by HTTP status (201 stored, 200 duplicate, ...).
        feedback_not_posted: labelled answers whose feedback was not posted (stopped).
        target_rate: the requested rate (requests/s).
        achieved_rate: requests sent per second, from the start to the last answer.
        max_lag_s: how late the latest request was sent relative to its schedule.
        duration_s: the whole replay, feedback included.
        latency_p50_ms: client-side median latency of answered requests.
        latency_p99_ms: client-side 99th percentile latency of answered requests.
        interrupted: stopped early by Ctrl-C.
        notes: warnings for the user (no feedback possible, service could not keep up, ...).
        answers: every answered request (not in :meth:`summary`).
    """

    url: str
    started_at: str
    rows: int
    requests: int
    sent: int
    answered: int
    failed: int
    not_sent: int
    failed_by_status: dict[str, int]
    errors: list[str]
    retries: int
    answered_by_variant: dict[str, int]
    feedback_due: int
    feedback_posted: int
    feedback_by_status: dict[str, int]
    feedback_not_posted: int
    target_rate: float
    achieved_rate: float
    max_lag_s: float
    duration_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    interrupted: bool
    notes: list[str]
    answers: list[Answer] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """The report as JSON-ready values, without the per-request answers."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "answers"}


def _counts(counter: Counter[str]) -> dict[str, int]:
    return dict(sorted(counter.items()))


def summary_table(report: TrafficReport) -> Table:
    """The report as a rich table for the terminal."""
    table = Table(title=f"traffic replay against {report.url}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")

    def counts(values: dict[str, int]) -> str:
        return ", ".join(f"{k}: {v}" for k, v in values.items()) or "-"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    table.add_row("rows / requests", f"{report.rows} / {report.requests}")
    table.add_row("sent", str(report.sent))
    table.add_row("answered", str(report.answered))
    table.add_row("answered by variant", counts(report.answered_by_variant))
    table.add_row("failed", f"{report.failed} ({counts(report.failed_by_status)})")
    table.add_row("not sent", str(report.not_sent))
    table.add_row("503 retries", str(report.retries))
    table.add_row(
        "rate (target / achieved)", f"{report.target_rate:g} / {report.achieved_rate:.1f} req/s"
    )
    table.add_row("latest send behind schedule", f"{report.max_lag_s:.3f} s")
    table.add_row("latency p50 / p99", f"{ms(report.latency_p50_ms)} / {ms(report.latency_p99_ms)}")
    table.add_row("feedback due / posted", f"{report.feedback_due} / {report.feedback_posted}")
    table.add_row("feedback by status", counts(report.feedback_by_status))
    table.add_row("feedback not posted", str(report.feedback_not_posted))
    table.add_row("duration", f"{report.duration_s:.1f} s")
    if report.interrupted:
        table.add_row("interrupted", "yes (Ctrl-C)")
    for error in report.errors:
        table.add_row("error", error)
    for note in report.notes:
        table.add_row("note", note)
    return table


# --- the replay --------------------------------------------------------------------------------


def _detail(response: httpx.Response) -> str:
    try:
        detail = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        detail = response.text
    text = detail if isinstance(detail, str) else orjson.dumps(detail).decode()
    return text[:_SHOWN_CHARS]


class _Replay:
    """One replay's state: schedule, in-flight tasks and counters (single event loop)."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        plan: Sequence[PlannedRequest],
        options: TrafficOptions,
        stop: asyncio.Event,
    ) -> None:
        self.client = client
        self.plan = plan
        self.options = options
        self.stop = stop
        self.loop = asyncio.get_running_loop()
        self.slots = asyncio.Semaphore(options.concurrency)
        self.feedback_slots = asyncio.Semaphore(options.concurrency)
        self.predicting: set[asyncio.Task[None]] = set()
        self.posting: set[asyncio.Task[None]] = set()
        self.sent = 0
        self.retries = 0
        self.max_lag = 0.0
        self.failed: Counter[str] = Counter()
        self.errors: list[str] = []
        self.by_variant: Counter[str] = Counter()
        self.feedback: Counter[str] = Counter()
        self.latencies_ms: list[float] = []
        self.answers: list[Answer] = []

    async def run(self) -> tuple[float, float]:
        """Send the plan, wait for answers then feedback.

        Returns:
            Seconds from the start to the last answer, and to the end of the feedback.
        """
        start = self.loop.time()
        try:
            for request in self.plan:
                due = start + due_offset(request.position, self.options.rate)
                if await self._sleep_or_stop(due - self.loop.time()):
                    break
                await self.slots.acquire()
                if self.stop.is_set():
                    self.slots.release()
                    break
                self.max_lag = max(self.max_lag, self.loop.time() - due)
                self.sent += 1
                self._spawn(self.predicting, self._predict(request))
            if self.predicting:
                await asyncio.gather(*self.predicting)
            answered_s = self.loop.time() - start
            stopper = asyncio.ensure_future(self.stop.wait())
            try:
                while self.posting and not self.stop.is_set():
                    await asyncio.wait(
                        {*self.posting, stopper}, return_when=asyncio.FIRST_COMPLETED
                    )
            finally:
                stopper.cancel()
            return answered_s, self.loop.time() - start
        finally:
            pending = [*self.predicting, *self.posting]
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    def _spawn(self, tasks: set[asyncio.Task[None]], work: Coroutine[Any, Any, None]) -> None:
        task = asyncio.ensure_future(work)
        tasks.add(task)
        task.add_done_callback(tasks.discard)

    async def _sleep_or_stop(self, seconds: float) -> bool:
        """Wait ``seconds`` unless stopped first; whether the replay is stopped."""
        if seconds > 0 and not self.stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await self.stop.wait()
        return self.stop.is_set()

    def _keep_error(self, what: str) -> None:
        if len(self.errors) < KEPT_ERRORS:
            self.errors.append(what)

    def _fail(self, request: PlannedRequest, status: str, message: str) -> None:
        self.failed[status] += 1
        self._keep_error(f"/predict #{request.position} (rows {list(request.rows)}): {message}")

    async def _predict(self, request: PlannedRequest) -> None:
        try:
            attempt = 0
            while True:
                started = time.perf_counter()
                try:
                    response = await self.client.post(
                        "/predict", content=request.body, headers=_JSON_HEADERS
                    )
                except httpx.HTTPError as err:
                    self._fail(request, type(err).__name__, f"{type(err).__name__}: {err}")
                    return
                latency_ms = (time.perf_counter() - started) * 1000.0
                if (
                    response.status_code != 503
                    or attempt >= self.options.max_retries
                    or self.stop.is_set()
                ):
                    break
                attempt += 1
                self.retries += 1
                wait = retry_after_s(
                    response.headers.get("retry-after"), self.options.max_retry_after_s
                )
                if await self._sleep_or_stop(wait):
                    break  # stopped: the 503 stands
            if response.status_code != 200:
                self._fail(request, str(response.status_code), _detail(response))
                return
            try:
                payload = response.json()
                request_id = str(payload["request_id"])
                variant = str(payload["variant"])
            except (ValueError, KeyError, TypeError) as err:
                self._fail(request, "bad-response", f"200 without request_id/variant: {err!r}")
                return
        finally:
            self.slots.release()
        self.latencies_ms.append(latency_ms)
        self.by_variant[variant] += 1
        answer = Answer(
            request.position, request_id, request.unit_id, variant, request.rows, request.labels
        )
        self.answers.append(answer)
        if request.labels is not None and not self.stop.is_set():
            due = self.loop.time() + self.options.delay_s
            self._spawn(self.posting, self._post_feedback(answer, request.labels, due))

    async def _post_feedback(
        self, answer: Answer, labels: tuple[JsonScalar, ...], due: float
    ) -> None:
        if await self._sleep_or_stop(due - self.loop.time()):
            return
        body = orjson.dumps({"request_id": answer.request_id, "labels": list(labels)})
        async with self.feedback_slots:
            try:
                response = await self.client.post("/feedback", content=body, headers=_JSON_HEADERS)
            except httpx.HTTPError as err:
                self.feedback[type(err).__name__] += 1
                self._keep_error(f"/feedback {answer.request_id}: {type(err).__name__}: {err}")
                return
        self.feedback[str(response.status_code)] += 1
        if response.status_code not in (200, 201):
            self._keep_error(
                f"/feedback {answer.request_id}: {response.status_code} {_detail(response)}"
            )


async def fetch_info(client: httpx.AsyncClient, ready_timeout_s: float = 15.0) -> ServiceInfo:
    """The service's ``GET /info``, waiting up to ``ready_timeout_s`` while it starts.

    Raises:
        TrafficError: the service is unreachable, still loading, or not a lossflow service.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + ready_timeout_s
    while True:
        try:
            response = await client.get("/info")
        except httpx.TransportError as err:
            problem = f"cannot reach the service at {client.base_url} ({type(err).__name__}: {err})"
        else:
            if response.status_code == 200:
                try:
                    payload = response.json()
                except ValueError:
                    payload = None
                return ServiceInfo.from_json(payload)
            if response.status_code != 503:
                raise TrafficError(
                    f"GET {client.base_url}info answered {response.status_code} "
                    f"({_detail(response)}); is --url a lossflow service?"
                )
            problem = f"the service at {client.base_url} is still loading its models"
        if loop.time() >= deadline:
            raise TrafficError(f"{problem}; start it with `lossflow serve` or check --url")
        await asyncio.sleep(_READY_POLL_S)


def _percentile(values: Sequence[float], q: float) -> float | None:
    return None if not values else float(np.percentile(np.asarray(values), q))


def _notes(info: ServiceInfo, frame: pd.DataFrame, plan: Sequence[PlannedRequest]) -> list[str]:
    notes: list[str] = []
    if not plan:
        notes.append("no rows to replay (check --months and --limit)")
    if not info.prediction_log:
        notes.append("the service runs without a prediction log: no feedback was posted")
    elif info.target not in frame.columns:
        notes.append(f"the rows have no target column {info.target!r}: no feedback was posted")
    return notes


async def replay_traffic(
    frame: pd.DataFrame,
    url: str = DEFAULT_URL,
    options: TrafficOptions | None = None,
    *,
    stop: asyncio.Event | None = None,
    transport: httpx.AsyncBaseTransport | None = None,
) -> TrafficReport:
    """Replay ``frame``'s rows (see :func:`production_rows`) against the service at ``url``.

    Args:
        frame: raw rows indexed by their position in their file.
        url: the service's base URL.
        options: rate, concurrency, feedback delay and fraction, ...
        stop: setting it stops sending; in-flight requests finish, pending feedback is not posted.
        transport: an httpx transport to use instead of the network one.

    Raises:
        TrafficError: the service is unreachable or the rows do not fit its models.
        ValueError: the rows cannot be turned into requests (see :func:`plan_requests`).
    """
    options = options or TrafficOptions()
    stop = stop or asyncio.Event()
    started_at = datetime.now(UTC)
    began = time.perf_counter()
    connections = 2 * options.concurrency
    async with httpx.AsyncClient(
        base_url=url,
        timeout=options.timeout_s,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
        transport=transport,
    ) as client:
        info = await fetch_info(client, options.ready_timeout_s)
        plan = plan_requests(frame, info, options)
        replay = _Replay(client, plan, options, stop)
        answered_s, _ = await replay.run()
    answered = len(replay.answers)
    feedback_due = sum(1 for a in replay.answers if a.labels is not None)
    feedback_posted = sum(replay.feedback.values())
    notes = _notes(info, frame, plan)
    if replay.max_lag > _LATE_WARNING_S:
        notes.append(
            f"the service (or this client) could not keep up with {options.rate:g} req/s: "
            f"requests went out up to {replay.max_lag:.1f} s late; lower --rate or raise "
            "--concurrency"
        )
    return TrafficReport(
        url=url,
        started_at=started_at.isoformat(),
        rows=len(frame),
        requests=len(plan),
        sent=replay.sent,
        answered=answered,
        failed=sum(replay.failed.values()),
        not_sent=len(plan) - replay.sent,
        failed_by_status=_counts(replay.failed),
        errors=replay.errors,
        retries=replay.retries,
        answered_by_variant=_counts(replay.by_variant),
        feedback_due=feedback_due,
        feedback_posted=feedback_posted,
        feedback_by_status=_counts(replay.feedback),
        feedback_not_posted=feedback_due - feedback_posted,
        target_rate=options.rate,
        achieved_rate=replay.sent / answered_s if answered_s > 0 else 0.0,
        max_lag_s=replay.max_lag,
        duration_s=time.perf_counter() - began,
        latency_p50_ms=_percentile(replay.latencies_ms, 50),
        latency_p99_ms=_percentile(replay.latencies_ms, 99),
        interrupted=stop.is_set(),
        notes=notes,
        answers=sorted(replay.answers, key=lambda a: a.position),
    )


def run_traffic(
    frame: pd.DataFrame, url: str = DEFAULT_URL, options: TrafficOptions | None = None
) -> TrafficReport:
    """Blocking :func:`replay_traffic`; the first Ctrl-C stops sending and returns the report.

    Raises:
        TrafficError: the service is unreachable or the rows do not fit its models.
        ValueError: the rows cannot be turned into requests.
        KeyboardInterrupt: a second Ctrl-C.
    """

    async def main() -> TrafficReport:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        handled = False

        def interrupted() -> None:
            _log.warning("Ctrl-C: sending stopped, waiting for in-flight requests (again: abort)")
            stop.set()
            loop.remove_signal_handler(signal.SIGINT)

        if threading.current_thread() is threading.main_thread():
            with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                loop.add_signal_handler(signal.SIGINT, interrupted)
                handled = True
        try:
            return await replay_traffic(frame, url, options, stop=stop)
        finally:
            if handled:
                loop.remove_signal_handler(signal.SIGINT)

    return asyncio.run(main())
