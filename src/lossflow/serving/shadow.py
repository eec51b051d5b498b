"""The shadow: a model that scores every answered request and is logged, never returned.

Its scoring leaves both the request and the event loop: :class:`ShadowScorer` queues each answered
request for one thread of its own, so a shadow of any speed costs the primary's answers no event
loop time. At most ``max_pending`` requests wait; one answered while that many wait is not
scored, and each one left out is counted (``lossflow_request_errors_total{variant="shadow",
reason="shadow_dropped"}``) and logged once per overload, never lost unseen. At shutdown what is
queued is scored before the prediction log drains, for up to the drain timeout; what is still
queued then is counted and logged the same way.

A shadow answer is logged under ``<request_id>:shadow`` (:func:`shadow_request_id`); feedback
for the request labels it too, when it is there (:func:`label_shadow`).
"""

from __future__ import annotations

import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from lossflow.contract import SHADOW
from lossflow.predlog import BatchWriter, PredictionLogError, PredictionRecord
from lossflow.serving.metrics import ServiceMetrics
from lossflow.serving.predictor import logged_output
from lossflow.serving.ranking import ranked, ranked_outputs
from lossflow.serving.variants import Variant

_log = logging.getLogger("lossflow.serving")

SHADOW_MAX_PENDING: Final = 1024  # requests waiting for the shadow; more are dropped (counted)


def shadow_request_id(request_id: str) -> str:
    """The log's request id for the shadow's answer to ``request_id``."""
    return f"{request_id}:shadow"


class ShadowScorer:
    """Scores and logs the shadow in a thread of its own, off the event loop.

    Args:
        metrics: Where scored, failed and dropped shadow requests are counted.
        max_pending: Most requests queued or being scored; a request beyond them is dropped.
    """

    def __init__(self, metrics: ServiceMetrics, max_pending: int = SHADOW_MAX_PENDING) -> None:
        if max_pending < 1:
            raise ValueError(f"max_pending must be >= 1, got {max_pending}")
        self._metrics = metrics
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lossflow-shadow")
        self._max_pending = max_pending
        self._slots = threading.BoundedSemaphore(max_pending)
        self._pending: dict[str, Future[None]] = {}
        self._dropping = False

    @property
    def pending(self) -> int:
        """Requests queued or being scored."""
        return len(self._pending)

    def submit(
        self,
        shadow: Variant,
        writer: BatchWriter | None,
        experiment: str,
        request_id: str,
        unit_id: str,
        records: list[Any],
        ranking: bool = False,
    ) -> None:
        """Queue one answered request for the shadow; never blocks, never raises."""
        if not self._slots.acquire(blocking=False):
            self._dropped(1)
            return
        self._dropping = False
        job = _Job(shadow, writer, experiment, request_id, unit_id, records, ranking)
        try:
            future = self._executor.submit(self._score, job)
        except RuntimeError:  # shut down: the service is stopping
            self._slots.release()
            self._dropped(1)
            return
        self._pending[request_id] = future
        future.add_done_callback(lambda _: self._pending.pop(request_id, None))

    def wait(self, request_id: str, timeout: float) -> bool:
        """Wait until the shadow is done with ``request_id`` (if it has it); ``False`` if it is
        still queued after ``timeout`` seconds."""
        future = self._pending.get(request_id)
        if future is None:
            return True
        done, _ = concurrent.futures.wait([future], timeout=timeout)
        return bool(done)

    def close(self, timeout: float) -> None:
        """Score what is queued (up to ``timeout`` seconds), then stop; what is left is
        counted as dropped."""
        deadline = time.monotonic() + timeout
        queued = list(self._pending.values())
        for future in queued:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            concurrent.futures.wait([future], timeout=remaining)
        self._executor.shutdown(wait=True, cancel_futures=True)
        left = sum(future.cancelled() for future in queued)
        if left:
            self._dropping = False  # a new episode: say so
            self._dropped(left, f"not scored within {timeout} s at shutdown")

    def _dropped(self, count: int, why: str | None = None) -> None:
        self._metrics.shadow_dropped(count)
        if not self._dropping:
            self._dropping = True
            _log.warning(
                "shadow requests dropped: %s",
                why or f"{self._max_pending} requests already wait for the shadow",
                extra={"event": "shadow_dropped", "dropped": count},
            )

    def _score(self, job: _Job) -> None:
        try:
            job.run(self._metrics)
        finally:
            self._slots.release()


@dataclass(frozen=True, slots=True)
class _Job:
    """One answered request for the shadow."""

    shadow: Variant
    writer: BatchWriter | None
    experiment: str
    request_id: str
    unit_id: str
    records: list[Any]
    ranking: bool

    def run(self, metrics: ServiceMetrics) -> None:
        """Score and log; a failure is counted and logged, never seen by the client."""
        shadow = self.shadow
        started = time.perf_counter()
        try:
            predictions = shadow.predictor.predict(self.records)
            if self.ranking:
                outputs = ranked_outputs(ranked(predictions))
            else:
                outputs = [logged_output(p, shadow.predictor.label_names) for p in predictions]
            if self.writer is not None:
                self.writer.submit(
                    PredictionRecord(
                        shadow_request_id(self.request_id),
                        self.unit_id,
                        datetime.now(UTC),
                        self.experiment,
                        SHADOW,
                        shadow.model_version,
                        shadow.loss_id,
                        self.records,
                        outputs,
                        (time.perf_counter() - started) * 1000.0,
                    )
                )
        except Exception:
            metrics.shadow_failed()
            _log.exception("shadow scoring failed", extra={"event": "shadow_failed"})
            return
        metrics.shadow_scored(len(outputs))


def label_shadow(
    scorer: ShadowScorer,
    store: Callable[[str], bool],
    request_id: str,
    metrics: ServiceMetrics,
    timeout: float,
) -> None:
    """Label the shadow's answer to ``request_id`` with ``store`` (the primary's labels, once
    its feedback is stored); a shadow answer that is missing (dropped, failed, or not written
    within ``timeout``) is counted and logged, and is no error of the feedback."""
    shadow_id = shadow_request_id(request_id)
    try:
        if not scorer.wait(request_id, timeout):
            raise TimeoutError(f"the shadow has not scored it within {timeout} s")
        store(shadow_id)
    except (PredictionLogError, TimeoutError, ValueError) as err:  # missing, late or refused
        metrics.feedback("shadow_unlabelled")
        _log.warning(
            "shadow answer not labelled: %s",
            err,
            extra={"event": "shadow_unlabelled", "request_id": shadow_id},
        )
