"""The training flow's steps. Each function is one task of the ``training`` flow.

Steps hand each other small values (paths, ids, dataclasses of numbers), never tensors or
Trainers, so each can run in its own task, be retried, and be called from a unit test. The work
itself is library code: ``lossflow.data.prepare`` (the prepared splits), ``lossflow.models.build``
(models), ``lossflow.evaluation`` (metrics and plots), ``lossflow.export`` (ONNX) and
``lossflow.tracking`` (MLflow).

A run's working directory holds::

    prepared/    see lossflow.data.prepare
    checkpoints/ best-*.ckpt, last.ckpt (resume), history.json
    model/       model.onnx (with its metadata), reference/profile.json
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

import lossflow
from lossflow.config.training import TrainingConfig, config_to_dict, quantile_of
from lossflow.contract import CHALLENGER, CHAMPION, ModelMetadata
from lossflow.data.lists import gather, padded_index
from lossflow.data.prepare import PreparedData
from lossflow.data.preprocessing import Preprocessor
from lossflow.errors import UserError
from lossflow.evaluation.baseline import (
    BASELINE_JSON_TAG,
    BEATS_METRIC,
    Baseline,
    Verdict,
    beats,
    model_baseline,
    verdict,
)
from lossflow.evaluation.metrics import ranking_metrics
from lossflow.evaluation.report import evaluation_report
from lossflow.evaluation.threshold import choose_threshold
from lossflow.export import check_parity, export_onnx
from lossflow.losses import loss_id
from lossflow.losses.spec import spec_payload
from lossflow.models import InferenceModel
from lossflow.models.build import (
    Split,
    fit_model,
    load_trained_model,
    output_of,
    predict,
    resolved_loss_spec,
)
from lossflow.monitoring.performance import Costs
from lossflow.monitoring.profile import ARTIFACT as PROFILE_ARTIFACT
from lossflow.monitoring.profile import TAG as PROFILE_TAG
from lossflow.monitoring.profile import build_profile
from lossflow.onnx_runner import OnnxRunner
from lossflow.recipe import RECIPE_ARTIFACT
from lossflow.tracking import (
    ModelRegistry,
    Runs,
    WritableModelRegistry,
    flatten,
    open_registry,
    open_runs,
)

PROFILE_ARTIFACT_DIR = str(Path(PROFILE_ARTIFACT).parent)
BEATS_POPULARITY_TAG = "lossflow.beats_popularity"
BEATS_BASELINE_TAG = "lossflow.beats_baseline"
BASELINE_TAG = "lossflow.baseline"
SCHEMA_TAG = "lossflow.schema"
POPULARITY = "popularity (items by their mean training relevance)"

log = logging.getLogger(__name__)


def split_of(cfg: TrainingConfig, prepared: PreparedData, part: str) -> Split:
    """A prepared part as the model trainer takes it (with list ids for a ranking task)."""
    features, target = prepared.arrays(part)
    lists = prepared.lists(part) if cfg.data.task == "ranking" else None
    return Split(features, target, lists)


def runs_of(cfg: TrainingConfig) -> Runs:
    """The training experiment's runs (server from env/config, else the embedded store)."""
    return open_runs(cfg.tracking, cfg.data_dir, "training")


def writable_registry_of(cfg: TrainingConfig) -> WritableModelRegistry:
    """The model registry training registers versions in and moves aliases of."""
    return open_registry(cfg.tracking, cfg.data_dir, writable=True)


def log_run_inputs(cfg: TrainingConfig, prepared: PreparedData, runs: Runs, run_id: str) -> str:
    """Log the resolved config, dataset description and loss decision; return the ``loss_id``."""
    spec = resolved_loss_spec(cfg, prepared.class_counts)
    lid = loss_id(spec, cfg.regularizers)
    runs.log_params(run_id, flatten(config_to_dict(cfg)))
    runs.log_params(run_id, {f"data.rows.{k}": v for k, v in prepared.sizes.items()})
    runs.log_dict(run_id, config_to_dict(cfg), RECIPE_ARTIFACT)
    runs.log_dict(run_id, spec_payload(spec), "loss_spec.json")
    runs.set_tags(
        run_id,
        {"lossflow.loss_id": lid, "lossflow.dataset_fingerprint": prepared.fingerprint},
    )
    return lid


# --- train -----------------------------------------------------------------------------------


class RunMetrics:
    """Epoch metrics to one MLflow run; picklable, so a data-parallel rank 0 can log them (the
    runs are opened where they are first used)."""

    def __init__(self, cfg: TrainingConfig, run_id: str) -> None:
        self.cfg = cfg
        self.run_id = run_id
        self._runs: Runs | None = None

    def __getstate__(self) -> dict[str, object]:
        return {"cfg": self.cfg, "run_id": self.run_id, "_runs": None}

    def __call__(self, metrics: Mapping[str, float], step: int) -> None:
        if self._runs is None:
            self._runs = runs_of(self.cfg)
        self._runs.log_metrics(self.run_id, metrics, step)


@dataclass(frozen=True)
class TrainResult:
    """Where the trained weights are and how training went."""

    checkpoint: Path
    epochs: int
    global_step: int
    stopped_early: bool
    best_score: float | None
    history_path: Path


def train_model(
    cfg: TrainingConfig,
    prepared: PreparedData,
    checkpoint_dir: Path,
    *,
    run_id: str | None = None,
    resume: bool = False,
    progress_bar: bool = False,
) -> TrainResult:
    """Fit the configured model; epoch metrics go to the MLflow run ``run_id`` when given."""
    sink = None if run_id is None else RunMetrics(cfg, run_id)
    result = fit_model(
        cfg,
        prepared.preprocessor(),
        split_of(cfg, prepared, "train"),
        split_of(cfg, prepared, "val"),
        prepared.class_counts,
        checkpoint_dir,
        sink=sink,
        resume=resume,
        progress_bar=progress_bar,
    )
    history_path = checkpoint_dir / "history.json"
    history_path.write_text(json.dumps(result.history))
    return TrainResult(
        checkpoint=result.checkpoint,
        epochs=result.epochs,
        global_step=result.global_step,
        stopped_early=result.stopped_early,
        best_score=result.best_score,
        history_path=history_path,
    )


# --- evaluate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    """Test metrics, the decision threshold chosen on validation (binary), and the model beside
    its trivial baseline on the test split (``baseline`` is the line shown to people)."""

    metrics: dict[str, float]
    threshold: float | None
    baseline: str = ""

    @property
    def beats_baseline(self) -> bool:
        """Whether the model beats its baseline on the test split (``True`` when none applies)."""
        return beats(self.metrics)


def _with_baseline(
    metrics: dict[str, float], baseline: Baseline | None, test_y: np.ndarray
) -> tuple[dict[str, float], str]:
    if baseline is None:
        return metrics, ""
    model = {k.removeprefix("test/"): v for k, v in metrics.items()}
    judged = verdict(baseline, model, test_y)
    return {
        **metrics,
        f"test/baseline_{judged.metric}": judged.baseline,
        BEATS_METRIC: float(judged.beats),
    }, judged.line()


def evaluate_model(
    cfg: TrainingConfig,
    prepared: PreparedData,
    trained: TrainResult,
    *,
    run_id: str | None = None,
) -> EvaluationResult:
    """Choose the threshold on validation, compute test metrics and plots, log them."""
    pre = prepared.preprocessor()
    model = load_trained_model(cfg, pre, trained.checkpoint)
    if cfg.data.task == "ranking":
        metrics = {f"test/{k}": v for k, v in ranking_report(cfg, prepared, model).items()}
        line = ""
        if "test/beats_popularity" in metrics:
            metrics["test/beats_baseline"] = metrics["test/beats_popularity"]
            top = f"ndcg_{max(cfg.evaluation.ranking_k)}"
            ours, popular = metrics[f"test/{top}"], metrics[f"test/popularity_{top}"]
            line = Verdict(top, ours, popular, "max", POPULARITY).line()
        if run_id is not None:
            runs = runs_of(cfg)
            runs.log_metrics(run_id, metrics, None)
            if "test/beats_popularity" in metrics:
                beats = str(bool(metrics["test/beats_popularity"])).lower()
                runs.set_tags(run_id, {BEATS_POPULARITY_TAG: beats, BEATS_BASELINE_TAG: beats,
                                          BASELINE_TAG: line})  # fmt: skip
        return EvaluationResult(metrics, None, line)
    ev = cfg.evaluation
    costs = (ev.fn_cost, ev.fp_cost) if ev.threshold == "cost" else (None, None)
    threshold: float | None = None
    if cfg.data.task == "binary":
        val_x, val_y = prepared.arrays("val")
        choice = choose_threshold(
            val_y, predict(model, pre.model_inputs(val_x)), fn_cost=costs[0], fp_cost=costs[1]
        )
        threshold = choice.threshold
    test_x, test_y = prepared.arrays("test")
    output = predict(model, pre.model_inputs(test_x))
    history = json.loads(trained.history_path.read_text())
    report = evaluation_report(
        cfg.data.task,
        test_y,
        output,
        threshold=threshold,
        label_names=[str(n) for n in pre.label_names] if pre.label_names else None,
        fn_cost=costs[0],
        fp_cost=costs[1],
        quantile=quantile_of(cfg.loss),
        history={k: v for k, v in history.items() if "/" in k} or None,
    )
    metrics = {f"test/{k}": float(v) for k, v in report.metrics.items()}
    metrics, line = _with_baseline(metrics, model_baseline(cfg, prepared), test_y)
    if line and not metrics["test/beats_baseline"]:
        log.warning("the model does NOT beat its trivial baseline on the test split: %s", line)
    if threshold is not None:
        metrics["val/threshold"] = threshold
    if run_id is not None:
        runs = runs_of(cfg)
        runs.log_metrics(run_id, metrics, None)
        if line:
            beats = str(bool(metrics["test/beats_baseline"])).lower()
            runs.set_tags(run_id, {BEATS_BASELINE_TAG: beats, BASELINE_TAG: line})
        for name, figure in report.figures.items():
            runs.log_figure(run_id, figure, f"plots/{name}")
    return EvaluationResult(metrics, threshold, line)


def ranking_report(
    cfg: TrainingConfig, prepared: PreparedData, model: InferenceModel, part: str = "test"
) -> dict[str, float]:
    """Ranking metrics of the model on a part's lists, beside the popularity baseline's.

    The baseline ranks each list by its items' mean training relevance (``popularity_<metric>``,
    when the data names an item column); ``beats_popularity`` is 1 when the model's NDCG at the
    largest cut-off is above the baseline's, else 0, and a model that does not beat it is
    reported as such in the log.
    """
    pre = prepared.preprocessor()
    features, target = prepared.arrays(part)
    index, mask = padded_index(prepared.lists(part))
    relevance = gather(target.astype(np.float64), index, 0.0)
    ks, relevant_at = tuple(cfg.evaluation.ranking_k), cfg.evaluation.relevant_at
    scores = predict(model, pre.model_inputs(features)).reshape(-1).astype(np.float64)
    metrics = ranking_metrics(relevance, gather(scores, index, 0.0), mask, ks, relevant_at)
    popularity = prepared.popularity(part)
    if popularity is None:
        log.warning("%s: no item column, so no popularity baseline to compare with", part)
        return metrics
    baseline = ranking_metrics(relevance, gather(popularity, index, 0.0), mask, ks, relevant_at)
    metrics.update({f"popularity_{k}": v for k, v in baseline.items()})
    top = f"ndcg_{max(ks)}"
    beats = metrics[top] > baseline[top]
    metrics["beats_popularity"] = float(beats)
    if not beats:
        log.warning(
            "%s: the model does NOT beat the popularity baseline: %s %.4f vs %.4f",
            part,
            top,
            metrics[top],
            baseline[top],
        )
    return metrics


# --- export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """The exported ONNX file and its parity with torch on the whole test split."""

    onnx_path: Path
    parity_max_abs_diff: float
    parity_rows: int
    parity_max_rel_diff: float = 0.0


def model_metadata(
    cfg: TrainingConfig, prepared: PreparedData, lid: str, threshold: float | None
) -> ModelMetadata:
    """What the ONNX file carries so a service needs nothing else to score raw records."""
    pre = prepared.preprocessor()
    baseline = model_baseline(cfg, prepared)
    return ModelMetadata(
        loss_id=lid,
        loss_spec=spec_payload(resolved_loss_spec(cfg, prepared.class_counts)),
        task=cfg.data.task,
        output=output_of(cfg, pre).transform,
        preprocessor=pre.to_dict(),
        threshold=threshold,
        label_names=[str(n) for n in pre.label_names] if pre.label_names else None,
        dataset_fingerprint=prepared.fingerprint,
        lossflow_version=lossflow.__version__,
        baseline=None if baseline is None else baseline.to_json(),
    )


def export_model(
    cfg: TrainingConfig,
    prepared: PreparedData,
    trained: TrainResult,
    evaluation: EvaluationResult,
    lid: str,
    out_dir: Path,
) -> ExportResult:
    """Export to ONNX and gate on parity with torch over the whole test split.

    Raises:
        lossflow.export.ParityError: the exported graph disagrees with torch beyond
            ``export.parity_atol + export.parity_rtol * |torch|``; nothing downstream
            (registration) runs.
    """
    pre = prepared.preprocessor()
    model = load_trained_model(cfg, pre, trained.checkpoint)
    test_x, _ = prepared.arrays("test")
    inputs = pre.model_inputs(test_x)
    example = {k: torch.from_numpy(v[:2]) for k, v in inputs.items()}
    path = export_onnx(
        model,
        example,
        out_dir / "model.onnx",
        model_metadata(cfg, prepared, lid, evaluation.threshold).to_props(),
    )
    report = check_parity(
        model, path, inputs, atol=cfg.export.parity_atol, rtol=cfg.export.parity_rtol
    )
    return ExportResult(path, report.max_abs_diff, report.rows, report.max_rel_diff)


# --- register --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """A registered model version and the aliases it now holds."""

    name: str
    version: str
    aliases: tuple[str, ...]


class SchemaMismatchError(UserError):
    """A run would register a version that answers other requests than the model's champion."""


def model_schema(pre: Preprocessor) -> str:
    """What a version takes and answers: its task, target and feature columns (a version of a
    registered model must keep them, or the service, monitoring and the A/B test would mix two
    models)."""
    return json.dumps(
        {"task": pre.task, "target": pre.target, "features": list(pre.feature_columns)}
    )


def check_schema(registry: ModelRegistry, name: str, pre: Preprocessor) -> None:
    """Refuse to register under ``name`` a model of another schema than its champion's.

    Raises:
        SchemaMismatchError: the champion takes other features, or predicts another target.
    """
    champion = registry.alias_version(name, CHAMPION)
    if champion is None:
        return
    theirs = registry.version_tags(name, champion).get(SCHEMA_TAG)
    if theirs is None or theirs == model_schema(pre):
        return
    them = json.loads(theirs)
    raise SchemaMismatchError(
        f"registered model {name!r}'s champion (v{champion}) is a {them['task']} model of "
        f"{them['target']!r} on {len(them['features'])} features; this run trained a "
        f"{pre.task} model of {pre.target!r} on {len(pre.feature_columns)}: a model's versions "
        "answer the same requests. Train it in its own project (lossflow --project NAME, "
        "lossflow init) or under another tracking.registered_model"
    )


def register_version(
    cfg: TrainingConfig, prepared: PreparedData, exported: ExportResult, run_id: str
) -> tuple[str, str]:
    """Log the ONNX model to the run and register a new version of it; ``(name, version)``.

    Raises:
        SchemaMismatchError: the model's champion takes other requests than this one.
    """
    registry = writable_registry_of(cfg)
    pre = prepared.preprocessor()
    check_schema(registry, cfg.tracking.registered_model, pre)
    test_x, _ = prepared.arrays("test")
    example = {k: v[:5] for k, v in pre.model_inputs(test_x).items()}
    runner = OnnxRunner(exported.onnx_path)
    output = runner.run(example)
    name = cfg.tracking.registered_model
    runs = runs_of(cfg)
    logged = runs.log_onnx_model(run_id, exported.onnx_path, example, output)
    version = registry.register(name, logged)
    tags = {SCHEMA_TAG: model_schema(pre)}
    baseline = ModelMetadata.from_props(runner.metadata, exported.onnx_path).baseline
    if baseline is not None:  # the A/B analysis reads it from the version
        tags[BASELINE_JSON_TAG] = json.dumps(baseline)
    registry.set_version_tags(name, version, tags)
    runs.log_metrics(
        run_id,
        {
            "export/parity_max_abs_diff": exported.parity_max_abs_diff,
            "export/parity_max_rel_diff": exported.parity_max_rel_diff,
            "export/parity_rows": exported.parity_rows,
        },
        None,
    )
    return name, version


def store_reference_profile(
    cfg: TrainingConfig,
    prepared: PreparedData,
    exported: ExportResult,
    run_id: str,
    name: str,
    version: str,
) -> Path:
    """Build the version's reference profile (what monitoring judges traffic against), log it
    to the run and tag the version with it; return the local file."""
    ev = cfg.evaluation
    costs = (
        Costs(ev.fn_cost, ev.fp_cost)
        if ev.threshold == "cost" and ev.fn_cost is not None and ev.fp_cost is not None
        else None
    )
    profile = build_profile(
        prepared,
        exported.onnx_path,
        model_name=name,
        model_version=version,
        run_id=run_id,
        costs=costs,
        seed=cfg.data.seed,
    )
    path = profile.save(exported.onnx_path.parent / "reference" / "profile.json")
    runs_of(cfg).log_artifact(run_id, path, PROFILE_ARTIFACT_DIR)
    writable_registry_of(cfg).set_version_tags(name, version, {PROFILE_TAG: PROFILE_ARTIFACT})
    return path


def assign_aliases(
    cfg: TrainingConfig, name: str, version: str, evaluation: EvaluationResult | None = None
) -> Registration:
    """Alias the version ``challenger`` (and ``champion`` when the model has none yet); tag it
    with whether it beats its trivial baseline (``evaluation``), so the registry says so."""
    registry = writable_registry_of(cfg)
    if evaluation is not None and evaluation.baseline:
        beats = str(evaluation.beats_baseline).lower()
        registry.set_version_tags(name, version, {BEATS_BASELINE_TAG: beats,
                                                 BASELINE_TAG: evaluation.baseline})  # fmt: skip
    aliases = [CHALLENGER]
    registry.set_alias(name, CHALLENGER, version)
    if registry.alias_version(name, CHAMPION) is None:
        registry.set_alias(name, CHAMPION, version)
        aliases.append(CHAMPION)
    return Registration(name, version, tuple(aliases))
