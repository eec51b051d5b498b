"""The ``ab_analysis`` flow: resolve the test → measure the arms → decide → act on the aliases →
record the audit run in MLflow (``lossflow-ab``).

Each task is one call into ``lossflow.ab``. Scheduled hourly (``lossflow schedule``), it is safe
to run as often as wanted: the tests stay valid under continuous looks, a decision is acted on
once (the aliases move, a second run finds no challenger) and two runs cannot both act (a lease
in the prediction-log database).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from lossflow.ab import promotion
from lossflow.ab.decision import AbDecision
from lossflow.ab.metrics import VariantMetrics
from lossflow.ab.record import decision_json, record_decision
from lossflow.ab.setup import Setup
from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.ab import AbConfig, load_ab_config
from lossflow.flows.common import RETRYING, flow_run_label
from lossflow.usecases import ab as steps


@task(
    name="resolve-test",
    cache_policy=NO_CACHE,
    **RETRYING,
)
def resolve(cfg: AbConfig, now: datetime, config_dir: Path) -> Setup:
    return steps.resolve(cfg, now, config_dir)


@task(name="measure-arms", cache_policy=NO_CACHE)
def measure(cfg: AbConfig, setup: Setup, config_dir: Path) -> tuple[str, dict[str, VariantMetrics]]:
    if setup.problems:
        return cfg.primary_metric or "-", {}
    metric = steps.primary_metric(cfg, setup, config_dir)
    return metric, steps.measure(cfg, setup, metric, config_dir)


@task(name="decide", cache_policy=NO_CACHE)
def judge(
    cfg: AbConfig, setup: Setup, measured: dict[str, VariantMetrics], metric: str
) -> AbDecision:
    return steps.judge(cfg, setup, measured, metric)


@task(name="act", cache_policy=NO_CACHE)
def act(
    cfg: AbConfig, setup: Setup, decision: AbDecision, dry_run: bool, config_dir: Path
) -> promotion.Action:
    return steps.act(cfg, setup, decision, dry_run=dry_run, config_dir=config_dir)


@task(
    name="record",
    cache_policy=NO_CACHE,
    **RETRYING,
)
def record(
    cfg: AbConfig,
    setup: Setup,
    measured: dict[str, VariantMetrics],
    decision: AbDecision,
    action: promotion.Action,
    metric: str,
) -> str:
    actor = steps.actor(flow_run_label())
    return record_decision(steps.audit_trail(cfg), setup, measured, decision, action, actor, metric)


@dataclass(frozen=True)
class AbOutcome:
    """What the flow concluded (``decision.json`` of the run) and the run's id (``None`` for a
    dry run, which records nothing)."""

    run_id: str | None
    report: dict[str, Any]


@flow(name="ab_analysis", log_prints=True)
def ab_analysis(
    dry_run: bool = False,
    overrides: list[str] | None = None,
    config_dir: str = str(DEFAULT_CONFIG_DIR),
) -> AbOutcome:
    """Decide the loss A/B test the service is running and act on the registry's aliases.

    Args:
        dry_run: report what would be done; move nothing and record nothing.
        overrides: ``key=value`` overrides of the A/B config.
        config_dir: the configuration directory.
    """
    directory = Path(config_dir)
    cfg = load_ab_config(overrides or [], directory)
    setup = resolve(cfg, datetime.now(UTC), directory)
    metric, measured = measure(cfg, setup, directory)
    decision = judge(cfg, setup, measured, metric)
    action = act(cfg, setup, decision, dry_run, directory)
    report = decision_json(setup, measured, decision, action, steps.actor(flow_run_label()), metric)
    print(f"{decision.verdict}: {'; '.join(decision.reasons)} -> {action.message}")
    if dry_run:
        return AbOutcome(None, report)
    return AbOutcome(record(cfg, setup, measured, decision, action, metric), report)
