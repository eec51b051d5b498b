"""The shadow: a model that scores every answered request and is logged, never returned.

Its scoring leaves both the request and the event loop: :class:`ShadowScorer` queues each answered
request for one thread of its own, which scores what has queued up in one model call (up to
``max_batch`` records; a model call per record costs several times more per record than one per
batch), so the shadow costs the primary's answers no event-loop time and little CPU. At most
``max_pending`` requests wait; one answered while that many wait is not scored, and each one left
out is counted (``lossflow_request_errors_total{variant="shadow",reason="shadow_dropped"}``) and
logged once per overload, never lost unseen. At shutdown what is queued is scored before the
prediction log drains, for up to the drain timeout; what is still queued then is counted and
logged the same way.

A shadow answer is logged under ``<request_id>:shadow`` (:func:`shadow_request_id`) with the time
its batch took to score as its latency; feedback for the request labels it too, when it is there
(:func:`label_shadow`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from lossflow.contract import SHADOW
from lossflow.predlog import BatchWriter, PredictionLogError, PredictionRecord
from lossflow.serving.metrics import ServiceMetrics
from lossflow.serving.predictor import Prediction, logged_output
from lossflow.serving.ranking import ranked, ranked_outputs
from lossflow.serving.variants import Variant

_log = logging.getLogger("lossflow.serving")

SHADOW_MAX_PENDING: Final = 1024  # requests waiting for the shadow; more are dropped (counted)
SHADOW_MAX_BATCH: Final = 256  # records scored in one model call (a larger request goes alone)


def shadow_request_id(request_id: str) -> str:
    """The log's request id for the shadow's answer to ``request_id``."""
    return f"{request_id}:shadow"


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


class ShadowScorer:
    """Scores and logs the shadow in a thread of its own, in batches, off the event loop.

    Args:
        metrics: Where scored, failed and dropped shadow requests are counted.
        max_pending: Most requests queued or being scored; a request beyond them is dropped.
        max_batch: Most records scored in one model call.
    """

    def __init__(
        self,
        metrics: ServiceMetrics,
        max_pending: int = SHADOW_MAX_PENDING,
        max_batch: int = SHADOW_MAX_BATCH,
    ) -> None:
        if max_pending < 1 or max_batch < 1:
            raise ValueError(
                f"need max_pending >= 1 and max_batch >= 1, got {max_pending}, {max_batch}"
            )
        self._metrics = metrics
        self._max_pending = max_pending
        self._max_batch = max_batch
        self._cond = threading.Condition()
        self._queue: deque[_Job] = deque()
        self._pending: set[str] = set()  # request ids queued or being scored
        self._closed = False
        self._abandon = False
        self._dropping = False
        self._thread = threading.Thread(target=self._run, name="lossflow-shadow", daemon=True)
        self._thread.start()

    @property
    def pending(self) -> int:
        """Requests queued or being scored."""
        with self._cond:
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
        with self._cond:
            if self._closed or len(self._pending) >= self._max_pending:
                why = "the service is stopping" if self._closed else None
                self._dropped(1, why)
                return
            self._dropping = False
            self._queue.append(
                _Job(shadow, writer, experiment, request_id, unit_id, records, ranking)
            )
            self._pending.add(request_id)
            self._cond.notify()

    def wait(self, request_id: str, timeout: float) -> bool:
        """Wait until the shadow is done with ``request_id`` (if it has it); ``False`` if it is
        still queued after ``timeout`` seconds."""
        with self._cond:
            return self._cond.wait_for(lambda: request_id not in self._pending, timeout)

    def close(self, timeout: float) -> None:
        """Score what is queued (up to ``timeout`` seconds), then stop; what is left is
        counted as dropped."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        self._thread.join(timeout)
        with self._cond:
            self._abandon = True
            left = len(self._queue)
            self._queue.clear()
            self._cond.notify_all()
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

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._closed or self._abandon)
                if self._abandon or not self._queue:
                    return
                batch = [self._queue.popleft()]
                size = len(batch[0].records)
                while self._queue and size + len(self._queue[0].records) <= self._max_batch:
                    size += len(self._queue[0].records)
                    batch.append(self._queue.popleft())
            try:
                _score(batch, self._metrics)
            finally:
                with self._cond:
                    self._pending.difference_update(job.request_id for job in batch)
                    self._cond.notify_all()


def _score(batch: Sequence[_Job], metrics: ServiceMetrics) -> None:
    """Score ``batch`` in one model call per shadow model, and log each request's answer; when
    a call fails, each of its requests is scored alone so that only failing ones count."""
    groups: dict[int, list[_Job]] = {}
    for job in batch:  # a reload between requests may have brought another shadow
        groups.setdefault(id(job.shadow), []).append(job)
    for jobs in groups.values():
        started = time.perf_counter()
        try:
            predictions = jobs[0].shadow.predictor.predict([r for j in jobs for r in j.records])
        except Exception:
            if len(jobs) > 1:
                for job in jobs:
                    _score([job], metrics)
                continue
            metrics.shadow_failed()
            _log.exception("shadow scoring failed", extra={"event": "shadow_failed"})
            continue
        latency_ms = (time.perf_counter() - started) * 1000.0
        start = 0
        for job in jobs:
            end = start + len(job.records)
            _log_answer(job, predictions[start:end], latency_ms, metrics)
            start = end


def _log_answer(
    job: _Job, predictions: Sequence[Prediction], latency_ms: float, metrics: ServiceMetrics
) -> None:
    shadow = job.shadow
    try:
        if job.ranking:
            outputs = ranked_outputs(ranked(predictions))
        else:
            outputs = [logged_output(p, shadow.predictor.label_names) for p in predictions]
        if job.writer is not None:
            job.writer.submit(
                PredictionRecord(
                    shadow_request_id(job.request_id),
                    job.unit_id,
                    datetime.now(UTC),
                    job.experiment,
                    SHADOW,
                    shadow.model_version,
                    shadow.loss_id,
                    job.records,
                    outputs,
                    latency_ms,
                )
            )
    except Exception:  # a failure is counted and logged, never seen by the client
        metrics.shadow_failed()
        _log.exception("shadow answer not logged", extra={"event": "shadow_failed"})
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
