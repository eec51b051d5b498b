"""One request's path through the service, whatever protocol it came in.

A protocol's route (the native ``/predict`` and ``/rank``, or the Open Inference Protocol's
``/v2/models/{name}/infer``) parses its body into a unit id and records, then hands them to
:func:`answer`: it routes the unit on the current deployment snapshot, validates and scores the
records with the variant's predictor (large requests in the thread pool), queues the log record
without blocking, hands the shadow its copy and counts the answer in the metrics. What comes back
is an :class:`Answered` for the route to write in its own format, or a :class:`Refusal` saying
what is wrong; the route renders the refusal in its protocol's error format and counts it
(:func:`count_refusal`). So every protocol's answers are logged, split, shadowed and counted
alike, and ``/feedback`` joins any of them by request id.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from lossflow.predlog import LogBackpressureError, PredictionRecord
from lossflow.serving.metrics import UNROUTED
from lossflow.serving.predictor import RecordError, logged_output
from lossflow.serving.ranking import ranked, ranked_outputs
from lossflow.serving.state import ServiceState
from lossflow.serving.variants import Deployment, Variant

_log = logging.getLogger("lossflow.serving")

THREADPOOL_RECORDS: Final = 64  # larger requests are scored off the event loop
STARTING: Final = "the service is starting; no models are loaded yet"
REPLAY_ONLY: Final = "'ts' is accepted only by a service running with replay_clock: true (replays)"
BAD_CLOCK: Final = "must be an ISO 8601 time with a zone, e.g. ...Z"

Loc = tuple[str | int, ...]


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a request got no prediction.

    Attributes:
        status: The HTTP status in the native protocol (422 for a caller's invalid input).
        reason: The metrics' error reason (``invalid_body``, ``invalid_record``, ``too_large``,
            ``starting``, ``model_error``, ``log_backpressure``, ``wrong_version``).
        message: What is wrong and what to do.
        loc: Where in the native body the problem is (``("body", "records", 3, "distance")``);
            for a :class:`~lossflow.serving.predictor.RecordError` the record and field.
        variant: The variant the unit was routed to (``UNROUTED`` before routing).
        retry_after: The caller may retry in a second (a full log queue).
        record: For an invalid record, its position in the request.
        field: For an invalid record, the offending field (empty: the record itself).
    """

    status: int
    reason: str
    message: str
    loc: Loc = ()
    variant: str = UNROUTED
    retry_after: bool = False
    record: int | None = None
    field: str = ""


@dataclass(frozen=True, slots=True)
class Answered:
    """A scored, logged request.

    Attributes:
        request_id: The log's id of the answer (``/feedback`` joins on it).
        variant: The variant that answered.
        outputs: What the log holds per record, in order (``/predict``'s ``predictions``).
        ranking: For a list (``/rank``): ``scores`` and ``order``; else ``None``.
    """

    request_id: str
    variant: Variant
    outputs: list[dict[str, Any]]
    ranking: dict[str, list[Any]] | None


class TooLargeError(Exception):
    """The body is over the service's size limit."""


async def read_body(request: Request, limit: int) -> bytes:
    """The request's body, refused past ``limit`` bytes (declared or streamed).

    Raises:
        TooLargeError: The body is over ``limit``.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise TooLargeError
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def too_large(state: ServiceState) -> Refusal:
    """The refusal of a body over ``limits.max_body_bytes``."""
    limit = state.cfg.limits.max_body_bytes
    return Refusal(413, "too_large", f"body exceeds {limit} bytes")


def count_refusal(state: ServiceState, refusal: Refusal, status: int, started: float) -> None:
    """Count a refused request in the metrics under the status it was answered with."""
    reason = refusal.reason
    if reason == "invalid":
        reason = "invalid_record" if refusal.variant != UNROUTED else "invalid_body"
    state.metrics.failed(refusal.variant, status, reason, time.perf_counter() - started)


async def answer(
    state: ServiceState,
    unit_id: str,
    records: Any,
    clock: datetime | None,
    started: float,
    *,
    ranking: bool = False,
    version: str | None = None,
    loc: Loc = ("body", "records"),
) -> Answered | Refusal:
    """Route, score, log and shadow one request's ``records``.

    Args:
        state: The service.
        unit_id: The unit the A/B split routes.
        records: The feature records as parsed (validated here, by the variant's predictor).
        clock: The logged time (replays); ``None``: now.
        started: When the request started (``time.perf_counter()``), for latency.
        ranking: ``records`` are the items of one list (``/rank``).
        version: Answer only if the unit's variant serves this model version (a protocol's
            versioned path); the split is never overridden.
        loc: Where the records are in the native body, for a refusal's ``loc``.
    """
    limits = state.cfg.limits
    if isinstance(records, list) and len(records) > limits.max_records:
        too_many = (
            f"{len(records)} {'items' if ranking else 'records'} exceed the limit of "
            f"{limits.max_records} per request; "
            "split the request"
        )
        return Refusal(422, "invalid", too_many, loc)
    deployment = state.deployment
    if deployment is None:
        return Refusal(503, "starting", STARTING)
    if ranking and deployment.task != "ranking":
        wrong_task = (
            f"the served models are {deployment.task} models; /rank serves ranking models: "
            "send the records to /predict"
        )
        return Refusal(422, "invalid", wrong_task, loc)
    variant = deployment.variants[deployment.router.assign(unit_id)]
    if version is not None and variant.model_version != version:
        return _wrong_version(deployment, variant, unit_id, version)
    variant_name = variant.name
    try:
        if isinstance(records, list) and len(records) > THREADPOOL_RECORDS:
            predictions = await run_in_threadpool(variant.predictor.predict, records)
        else:
            predictions = variant.predictor.predict(records)
    except RecordError as err:
        return Refusal(
            422,
            "invalid",
            err.problem,
            _record_loc(loc, err),
            variant_name,
            record=err.record,
            field=err.field,
        )
    except Exception as err:  # the model failed: counted against its variant (A/B guardrail)
        _log.exception(
            "variant failed to answer",
            extra={"event": "predict_failed", "variant": variant_name},
        )
        if state.log is not None:
            await run_in_threadpool(_record_failure, state, unit_id, deployment, variant, err)
        return Refusal(
            500,
            "model_error",
            f"variant {variant_name!r} failed to answer; see the service log",
            variant=variant_name,
        )
    request_id = uuid.uuid4().hex
    order: dict[str, list[Any]] | None = None
    if ranking:
        order = ranked(predictions)
        outputs = ranked_outputs(order)
        if None in order["scores"]:
            _log.warning(
                "the model gave items no finite score; they are ranked last",
                extra={"event": "nonfinite_score", "variant": variant_name},
            )
    else:
        labels = variant.predictor.label_names
        outputs = [logged_output(p, labels) for p in predictions]
    elapsed = time.perf_counter() - started
    experiment = deployment.router.split.experiment
    if state.writer is not None:
        try:
            state.writer.submit(
                PredictionRecord(
                    request_id,
                    unit_id,
                    clock or datetime.now(UTC),
                    experiment,
                    variant_name,
                    variant.model_version,
                    variant.loss_id,
                    records,
                    outputs,
                    elapsed * 1000.0,
                )
            )
        except LogBackpressureError as err:
            return Refusal(503, "log_backpressure", str(err), retry_after=True)
    if deployment.shadow is not None and state.shadow is not None:
        state.shadow.submit(
            deployment.shadow,
            state.writer,
            experiment,
            request_id,
            unit_id,
            records,
            ranking=ranking,
        )
    state.metrics.answered(variant_name, len(outputs), elapsed)
    if state.cfg.access_log:
        _log.info(
            "predict",
            extra={
                "event": "predict",
                "request_id": request_id,
                "variant": variant_name,
                "records": len(outputs),
                "latency_ms": round(elapsed * 1000.0, 3),
            },
        )
    return Answered(request_id, variant, outputs, order)


def _wrong_version(deployment: Deployment, variant: Variant, unit_id: str, version: str) -> Refusal:
    served = served_versions(deployment)
    if version not in served:
        message = f"model version {version!r} is not served; served versions: {', '.join(served)}"
        return Refusal(404, "wrong_version", message)
    message = (
        f"unit {unit_id!r} is assigned to variant {variant.name!r} (version "
        f"{variant.model_version}) by the A/B split, not to version {version}; call the "
        "model's path without a version to be answered by the unit's variant"
    )
    return Refusal(400, "wrong_version", message)


def served_versions(deployment: Deployment) -> list[str]:
    """The model versions the variants serve (the shadow is never addressed), sorted."""
    return sorted({v.model_version for v in deployment.variants.values()})


def parse_clock(value: Any) -> datetime | None:
    """A replay's ``ts``: an ISO 8601 time with a zone, as UTC (``None``: not one)."""
    try:
        ts = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    if ts.tzinfo is None:
        return None
    return ts.astimezone(UTC)


def _record_loc(loc: Loc, err: RecordError) -> Loc:
    if err.record is None:
        return loc
    if err.field:
        return (*loc, err.record, err.field)
    return (*loc, err.record)


def _record_failure(
    state: ServiceState, unit_id: str, deployment: Deployment, variant: Variant, err: Exception
) -> None:
    if state.log is None:  # checked by the caller; kept for the type checker
        return
    try:
        state.log.record_failure(
            unit_id,
            deployment.router.split.experiment,
            variant.name,
            variant.model_version,
            500,
            f"{type(err).__name__}: {err}",
        )
    except Exception:  # the answer is a 500 either way; the service log has both errors
        _log.exception("cannot record the failure", extra={"event": "failure_not_logged"})


def headers_of(refusal: Refusal) -> Mapping[str, str] | None:
    """The response headers a refusal carries (``Retry-After`` for a full log queue)."""
    return {"Retry-After": "1"} if refusal.retry_after else None
