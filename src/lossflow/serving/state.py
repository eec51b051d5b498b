"""What the service's routes share, and the FastAPI dependencies that hand it to them.

One :class:`ServiceState` lives on ``app.state.service`` for the app's life; a route reaches it
through :data:`Service` (``Depends(service)``), or, on the hot path that skips dependency
resolution, through :func:`service` on its own request.
"""

from __future__ import annotations

import asyncio
from typing import Annotated, cast

from fastapi import Depends, HTTPException, Request

from lossflow.config.serving import ServingConfig
from lossflow.errors import UserError
from lossflow.predlog import BatchWriter, PredictionLog
from lossflow.serving.metrics import ServiceMetrics
from lossflow.serving.shadow import ShadowScorer
from lossflow.serving.variants import Deployment, VariantLoader


class ServiceState:
    """The current deployment snapshot, the prediction log and its writer, the shadow scorer,
    the admin token and lock, and the metrics; filled in by the lifespan (``lifecycle``)."""

    def __init__(self, cfg: ServingConfig, loader: VariantLoader) -> None:
        self.cfg = cfg
        self.loader = loader
        self.deployment: Deployment | None = None
        self.log: PredictionLog | None = None
        self.writer: BatchWriter | None = None
        self.shadow: ShadowScorer | None = None
        self.admin_token: str | None = None
        self.admin_lock = asyncio.Lock()
        self.startup_error: UserError | None = None
        self.traffic_key = cfg.tracking.registered_model
        self.shares_traffic = cfg.share_traffic
        self.metrics = ServiceMetrics(lambda: self.deployment, lambda: self.writer)

    def current(self) -> Deployment:
        """The deployment answering traffic now.

        Raises:
            HTTPException: 503 while the service is starting.
        """
        if self.deployment is None:
            raise HTTPException(503, "the service is starting; no models are loaded yet")
        return self.deployment

    def swap(self, deployment: Deployment) -> None:
        """Replace the deployment in one assignment; in-flight requests keep their snapshot."""
        self.deployment = deployment


def service(request: Request) -> ServiceState:
    """The state of the app serving ``request``."""
    return cast(ServiceState, request.app.state.service)


def current_deployment(state: Annotated[ServiceState, Depends(service)]) -> Deployment:
    """The deployment answering traffic now (503 while the service is starting)."""
    return state.current()


Service = Annotated[ServiceState, Depends(service)]
Current = Annotated[Deployment, Depends(current_deployment)]
