"""The service's life: start (models, log, writer, shadow), reload, registry watch and drain.

Nothing loads when the app is built; :func:`lifespan` (uvicorn's startup) resolves the variants
from the registry (or local files), opens the prediction log and starts its background writer and
the shadow's scorer. On shutdown (SIGTERM) uvicorn finishes the requests in flight, then the
lifespan lets the shadow score what it was given and drains the writer, so every answered
prediction is in the log; records that still cannot be written are dumped to
``<data_dir>/unlogged-<time>.jsonl`` rather than dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime

import orjson
from fastapi import FastAPI
from starlette.concurrency import run_in_threadpool

from lossflow import terminal
from lossflow.errors import UserError
from lossflow.predlog import BatchWriter, LogWriteError, open_log
from lossflow.predlog.state import claim_log, read_traffic
from lossflow.serving.router import TrafficSplit
from lossflow.serving.shadow import ShadowScorer
from lossflow.serving.state import ServiceState
from lossflow.serving.variants import Deployment, ModelLoadError

_log = logging.getLogger("lossflow.serving")


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """Start the service held by ``app.state.service``; stop and drain it on shutdown."""
    state: ServiceState = app.state.service
    await start(state)
    watcher = None
    if state.cfg.watch_registry_s is not None:
        watcher = asyncio.create_task(watch_registry(state, state.cfg.watch_registry_s))
    try:
        yield
    finally:
        if watcher is not None:
            watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher
        await run_in_threadpool(stop, state)


async def start(state: ServiceState) -> None:
    """Load the models, open the log, start the writer (and the shadow's scorer), swap in.

    Raises:
        UserError: the models or the log cannot be opened; kept as ``state.startup_error``.
    """
    cfg = state.cfg
    state.admin_token = os.environ.get(cfg.admin_token_env) or None
    try:
        deployment = await run_in_threadpool(state.loader.deployment)
        if cfg.log.enabled:
            state.log = open_log(cfg.log.url, cfg.log.db_schema, cfg.data_dir)
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
    if cfg.shadow is not None:
        state.shadow = ShadowScorer(state.metrics)
    deployment = await run_in_threadpool(follow_shared, state, deployment)
    state.swap(deployment)
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


async def reload(state: ServiceState, trigger: str) -> Deployment:
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
        deployment = await run_in_threadpool(follow_shared, state, deployment)
        state.swap(deployment)
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


def follow_shared(state: ServiceState, deployment: Deployment) -> Deployment:
    """``deployment`` under the shared routing (experiment and weights) when one is written for
    exactly its variants; unchanged otherwise (the defaults apply to other variants)."""
    if not state.shares_traffic or state.log is None:
        return deployment
    shared = read_traffic(state.log, state.traffic_key)
    if shared is None or set(shared.weights) != set(deployment.variants):
        return deployment
    split = TrafficSplit(shared.experiment, shared.weights)
    return deployment if split == deployment.router.split else deployment.with_split(split)


async def watch_registry(state: ServiceState, interval_s: float) -> None:
    """Reload whenever an alias (or a local file) resolves to another version than is served,
    and follow the shared routing another replica wrote."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            wanted = await run_in_threadpool(state.loader.versions)
            if wanted != state.current().versions:
                await reload(state, "registry")
            else:
                await _follow(state)
        except ModelLoadError as err:
            _log.warning(
                "registry check failed; still serving the loaded models",
                extra={"event": "watch_failed", "error": str(err)},
            )
        except Exception:  # the watcher must outlive a bad check; the next one may succeed
            _log.exception("registry check crashed", extra={"event": "watch_failed"})


async def _follow(state: ServiceState) -> None:
    async with state.admin_lock:
        current = state.current()
        followed = await run_in_threadpool(follow_shared, state, current)
        if followed is not current:
            state.swap(followed)
            _log.info("traffic followed", extra={"event": "traffic", **followed.describe()})


def stop(state: ServiceState) -> None:
    """Let the shadow score what it was given, then drain the prediction log."""
    if state.shadow is not None:
        state.shadow.close(timeout=state.cfg.log.drain_timeout_s)
    drain(state)


def drain(state: ServiceState) -> None:
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
