"""The replay over HTTP: requests sent open-loop at a rate, answers collected, feedback delayed."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Final

import httpx
import numpy as np
import pandas as pd

from lossflow.replay.errors import TrafficError
from lossflow.replay.feedback import JSON_HEADERS, DelayedFeedback, detail
from lossflow.replay.report import Answer, TrafficReport, counts
from lossflow.replay.requests import (
    PlannedRequest,
    ServiceInfo,
    TrafficOptions,
    due_offset,
    plan_requests,
    retry_after_s,
)

_log = logging.getLogger(__name__)

DEFAULT_URL: Final = "http://127.0.0.1:8000"
KEPT_ERRORS: Final = 5
_READY_POLL_S: Final = 0.5
_LATE_WARNING_S: Final = 1.0


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
        self.predicting: set[asyncio.Task[None]] = set()
        self.feedback = DelayedFeedback(client, options.concurrency, stop, self._keep_error)
        self.sent = 0
        self.retries = 0
        self.max_lag = 0.0
        self.failed: Counter[str] = Counter()
        self.errors: list[str] = []
        self.by_variant: Counter[str] = Counter()
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
                task = asyncio.ensure_future(self._predict(request))
                self.predicting.add(task)
                task.add_done_callback(self.predicting.discard)
            if self.predicting:
                await asyncio.gather(*self.predicting)
            answered_s = self.loop.time() - start
            await self.feedback.wait()
            return answered_s, self.loop.time() - start
        finally:
            pending = list(self.predicting)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)
            await self.feedback.cancel()

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
        self._keep_error(
            f"{request.path} #{request.position} (rows {list(request.rows)}): {message}"
        )

    async def _predict(self, request: PlannedRequest) -> None:
        try:
            attempt = 0
            while True:
                started = time.perf_counter()
                try:
                    response = await self.client.post(
                        request.path, content=request.body, headers=JSON_HEADERS
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
                self._fail(request, str(response.status_code), detail(response))
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
            request.position,
            request_id,
            request.unit_id,
            variant,
            request.rows,
            request.labels,
            request.ts,
        )
        self.answers.append(answer)
        if request.labels is not None and not self.stop.is_set():
            self.feedback.schedule(answer, request.labels, self.options.delay_s)


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
                    f"({detail(response)}); is --url a lossflow service?"
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
    feedback_posted = sum(replay.feedback.outcomes.values())
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
        failed_by_status=counts(replay.failed),
        errors=replay.errors,
        retries=replay.retries,
        answered_by_variant=counts(replay.by_variant),
        feedback_due=feedback_due,
        feedback_posted=feedback_posted,
        feedback_by_status=counts(replay.feedback.outcomes),
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
