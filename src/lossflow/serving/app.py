"""The inference service: FastAPI + onnxruntime, A/B split between loss variants, all logged.

``create_app(cfg)`` builds the app from its parts; nothing is loaded until its lifespan starts:

- ``schemas`` — the documented request and answer bodies;
- ``state`` — what the routes share (``app.state.service``) and the dependencies that reach it;
- ``routes`` — ``predict`` (``/predict``, ``/rank``), ``feedback``, ``probes`` (``/health``,
  ``/ready``, ``/info``, ``/metrics``), ``admin`` (``/admin/reload``, ``/admin/traffic``) and
  ``v2`` (the Open Inference Protocol: ``/v2/...``, codec in ``oip``);
- ``answering`` — one request's routing, scoring, log record, shadow and metrics, whatever
  protocol it came in;
- ``lifecycle`` — start, reload, registry watch, drain;
- ``shadow`` — the model scored and logged off the event loop, never returned.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.openapi.utils import get_openapi
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from lossflow.config.serving import ServingConfig
from lossflow.serving import lifecycle
from lossflow.serving.routes import admin, feedback, predict, probes, v2
from lossflow.serving.schemas import JSON, RecordsField, records_body_schema
from lossflow.serving.state import ServiceState
from lossflow.serving.variants import Deployment, VariantLoader


def create_app(
    cfg: ServingConfig, loader: VariantLoader | None = None, *, predict_fast_path: bool = True
) -> FastAPI:
    """The service for ``cfg``; models load when the app starts (its lifespan), not here.

    Args:
        cfg: The serving configuration.
        loader: Where the variants come from (default: the registry or files ``cfg`` names).
        predict_fast_path: Hand ``POST /predict`` straight to its endpoint while the app has no
            middleware of its user's (see :class:`ServiceApp`); ``False`` routes it like
            every other path.
    """
    app = ServiceApp(
        telemetry={"tracing": False, "metrics": False, "logs": False, "auto_configure": False},
        title="lossflow inference",
        version="1",
        summary="ONNX models trained with different losses, A/B split by unit, all answers logged.",
        lifespan=lifecycle.lifespan,
    )
    state = ServiceState(cfg, loader or VariantLoader(cfg))
    app.state.service = state
    for router in (predict.router, feedback.router, probes.router, admin.router, v2.router):
        app.include_router(router)
    app.add_exception_handler(StarletteHTTPException, v2.http_error)
    if predict_fast_path:
        app.fast_predict = predict.predict
        app.fast_infer = v2.infer_request
    app.openapi = _openapi(app, state)  # type: ignore[method-assign]
    return app


class ServiceApp(FastAPI):
    """FastAPI with an explicit fast path for ``POST /predict`` and the V2 ``infer``.

    With ``fast_predict`` set, a ``POST /predict`` (and with ``fast_infer``, a ``POST
    /v2/models/{name}[/versions/{v}]/infer``) goes from the server straight to its endpoint: it
    skips Starlette's ``ServerErrorMiddleware`` and ``ExceptionMiddleware``, the router and
    dependency resolution, which cost about 30 % of a one-record request. Nothing the endpoint
    needs is among them: it reads and limits its body itself, has no dependencies, and answers
    every error itself (a 500 logged with its traceback, counted in the metrics) without
    raising, so its answers, metrics and logs are those of the routed path (tests pin both).
    Middleware a user adds (``app.add_middleware``) is honoured: with any, every request takes
    the full stack. Every other path, and the OpenAPI description of ``/predict``, stay
    FastAPI's.
    """

    fast_predict: Callable[[Request], Awaitable[Response]] | None = None
    fast_infer: Callable[[Request, str, str | None], Awaitable[Response]] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Dispatch one ASGI connection."""
        if (
            self.fast_predict is not None
            and scope["type"] == "http"
            and scope["method"] == "POST"
            and not self.user_middleware
        ):
            path = scope["path"]
            response = None
            if path == "/predict":
                scope["app"] = self
                response = await self.fast_predict(Request(scope, receive))
            elif self.fast_infer is not None and (model := v2.infer_path(path)) is not None:
                scope["app"] = self
                response = await self.fast_infer(Request(scope, receive), *model)
            if response is not None:
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _openapi(app: FastAPI, state: ServiceState) -> Callable[[], dict[str, Any]]:
    """``app.openapi`` describing the records of the models being served: rebuilt when the
    deployment changes."""
    described: list[Deployment | None] = [None]

    def openapi() -> dict[str, Any]:
        deployment = state.deployment
        if app.openapi_schema is None or described[0] is not deployment:
            schema = get_openapi(
                title=app.title, version=app.version, summary=app.summary, routes=app.routes
            )
            if deployment is not None:
                fields: tuple[tuple[str, RecordsField], ...] = (
                    ("/predict", "records"),
                    ("/rank", "items"),
                )
                for path, field in fields:
                    body = schema["paths"][path]["post"]["requestBody"]
                    body["content"][JSON]["schema"] = records_body_schema(
                        deployment, state.cfg.limits, field
                    )
            app.openapi_schema = schema
            described[0] = deployment
        return app.openapi_schema

    return openapi
