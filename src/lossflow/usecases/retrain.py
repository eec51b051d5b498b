"""The retraining flow's steps, each one call the ``retrain`` flow makes as a task.

``gate`` refuses a request already acted on (the same dedup key) or inside the cooldown;
``champion`` fetches the model to beat and its **recipe** (the resolved training configuration
of its run: :mod:`lossflow.recipe`); ``build_data`` writes the pool from the recipe's data
source and the log; ``plan_candidates`` turns the decision's candidate losses (and the
champion's own) into whole training configurations: the recipe with only the loss, the pool
(the data window) and, when configured, the seed changed; ``train_candidate`` trains one
candidate in a run nested under the retrain's run, exactly as the training flow does;
``posthoc_candidate`` adjusts the champion's logits for a new prior; ``screen`` pre-screens them
on the evidence window (and against the trivial baseline); ``register_challenger`` registers the
chosen one as ``challenger`` with its lineage; ``record`` writes the outcome. Nothing moves an
alias before ``register_challenger``, so a retrain that fails leaves the registry as it was.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from lossflow.config.common import duration_seconds
from lossflow.config.loader import DEFAULT_CONFIG_DIR
from lossflow.config.retrain import RetrainConfig
from lossflow.config.training import TrainingConfig, config_to_dict
from lossflow.contract import CHALLENGER, CHAMPION, ModelMetadata
from lossflow.data.prepare import PreparedData, prepare_data
from lossflow.errors import UserError
from lossflow.evaluation.baseline import Baseline, beats
from lossflow.onnx_runner import OnnxRunner
from lossflow.recipe import RECIPE_ARTIFACT, Recipe, project_changes
from lossflow.replay.rows import records_of
from lossflow.retrain import data as retrain_data
from lossflow.retrain.posthoc import PROP, PosthocError, adjust_onnx, adjusted_probabilities
from lossflow.retrain.prescreen import Screened, choose, prescreen
from lossflow.retrain.request import RetrainRequest
from lossflow.serving.predictor import OnnxPredictor
from lossflow.tracking import (
    ModelRegistry,
    Runs,
    WritableModelRegistry,
    open_registry,
    open_runs,
)
from lossflow.usecases import training as training_steps
from lossflow.usecases.ab import under_test
from lossflow.usecases.recipe import fetch_recipe, recipe_config

TAG_MODEL: Final = "lossflow.model"
TAG_KEY: Final = "lossflow.dedup_key"
TAG_OUTCOME: Final = "lossflow.retrain.outcome"
ACTED: Final = ("challenger", "no_challenger")
# Loss parameters the training split fills in; a candidate from a spec leaves them to it.
FILLED: Final = frozenset({"class_counts"})
# Huber's delta for Gaussian errors of scale sigma at 95% efficiency (Huber 1964), sigma taken
# robustly as 1.4826 x the median absolute residual.
HUBER_K: Final = 1.345
MAD_SIGMA: Final = 1.4826
DELTA_ROWS: Final = 20_000
DEFAULT_PRESCREEN_METRIC: Final = {"regression": "mse", "ranking": "ndcg_10"}


class RetrainError(UserError):
    """A retrain cannot go ahead as configured; the message says what to change."""


def runs_of(cfg: RetrainConfig) -> Runs:
    """The retrain experiment's runs (a retrain's run, its candidates' nested runs)."""
    return open_runs(cfg.tracking, cfg.data_dir, "retrain")


def registry_of(cfg: RetrainConfig) -> ModelRegistry:
    """The model registry as a retrain reads it (the champion, its recipe)."""
    return open_registry(cfg.tracking, cfg.data_dir)


def writable_registry_of(cfg: RetrainConfig) -> WritableModelRegistry:
    """The model registry a challenger is registered in."""
    return open_registry(cfg.tracking, cfg.data_dir, writable=True)


def gate(cfg: RetrainConfig, request: RetrainRequest, now: datetime | None = None) -> str | None:
    """Why this request must not retrain (``None``: it may): the judged version is no longer
    the champion, a challenger is under A/B test, the same causes were already acted on, or
    another retrain of the model finished within the cooldown."""
    now = now or datetime.now(UTC)
    registry = registry_of(cfg)
    aliases = registry.aliases(request.model_name)
    champion_now = aliases.get(CHAMPION)
    if champion_now is not None and champion_now != request.model_version:
        return (
            f"stale: version {request.model_version} was judged, but the champion is now "
            f"{champion_now}; its evidence does not apply (the next monitoring window judges it)"
        )
    testing = None
    if retrain_data.log_exists(cfg):
        log = retrain_data.open_log(cfg)
        try:
            testing = under_test(registry, log, request.model_name, request.window_start, now)
        finally:
            log.dispose()
    if testing is not None:
        return (
            f"deferred: challenger version {testing} is under A/B test; a new challenger would "
            "restart it (retrain after its decision)"
        )
    done = [
        r
        for r in runs_of(cfg).runs_with_tags({TAG_MODEL: request.model_name})
        if r.tags.get(TAG_OUTCOME) in ACTED
    ]
    same = [r for r in done if r.tags.get(TAG_KEY) == request.dedup_key]
    if same:
        return (
            f"duplicate: the causes {request.dedup_key} were already retrained on in run "
            f"{same[0].run_id} ({same[0].tags.get(TAG_OUTCOME)})"
        )
    cooldown = timedelta(seconds=duration_seconds(cfg.cooldown))
    recent = [r for r in done if now - datetime.fromtimestamp(r.start_ms / 1000, UTC) < cooldown]
    if recent:
        at = datetime.fromtimestamp(recent[0].start_ms / 1000, UTC)
        return f"cooldown: {request.model_name} was retrained at {at.isoformat()} (run " \
               f"{recent[0].run_id}); the next retrain after {at + cooldown}"  # fmt: skip
    return None


@dataclass(frozen=True)
class Champion:
    """The model to beat: its version, ONNX file, metadata, recipe and its training run's
    prepared data (when this data_dir has it)."""

    version: str
    onnx_path: Path
    metadata: ModelMetadata
    prepared_dir: Path | None
    recipe: Recipe


def champion(cfg: RetrainConfig, request: RetrainRequest, directory: Path) -> Champion:
    """The current champion (the alias; the request's version if the model has none) and its
    recipe.

    Raises:
        RetrainError: the request names another model than this project's.
        RecipeError: the version has no recipe.
    """
    if request.model_name != cfg.tracking.registered_model:
        raise RetrainError(
            f"the request is for model {request.model_name!r} but this retrain's project "
            f"({cfg.project}) registers {cfg.tracking.registered_model!r}; run the retrain of "
            f"{request.model_name}'s project (lossflow --project ...)"
        )
    registry = registry_of(cfg)
    version = registry.alias_version(request.model_name, CHAMPION) or request.model_version
    path = registry.download_onnx(request.model_name, version, directory / f"champion-{version}")
    props = OnnxRunner(path).metadata
    meta = ModelMetadata.from_props(props, str(path))
    recipe = fetch_recipe(registry, request.model_name, version)
    prepared = cfg.data_dir / "runs" / recipe.run_id / "prepared"
    found = prepared if (prepared / "preprocessor.json").is_file() else None
    return Champion(version, path, meta, found, recipe)


def _stores(cfg: RetrainConfig) -> dict[str, Any]:
    """The project's stores, and no pool: what every retrain configuration starts from."""
    return {**project_changes(cfg.project, cfg.data_dir, cfg.tracking), "pool": None}


def base_config(
    cfg: RetrainConfig, best: Champion, config_dir: Path = DEFAULT_CONFIG_DIR
) -> TrainingConfig:
    """The champion's recipe with the project's stores and the retrain's ``training``
    overrides: what every candidate shares.

    Raises:
        ConfigError: the recipe no longer runs (its data file moved...), naming the version.
    """
    return recipe_config(
        best.recipe, cfg.training, config_dir, changes=_stores(cfg),
        changed_by=f"the project {cfg.project}",
    )  # fmt: skip


def build_data(
    cfg: RetrainConfig,
    request: RetrainRequest,
    directory: Path,
    best: Champion,
    config_dir: Path = DEFAULT_CONFIG_DIR,
) -> retrain_data.RetrainData:
    """The pool on disk and the pre-screen rows (:mod:`lossflow.retrain.data`), from the
    champion's recipe's data source and the log."""
    base = base_config(cfg, best, config_dir)
    names = best.metadata.label_names if best.metadata.task == "binary" else None
    return retrain_data.build(cfg, base, request, directory, names)


@dataclass(frozen=True)
class Candidate:
    """A loss to train: its name (unique in the retrain), spec, whole training configuration
    (the champion's recipe with the loss, the pool and the seed changed) and origin."""

    name: str
    spec: dict[str, Any]
    training: TrainingConfig
    origin: str


def suggested_delta(best: Champion, pool: retrain_data.RetrainData, seed: int = 0) -> float | None:
    """Huber's ``delta`` in the target's unit for the champion's errors on the pool: 1.345 x
    the robust scale of its residuals (1.4826 x the median absolute residual), the classical
    choice for Gaussian errors that stays robust to the heavy tails the decision saw. ``None``
    when the pool has no usable rows."""
    rows = pd.read_parquet(pool.pool)
    rows = rows[rows[pool.columns.target].notna()]
    if rows.empty:
        return None
    if len(rows) > DELTA_ROWS:
        rows = rows.sample(n=DELTA_ROWS, random_state=seed)
    predictor = OnnxPredictor.from_path(best.onnx_path)
    predicted = [p.value for p in predictor.predict(records_of(rows, predictor.feature_columns))]
    residuals = rows[pool.columns.target].to_numpy(np.float64) - np.asarray(predicted, np.float64)
    scale = MAD_SIGMA * float(np.median(np.abs(residuals - np.median(residuals))))
    return round(HUBER_K * scale, 6) if scale > 0 else None


def plan_candidates(
    cfg: RetrainConfig,
    request: RetrainRequest,
    best: Champion,
    pool: retrain_data.RetrainData,
    config_dir: Path = DEFAULT_CONFIG_DIR,
) -> tuple[list[Candidate], list[str]]:
    """The candidates to train (the decision's, the champion's loss, the configured extras;
    duplicates once, at most ``candidates.max``) and the ones that could not be planned (a
    loss that does not fit the recipe's task, an invalid option), with why.

    Each is the champion's recipe with only the loss, the pool and (``seed`` set) the seed
    changed. A ``huber`` candidate without a ``delta`` gets :func:`suggested_delta`.
    """
    wanted: list[tuple[dict[str, Any], str]] = [(c, "decision") for c in request.candidate_losses]
    if cfg.candidates.include_champion_loss:
        wanted.append((best.recipe.loss, "champion's loss"))
    wanted += [(c, "config") for c in cfg.candidates.extra]
    changes = {**_stores(cfg),
               "pool": retrain_data.pool_config(cfg, pool, request.window_start).model_dump(
                   mode="json")}  # fmt: skip
    if cfg.seed is not None:
        changes["trainer.seed"] = cfg.seed
    delta: list[float | None] = []
    seen: set[str] = set()
    planned: list[Candidate] = []
    skipped: list[str] = []
    for given, origin in wanted:
        spec = {k: v for k, v in given.items() if k not in FILLED}
        key = json.dumps(spec, sort_keys=True)
        if key in seen or "name" not in spec:
            continue
        seen.add(key)
        if len(planned) >= cfg.candidates.max:
            skipped.append(f"{spec['name']}: beyond candidates.max={cfg.candidates.max}")
            continue
        if spec["name"] == "huber" and "delta" not in spec:
            if not delta:
                delta.append(suggested_delta(best, pool, cfg.seed or 0))
            if delta[0] is not None:
                spec["delta"] = delta[0]
        name = str(spec["name"])
        if any(c.name == name for c in planned):
            name = f"{name}-{len(planned)}"
        try:
            training = recipe_config(
                best.recipe, cfg.training, config_dir, changes={**changes, "loss": spec},
                changed_by=f"retrain candidate {name} ({origin})",
            )  # fmt: skip
        except UserError as err:
            skipped.append(f"{name}: {err}")
            continue
        planned.append(Candidate(name, spec, training, origin))
    return planned, skipped


@dataclass(frozen=True)
class Trained:
    """A trained candidate (or the post-hoc adjusted champion) ready to be pre-screened."""

    name: str
    loss_id: str
    onnx_path: Path
    run_id: str
    origin: str
    metrics: dict[str, float] = field(default_factory=dict)
    training: TrainingConfig | None = None
    prepared: PreparedData | None = None
    exported: training_steps.ExportResult | None = None
    baseline: str = ""

    @property
    def beats_baseline(self) -> bool:
        """Whether it beat its trivial baseline on its test split (the post-hoc adjusted
        champion is not re-evaluated there: ``True``)."""
        return beats(self.metrics)


def train_candidate(cfg: RetrainConfig, candidate: Candidate, parent_run_id: str) -> Trained:
    """Train, evaluate and export one candidate on the pool, in a run nested under the
    retrain's (the training flow's own steps, parity gate included)."""
    tcfg = candidate.training
    runs = runs_of(cfg)
    tags = {"lossflow.loss": tcfg.loss.name, "lossflow.retrain.candidate": candidate.name,
            "lossflow.retrain.origin": candidate.origin}  # fmt: skip
    with runs.start_run(f"candidate-{candidate.name}", tags, parent_run_id) as run_id:
        work = cfg.data_dir / "runs" / run_id
        prepared = prepare_data(tcfg, work / "prepared")
        lid = training_steps.log_run_inputs(tcfg, prepared, runs, run_id)
        trained = training_steps.train_model(tcfg, prepared, work / "checkpoints", run_id=run_id)
        evaluation = training_steps.evaluate_model(tcfg, prepared, trained, run_id=run_id)
        exported = training_steps.export_model(
            tcfg, prepared, trained, evaluation, lid, work / "model"
        )
    return Trained(candidate.name, lid, exported.onnx_path, run_id, candidate.origin,
                   evaluation.metrics, tcfg, prepared, exported, evaluation.baseline)  # fmt: skip


def posthoc_candidate(
    cfg: RetrainConfig,
    request: RetrainRequest,
    best: Champion,
    parent_run_id: str,
    directory: Path,
    config_dir: Path = DEFAULT_CONFIG_DIR,
) -> tuple[Trained | None, str]:
    """The champion with its logits adjusted to the window's prior (or why not). Its run logs
    the champion's recipe (what a later retrain of it starts from)."""
    if not cfg.posthoc.enabled:
        return None, "posthoc.enabled is false"
    if not request.pure_prior_shift or request.prior is None:
        return None, f"not a pure label-prior shift (reasons: {', '.join(request.reasons)})"
    if best.prepared_dir is None:
        return None, f"champion version {best.version} has no local prepared data to verify on"
    reference, new = request.prior["reference"], request.prior["new"]
    target = directory / "posthoc" / "model.onnx"
    try:
        meta = adjust_onnx(best.onnx_path, target, reference, new)
    except PosthocError as err:
        return None, str(err)
    prepared = PreparedData(best.prepared_dir, "", {}, None)
    test_x, _ = prepared.arrays("test")
    inputs = prepared.preprocessor().model_inputs(test_x)
    before = OnnxRunner(best.onnx_path).run(inputs)
    after = OnnxRunner(target).run(inputs)
    flat = before.reshape(-1) if before.ndim == 2 and before.shape[1] == 1 else before
    expected = adjusted_probabilities(flat, reference, new).reshape(after.shape)
    parity = float(abs(expected - after).max())
    training = base_config(cfg, best, config_dir)
    runs = runs_of(cfg)
    tags = {"lossflow.retrain.candidate": "posthoc", "lossflow.retrain.origin": "posthoc"}
    with runs.start_run("candidate-posthoc", tags, parent_run_id) as run_id:
        runs.log_params(run_id, {"posthoc.reference": reference, "posthoc.new": new,
                                 "posthoc.from_version": best.version})  # fmt: skip
        runs.log_metrics(run_id, {"posthoc/parity_max_abs_diff": parity}, None)
        runs.log_dict(run_id, config_to_dict(training), RECIPE_ARTIFACT)
    exported = training_steps.ExportResult(target, parity, int(after.shape[0]))
    return Trained("posthoc", meta.loss_id, target, run_id, "posthoc", {}, training, prepared,
                   exported), "adjusted"  # fmt: skip


def screen(
    best: Champion,
    candidates: list[Trained],
    pool: retrain_data.RetrainData,
    cfg: RetrainConfig,
) -> tuple[list[Screened], Trained | None, str]:
    """Pre-screen every candidate against the champion and choose (see
    :mod:`lossflow.retrain.prescreen`)."""
    rows = pool.prescreen
    if len(rows) < cfg.prescreen.min_rows:
        return (
            [],
            None,
            (
                f"{len(rows)} labelled rows in the evidence window; the pre-screen needs "
                f"{cfg.prescreen.min_rows} (prescreen.min_rows): no challenger"
            ),
        )
    if not candidates:
        return [], None, "no candidate trained"
    metric = cfg.prescreen.metric or DEFAULT_PRESCREEN_METRIC.get(pool.task, "log_loss")
    screened = prescreen(
        best.onnx_path,
        {c.name: (c.onnx_path, c.loss_id) for c in candidates},
        rows,
        metric,
        pool.columns.target,
        cfg.prescreen.alpha,
        Baseline.from_json(best.metadata.baseline),
        best.metadata.label_names,
        pool.columns.group if pool.task == "ranking" else None,
    )
    below = {c.name: c.baseline for c in candidates if not c.beats_baseline}
    chosen, why = choose(screened, cfg.prescreen.require, below, cfg.prescreen.allow_below_baseline)
    return screened, next((c for c in candidates if chosen and c.name == chosen.name), None), why


def register_challenger(
    cfg: RetrainConfig,
    request: RetrainRequest,
    chosen: Trained,
    screened: list[Screened],
    parent_run_id: str,
) -> str:
    """Register ``chosen`` as a new version aliased ``challenger``, with its lineage; the
    version's number. Its recipe is its run's configuration (the champion's with the loss and
    pool it was trained with)."""
    tcfg = chosen.training
    if tcfg is None or chosen.prepared is None or chosen.exported is None:
        raise RetrainError(f"candidate {chosen.name} has nothing to register")
    name, version = training_steps.register_version(tcfg, chosen.prepared, chosen.exported,
                                                    chosen.run_id)  # fmt: skip
    training_steps.store_reference_profile(
        tcfg, chosen.prepared, chosen.exported, chosen.run_id, name, version
    )
    registry = writable_registry_of(cfg)
    registry.set_version_tags(
        name,
        version,
        {
            "lossflow.retrain.run": parent_run_id,
            "lossflow.retrain.reasons": ",".join(request.reasons),
            "lossflow.retrain.monitoring_run": request.monitoring_run_id or "",
            "lossflow.retrain.dedup_key": request.dedup_key,
            "lossflow.retrain.candidate": chosen.name,
            "lossflow.retrain.origin": chosen.origin,
            "lossflow.retrain.candidates": json.dumps([s.name for s in screened]),
            "lossflow.retrain.prescreen": json.dumps([s.to_json() for s in screened]),
            training_steps.BEATS_BASELINE_TAG: str(
                chosen.beats_baseline
                and all(s.beats_baseline for s in screened if s.name == chosen.name)
            ).lower(),
            **({PROP: "true"} if chosen.origin == "posthoc" else {}),
        },
    )
    registry.set_alias(name, CHALLENGER, version)
    return version


def record(cfg: RetrainConfig, parent_run_id: str, outcome: dict[str, Any]) -> None:
    """The retrain's outcome on its run: tags and ``retrain.json``."""
    runs = runs_of(cfg)
    runs.set_tags(
        parent_run_id,
        {
            TAG_OUTCOME: outcome["outcome"],
            "lossflow.retrain.challenger_version": outcome.get("challenger_version") or "none",
            "lossflow.retrain.chosen": outcome.get("chosen") or "none",
            "lossflow.retrain.why": outcome.get("why", "")[:5000],
        },
    )
    runs.log_dict(parent_run_id, outcome, "retrain.json")
