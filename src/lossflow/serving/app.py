"""The inference service: FastAPI + onnxruntime, A/B split between loss variants, all logged.

``create_app(cfg)`` builds the app; nothing is loaded until the lifespan starts (uvicorn startup):
then the variants are resolved from the registry (or local files), the prediction log is opened
and its background writer started. On shutdown (SIGTERM) uvicorn finishes in-flight requests and
the lifespan drains the writer, so every answered prediction is in the log; records that still
cannot be written are dumped to ``<data_dir>/unlogged-<time>.jsonl`` rather than dropped.

Hot path (``POST /predict``): the body is read with a size cap and parsed with orjson, the unit is
routed on the current :class:`~lossflow.serving.variants.Deployment` snapshot, the records are
validated and scored by the variant's :class:`~lossflow.serving.predictor.OnnxPredictor`, and the
log record is queued without blocking. A full log queue answers 503 instead of serving an
unlogged prediction. The optional shadow is scored after the answer is sent.

``POST /rank`` is the same path for one list of a ranking model: ``items`` are validated and
scored like ``records`` (each item on its own), the answer adds the order by score, and the log
holds the list as one row (feedback: one graded relevance per item).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import secrets
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any, Final

import orjson
from fastapi import Depends, FastAPI, HTTPException, Request, Response
from fastapi.openapi.utils import get_openapi
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import AwareDatetime, BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.types import Receive, Scope, Send

from lossflow import terminal
from lossflow.config.serving import ServingConfig, ServingLimits
from lossflow.contract import SHADOW
from lossflow.errors import UserError
from lossflow.predlog import (
    BatchWriter,
    FeedbackConflictError,
    LogBackpressureError,
    LogWriteError,
    PredictionLog,
    PredictionRecord,
    UnknownRequestError,
    default_log_url,
)
from lossflow.predlog.state import claim_log, read_traffic, write_traffic
from lossflow.serving.metrics import CONTENT_TYPE, UNROUTED, ServiceMetrics
from lossflow.serving.predictor import Prediction, RecordError, logged_output
from lossflow.serving.router import RoutingError, TrafficSplit
from lossflow.serving.variants import Deployment, ModelLoadError, Variant, VariantLoader

_log = logging.getLogger("lossflow.serving")

MAX_UNIT_ID: Final = 256
THREADPOOL_RECORDS: Final = 64  # larger requests are scored off the event loop
FEEDBACK_FLUSH_S: Final = 5.0
_JSON: Final = "application/json"
_FLOAT32_MAX: Final = 3.4028234663852886e38
_BEARER: Final = HTTPBearer(
    auto_error=False, description="the token in the environment variable named by admin_token_env"
)


# --- documented request and response bodies --------------------------------------------------


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Routed(_Body):
    unit_id: str = Field(
        min_length=1,
        max_length=MAX_UNIT_ID,
        description="user, session or device id; the same unit always gets the same variant",
    )


class PredictRequest(_Routed):
    """``POST /predict``: the unit to route and its raw feature records."""

    records: list[dict[str, float | str | None]] = Field(
        min_length=1, description="raw feature records; null is a missing value"
    )


class RankRequest(_Routed):
    """``POST /rank``: the unit to route and the raw feature records of one list's items."""

    items: list[dict[str, float | str | None]] = Field(
        min_length=1, description="raw feature records of the list's items; null is missing"
    )


class RankResponse(BaseModel):
    """``POST /rank``'s answer."""

    request_id: str = Field(description="send it back with POST /feedback (one relevance/item)")
    variant: str
    model_version: str
    loss_id: str
    scores: list[float] = Field(description="the model's score of each item, in request order")
    order: list[int] = Field(description="item positions from the highest score down")


class PredictionOut(BaseModel):
    """One record's answer; fields that do not apply to the model's task are absent."""

    probability: float | None = Field(None, description="binary: P(positive)")
    probabilities: dict[str, float] | None = Field(None, description="multiclass: P(class)")
    label: int | str | None = Field(None, description="binary 0/1 at the threshold; class name")
    class_: str | None = Field(
        None,
        alias="class",
        description="binary with named classes: the class the label stands for (yes, good...)",
    )
    value: float | None = Field(None, description="regression: the predicted value")


class PredictResponse(BaseModel):
    """``POST /predict``'s answer."""

    request_id: str = Field(description="send it back with POST /feedback")
    variant: str
    model_version: str
    loss_id: str
    predictions: list[PredictionOut]


class FeedbackRequest(_Body):
    """``POST /feedback``: the true labels of a request's records, in order."""

    request_id: str = Field(min_length=1, max_length=128)
    labels: list[bool | int | float | str] = Field(
        min_length=1,
        description="binary 0/1, multiclass class name, regression number; one per record",
    )
    ts: AwareDatetime | None = Field(
        None, description="replay_clock services only: when the truth became known"
    )


class FeedbackResponse(BaseModel):
    """Whether the labels were stored now (201) or were already stored (200)."""

    request_id: str
    stored: bool


class TrafficRequest(_Body):
    """``PUT /admin/traffic``: new weights for some or all variants."""

    weights: dict[str, Annotated[float, Field(ge=0, allow_inf_nan=False)]] = Field(
        min_length=1, description="variant -> weight; variants not named keep their weight"
    )
    experiment: str | None = Field(
        None, min_length=1, description="new assignment name (reshuffles every unit)"
    )


class ErrorItem(BaseModel):
    """Where a request was invalid and why."""

    loc: list[str | int]
    msg: str
    type: str


class ValidationErrorResponse(BaseModel):
    """422: every item names the field (and record) and the problem."""

    detail: list[ErrorItem]


class ErrorResponse(BaseModel):
    """Any other error: what went wrong and what to do."""

    detail: str


def _raw_json_route(request: type[BaseModel], response: type[BaseModel]) -> dict[str, Any]:
    """``app.post`` options of a route that reads its JSON body itself (orjson, size cap) but
    documents it as ``request`` and answers ``response`` (or a documented error)."""
    return {
        "response_class": Response,
        "responses": {200: {"model": response}, **_errors(413, 422, 503)},
        "openapi_extra": {
            "requestBody": {
                "required": True,
                "content": {_JSON: {"schema": request.model_json_schema()}},
            }
        },
    }


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    return {
        code: {"model": ValidationErrorResponse if code == 422 else ErrorResponse} for code in codes
    }


# --- state -----------------------------------------------------------------------------------


class _ServiceApp(FastAPI):
    """FastAPI with ``POST /predict`` handed straight to its endpoint.

    Routing, dependency resolution and the exception middleware cost about 30 % of a one-record
    request; the endpoint needs none of them (it reads the body itself and never raises). Every
    other path, and the OpenAPI description of ``/predict``, stays FastAPI's.
    """

    fast_predict: Callable[[Request], Awaitable[Response]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection."""
        if (
            self.fast_predict is not None
            and scope["type"] == "http"
            and scope["path"] == "/predict"
            and scope["method"] == "POST"
        ):
            scope["app"] = self
            response = await self.fast_predict(Request(scope, receive))
            await response(scope, receive, send)
            return
        await super().__call__(scope, receive, send)


class ServiceState:
    """What the handlers share: the current deployment snapshot, the log and the metrics."""

    def __init__(self, cfg: ServingConfig, loader: VariantLoader) -> None:
        self.cfg = cfg
        self.loader = loader
        self.deployment: Deployment | None = None
        self.log: PredictionLog | None = None
        self.writer: BatchWriter | None = None
        self.admin_token: str | None = None
        self.admin_lock = asyncio.Lock()
        self.startup_error: UserError | None = None
        self.traffic_key = cfg.tracking.registered_model
        self.shares_traffic = cfg.share_traffic
        self.metrics = ServiceMetrics(lambda: self.deployment, lambda: self.writer)

    def current(self) -> Deployment:
        """The deployment answering traffic now."""
        if self.deployment is None:
            raise HTTPException(503, "the service is starting; no models are loaded yet")
        return self.deployment

    def swap(self, deployment: Deployment, app: FastAPI) -> None:
        """Replace the deployment in one assignment; in-flight requests keep their snapshot."""
        self.deployment = deployment
        app.openapi_schema = None  # the records schema follows the loaded models' features


# --- helpers of the hot path -----------------------------------------------------------------


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
    return Response(orjson.dumps(content), status_code=422, media_type=_JSON)


def _error(status: int, msg: str, headers: Mapping[str, str] | None = None) -> Response:
    return Response(
        orjson.dumps({"detail": msg}), status_code=status, media_type=_JSON, headers=headers
    )


_REPLAY_ONLY: Final = "'ts' is accepted only by a service running with replay_clock: true (replays)"


def _parse_predict(
    payload: Any, replay_clock: bool, field: str = "records"
) -> tuple[str, Any, datetime | None] | Response:
    if not isinstance(payload, dict):
        return _invalid(["body"], f"must be a JSON object with 'unit_id' and '{field}'")
    for key in payload:
        if key == "ts" and not replay_clock:
            return _invalid(["body", "ts"], _REPLAY_ONLY)
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


def _record_loc(err: RecordError, field: str = "records") -> list[str | int]:
    loc: list[str | int] = ["body", field]
    if err.record is None:
        return loc
    loc.append(err.record)
    if err.field:
        loc.append(err.field)
    return loc


# --- the app ---------------------------------------------------------------------------------


def create_app(cfg: ServingConfig, loader: VariantLoader | None = None) -> FastAPI:
    """The service for ``cfg``; models load when the app starts (its lifespan), not here."""
    state = ServiceState(cfg, loader or VariantLoader(cfg))
    limits = cfg.limits

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        state.admin_token = os.environ.get(cfg.admin_token_env) or None
        try:
            deployment = await run_in_threadpool(state.loader.deployment)
            if cfg.log.enabled:
                url = cfg.log.url or default_log_url(cfg.data_dir)
                if cfg.log.url is None:
                    cfg.data_dir.mkdir(parents=True, exist_ok=True)
                state.log = PredictionLog(url, cfg.log.db_schema)
                await run_in_threadpool(state.log.create_schema)
                await run_in_threadpool(claim_log, state.log, cfg.tracking.registered_model)
        except UserError as err:
            state.startup_error = err
            _log.error(
                "cannot start: %s",
                err,
                exc_info=err,
                extra={"event": "startup_failed", terminal.KEEP: True},
            )
            raise
        if state.log is not None:
            state.writer = BatchWriter(
                state.log,
                max_batch=cfg.log.max_batch,
                max_delay_s=cfg.log.max_delay_s,
                max_queue=cfg.log.max_queue,
            )
        deployment = await run_in_threadpool(_follow_shared, state, deployment)
        state.swap(deployment, app)
        _log.info(
            "serving",
            extra={
                "event": "started",
                **deployment.describe(),
                "prediction_log": None
                if state.log is None
                else state.log.engine.url.render_as_string(),
                "admin": state.admin_token is not None,
            },
        )
        watcher = None
        if cfg.watch_registry_s is not None:
            watcher = asyncio.create_task(_watch_registry(state, app, cfg.watch_registry_s))
        try:
            yield
        finally:
            if watcher is not None:
                watcher.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await watcher
            await run_in_threadpool(_drain, state)

    app = _ServiceApp(
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
        title="lossflow inference",
        version="1",
        summary="ONNX models trained with different losses, A/B split by unit, all answers logged.",
        lifespan=lifespan,
    )
    app.state.service = state

    def admin(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
    ) -> None:
        if state.admin_token is None:
            raise HTTPException(
                403,
                f"the admin API is disabled: start the service with {cfg.admin_token_env} set",
            )
        if credentials is None or not secrets.compare_digest(
            credentials.credentials.encode(), state.admin_token.encode()
        ):
            raise HTTPException(
                401,
                "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.post("/predict", **_raw_json_route(PredictRequest, PredictResponse))
    async def predict(request: Request) -> Response:
        """Score 1..N raw records with the variant the unit is assigned to."""
        started = time.perf_counter()
        try:
            return await answer(request, started)
        except Exception:  # answered as a JSON 500 and logged, also on the fast path
            _log.exception("predict failed", extra={"event": "predict_failed"})
            return _fail(500, "internal", "internal error; see the service log", started)

    @app.post("/rank", **_raw_json_route(RankRequest, RankResponse))
    async def rank(request: Request) -> Response:
        """Score and order the items of one list with the variant the unit is assigned to."""
        started = time.perf_counter()
        try:
            return await answer(request, started, "items")
        except Exception:  # answered as a JSON 500 and logged
            _log.exception("rank failed", extra={"event": "predict_failed"})
            return _fail(500, "internal", "internal error; see the service log", started)

    async def answer(request: Request, started: float, field: str = "records") -> Response:
        """``/predict`` (``field="records"``) or ``/rank`` (``field="items"``)."""
        try:
            body = await _read_body(request, limits.max_body_bytes)
        except _TooLargeError:
            return _fail(413, "too_large", f"body exceeds {limits.max_body_bytes} bytes", started)
        try:
            payload = orjson.loads(body)
        except orjson.JSONDecodeError as err:
            return _reject(_invalid(["body"], f"not valid JSON: {err}"), UNROUTED, started)
        parsed = _parse_predict(payload, cfg.replay_clock, field)
        if isinstance(parsed, Response):
            return _reject(parsed, UNROUTED, started)
        unit_id, records, clock = parsed
        if isinstance(records, list) and len(records) > limits.max_records:
            return _reject(
                _invalid(
                    ["body", field],
                    f"{len(records)} {field} exceed the limit of {limits.max_records} per "
                    "request; split the request",
                ),
                UNROUTED,
                started,
            )
        deployment = state.deployment
        if deployment is None:
            return _fail(
                503, "starting", "the service is starting; no models are loaded yet", started
            )
        if field == "items" and deployment.task != "ranking":
            return _reject(
                _invalid(
                    ["body", "items"],
                    f"the served models are {deployment.task} models; /rank serves ranking "
                    "models: send the records to /predict",
                ),
                UNROUTED,
                started,
            )
        variant = deployment.variants[deployment.router.assign(unit_id)]
        variant_name = variant.name
        try:
            if isinstance(records, list) and len(records) > THREADPOOL_RECORDS:
                predictions = await run_in_threadpool(variant.predictor.predict, records)
            else:
                predictions = variant.predictor.predict(records)
        except RecordError as err:
            return _reject(_invalid(_record_loc(err, field), err.problem), variant_name, started)
        except Exception as err:  # the model failed: counted against its variant (A/B guardrail)
            _log.exception(
                "variant failed to answer",
                extra={"event": "predict_failed", "variant": variant_name},
            )
            if state.log is not None:
                await run_in_threadpool(_record_failure, state, unit_id, deployment, variant, err)
            return _fail(
                500,
                "model_error",
                f"variant {variant_name!r} failed to answer; see the service log",
                started,
                variant=variant_name,
            )
        names = variant.predictor.label_names
        outputs = [logged_output(p, names) for p in predictions]
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
        else:
            answered["predictions"] = outputs
        content = orjson.dumps(answered)
        elapsed = time.perf_counter() - started
        if state.writer is not None:
            try:
                state.writer.submit(
                    PredictionRecord(
                        request_id,
                        unit_id,
                        clock or datetime.now(UTC),
                        deployment.router.split.experiment,
                        variant_name,
                        variant.model_version,
                        variant.loss_id,
                        records,
                        outputs,
                        elapsed * 1000.0,
                    )
                )
            except LogBackpressureError as err:
                return _fail(503, "log_backpressure", str(err), started, {"Retry-After": "1"})
        if deployment.shadow is not None:
            asyncio.get_running_loop().call_soon(
                _score_shadow,
                state,
                deployment.shadow,
                deployment.router.split.experiment,
                request_id,
                unit_id,
                records,
            )
        state.metrics.answered(variant_name, len(outputs), elapsed)
        if cfg.access_log:
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
        return Response(content, media_type=_JSON)

    def _reject(response: Response, variant: str, started: float) -> Response:
        reason = "invalid_record" if variant != UNROUTED else "invalid_body"
        state.metrics.failed(variant, response.status_code, reason, time.perf_counter() - started)
        return response

    def _fail(
        status: int,
        reason: str,
        msg: str,
        started: float,
        headers: Mapping[str, str] | None = None,
        variant: str = UNROUTED,
    ) -> Response:
        state.metrics.failed(variant, status, reason, time.perf_counter() - started)
        return _error(status, msg, headers)

    @app.post(
        "/feedback",
        status_code=201,
        responses={
            200: {"model": FeedbackResponse, "description": "already stored"},
            **_errors(400, 404, 409, 503),
        },
    )
    async def feedback(body: FeedbackRequest, response: Response) -> FeedbackResponse:
        """Store the true labels of a request's records (idempotent; write-once)."""
        if state.log is None:
            raise HTTPException(503, "this service runs without a prediction log (log.enabled)")
        if body.ts is not None and not cfg.replay_clock:
            raise HTTPException(
                422, [{"loc": ["body", "ts"], "msg": _REPLAY_ONLY, "type": "value_error"}]
            )
        labels = _check_labels(state.current(), body.labels)
        stored = await run_in_threadpool(_store_feedback, state, body.request_id, labels, body.ts)
        state.metrics.feedback("stored" if stored else "duplicate")
        if not stored:
            response.status_code = 200
        return FeedbackResponse(request_id=body.request_id, stored=stored)

    @app.get("/health")
    async def health() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/ready", responses=_errors(503))
    async def ready() -> dict[str, Any]:
        """Readiness: models loaded and the prediction log writer running."""
        deployment = state.current()
        if state.writer is not None and not state.writer.running:
            raise HTTPException(503, "the prediction-log writer is not running")
        return {"status": "ready", **deployment.describe()}

    @app.get("/info", responses=_errors(503))
    async def info() -> dict[str, Any]:
        """Variants (versions, loss ids, sources, weights), shadow, task and features."""
        deployment = state.current()
        label_names = deployment.predictor.label_names
        return {
            "model_name": state.loader.model_name,
            "target": deployment.predictor.preprocessor.target,
            "group": deployment.predictor.preprocessor.group,
            "label_names": None if label_names is None else list(label_names),
            "prediction_log": state.log is not None,
            "replay_clock": cfg.replay_clock,
            "limits": limits.model_dump(),
            **deployment.describe(),
        }

    @app.get("/metrics", response_class=Response)
    async def metrics() -> Response:
        """Prometheus metrics."""
        return Response(state.metrics.render(), media_type=CONTENT_TYPE)

    @app.post("/admin/reload", dependencies=[Depends(admin)], responses=_errors(401, 403, 502))
    async def reload() -> dict[str, Any]:
        """Re-resolve aliases and load the models; swap them in atomically."""
        try:
            deployment = await _reload(state, app, "admin")
        except ModelLoadError as err:
            raise HTTPException(
                502, f"reload failed, still serving the previous models: {err}"
            ) from None
        return deployment.describe()

    @app.put("/admin/traffic", dependencies=[Depends(admin)], responses=_errors(400, 401, 403, 422))
    async def traffic(body: TrafficRequest) -> dict[str, Any]:
        """Change variant weights (and optionally the experiment name)."""
        async with state.admin_lock:
            current = state.current()
            unknown = sorted(set(body.weights) - set(current.variants))
            if unknown:
                raise HTTPException(
                    422,
                    [
                        {
                            "loc": ["body", "weights", unknown[0]],
                            "msg": f"not a loaded variant; loaded: {sorted(current.variants)}",
                            "type": "value_error",
                        }
                    ],
                )
            weights = {**current.weights, **body.weights}
            try:
                split = TrafficSplit(body.experiment or current.router.split.experiment, weights)
            except RoutingError as err:
                raise HTTPException(
                    422, [{"loc": ["body", "weights"], "msg": str(err), "type": "value_error"}]
                ) from None
            if state.shares_traffic and state.log is not None:
                await run_in_threadpool(
                    write_traffic,
                    state.log,
                    state.traffic_key,
                    split.experiment,
                    split.weights,
                    f"admin via {socket.gethostname()}:{os.getpid()}",
                )
            state.swap(current.with_split(split), app)
        described = state.current().describe()
        _log.info("traffic changed", extra={"event": "traffic", **described})
        return described

    app.fast_predict = predict

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title,
                version=app.version,
                summary=app.summary,
                routes=app.routes,
            )
            if state.deployment is not None:
                for path, field in (("/predict", "records"), ("/rank", "items")):
                    body = schema["paths"][path]["post"]["requestBody"]
                    body["content"][_JSON]["schema"] = _predict_schema(
                        state.deployment, limits, field
                    )
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


async def _reload(state: ServiceState, app: FastAPI, trigger: str) -> Deployment:
    """Load what the aliases point at now and swap it in, keeping the current weights.

    Raises:
        ModelLoadError: nothing was swapped; the previous models keep serving.
    """
    async with state.admin_lock:
        before = state.current()
        try:
            deployment = await run_in_threadpool(state.loader.deployment, before.weights)
        except ModelLoadError as err:
            _log.error(
                "reload failed",
                extra={"event": "reload_failed", "trigger": trigger, "error": str(err)},
            )
            raise
        if set(deployment.variants) == set(before.variants):  # the same arms: the same split
            deployment = deployment.with_split(before.router.split)
        deployment = await run_in_threadpool(_follow_shared, state, deployment)
        state.swap(deployment, app)
    _log.info(
        "reloaded",
        extra={
            "event": "reloaded",
            "trigger": trigger,
            "before": before.versions,
            **deployment.describe(),
        },
    )
    return deployment


def _follow_shared(state: ServiceState, deployment: Deployment) -> Deployment:
    """``deployment`` under the shared routing (experiment and weights) when one is written for
    exactly its variants; unchanged otherwise (the defaults apply to other variants)."""
    if not state.shares_traffic or state.log is None:
        return deployment
    shared = read_traffic(state.log, state.traffic_key)
    if shared is None or set(shared.weights) != set(deployment.variants):
        return deployment
    split = TrafficSplit(shared.experiment, shared.weights)
    return deployment if split == deployment.router.split else deployment.with_split(split)


async def _watch_registry(state: ServiceState, app: FastAPI, interval_s: float) -> None:
    """Reload whenever an alias (or a local file) resolves to another version than is served,
    and follow the shared routing another replica wrote."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            wanted = await run_in_threadpool(state.loader.versions)
            if wanted != state.current().versions:
                await _reload(state, app, "registry")
            else:
                await _follow(state, app)
        except ModelLoadError as err:
            _log.warning(
                "registry check failed; still serving the loaded models",
                extra={"event": "watch_failed", "error": str(err)},
            )
        except Exception:  # the watcher must outlive a bad check; the next one may succeed
            _log.exception("registry check crashed", extra={"event": "watch_failed"})


async def _follow(state: ServiceState, app: FastAPI) -> None:
    async with state.admin_lock:
        current = state.current()
        followed = await run_in_threadpool(_follow_shared, state, current)
        if followed is not current:
            state.swap(followed, app)
            _log.info("traffic followed", extra={"event": "traffic", **followed.describe()})


def _predict_schema(
    deployment: Deployment, limits: ServingLimits, field: str = "records"
) -> dict[str, Any]:
    """The /predict (or /rank) body schema with the loaded models' exact record fields."""
    predictor = deployment.predictor
    numeric = set(predictor.preprocessor.numeric_columns)
    number = {"type": "number", "minimum": -_FLOAT32_MAX, "maximum": _FLOAT32_MAX}
    properties = {
        name: {"anyOf": [number if name in numeric else {"type": "string"}, {"type": "null"}]}
        for name in deployment.features
    }
    return {
        "type": "object",
        "title": "PredictRequest" if field == "records" else "RankRequest",
        "additionalProperties": False,
        "required": ["unit_id", field],
        "properties": {
            "unit_id": {"type": "string", "minLength": 1, "maxLength": MAX_UNIT_ID},
            field: {
                "type": "array",
                "minItems": 1,
                "maxItems": limits.max_records,
                "items": {
                    "type": "object",
                    "additionalProperties": False,
                    "required": list(deployment.features),
                    "properties": properties,
                },
            },
        },
    }


def _score_shadow(
    state: ServiceState,
    shadow: Variant,
    experiment: str,
    request_id: str,
    unit_id: str,
    records: Any,
) -> None:
    """Score and log the shadow; a failure is counted and logged, never seen by the client."""
    started = time.perf_counter()
    try:
        predictions = shadow.predictor.predict(records)
        outputs = [logged_output(p, shadow.predictor.label_names) for p in predictions]
        if state.writer is not None:
            state.writer.submit(
                PredictionRecord(
                    shadow_request_id(request_id),
                    unit_id,
                    datetime.now(UTC),
                    experiment,
                    SHADOW,
                    shadow.model_version,
                    shadow.loss_id,
                    records,
                    outputs,
                    (time.perf_counter() - started) * 1000.0,
                )
            )
    except Exception:
        state.metrics.shadow_failed()
        _log.exception("shadow scoring failed", extra={"event": "shadow_failed"})
        return
    state.metrics.shadow_scored(len(outputs))


def shadow_request_id(request_id: str) -> str:
    """The log's request id for the shadow's answer to ``request_id``."""
    return f"{request_id}:shadow"


def ranked(predictions: list[Prediction]) -> dict[str, list[Any]]:
    """``/rank``'s scores (request order) and order (positions by score, highest first; ties
    keep the request order)."""
    scores = [float(p.value) if p.value is not None else math.nan for p in predictions]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    return {"scores": scores, "order": order}


def ranked_outputs(answer: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """What the log keeps of a ranked list, per item: its ``score`` and its ``rank`` (1 = top),
    so A/B analysis tells a list (NDCG per unit) from regression values."""
    ranks = {item: position + 1 for position, item in enumerate(answer["order"])}
    return [{"score": s, "rank": ranks[i]} for i, s in enumerate(answer["scores"])]


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


def _record_feedback(
    state: ServiceState,
    log: PredictionLog,
    request_id: str,
    labels: list[Any],
    ts: datetime | None = None,
) -> bool:
    """``log.record_feedback``, once more after a flush if the prediction may still be queued."""
    try:
        return log.record_feedback(request_id, labels, ts)
    except UnknownRequestError:
        # Flush whatever is pending (perhaps nothing: the write may have committed since the
        # lookup), then look once more.
        if state.writer is None:
            raise
    try:
        state.writer.flush(timeout=FEEDBACK_FLUSH_S)
    except TimeoutError as err:
        raise HTTPException(
            503,
            f"the prediction log is behind ({err}); send the feedback again shortly",
            headers={"Retry-After": "5"},
        ) from None
    return log.record_feedback(request_id, labels, ts)


def _record_failure(
    state: ServiceState, unit_id: str, deployment: Deployment, variant: Variant, err: Exception
) -> None:
    assert state.log is not None
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


def _store_feedback(
    state: ServiceState, request_id: str, labels: list[Any], ts: datetime | None = None
) -> bool:
    log = state.log
    if log is None:  # checked by the handler; kept for the type checker
        raise HTTPException(503, "this service runs without a prediction log")
    try:
        stored = _record_feedback(state, log, request_id, labels, ts)
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
    if ":" not in request_id:
        with contextlib.suppress(UnknownRequestError):  # when no shadow answered the request
            _record_feedback(state, log, shadow_request_id(request_id), labels, ts)
    return stored


def _drain(state: ServiceState) -> None:
    """Write every queued prediction before the process exits; dump what cannot be written."""
    writer, log = state.writer, state.log
    if writer is None or log is None:
        return
    try:
        writer.close(timeout=state.cfg.log.drain_timeout_s)
    except LogWriteError as err:
        dump = state.cfg.data_dir / f"unlogged-{datetime.now(UTC):%Y%m%dT%H%M%S}.jsonl"
        dump.parent.mkdir(parents=True, exist_ok=True)
        with dump.open("wb") as fh:
            for record in err.records:
                fh.write(orjson.dumps(record.to_row(), default=str) + b"\n")
        _log.error(
            "prediction log unreachable at shutdown; records dumped",
            extra={"event": "log_dump", "records": len(err.records), "path": str(dump)},
        )
    else:
        _log.info("prediction log drained", extra={"event": "drained"})
    finally:
        log.dispose()
