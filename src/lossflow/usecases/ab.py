"""The A/B analysis's steps, each one call the ``ab_analysis`` flow makes as a task.

``resolve`` finds the test: the service's variants (from its serving config), the model version
each serves now (the registry's aliases), the routing experiment and weights (the shared routing
the replicas follow, else the serving config) and the window (from when the last arm began
answering, or the weights last changed); ``measure`` reads the arms' requests, failures and
labels from the prediction log; ``judge`` decides; :mod:`lossflow.ab.promotion` acts;
``record`` logs the audit run.

Anything that makes the test impossible (no challenger, an alias or version that does not
exist, no traffic) is a :class:`Setup` problem, reported as a status and never acted on.
"""

from __future__ import annotations

import getpass
import json
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lossflow import predlog
from lossflow.ab import promotion
from lossflow.ab.decision import AbDecision, Policy, decide
from lossflow.ab.metrics import RANKING_METRICS, VariantMetrics, variant_metrics
from lossflow.ab.record import AuditTrail
from lossflow.ab.setup import AbSetupError, Arm, Setup
from lossflow.config.ab import AbConfig
from lossflow.config.common import LogLocation, duration_seconds
from lossflow.config.loader import DEFAULT_CONFIG_DIR
from lossflow.config.serving import ModelSource, ServingConfig, load_serving_config
from lossflow.contract import CHALLENGER, CHAMPION, PREVIOUS
from lossflow.evaluation.baseline import BASELINE_JSON_TAG, Baseline
from lossflow.predlog import PredictionLog
from lossflow.predlog.reader import failures, iter_outcomes, versions_in_window
from lossflow.predlog.state import acquire_lock, check_log_owner, read_traffic, release_lock
from lossflow.tracking import (
    ModelRegistry,
    RegistryError,
    WritableModelRegistry,
    open_registry,
    open_runs,
)


def serving_config(cfg: AbConfig, config_dir: Path = DEFAULT_CONFIG_DIR) -> ServingConfig:
    """The serving config of the service under test, with this config's data_dir and tracking.

    Raises:
        ConfigError: it does not load.
    """
    project = [f"project={cfg.project}"] if cfg.project else []
    served = load_serving_config([*project, f"serving={cfg.serving}"], config_dir)
    return served.model_copy(update={"data_dir": cfg.data_dir, "tracking": cfg.tracking})


def log_location(cfg: AbConfig, served: ServingConfig) -> LogLocation:
    """The prediction log: the A/B config's ``log`` when given, else the service's."""
    return cfg.log if cfg.log is not None else served.log


def open_log(cfg: AbConfig, served: ServingConfig) -> PredictionLog:
    """The prediction log the service writes.

    Raises:
        LogNotFoundError: the embedded log file does not exist (nothing was served yet).
    """
    where = log_location(cfg, served)
    return predlog.open_log(where.url, where.db_schema, cfg.data_dir, existing=True)


def registry_of(cfg: AbConfig) -> ModelRegistry:
    """The model registry as the analysis reads it (aliases, versions, their tags)."""
    return open_registry(cfg.tracking, cfg.data_dir)


def writable_registry_of(cfg: AbConfig) -> WritableModelRegistry:
    """The model registry whose aliases an action moves and whose versions it tags."""
    return open_registry(cfg.tracking, cfg.data_dir, writable=True)


def audit_trail(cfg: AbConfig) -> AuditTrail:
    """Where an action is recorded: the A/B experiment's runs and the versions' tags."""
    return AuditTrail(open_runs(cfg.tracking, cfg.data_dir, "ab"), writable_registry_of(cfg))


def _sources(served: ServingConfig, registry: ModelRegistry, model: str) -> dict[str, ModelSource]:
    """What the service routes to: its configured variants, else its default layout (champion,
    and challenger when that alias exists and differs)."""
    if served.variants:
        return {name: ModelSource(alias=v.alias, version=v.version, path=v.path)
                for name, v in served.variants.items()}  # fmt: skip
    sources = {CHAMPION: ModelSource(alias=CHAMPION)}
    aliases = registry.aliases(model)
    if CHALLENGER in aliases and aliases[CHALLENGER] != aliases.get(CHAMPION):
        sources[CHALLENGER] = ModelSource(alias=CHALLENGER)
    return sources


def _resolve_version(
    source: ModelSource, registry: ModelRegistry, model: str
) -> tuple[str | None, str | None]:
    """``(version, problem)`` of a source now."""
    if source.path is not None:
        from lossflow.serving.variants import file_version

        if not source.path.is_file():
            return None, f"no ONNX file at {source.path}"
        return file_version(source.path), None
    if source.alias is not None:
        version = registry.alias_version(model, source.alias)
        if version is None:
            return None, f"registered model {model!r} has no alias {source.alias!r}"
        return version, None
    try:
        registry.version_tags(model, str(source.version))
    except RegistryError as err:
        return None, str(err)
    return str(source.version), None


def resolve(
    cfg: AbConfig, now: datetime | None = None, config_dir: Path = DEFAULT_CONFIG_DIR
) -> Setup:
    """The test as it stands now (see the module); problems are listed, not raised.

    Raises:
        AbSetupError: the serving config names no such champion, or the log cannot be read.
    """
    end = (now or datetime.now(UTC)).astimezone(UTC)
    served = serving_config(cfg, config_dir)
    model = cfg.tracking.registered_model
    registry = registry_of(cfg)
    sources = _sources(served, registry, model)
    if cfg.champion not in sources:
        raise AbSetupError(
            f"the champion variant {cfg.champion!r} is not served by configs/serving/"
            f"{cfg.serving}.yaml (it routes to {sorted(sources)}); set champion= to one of them"
        )
    unknown = sorted(set(cfg.challengers or []) - set(sources))
    if unknown:
        raise AbSetupError(
            f"challengers {unknown} are not served by configs/serving/{cfg.serving}.yaml (it "
            f"routes to {sorted(sources)}); list only served variants"
        )
    names = [cfg.champion, *(cfg.challengers or sorted(set(sources) - {cfg.champion}))]
    log = open_log(cfg, served)
    try:
        with predlog.reading(log):
            check_log_owner(log, model)
            shared = read_traffic(log, model)
            if shared is not None and set(shared.weights) == set(sources):
                weights, experiment = dict(shared.weights), shared.experiment
                weights_from = f"shared routing (set {shared.updated_at:%Y-%m-%d %H:%M} UTC by " \
                               f"{shared.updated_by})"  # fmt: skip
            else:
                shared = None
                experiment = served.experiment
                if served.variants:
                    weights = {n: v.weight for n, v in served.variants.items()}
                    weights_from = f"configs/serving/{cfg.serving}.yaml"
                else:
                    weights = {n: 100.0 / len(sources) for n in sources}
                    weights_from = "the service's default equal split"
            experiment = cfg.experiment or experiment
            earliest = end - timedelta(seconds=duration_seconds(cfg.since))
            rows = versions_in_window(log, earliest, end, experiment)
    finally:
        log.dispose()
    arms, problems = [], []
    for name in names:
        source = sources[name]
        version, problem = _resolve_version(source, registry, model)
        mine = [r for r in rows if r.variant == name and r.model_version == version]
        if problem is None and not mine:
            problem = (
                f"variant {name!r} (version {version}) answered nothing in experiment "
                f"{experiment!r} since {earliest:%Y-%m-%d %H:%M} UTC"
            )
        arms.append(
            Arm(
                name,
                source.describe(),
                source.alias,
                version,
                mine[0].loss_id if mine else "",
                mine[0].requests if mine else 0,
                mine[0].first_ts if mine else None,
                problem,
            )
        )
        if problem is not None:
            problems.append(problem)
    if len(names) < 2:
        problems.insert(
            0,
            f"no challenger: the service routes only to {cfg.champion!r}; register one "
            f"(alias {CHALLENGER!r}) or configure a second variant",
        )
    start, reason = earliest, f"since={cfg.since}"
    for arm in arms:
        if arm.first is not None and arm.first > start:
            start, reason = arm.first, f"{arm.variant} version {arm.model_version} began answering"
    if shared is not None and shared.updated_at > start:
        start, reason = shared.updated_at, "the weights last changed"
    return Setup(model, experiment, weights, weights_from, arms[0], arms[1:], start, end, reason,
                 problems)  # fmt: skip


METRICS: dict[str, tuple[str, ...]] = {
    "probability": ("log_loss", "brier", "accuracy", "expected_cost"),
    "probabilities": ("log_loss", "accuracy"),
    "value": ("mse", "mae", "pinball"),
    "score": RANKING_METRICS,  # ranked lists (POST /rank)
}


def under_test(
    registry: ModelRegistry, log: PredictionLog, model: str, start: datetime, end: datetime
) -> str | None:
    """The challenger version an A/B test is deciding: its alias differs from the champion's and
    it answered traffic in ``[start, end)`` (an alias the service does not route to is not a
    test); ``None`` otherwise."""
    candidate = registry.challenger_under_test(model)
    if candidate is None:
        return None
    served = {r.model_version for r in versions_in_window(log, start, end)}
    return candidate if candidate in served else None


def primary_metric(cfg: AbConfig, setup: Setup, config_dir: Path = DEFAULT_CONFIG_DIR) -> str:
    """The configured metric, else ``log_loss`` (classification) or ``mse`` (regression).

    Raises:
        AbSetupError: the configured metric does not apply to what the champion answers.
    """
    log = open_log(cfg, serving_config(cfg, config_dir))
    champion = {setup.champion.variant: str(setup.champion.model_version)}
    try:
        chunks = iter_outcomes(
            log, setup.start, setup.end, setup.experiment, champion, chunk_rows=1
        )
        first = next(chunks, None)
        chunks.close()
    finally:
        log.dispose()
    output = first.outputs[0][0] if first and first.outputs and first.outputs[0] else {}
    kind = next((k for k in METRICS if k in output), None)
    if kind is None:
        return cfg.primary_metric or "log_loss"
    if cfg.primary_metric is None:
        return METRICS[kind][0]
    if cfg.primary_metric not in METRICS[kind]:
        task = {"probability": "binary", "probabilities": "multiclass", "value": "regression",
                "score": "ranking"}  # fmt: skip
        raise AbSetupError(
            f"primary_metric={cfg.primary_metric} does not apply to the {task[kind]} models "
            f"under test; choose one of {', '.join(METRICS[kind])}"
        )
    return cfg.primary_metric


def champion_baseline(cfg: AbConfig, setup: Setup) -> Baseline | None:
    """The trivial baseline of the champion's version (a version tag written at registration;
    ``None`` for versions registered before it was, and for ranking models)."""
    version = setup.champion.model_version
    if version is None or version.startswith("file-"):
        return None
    try:
        tags = registry_of(cfg).version_tags(setup.model_name, version)
    except RegistryError:
        return None
    raw = tags.get(BASELINE_JSON_TAG)
    return None if not raw else Baseline.from_json(json.loads(raw))


def measure(
    cfg: AbConfig, setup: Setup, metric: str, config_dir: Path = DEFAULT_CONFIG_DIR
) -> dict[str, VariantMetrics]:
    """Per arm, its per-unit outcomes and guardrails over the test's window.

    Raises:
        AbSetupError: the metric does not apply to what the models answer.
    """
    log = open_log(cfg, serving_config(cfg, config_dir))
    arms = setup.versions()
    trivial = champion_baseline(cfg, setup)
    try:
        chunks = iter_outcomes(log, setup.start, setup.end, setup.experiment, arms)
        failed = failures(log, setup.start, setup.end, setup.experiment, arms)
        return variant_metrics(chunks, metric, failures=failed, fn_cost=cfg.fn_cost,
                               fp_cost=cfg.fp_cost, quantile=cfg.quantile,
                               baseline=None if trivial is None else trivial.output())  # fmt: skip
    except ValueError as err:
        raise AbSetupError(
            f"primary_metric={metric}: {err}; choose one the models answer"
        ) from None
    finally:
        log.dispose()


def policy(cfg: AbConfig, metric: str) -> Policy:
    """The decision rules of the config."""
    g = cfg.guardrails
    return Policy(
        metric=metric,
        alpha=cfg.alpha,
        phi=cfg.phi,
        min_effect=cfg.min_effect,
        min_units=cfg.min_units,
        min_duration_s=duration_seconds(cfg.min_duration),
        srm_alpha=cfg.srm.alpha,
        srm_concentration=cfg.srm.concentration,
        latency_margin_ms=g.latency_ms,
        error_rate_margin=g.error_rate,
        positive_rate_margin=g.positive_rate,
        calibration_margin=g.calibration,
        coverage_alpha=g.coverage_alpha,
    )


def judge(
    cfg: AbConfig, setup: Setup, measured: dict[str, VariantMetrics], metric: str
) -> AbDecision:
    """The decision. Setup problems decide first: no challenger (``no_challenger``), an arm that
    no longer resolves (``invalid``), an arm without traffic yet (``continue``)."""
    if not setup.challengers:
        return AbDecision("no_challenger", None, list(setup.problems))
    if any(a.model_version is None for a in setup.arms):  # an alias, version or file is gone
        return AbDecision("invalid", None, list(setup.problems))
    if setup.problems:  # an arm has not answered yet: wait for traffic
        return AbDecision("continue", None, list(setup.problems))
    return decide(
        measured,
        setup.champion.variant,
        [a.variant for a in setup.challengers],
        setup.weights,
        policy(cfg, metric),
    )


def actor(context: str | None = None) -> str:
    """Who acts: ``$LOSSFLOW_ACTOR``, else ``user@host:pid`` (and ``context``, e.g. the flow
    run that acts)."""
    if os.environ.get("LOSSFLOW_ACTOR"):
        return os.environ["LOSSFLOW_ACTOR"]
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    who = f"{user}@{socket.gethostname()}:{os.getpid()}"
    return f"{who} ({context})" if context else who


@dataclass(frozen=True)
class Analysis:
    """The test, what was measured and the decision (before anything is acted on)."""

    setup: Setup
    metric: str
    measured: dict[str, VariantMetrics]
    decision: AbDecision


def analyse(
    cfg: AbConfig, now: datetime | None = None, config_dir: Path = DEFAULT_CONFIG_DIR
) -> Analysis:
    """``resolve``, ``measure`` and ``judge`` in one call (what ``lossflow ab status`` shows).

    Raises:
        AbSetupError: the test cannot be read as configured.
    """
    setup = resolve(cfg, now, config_dir)
    if setup.problems:
        unknown = cfg.primary_metric or "-"
        return Analysis(setup, unknown, {}, judge(cfg, setup, {}, unknown))
    metric = primary_metric(cfg, setup, config_dir)
    measured = measure(cfg, setup, metric, config_dir)
    return Analysis(setup, metric, measured, judge(cfg, setup, measured, metric))


@contextmanager
def _lease(cfg: AbConfig, config_dir: Any) -> Iterator[bool]:
    """Hold the A/B lease of the registered model; yields ``False`` when someone else does."""
    log = open_log(cfg, serving_config(cfg, config_dir))
    name, owner = f"ab:{cfg.tracking.registered_model}", uuid.uuid4().hex
    try:
        log.create_schema()  # a log an older lossflow wrote has no locks table yet
        held = acquire_lock(log, name, owner, duration_seconds(cfg.lock_ttl))
        try:
            yield held
        finally:
            if held:
                release_lock(log, name, owner)
    finally:
        log.dispose()


def act(
    cfg: AbConfig,
    setup: Setup,
    decision: AbDecision,
    *,
    dry_run: bool = False,
    config_dir: Any = DEFAULT_CONFIG_DIR,
) -> promotion.Action:
    """Make the moves ``decision`` calls for, under the lease and only if nothing moved."""
    plan = promotion.planned(setup, decision)
    if dry_run:
        return promotion.Action(
            plan.kind, False, True, f"dry run: {plan.message}", plan.moves, plan.touched
        )
    if not plan.moves:
        return plan
    with _lease(cfg, config_dir) as held:
        if not held:
            return promotion.Action(
                plan.kind, False, False,
                "another A/B analysis holds the lease on this model; nothing was moved",
                plan.moves, plan.touched,
            )  # fmt: skip
        made, stale = promotion.apply_moves(writable_registry_of(cfg), setup.model_name, plan.moves)
    if stale is not None:
        return promotion.Action(plan.kind, False, False, stale, made, plan.touched)
    return promotion.Action(plan.kind, True, False, plan.message, made, plan.touched)


def rollback(
    cfg: AbConfig, *, dry_run: bool = False, config_dir: Any = DEFAULT_CONFIG_DIR
) -> promotion.Action:
    """Move the champion's alias back to ``previous`` (and remove ``previous``).

    Raises:
        AbSetupError: there is no ``previous`` version, or the champion is not served by alias.
    """
    served = serving_config(cfg, config_dir)
    alias = CHAMPION
    if served.variants:
        source = served.variants.get(cfg.champion)
        if source is None or source.alias is None:
            raise AbSetupError(
                f"the champion variant {cfg.champion!r} is not served by a registry alias in "
                f"configs/serving/{cfg.serving}.yaml; roll back by editing that file"
            )
        alias = source.alias
    writer = writable_registry_of(cfg)
    model = cfg.tracking.registered_model
    aliases = writer.aliases(model)
    if PREVIOUS not in aliases:
        raise AbSetupError(
            f"registered model {model!r} has no {PREVIOUS!r} version to roll back to (only a "
            "promotion by `lossflow ab decide` keeps one)"
        )
    current, previous = aliases.get(alias), aliases[PREVIOUS]
    moves = [promotion.Move(alias, current, previous), promotion.Move(PREVIOUS, previous, None)]
    touched = {previous: "restored", **({current: "rolled_back"} if current else {})}
    message = f"{alias} moves back from version {current} to version {previous}"
    if dry_run:
        return promotion.Action("rollback", False, True, f"dry run: {message}", moves, touched)
    with _lease(cfg, config_dir) as held:
        if not held:
            return promotion.Action(
                "rollback", False, False,
                "an A/B analysis holds the lease on this model; try again in a moment",
                moves, touched,
            )  # fmt: skip
        made, stale = promotion.apply_moves(writer, model, moves)
    if stale is not None:
        return promotion.Action("rollback", False, False, stale, made, touched)
    return promotion.Action("rollback", True, False, message, made, touched)
