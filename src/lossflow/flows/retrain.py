"""The ``retrain`` flow: a monitoring decision → the champion and its recipe (the resolved
training configuration of its run) → candidates (the decision's losses, the champion's own, and
under pure label-prior shift the champion with adjusted logits), each the champion's recipe with
only the loss, the data window and the seed changed, trained on the same pool → pre-screened
against the champion on the evidence window (and against its trivial baseline) → the best one
that is not worse registered as ``challenger`` with its lineage, or no challenger and why.

Triggered by the ``lossflow.retrain.requested`` event (a deployment trigger; ``lossflow
deploy``/``lossflow schedule``) with the event's payload as ``request``; one run at a time
(the deployment's concurrency limit), and a request whose causes were already acted on, or that
arrives inside the cooldown, ends as ``skipped``. Every task is one call into
``lossflow.usecases.retrain``; nothing moves an alias before the last one, so a failed retrain
leaves the registry as it was, and its run (MLflow, Prefect) says why.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.retrain import RetrainConfig, load_retrain_config
from lossflow.flows.common import RETRYING, tag_flow_run
from lossflow.retrain.data import RetrainData
from lossflow.retrain.prescreen import Screened
from lossflow.retrain.request import RetrainRequest
from lossflow.usecases import retrain as steps


@task(name="gate", cache_policy=NO_CACHE, **RETRYING)
def gate(cfg: RetrainConfig, request: RetrainRequest) -> str | None:
    return steps.gate(cfg, request)


@task(name="champion", cache_policy=NO_CACHE, **RETRYING)
def champion(cfg: RetrainConfig, request: RetrainRequest, directory: Path) -> steps.Champion:
    return steps.champion(cfg, request, directory)


@task(name="build-data", cache_policy=NO_CACHE)
def build_data(
    cfg: RetrainConfig,
    request: RetrainRequest,
    directory: Path,
    best: steps.Champion,
    config_dir: Path,
) -> RetrainData:
    return steps.build_data(cfg, request, directory, best, config_dir)


@task(name="plan-candidates", cache_policy=NO_CACHE)
def plan_candidates(
    cfg: RetrainConfig,
    request: RetrainRequest,
    best: steps.Champion,
    pool: RetrainData,
    config_dir: Path,
) -> tuple[list[steps.Candidate], list[str]]:
    return steps.plan_candidates(cfg, request, best, pool, config_dir)


@task(name="train-candidate", cache_policy=NO_CACHE)
def train_candidate(
    cfg: RetrainConfig, candidate: steps.Candidate, parent_run_id: str
) -> steps.Trained:
    return steps.train_candidate(cfg, candidate, parent_run_id)


@task(name="posthoc-adjustment", cache_policy=NO_CACHE)
def posthoc(
    cfg: RetrainConfig,
    request: RetrainRequest,
    best: steps.Champion,
    parent_run_id: str,
    directory: Path,
    config_dir: Path,
) -> tuple[steps.Trained | None, str]:
    return steps.posthoc_candidate(cfg, request, best, parent_run_id, directory, config_dir)


@task(name="pre-screen", cache_policy=NO_CACHE)
def screen(
    best: steps.Champion, candidates: list[steps.Trained], pool: RetrainData, cfg: RetrainConfig
) -> tuple[list[Screened], steps.Trained | None, str]:
    return steps.screen(best, candidates, pool, cfg)


@task(name="register-challenger", cache_policy=NO_CACHE, **RETRYING)
def register(
    cfg: RetrainConfig,
    request: RetrainRequest,
    chosen: steps.Trained,
    screened: list[Screened],
    parent_run_id: str,
) -> str:
    return steps.register_challenger(cfg, request, chosen, screened, parent_run_id)


@task(name="record", cache_policy=NO_CACHE, **RETRYING)
def record(cfg: RetrainConfig, parent_run_id: str, outcome: dict[str, Any]) -> None:
    steps.record(cfg, parent_run_id, outcome)


@dataclass(frozen=True)
class RetrainOutcome:
    """What the retrain did: ``challenger``, ``no_challenger`` or ``skipped``, with why."""

    outcome: str
    why: str
    run_id: str | None
    challenger_version: str | None = None
    chosen: str | None = None
    candidates: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)


@flow(name="retrain", log_prints=True)
def retrain(
    request: dict[str, Any],
    overrides: list[str] | None = None,
    config_dir: str = str(DEFAULT_CONFIG_DIR),
) -> RetrainOutcome:
    """Retrain on a monitoring decision; register the best candidate as ``challenger``.

    Args:
        request: the ``lossflow.retrain.requested`` payload (model, version, reasons, candidate
            losses, window, dedup key, monitoring run, prior).
        overrides: ``key=value`` overrides of the retrain config.
        config_dir: the configuration directory.
    """
    directory = Path(config_dir)
    cfg = load_retrain_config(overrides or [], directory)
    parsed = RetrainRequest.from_payload(request)
    tag_flow_run(
        [f"model:{parsed.model_name}", *(f"reason:{r}" for r in parsed.reasons or ["none"])]
    )
    runs = steps.runs_of(cfg)
    tags = {
        steps.TAG_MODEL: parsed.model_name,
        steps.TAG_KEY: parsed.dedup_key,
        "lossflow.retrain.reasons": ",".join(parsed.reasons) or "none",
        "lossflow.retrain.monitoring_run": parsed.monitoring_run_id or "none",
        "lossflow.model_version": parsed.model_version,
    }
    name = f"retrain-v{parsed.model_version}-{datetime.now(UTC):%Y%m%dT%H%M%S}"
    with runs.start_run(name, tags) as run_id:
        refused = gate(cfg, parsed)
        if refused is not None:
            outcome = RetrainOutcome("skipped", refused, run_id)
            record(cfg, run_id, outcome.__dict__)
            print(f"retrain skipped: {refused}")
            return outcome
        scratch = Path(tempfile.mkdtemp(prefix="lossflow-retrain-"))
        try:
            best = champion(cfg, parsed, scratch)
            runs.set_tags(run_id, {"lossflow.retrain.recipe_run": best.recipe.run_id})
            pool = build_data(cfg, parsed, cfg.data_dir / "retrain" / run_id, best, directory)
            runs.log_params(run_id, {f"data.{k}": v for k, v in pool.summary().items()})
            planned, skipped = plan_candidates(cfg, parsed, best, pool, directory)
            trained = [train_candidate(cfg, c, run_id) for c in planned]
            adjusted, posthoc_note = posthoc(cfg, parsed, best, run_id, scratch, directory)
            if adjusted is not None:
                trained.append(adjusted)
            else:
                skipped.append(f"posthoc: {posthoc_note}")
            screened, chosen, why = screen(best, trained, pool, cfg)
            version = None
            if chosen is not None:
                version = register(cfg, parsed, chosen, screened, run_id)
            outcome = RetrainOutcome(
                "challenger" if version is not None else "no_challenger",
                why,
                run_id,
                version,
                None if chosen is None else chosen.name,
                [s.to_json() for s in screened],
                skipped,
                pool.summary(),
            )
            record(cfg, run_id, outcome.__dict__)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    print(f"retrain {outcome.outcome}: {outcome.why}")
    return outcome
