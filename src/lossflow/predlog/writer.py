"""Writes prediction records off the request path, in batches, without ever dropping one.

:class:`BatchWriter`: ``submit`` is one non-blocking ``Queue.put``; a background thread writes
batches of up to ``max_batch`` records, or whatever arrived within ``max_delay_s`` of the first
record of a batch, in one transaction each.

Durability:

* A record is persisted once its batch commits. Until then it lives only in process memory, so a
  SIGKILL (or power loss) loses at most what is queued or in flight: the current batch (at most
  ``max_batch`` records) plus whatever arrived since, which in steady state is what arrived within
  about ``max_delay_s``. While the database is failing, the backlog grows up to ``max_queue`` and
  then ``submit`` raises :class:`LogBackpressureError`, so the caller always knows.
* A failed write is retried with exponential backoff (``write_attempts`` tries). If every try
  fails the error is logged with ``logging.exception``, the batch is kept in memory and retried
  ahead of newer records (order is preserved) until it is written; nothing is dropped.
* A batch the database refuses for good (an integrity or data error: a duplicate request id, a
  value too long for its column) is written record by record; the records it still refuses go
  to the ``prediction_dead_letters`` table with their error (counted in :attr:`dead_lettered`,
  replayable with ``PredictionLog.replay_dead_letters``), and the others are logged as usual.
  One poison record never stops the log.
* ``close()`` (call it from the SIGTERM handler or the app's shutdown hook) drains the queue and
  stops the thread. If records still cannot be written within its timeout it raises
  :class:`LogWriteError` carrying the unwritten records, so the caller can dump them elsewhere.
"""

from __future__ import annotations

import logging
import math
import queue
import threading
import time
from types import TracebackType

from lossflow.predlog.records import (
    LogBackpressureError,
    LogWriteError,
    PredictionLogError,
    PredictionRecord,
)
from lossflow.predlog.store import PERMANENT_ERRORS, PredictionLog

_log = logging.getLogger(__name__)


class BatchWriter:
    """Writes :class:`PredictionRecord` batches to a :class:`PredictionLog` off the request path.

    Args:
        log: where records go; its schema must exist (failures are retried, see module doc).
        max_batch: most records per transaction.
        max_delay_s: longest wait, from a batch's first record, before writing it.
        max_queue: most records waiting; beyond it ``submit`` raises.
        write_attempts: tries per batch before the failure is logged and the batch kept.
        retry_backoff_s: first wait between tries; doubles per try, capped at 5 s.
    """

    def __init__(
        self,
        log: PredictionLog,
        max_batch: int = 256,
        max_delay_s: float = 0.05,
        max_queue: int = 100_000,
        write_attempts: int = 3,
        retry_backoff_s: float = 0.05,
    ) -> None:
        for name, value in (
            ("max_batch", max_batch),
            ("max_queue", max_queue),
            ("write_attempts", write_attempts),
        ):
            if value < 1:
                raise ValueError(f"{name}={value}; it must be >= 1")
        for fname, fvalue in (("max_delay_s", max_delay_s), ("retry_backoff_s", retry_backoff_s)):
            if not math.isfinite(fvalue) or fvalue < 0:
                raise ValueError(f"{fname}={fvalue}; it must be finite and >= 0")
        self._log = log
        self._max_batch = max_batch
        self._max_delay_s = max_delay_s
        self._write_attempts = write_attempts
        self._retry_backoff_s = retry_backoff_s
        self._queue: queue.Queue[PredictionRecord] = queue.Queue(maxsize=max_queue)
        self._cond = threading.Condition()
        self._submitted = 0
        self._written = 0
        self._dead_lettered = 0
        self._held: list[PredictionRecord] = []
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._abandon = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="prediction-log-writer", daemon=True)
        self._thread.start()

    @property
    def running(self) -> bool:
        """The writer accepts records and its thread is alive."""
        return not self._closed and self._thread.is_alive()

    @property
    def pending(self) -> int:
        """Records submitted but not yet committed (queued, in flight or held after failures)."""
        with self._cond:
            return self._submitted - self._written

    @property
    def dead_lettered(self) -> int:
        """Records the database refused for good, kept in ``prediction_dead_letters``."""
        with self._cond:
            return self._dead_lettered

    def submit(self, record: PredictionRecord) -> None:
        """Enqueue one record without blocking.

        Raises:
            LogBackpressureError: the queue holds ``max_queue`` records already.
            PredictionLogError: the writer is closed.
        """
        with self._cond:
            if self._closed:
                raise PredictionLogError("BatchWriter is closed; create a new one to log records")
            try:
                self._queue.put_nowait(record)
            except queue.Full:
                raise LogBackpressureError(
                    f"prediction-log queue is full ({self._queue.maxsize} records waiting); the "
                    "database is not keeping up or failing (see the writer's logged errors); "
                    "shed load or raise max_queue"
                ) from None
            self._submitted += 1

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record submitted before this call is committed.

        Raises:
            TimeoutError: not all of them were committed within ``timeout`` seconds.
        """
        with self._cond:
            target = self._submitted
        self._wake.set()
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self._written < target:
                if not self._thread.is_alive():
                    raise PredictionLogError(
                        f"writer thread stopped with {target - self._written} records unwritten"
                    )
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(
                        f"flush timed out after {timeout} s with {target - self._written} records "
                        "not yet written; the database may be failing (see logged errors)"
                    )
                self._cond.wait(timeout=0.1 if remaining is None else min(remaining, 0.1))

    def close(self, timeout: float | None = 30.0) -> None:
        """Write everything submitted and stop the thread (idempotent).

        Raises:
            LogWriteError: records could not be written within ``timeout``; they are attached.
        """
        with self._cond:
            self._closed = True
            self._stopping.set()
        self._wake.set()
        self._thread.join(timeout)
        if self._thread.is_alive():
            self._abandon.set()
            self._wake.set()
            self._thread.join()
        leftover = self._held + self._drain_queue()
        self._held = []
        if leftover:
            raise LogWriteError(
                f"{len(leftover)} prediction records could not be written within {timeout} s; "
                "they are attached to this error as .records, persist them elsewhere",
                leftover,
            )

    def __enter__(self) -> BatchWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def _drain_queue(self) -> list[PredictionRecord]:
        items: list[PredictionRecord] = []
        while True:
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                return items

    def _collect(self) -> list[PredictionRecord]:
        try:
            first = self._queue.get(timeout=0.1)
        except queue.Empty:
            return []
        # One wait per batch (not one per record): every wake-up of this thread takes the GIL
        # from the request path. flush() and close() set the event and cut the wait short.
        if self._queue.qsize() < self._max_batch - 1 and not self._stopping.is_set():
            self._wake.wait(self._max_delay_s)
        batch = [first]
        while len(batch) < self._max_batch:
            try:
                batch.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return batch

    def _run(self) -> None:
        while not self._abandon.is_set():
            if not self._held:
                if self._wake.is_set() and self._queue.empty():
                    self._wake.clear()
                self._held = self._collect()
                if not self._held:
                    if self._stopping.is_set() and self._queue.empty():
                        return
                    continue
            done = self._write_with_retries(self._held)
            if done:
                with self._cond:
                    self._written += done
                    self._held = self._held[done:]
                    self._cond.notify_all()

    def _write_with_retries(self, batch: list[PredictionRecord]) -> int:
        """Write ``batch``; return how many of its first records are handled (written or
        dead-lettered). 0 after ``write_attempts`` transient failures (the caller retries)."""
        for attempt in range(1, self._write_attempts + 1):
            try:
                self._log.write_batch(batch)
            except PERMANENT_ERRORS:
                return self._write_one_by_one(batch)
            except Exception:
                if attempt == self._write_attempts:
                    _log.exception(
                        "prediction log write of %d records failed %d times; keeping the batch "
                        "in memory and retrying (%d records pending)",
                        len(batch),
                        attempt,
                        self.pending,
                    )
                    self._abandon.wait(min(5.0, self._retry_backoff_s * 2**attempt))
                    return 0
                self._abandon.wait(min(5.0, self._retry_backoff_s * 2 ** (attempt - 1)))
            else:
                return len(batch)
        return 0

    def _write_one_by_one(self, batch: list[PredictionRecord]) -> int:
        """Write records singly and dead-letter the ones refused for good; stop at the first
        transient failure (the rest are retried)."""
        for done, record in enumerate(batch):
            try:
                try:
                    self._log.write_batch([record])
                except PERMANENT_ERRORS as err:
                    self._log.dead_letter(record, err)
                    with self._cond:
                        self._dead_lettered += 1
                    _log.error(
                        "the database refused prediction %s for good; it is in "
                        "prediction_dead_letters (replay it with `lossflow dead-letters --replay` "
                        "once fixed): %s",
                        record.request_id,
                        err,
                    )
            except Exception:
                _log.exception(
                    "prediction log write failed while isolating a refused record; retrying"
                )
                self._abandon.wait(min(5.0, self._retry_backoff_s))
                return done
        return len(batch)
