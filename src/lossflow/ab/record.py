"""The audit trail: one MLflow run per A/B decision in ``lossflow-ab``, tags on the versions.

Run tags: ``lossflow.model``, ``lossflow.ab.experiment``, ``lossflow.ab.verdict``,
``lossflow.ab.action`` (``promote``/``reject``/``rollback``/``none``), ``lossflow.ab.applied``,
``lossflow.ab.dry_run``, ``lossflow.ab.actor``, ``lossflow.ab.challenger``, and per arm
``lossflow.ab.arm.<variant>`` = ``version <v> (<loss id>)``. Metrics: per arm ``<variant>/units``,
``/requests``, ``/labelled_units``, ``/coverage``, ``/metric``, ``/p99_latency_ms``,
``/error_rate``; per challenger ``<variant>/effect``, ``/ci_low``, ``/ci_high``, ``/p_value``,
``/p_holm``; ``srm/p_value``, ``srm/chi2_p_value``. Artifact ``decision.json`` holds everything
(setup, per-arm summaries, comparisons with guardrails, the action with its alias moves).

Each model version an action touched gets ``lossflow.ab.<what>`` (``promoted``, ``replaced``,
``rejected``, ``rolled_back``, ``restored``) = the time, and ``lossflow.ab.last_run`` = the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from lossflow.ab.decision import AbDecision
from lossflow.ab.metrics import VariantMetrics
from lossflow.ab.promotion import Action
from lossflow.ab.setup import Setup
from lossflow.tracking import Runs, WritableModelRegistry

TAG_MODEL: Final = "lossflow.model"
TAG_VERDICT: Final = "lossflow.ab.verdict"
TAG_ACTION: Final = "lossflow.ab.action"


@dataclass(frozen=True)
class AuditTrail:
    """Where an action is recorded: a run among the A/B experiment's ``runs``, tags on the
    versions it touched in the ``registry``."""

    runs: Runs
    registry: WritableModelRegistry


def run_metrics(measured: dict[str, VariantMetrics], decision: AbDecision) -> dict[str, float]:
    """The run's metrics (see the module)."""
    metrics: dict[str, float | None] = {}
    for variant, m in measured.items():
        s = m.summary()
        for key in ("units", "requests", "labelled_units", "coverage", "p99_latency_ms",
                    "error_rate"):  # fmt: skip
            metrics[f"{variant}/{key}"] = s[key]
        metrics[f"{variant}/metric"] = s["metric_mean"]
    for c in decision.comparisons:
        metrics[f"{c.challenger}/effect"] = c.test.estimate
        metrics[f"{c.challenger}/ci_low"] = c.test.ci_low
        metrics[f"{c.challenger}/ci_high"] = c.test.ci_high
        metrics[f"{c.challenger}/p_value"] = c.test.p_value
        metrics[f"{c.challenger}/p_holm"] = c.p_holm
    metrics["srm/p_value"] = decision.srm_p
    metrics["srm/chi2_p_value"] = decision.srm_chi2_p
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def record_decision(
    trail: AuditTrail,
    setup: Setup,
    measured: dict[str, VariantMetrics],
    decision: AbDecision,
    action: Action,
    actor: str,
    metric: str,
) -> str:
    """Log the decision's run and tag the versions the action touched; return the run id."""
    tags = {
        TAG_MODEL: setup.model_name,
        "lossflow.ab.experiment": setup.experiment,
        TAG_VERDICT: decision.verdict,
        TAG_ACTION: action.kind,
        "lossflow.ab.applied": str(action.applied).lower(),
        "lossflow.ab.dry_run": str(action.dry_run).lower(),
        "lossflow.ab.actor": actor,
        "lossflow.ab.metric": metric,
        "lossflow.ab.challenger": decision.challenger or "none",
        **{
            f"lossflow.ab.arm.{a.variant}": f"version {a.model_version} ({a.loss_id or '?'})"
            for a in setup.arms
        },
    }
    now = datetime.now(UTC)
    name = f"{setup.experiment}-{decision.verdict}-{now:%Y%m%dT%H%M%S}"
    with trail.runs.start_run(name, tags) as run_id:
        trail.runs.log_metrics(run_id, run_metrics(measured, decision))
        trail.runs.log_dict(run_id, decision_json(setup, measured, decision, action, actor,
                                                  metric), "decision.json")  # fmt: skip
    _tag_versions(trail.registry, setup.model_name, action, run_id, now)
    return run_id


def decision_json(
    setup: Setup,
    measured: dict[str, VariantMetrics],
    decision: AbDecision,
    action: Action,
    actor: str,
    metric: str,
) -> dict[str, Any]:
    """Everything the decision rests on, as JSON-able data (``lossflow ab status --json``)."""
    return {
        "setup": setup.to_json(),
        "metric": metric,
        "arms": {v: m.summary() for v, m in measured.items()},
        "decision": decision.to_json(),
        "action": action.to_json(),
        "actor": actor,
    }


def record_rollback(trail: AuditTrail, model: str, action: Action, actor: str) -> str:
    """Log an operator's rollback (and tag its versions); return the run id."""
    tags = {
        TAG_MODEL: model,
        TAG_VERDICT: "rollback",
        TAG_ACTION: "rollback",
        "lossflow.ab.applied": str(action.applied).lower(),
        "lossflow.ab.dry_run": str(action.dry_run).lower(),
        "lossflow.ab.actor": actor,
    }
    now = datetime.now(UTC)
    with trail.runs.start_run(f"rollback-{now:%Y%m%dT%H%M%S}", tags) as run_id:
        trail.runs.log_dict(run_id, {"action": action.to_json(), "actor": actor}, "decision.json")
    _tag_versions(trail.registry, model, action, run_id, now)
    return run_id


def _tag_versions(
    registry: WritableModelRegistry, model: str, action: Action, run_id: str, now: datetime
) -> None:
    """Tag each version an applied action touched with what happened, when, and the run."""
    if not action.applied:
        return
    for version, what in action.touched.items():
        tags = {f"lossflow.ab.{what}": now.isoformat(), "lossflow.ab.last_run": run_id}
        registry.set_version_tags(model, version, tags)
