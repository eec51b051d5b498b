"""``POST /predict`` and ``POST /rank``: the hot path.

The body is read with a size cap and parsed with orjson; :func:`lossflow.serving.answering.answer`
then routes the unit on the current :class:`~lossflow.serving.variants.Deployment` snapshot,
validates and scores the records with the variant's
:class:`~lossflow.serving.predictor.OnnxPredictor` (requests of more than ``THREADPOOL_RECORDS``
records in the thread pool, smaller ones on the event loop), and queues the log record without
blocking. A full log queue answers 503 instead of serving an unlogged prediction. The shadow, if
any, is handed the request after the answer is built and scores it in its own thread
(:mod:`lossflow.serving.shadow`).

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
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import orjson
from fastapi import APIRouter, Request, Response

from lossflow.serving.answering import (
    BAD_CLOCK,
    REPLAY_ONLY,
    Refusal,
    TooLargeError,
    answer,
    count_refusal,
    headers_of,
    parse_clock,
    read_body,
    too_large,
)
from lossflow.serving.metrics import UNROUTED
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

_log = logging.getLogger("lossflow.serving")

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
        state.metrics.failed(UNROUTED, 500, "internal", time.perf_counter() - started)
        return _error(500, "internal error; see the service log")


async def _answer(
    state: ServiceState, request: Request, started: float, field: RecordsField
) -> Response:
    try:
        body = await read_body(request, state.cfg.limits.max_body_bytes)
    except TooLargeError:
        return _refuse(state, too_large(state), started)
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        return _reject(state, _invalid(["body"], f"not valid JSON: {err}"), started)
    parsed = _parse(payload, state.cfg.replay_clock, field)
    if isinstance(parsed, Response):
        return _reject(state, parsed, started)
    unit_id, records, clock = parsed
    ranking = field == "items"
    result = await answer(
        state, unit_id, records, clock, started, ranking=ranking, loc=("body", field)
    )
    if isinstance(result, Refusal):
        return _refuse(state, result, started)
    answered: dict[str, Any] = {
        "request_id": result.request_id,
        "variant": result.variant.name,
        "model_version": result.variant.model_version,
        "loss_id": result.variant.loss_id,
    }
    if result.ranking is not None:
        answered.update(result.ranking)
    else:
        answered["predictions"] = result.outputs
    return Response(orjson.dumps(answered), media_type=JSON)


def _refuse(state: ServiceState, refusal: Refusal, started: float) -> Response:
    count_refusal(state, refusal, refusal.status, started)
    if refusal.status == 422:
        return _invalid(list(refusal.loc), refusal.message)
    return _error(refusal.status, refusal.message, headers_of(refusal))


def _reject(state: ServiceState, response: Response, started: float) -> Response:
    elapsed = time.perf_counter() - started
    state.metrics.failed(UNROUTED, response.status_code, "invalid_body", elapsed)
    return response


def _error(status: int, msg: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"detail": msg}), status_code=status, media_type=JSON, headers=headers
    )


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
        ts = parse_clock(payload["ts"])
        if ts is None:
            return _invalid(["body", "ts"], BAD_CLOCK)
    return unit_id, payload[field], ts
