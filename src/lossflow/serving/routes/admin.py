"""``/admin``: reload the models and change the traffic split, behind a bearer token.

The token is read from the environment variable ``admin_token_env`` names when the service
starts; without it every admin route answers 403.
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
from typing import Annotated, Any, Final

from fastapi import APIRouter, Depends, HTTPException
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool

from lossflow.predlog.state import write_traffic
from lossflow.serving import lifecycle
from lossflow.serving.router import RoutingError, TrafficSplit
from lossflow.serving.schemas import TrafficRequest, errors
from lossflow.serving.state import Service
from lossflow.serving.variants import ModelLoadError

_log = logging.getLogger("lossflow.serving")

_BEARER: Final = HTTPBearer(
    auto_error=False, description="the token in the environment variable named by admin_token_env"
)


def require_admin(
    state: Service,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)],
) -> None:
    """403 while the admin API is off, 401 without the right bearer token."""
    if state.admin_token is None:
        raise HTTPException(
            403,
            f"the admin API is disabled: start the service with {state.cfg.admin_token_env} set",
        )
    if credentials is None or not secrets.compare_digest(
        credentials.credentials.encode(), state.admin_token.encode()
    ):
        raise HTTPException(
            401,
            "missing or wrong bearer token: send 'Authorization: Bearer <token>'",
            headers={"WWW-Authenticate": "Bearer"},
        )


router = APIRouter(prefix="/admin", dependencies=[Depends(require_admin)])


@router.post("/reload", responses=errors(401, 403, 502))
async def reload(state: Service) -> dict[str, Any]:
    """Re-resolve aliases and load the models; swap them in atomically."""
    try:
        deployment = await lifecycle.reload(state, "admin")
    except ModelLoadError as err:
        raise HTTPException(
            502, f"reload failed, still serving the previous models: {err}"
        ) from None
    return deployment.describe()


@router.put("/traffic", responses=errors(400, 401, 403, 422))
async def traffic(body: TrafficRequest, state: Service) -> dict[str, Any]:
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
        state.swap(current.with_split(split))
    described = state.current().describe()
    _log.info("traffic changed", extra={"event": "traffic", **described})
    return described
