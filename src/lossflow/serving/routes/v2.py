"""The Open Inference Protocol (KServe "V2") REST API beside the native one, on the same service.

Server metadata and health (``/v2``, ``/v2/health/live``, ``/v2/health/ready``), model metadata
and readiness (``/v2/models/{name}[/versions/{v}][/ready]``) and inference
(``POST /v2/models/{name}[/versions/{v}]/infer``). The model's name is the registered model the
service serves; its versions are those of the variants answering traffic (the shadow is never
addressed). Inference goes through :func:`lossflow.serving.answering.answer` like ``/predict``
(or, for a ranking model, like ``/rank``: one request is one list): the unit in
``parameters.unit_id`` is routed by the A/B split, the answer is logged, shadowed and counted
exactly as a native one, and its ``parameters`` carry ``request_id`` (the id ``/feedback``
joins), ``variant`` and ``loss_id``. The answer's ``id`` is the caller's ``id`` when it sent
one, else the request id. A versioned path is answered only when the unit's variant serves that
version: the split is never overridden (a 400 says which version the unit has).

Errors are ``{"error": "..."}``: 400 for a caller's mistake, 404 for a model or version not
served, 413 for a body over the limit, 503 while starting or when the log is full, 500 (logged
with its traceback) for a fault of the service. Readiness answers 200 or, as the protocol says,
a 4xx. The request and answer formats are in :mod:`lossflow.serving.oip`; the protocol's own
OpenAPI document describes these routes, so they are left out of the service's ``/openapi.json``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from typing import Any, Final

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.exception_handlers import http_exception_handler
from starlette.exceptions import HTTPException as StarletteHTTPException

from lossflow import __version__
from lossflow.serving import oip
from lossflow.serving.answering import (
    BAD_CLOCK,
    REPLAY_ONLY,
    STARTING,
    Refusal,
    TooLargeError,
    answer,
    count_refusal,
    headers_of,
    parse_clock,
    read_body,
    served_versions,
    too_large,
)
from lossflow.serving.metrics import UNROUTED
from lossflow.serving.schemas import JSON
from lossflow.serving.state import ServiceState, service
from lossflow.serving.variants import Deployment

_log = logging.getLogger("lossflow.serving")

PREFIX: Final = "/v2"
PLATFORM: Final = "onnxruntime_onnx"
BINARY: Final = "application/octet-stream"

_MODELS: Final = f"{PREFIX}/models/"
_INFER: Final = "/infer"

router = APIRouter(prefix=PREFIX, include_in_schema=False)


@router.get("")
@router.get("/")
async def server_metadata() -> Response:
    """The server's name, version and protocol extensions."""
    return _json({"name": "lossflow", "version": __version__, "extensions": [oip.BINARY_EXTENSION]})


@router.get("/health/live")
async def live() -> Response:
    """Liveness: the process answers."""
    return _json({"live": True})


@router.get("/health/ready")
async def ready(request: Request) -> Response:
    """Readiness: models loaded and the prediction log writer running (else a 400)."""
    state = service(request)
    if state.deployment is None:
        return _error(400, STARTING)
    if state.writer is not None and not state.writer.running:
        return _error(400, "the prediction-log writer is not running")
    return _json({"ready": True})


@router.get("/models/{model_name}")
@router.get("/models/{model_name}/versions/{model_version}")
async def model_metadata(
    request: Request, model_name: str, model_version: str | None = None
) -> Response:
    """The model's versions, platform, input tensors (one per feature) and output tensors."""
    state = service(request)
    found = _served(state, model_name, model_version)
    if isinstance(found, Response):
        return found
    predictor = found.predictor
    numeric = predictor.numeric_features
    classes = predictor.label_names
    properties = {"task": found.task, "unit_id": "required request parameter: the A/B unit"}
    if classes:
        properties["classes"] = json.dumps([str(c) for c in classes])
    return _json(
        {
            "name": model_name,
            "versions": [model_version] if model_version else served_versions(found),
            "platform": PLATFORM,
            "inputs": [
                {"name": f, "datatype": "FP32" if f in numeric else oip.BYTES, "shape": [-1]}
                for f in found.features
            ],
            "outputs": oip.output_metadata(found.task, classes),
            "properties": properties,
        }
    )


@router.get("/models/{model_name}/ready")
@router.get("/models/{model_name}/versions/{model_version}/ready")
async def model_ready(
    request: Request, model_name: str, model_version: str | None = None
) -> Response:
    """200 when the model (version) answers; a 4xx when not (404: not served here)."""
    found = _served(service(request), model_name, model_version)
    if isinstance(found, Response):
        return found
    return _json({"name": model_name, "ready": True})


@router.post("/models/{model_name}/infer")
@router.post("/models/{model_name}/versions/{model_version}/infer")
async def infer(request: Request, model_name: str, model_version: str | None = None) -> Response:
    """Score the records the input tensors hold with the variant the unit is assigned to."""
    return await infer_request(request, model_name, model_version)


def infer_path(path: str) -> tuple[str, str | None] | None:
    """The model name and version of an ``infer`` path (``None``: not one), for the app's fast
    path; the same paths as the routes above.

    Example:
        >>> infer_path("/v2/models/penguins/versions/2/infer")
        ('penguins', '2')
        >>> infer_path("/v2/models/penguins/infer"), infer_path("/v2/models//infer")
        (('penguins', None), None)
    """
    if not path.startswith(_MODELS) or not path.endswith(_INFER):
        return None
    parts = path[len(_MODELS) : -len(_INFER)].split("/")
    if len(parts) == 1 and parts[0]:
        return parts[0], None
    if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
        return parts[0], parts[2]
    return None


async def infer_request(request: Request, model_name: str, model_version: str | None) -> Response:
    """``infer`` for a request routed by FastAPI or by the app's fast path: reads its own body,
    answers every error itself and never raises (a 500 is logged with its traceback)."""
    started = time.perf_counter()
    state = service(request)
    try:
        return await _infer(state, request, model_name, model_version, started)
    except Exception:  # answered as a V2 error and logged
        _log.exception("v2 infer failed", extra={"event": "predict_failed"})
        state.metrics.failed(UNROUTED, 500, "internal", time.perf_counter() - started)
        return _error(500, "internal error; see the service log")


async def http_error(request: Request, exc: Exception) -> Response:
    """FastAPI's HTTP errors (an unknown path, a wrong method) as ``{"error"}`` under ``/v2``."""
    assert isinstance(exc, StarletteHTTPException)
    if request.url.path == PREFIX or request.url.path.startswith(PREFIX + "/"):
        return _error(exc.status_code, str(exc.detail), exc.headers)
    return await http_exception_handler(request, exc)


async def _infer(
    state: ServiceState,
    request: Request,
    model_name: str,
    model_version: str | None,
    started: float,
) -> Response:
    if model_name != state.loader.model_name:
        unknown = Refusal(404, "unknown_model", _not_served(state, model_name))
        return _refuse(state, unknown, started)
    try:
        body = await read_body(request, state.cfg.limits.max_body_bytes)
    except TooLargeError:
        return _refuse(state, too_large(state), started)
    try:
        parsed = oip.parse_request(body, request.headers.get(oip.HEADER_LENGTH))
    except oip.ProtocolError as err:
        return _refuse(state, Refusal(422, "invalid", str(err)), started)
    for key, named, in_path in (
        ("model_name", parsed.model_name, model_name),
        ("model_version", parsed.model_version, model_version),
    ):
        if named is not None and in_path is not None and named != in_path:
            mismatch = f"the body's {key} {named!r} is not the path's {in_path!r}"
            return _refuse(state, Refusal(422, "invalid", mismatch), started)
    model_version = model_version or parsed.model_version
    clock = None
    if parsed.ts is not None:
        if not state.cfg.replay_clock:
            return _refuse(state, Refusal(422, "invalid", f"parameters.ts: {REPLAY_ONLY}"), started)
        clock = parse_clock(parsed.ts)
        if clock is None:
            return _refuse(state, Refusal(422, "invalid", f"parameters.ts {BAD_CLOCK}"), started)
    deployment = state.deployment
    if deployment is None:
        return _refuse(state, Refusal(503, "starting", STARTING), started)
    predictor = deployment.predictor
    try:
        records = oip.records_of(parsed.inputs, deployment.features, predictor.numeric_features)
        if parsed.outputs is not None:
            outputs = oip.output_metadata(deployment.task, predictor.label_names)
            oip.check_requested(parsed.outputs, [o["name"] for o in outputs])
    except oip.ProtocolError as err:
        return _refuse(state, Refusal(422, "invalid", str(err)), started)
    result = await answer(
        state,
        parsed.unit_id,
        records,
        clock,
        started,
        ranking=deployment.task == "ranking",
        version=model_version,
        loc=("inputs",),
    )
    if isinstance(result, Refusal):
        return _refuse(state, result, started)
    variant = result.variant
    header = {
        "model_name": model_name,
        "model_version": variant.model_version,
        "id": parsed.id if parsed.id is not None else result.request_id,
        "parameters": {
            "request_id": result.request_id,
            "variant": variant.name,
            "loss_id": variant.loss_id,
        },
    }
    tensors = oip.output_tensors(
        variant.predictor.task, result.outputs, variant.predictor.label_names
    )
    content, header_length = oip.encode_answer(
        header, tensors, parsed.outputs, parsed.binary_output
    )
    if header_length is None:
        return Response(content, media_type=JSON)
    return Response(content, media_type=BINARY, headers={oip.HEADER_LENGTH: str(header_length)})


def _refuse(state: ServiceState, refusal: Refusal, started: float) -> Response:
    status = 400 if refusal.status == 422 else refusal.status
    count_refusal(state, refusal, status, started)
    message = refusal.message
    if refusal.record is not None:
        where = f"input {refusal.field!r}, " if refusal.field else ""
        message = f"{where}record {refusal.record}: {message}"
    return _error(status, message, headers_of(refusal))


def _served(
    state: ServiceState, model_name: str, model_version: str | None
) -> Deployment | Response:
    if model_name != state.loader.model_name:
        return _error(404, _not_served(state, model_name))
    deployment = state.deployment
    if deployment is None:
        return _error(400, STARTING)
    if model_version is not None and model_version not in served_versions(deployment):
        served = ", ".join(served_versions(deployment))
        return _error(
            404, f"version {model_version!r} of {model_name!r} is not served; served: {served}"
        )
    return deployment


def _not_served(state: ServiceState, model_name: str) -> str:
    served = state.loader.model_name
    return f"model {model_name!r} is not served here; this service serves {served!r}"


def _json(content: dict[str, Any]) -> Response:
    return Response(orjson.dumps(content), media_type=JSON)


def _error(status: int, message: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"error": message}), status_code=status, media_type=JSON, headers=headers
    )
