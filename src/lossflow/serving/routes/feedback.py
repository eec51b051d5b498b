"""``POST /feedback``: the true labels of an answered request, stored once.

The labels are checked against the served task, then attached to the request's log row; a row
still queued in the writer is flushed first. On a service with a shadow, the shadow's answer to
the same request is labelled after the client is answered, and its absence is no error of the
feedback (:func:`lossflow.serving.shadow.label_shadow`); a service without one never looks.
"""

from __future__ import annotations

import functools
import math
from datetime import datetime
from typing import Any, Final

from fastapi import APIRouter, BackgroundTasks, HTTPException, Response
from starlette.concurrency import run_in_threadpool

from lossflow.predlog import (
    BatchWriter,
    FeedbackConflictError,
    PredictionLog,
    UnknownRequestError,
)
from lossflow.serving.answering import REPLAY_ONLY
from lossflow.serving.schemas import FeedbackRequest, FeedbackResponse, errors
from lossflow.serving.shadow import label_shadow
from lossflow.serving.state import Service, ServiceState
from lossflow.serving.variants import Deployment

FEEDBACK_FLUSH_S: Final = 5.0

router = APIRouter()


@router.post(
    "/feedback",
    status_code=201,
    responses={
        200: {"model": FeedbackResponse, "description": "already stored"},
        **errors(400, 404, 409, 503),
    },
)
async def feedback(
    body: FeedbackRequest, response: Response, state: Service, background: BackgroundTasks
) -> FeedbackResponse:
    """Store the true labels of a request's records (idempotent; write-once)."""
    if state.log is None:
        raise HTTPException(503, "this service runs without a prediction log (log.enabled)")
    if body.ts is not None and not state.cfg.replay_clock:
        raise HTTPException(
            422, [{"loc": ["body", "ts"], "msg": REPLAY_ONLY, "type": "value_error"}]
        )
    labels = _check_labels(state.current(), body.labels)
    stored = await run_in_threadpool(_store, state, body.request_id, labels, body.ts)
    state.metrics.feedback("stored" if stored else "duplicate")
    if state.shadow is not None and ":" not in body.request_id:
        store = functools.partial(
            record_feedback,
            state.log,
            state.writer,
            labels=labels,
            ts=body.ts,
            timeout=FEEDBACK_FLUSH_S,
        )
        background.add_task(
            label_shadow, state.shadow, store, body.request_id, state.metrics, FEEDBACK_FLUSH_S
        )
    if not stored:
        response.status_code = 200
    return FeedbackResponse(request_id=body.request_id, stored=stored)


def record_feedback(
    log: PredictionLog,
    writer: BatchWriter | None,
    request_id: str,
    labels: list[Any],
    ts: datetime | None,
    timeout: float,
) -> bool:
    """``log.record_feedback``, once more after a flush if the prediction may still be queued.

    Raises:
        UnknownRequestError: no such request in the log, also after the flush.
        TimeoutError: the flush took longer than ``timeout`` seconds.
    """
    try:
        return log.record_feedback(request_id, labels, ts)
    except UnknownRequestError:
        # Flush whatever is pending (perhaps nothing: the write may have committed since the
        # lookup), then look once more.
        if writer is None:
            raise
    writer.flush(timeout=timeout)
    return log.record_feedback(request_id, labels, ts)


def _store(
    state: ServiceState, request_id: str, labels: list[Any], ts: datetime | None = None
) -> bool:
    if state.log is None:  # checked by the handler; kept for the type checker
        raise HTTPException(503, "this service runs without a prediction log")
    try:
        return record_feedback(state.log, state.writer, request_id, labels, ts, FEEDBACK_FLUSH_S)
    except TimeoutError as err:
        raise HTTPException(
            503,
            f"the prediction log is behind ({err}); send the feedback again shortly",
            headers={"Retry-After": "5"},
        ) from None
    except UnknownRequestError as err:
        state.metrics.feedback("unknown")
        raise HTTPException(404, str(err)) from None
    except FeedbackConflictError as err:
        state.metrics.feedback("conflict")
        raise HTTPException(409, str(err)) from None
    except ValueError as err:
        state.metrics.feedback("invalid")
        raise HTTPException(
            422, [{"loc": ["body", "labels"], "msg": str(err), "type": "value_error"}]
        ) from None


def _check_labels(deployment: Deployment, labels: list[Any]) -> list[Any]:
    """Labels in the form the task stores them, or 422 naming the first bad one."""
    predictor = deployment.predictor
    task = deployment.task
    names = predictor.label_names or ()
    by_text = {str(n): n for n in names}
    checked: list[Any] = []
    for i, label in enumerate(labels):
        problem = None
        if task == "binary":
            code = predictor.binary_label(label)
            if code is not None:
                checked.append(code)
                continue
            classes = f" or the class names {list(names)}" if names else ""
            problem = f"binary labels are 0 or 1{classes} (got {label!r})"
        elif task == "multiclass":
            if str(label) in by_text and not isinstance(label, bool | float):
                checked.append(by_text[str(label)])
                continue
            problem = f"unknown class {label!r}; classes: {list(names)}"
        elif isinstance(label, int | float) and not isinstance(label, bool):
            if math.isfinite(label) and (task != "ranking" or label >= 0):
                checked.append(float(label))
                continue
            problem = (
                "ranking labels are graded relevances: finite numbers >= 0, one per item"
                if task == "ranking"
                else "labels must be finite numbers"
            )
        else:
            problem = f"{task} labels are numbers (got {label!r})"
        raise HTTPException(
            422, [{"loc": ["body", "labels", i], "msg": problem, "type": "value_error"}]
        )
    return checked
