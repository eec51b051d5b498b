"""The ``monitoring`` flow: per variant, read the window → reference profile → drift, prior and
performance → decide → record in MLflow; a retrain decision emits ``lossflow.retrain.requested``.

Each task is one call into ``lossflow.usecases.monitoring``. A variant that cannot be judged (no
reference profile, records that do not fit the model, no rows) is recorded as "insufficient
data", never retrained on, and does not stop the others.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.events import emit_event

from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.monitoring import MonitoringConfig, load_monitoring_config
from lossflow.errors import UserError
from lossflow.flows.common import RETRYING
from lossflow.monitoring.decision import Decision
from lossflow.monitoring.profile import ReferenceProfile
from lossflow.monitoring.record import analysis_json
from lossflow.monitoring.window import WindowSummary
from lossflow.usecases import monitoring as steps

RETRAIN_EVENT = "lossflow.retrain.requested"


@task(name="plan", cache_policy=NO_CACHE)
def plan(
    cfg: MonitoringConfig, window: steps.Window, variants: list[str] | None
) -> list[steps.Target]:
    return steps.plan(cfg, window, variants)


@task(
    name="reference-profile",
    cache_policy=NO_CACHE,
    **RETRYING,
)
def reference(cfg: MonitoringConfig, target: steps.Target) -> ReferenceProfile:
    return steps.reference(cfg, target)


@task(name="read-window", cache_policy=NO_CACHE)
def read(
    cfg: MonitoringConfig, profile: ReferenceProfile, target: steps.Target, window: steps.Window
) -> WindowSummary:
    return steps.read(cfg, profile, target, window)


@task(name="analyse-and-decide", cache_policy=NO_CACHE)
def judge(
    cfg: MonitoringConfig,
    target: steps.Target,
    window: steps.Window,
    profile: ReferenceProfile | None,
    summary: WindowSummary | None,
    problem: str | None,
) -> steps.Judgement:
    return steps.judge(cfg, target, window, profile, summary, problem)


@task(
    name="record",
    cache_policy=NO_CACHE,
    **RETRYING,
)
def record(
    cfg: MonitoringConfig,
    target: steps.Target,
    judgement: steps.Judgement,
    profile: ReferenceProfile | None,
    summary: WindowSummary | None,
) -> str:
    return steps.record(cfg, target, judgement, profile, summary)


@task(name="request-retrain", cache_policy=NO_CACHE)
def request_retrain(cfg: MonitoringConfig, decision: Decision, run_id: str) -> None:
    payload = steps.retrain_event(cfg, decision, run_id)
    emit_event(
        event=RETRAIN_EVENT,
        resource={
            "prefect.resource.id": f"lossflow.model.{cfg.tracking.registered_model}",
            "lossflow.model_version": decision.model_version,
        },
        payload=payload,
    )


@dataclass(frozen=True)
class VariantOutcome:
    """What the flow concluded for one variant (as ``lossflow monitor`` prints it)."""

    target: steps.Target
    run_id: str
    decision: dict[str, Any]
    analysis: dict[str, Any]


@dataclass(frozen=True)
class MonitoringOutcome:
    """The model, the window and one outcome per variant."""

    start: datetime
    end: datetime
    variants: list[VariantOutcome]
    model_name: str = ""


@flow(name="monitoring", log_prints=True)
def monitoring(
    since: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    variants: list[str] | None = None,
    overrides: list[str] | None = None,
    config_dir: str = str(DEFAULT_CONFIG_DIR),
) -> MonitoringOutcome:
    """Judge what each variant served in the window and ask for a retrain when warranted.

    Args:
        since: the window's length, ending now (``24h``); default: the config's ``window``.
        start: the window's start (aware); with ``end`` instead of ``since``.
        end: the window's end (aware, exclusive); default now.
        variants: only these variants; default: the config's, else every one in the window.
        overrides: ``key=value`` overrides of the monitoring config.
        config_dir: the configuration directory.
    """
    cfg = load_monitoring_config(overrides or [], Path(config_dir))
    window = steps.resolve_window(cfg, since, start, end, datetime.now(UTC))
    outcomes = []
    for target in plan(cfg, window, variants):
        profile = summary = None
        problem = None
        if target.requests == 0:
            problem = f"variant {target.variant!r} served nothing in {window.describe()}"
        else:
            try:
                profile = reference(cfg, target)
                summary = read(cfg, profile, target, window)
                if summary.rows == 0:
                    problem = f"no records of version {target.model_version} in the window"
            except UserError as err:  # no profile, records that do not fit: judged as such
                problem = str(err)
        judgement = judge(cfg, target, window, profile, summary, problem)
        run_id = record(cfg, target, judgement, profile, summary)
        if judgement.decision.retrain:
            request_retrain(cfg, judgement.decision, run_id)
        outcomes.append(
            VariantOutcome(
                target, run_id, judgement.decision.to_json(), analysis_json(judgement.analysis)
            )
        )
    return MonitoringOutcome(window.start, window.end, outcomes, cfg.tracking.registered_model)
