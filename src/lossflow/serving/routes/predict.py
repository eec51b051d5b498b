"""``POST /predict`` and ``POST /rank``: the hot path.

The body is read with a size cap and parsed with orjson, the unit is routed on the current
:class:`~lossflow.serving.variants.Deployment` snapshot, the records are validated and scored by
the variant's :class:`~lossflow.serving.predictor.OnnxPredictor` (requests of more than
``THREADPOOL_RECORDS`` records in the thread pool, smaller ones on the event loop), and the log
record is queued without blocking. A full log queue answers 503 instead of serving an unlogged
prediction. The shadow, if any, is handed the request after the answer is built and scores it in
its own thread (:mod:`lossflow.serving.shadow`).

``POST /rank`` is the same path for one list of a ranking model: ``items`` are validated and
scored like ``records`` (each item on its own), the answer adds the order by score
(:mod:`lossflow.serving.ranking`), and the log holds the list as one row (feedback: one graded
relevance per item).

Both endpoints take only the request, read their state from it and never raise: every error is
answered here as JSON (a 500 is logged with its traceback) and counted in the metrics. That is
what lets the app hand ``/predict`` to :func:`predict` directly (``create_app``'s
``predict_fast_path``).
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request, Response
from starlette.concurrency import run_in_threadpool

from lossflow.predlog import LogBackpressureError, PredictionRecord
from lossflow.serving.metrics import UNROUTED
from lossflow.serving.predictor import RecordError, logged_output
from lossflow.serving.ranking import ranked, ranked_outputs
from lossflow.serving.schemas import (
    JSON,
    MAX_UNIT_ID,
    PredictRequest,
    PredictResponse,
    RankRequest,
    RankResponse,
    RecordsField,
    raw_json_route,
)
from lossflow.serving.state import ServiceState, service
from lossflow.serving.variants import Deployment, Variant

_log = logging.getLogger("lossflow.serving")

THREADPOOL_RECORDS: Final = 64  # larger requests are scored off the event loop
REPLAY_ONLY: Final = "'ts' is accepted only by a service running with replay_clock: true (replays)"

router = APIRouter()


@router.post("/predict", **raw_json_route(PredictRequest, PredictResponse))
async def predict(request: Request) -> Response:
    """Score 1..N raw records with the variant the unit is assigned to."""
    return await _answer_or_500(request, "records")


@router.post("/rank", **raw_json_route(RankRequest, RankResponse))
async def rank(request: Request) -> Response:
    """Score and order the items of one list with the variant the unit is assigned to."""
    return await _answer_or_500(request, "items")


async def _answer_or_500(request: Request, field: RecordsField) -> Response:
    started = time.perf_counter()
    state = service(request)
    try:
        return await _answer(state, request, started, field)
    except Exception:  # answered as a JSON 500 and logged, also on the fast path
        what = "predict" if field == "records" else "rank"
        _log.exception(f"{what} failed", extra={"event": "predict_failed"})
        return _fail(state, 500, "internal", "internal error; see the service log", started)


async def _answer(
    state: ServiceState, request: Request, started: float, field: RecordsField
) -> Response:
    limits = state.cfg.limits
    try:
        body = await _read_body(request, limits.max_body_bytes)
    except _TooLargeError:
        return _fail(
            state, 413, "too_large", f"body exceeds {limits.max_body_bytes} bytes", started
        )
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        return _reject(state, _invalid(["body"], f"not valid JSON: {err}"), UNROUTED, started)
    parsed = _parse(payload, state.cfg.replay_clock, field)
    if isinstance(parsed, Response):
        return _reject(state, parsed, UNROUTED, started)
    unit_id, records, clock = parsed
    if isinstance(records, list) and len(records) > limits.max_records:
        too_many = (
            f"{len(records)} {field} exceed the limit of {limits.max_records} per request; "
            "split the request"
        )
        return _reject(state, _invalid(["body", field], too_many), UNROUTED, started)
    deployment = state.deployment
    if deployment is None:
        return _fail(
            state, 503, "starting", "the service is starting; no models are loaded yet", started
        )
    if field == "items" and deployment.task != "ranking":
        wrong_task = (
            f"the served models are {deployment.task} models; /rank serves ranking models: "
            "send the records to /predict"
        )
        return _reject(state, _invalid(["body", "items"], wrong_task), UNROUTED, started)
    variant = deployment.variants[deployment.router.assign(unit_id)]
    variant_name = variant.name
    try:
        if isinstance(records, list) and len(records) > THREADPOOL_RECORDS:
            predictions = await run_in_threadpool(variant.predictor.predict, records)
        else:
            predictions = variant.predictor.predict(records)
    except RecordError as err:
        return _reject(state, _invalid(_record_loc(err, field), err.problem), variant_name, started)
    except Exception as err:  # the model failed: counted against its variant (A/B guardrail)
        _log.exception(
            "variant failed to answer",
            extra={"event": "predict_failed", "variant": variant_name},
        )
        if state.log is not None:
            await run_in_threadpool(_record_failure, state, unit_id, deployment, variant, err)
        return _fail(
            state,
            500,
            "model_error",
            f"variant {variant_name!r} failed to answer; see the service log",
            started,
            variant=variant_name,
        )
    request_id = uuid.uuid4().hex
    answered: dict[str, Any] = {
        "request_id": request_id,
        "variant": variant_name,
        "model_version": variant.model_version,
        "loss_id": variant.loss_id,
    }
    if field == "items":
        answered.update(ranked(predictions))
        outputs = ranked_outputs(answered)
        if None in answered["scores"]:
            _log.warning(
                "the model gave items no finite score; they are ranked last",
                extra={"event": "nonfinite_score", "variant": variant_name},
            )
    else:
        outputs = [logged_output(p, variant.predictor.label_names) for p in predictions]
        answered["predictions"] = outputs
    content = orjson.dumps(answered)
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
            return _fail(state, 503, "log_backpressure", str(err), started, {"Retry-After": "1"})
    if deployment.shadow is not None and state.shadow is not None:
        state.shadow.submit(
            deployment.shadow,
            state.writer,
            experiment,
            request_id,
            unit_id,
            records,
            ranking=field == "items",
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
    return Response(content, media_type=JSON)


def _reject(state: ServiceState, response: Response, variant: str, started: float) -> Response:
    reason = "invalid_record" if variant != UNROUTED else "invalid_body"
    state.metrics.failed(variant, response.status_code, reason, time.perf_counter() - started)
    return response


def _fail(
    state: ServiceState,
    status: int,
    reason: str,
    msg: str,
    started: float,
    headers: Mapping[str, str] | None = None,
    variant: str = UNROUTED,
) -> Response:
    state.metrics.failed(variant, status, reason, time.perf_counter() - started)
    return Response(
        orjson.dumps({"detail": msg}), status_code=status, media_type=JSON, headers=headers
    )


class _TooLargeError(Exception):
    pass


async def _read_body(request: Request, limit: int) -> bytes:
    length = request.headers.get("content-length")
    if length is not None and length.isdigit():
        if int(length) > limit:
            raise _TooLargeError
        return await request.body()
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLargeError
        chunks.append(chunk)
    return b"".join(chunks)


def _invalid(loc: list[str | int], msg: str) -> Response:
    content = {"detail": [{"loc": loc, "msg": msg, "type": "value_error"}]}
    return Response(orjson.dumps(content), status_code=422, media_type=JSON)


def _parse(
    payload: Any, replay_clock: bool, field: RecordsField
) -> tuple[str, Any, datetime | None] | Response:
    if not isinstance(payload, dict):
        return _invalid(["body"], f"must be a JSON object with 'unit_id' and '{field}'")
    for key in payload:
        if key == "ts" and not replay_clock:
            return _invalid(["body", "ts"], REPLAY_ONLY)
        if key not in ("unit_id", field, "ts"):
            return _invalid(["body", key], f"unknown field; send only 'unit_id' and '{field}'")
    unit_id = payload.get("unit_id")
    if unit_id is None:
        return _invalid(["body", "unit_id"], "field required: the id of the user/session/device")
    if not isinstance(unit_id, str) or not 1 <= len(unit_id) <= MAX_UNIT_ID:
        return _invalid(["body", "unit_id"], f"must be a string of 1 to {MAX_UNIT_ID} characters")
    if field not in payload:
        return _invalid(["body", field], "field required: a list of feature records")
    ts = None
    if "ts" in payload:
        try:
            ts = datetime.fromisoformat(str(payload["ts"]))
        except ValueError:
            ts = None
        if ts is None or ts.tzinfo is None:
            return _invalid(["body", "ts"], "must be an ISO 8601 time with a zone, e.g. ...Z")
        ts = ts.astimezone(UTC)
    return unit_id, payload[field], ts


def _record_loc(err: RecordError, field: RecordsField) -> list[str | int]:
    loc: list[str | int] = ["body", field]
    if err.record is None:
        return loc
    loc.append(err.record)
    if err.field:
        loc.append(err.field)
    return loc


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
