"""Delayed feedback: the true labels of an answered request, posted ``delay_s`` after the answer."""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Final

import httpx
import orjson

from lossflow.replay.report import Answer
from lossflow.replay.rows import JsonScalar

JSON_HEADERS: Final = {"content-type": "application/json"}
SHOWN_CHARS: Final = 300


def detail(response: httpx.Response) -> str:
    """The ``detail`` of an error answer (or its text), shortened for a report."""
    try:
        text = response.json().get("detail", response.text)
    except (ValueError, AttributeError):
        text = response.text
    shown = text if isinstance(text, str) else orjson.dumps(text).decode()
    return shown[:SHOWN_CHARS]


class DelayedFeedback:
    """Posts each answer's labels to ``/feedback`` at its due time (one event loop).

    Args:
        client: the service's HTTP client.
        concurrency: most ``/feedback`` posts in flight.
        stop: once set, feedback not yet posted is not posted.
        keep_error: records a failure message for the report.

    Attributes:
        outcomes: posts by HTTP status (``201`` stored, ``200`` duplicate, ...) or transport
            error name.
    """

    def __init__(
        self,
        client: httpx.AsyncClient,
        concurrency: int,
        stop: asyncio.Event,
        keep_error: Callable[[str], None],
    ) -> None:
        self._client = client
        self._slots = asyncio.Semaphore(concurrency)
        self._stop = stop
        self._keep_error = keep_error
        self._loop = asyncio.get_running_loop()
        self._tasks: set[asyncio.Task[None]] = set()
        self.outcomes: Counter[str] = Counter()

    def schedule(self, answer: Answer, labels: tuple[JsonScalar, ...], delay_s: float) -> None:
        """Post ``labels`` for ``answer`` ``delay_s`` seconds from now."""
        due = self._loop.time() + delay_s
        task = asyncio.ensure_future(self._post(answer, labels, due, delay_s))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def wait(self) -> None:
        """Until every scheduled post is done, or the replay is stopped."""
        stopper = asyncio.ensure_future(self._stop.wait())
        try:
            while self._tasks and not self._stop.is_set():
                await asyncio.wait({*self._tasks, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopper.cancel()

    async def cancel(self) -> None:
        """Cancel the posts not yet done (they count as not posted)."""
        pending = list(self._tasks)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    async def _post(
        self, answer: Answer, labels: tuple[JsonScalar, ...], due: float, delay_s: float
    ) -> None:
        wait = due - self._loop.time()
        if wait > 0 and not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):
                    await self._stop.wait()
        if self._stop.is_set():
            return
        payload: dict[str, object] = {"request_id": answer.request_id, "labels": list(labels)}
        if answer.ts is not None:  # the replay's clock: known delay_s after the answer
            known = datetime.fromisoformat(answer.ts) + timedelta(seconds=delay_s)
            payload["ts"] = known.isoformat()
        body = orjson.dumps(payload)
        async with self._slots:
            try:
                response = await self._client.post("/feedback", content=body, headers=JSON_HEADERS)
            except httpx.HTTPError as err:
                self.outcomes[type(err).__name__] += 1
                self._keep_error(f"/feedback {answer.request_id}: {type(err).__name__}: {err}")
                return
        self.outcomes[str(response.status_code)] += 1
        if response.status_code not in (200, 201):
            self._keep_error(
                f"/feedback {answer.request_id}: {response.status_code} {detail(response)}"
            )
