"""What orchestrators and operators ask: liveness, readiness, what is loaded, Prometheus."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, HTTPException, Response

from lossflow.serving.metrics import CONTENT_TYPE
from lossflow.serving.schemas import errors
from lossflow.serving.state import Current, Service

router = APIRouter()


@router.get("/health")
async def health() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@router.get("/ready", responses=errors(503))
async def ready(state: Service, deployment: Current) -> dict[str, Any]:
    """Readiness: models loaded and the prediction log writer running."""
    if state.writer is not None and not state.writer.running:
        raise HTTPException(503, "the prediction-log writer is not running")
    return {"status": "ready", **deployment.describe()}


@router.get("/info", responses=errors(503))
async def info(state: Service, deployment: Current) -> dict[str, Any]:
    """Variants (versions, loss ids, sources, weights), shadow, task and features."""
    label_names = deployment.predictor.label_names
    return {
        "model_name": state.loader.model_name,
        "target": deployment.predictor.preprocessor.target,
        "group": deployment.predictor.preprocessor.group,
        "label_names": None if label_names is None else list(label_names),
        "prediction_log": state.log is not None,
        "replay_clock": state.cfg.replay_clock,
        "limits": state.cfg.limits.model_dump(),
        **deployment.describe(),
    }


@router.get("/metrics", response_class=Response)
async def metrics(state: Service) -> Response:
    """Prometheus metrics."""
    return Response(state.metrics.render(), media_type=CONTENT_TYPE)
