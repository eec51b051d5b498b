"""The offline comparison's use cases: the plan (each arm's configuration resolved by the
training loader, from the project's files or a registered version's recipe), and what goes to
MLflow and to disk -- one parent run with a nested run per arm x fold and per trial, the
figures, the tables, the HTML report and the best trial's experiment overlay."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import yaml
from matplotlib.figure import Figure

from lossflow.comparison.cv import FoldSet, UnitResult
from lossflow.comparison.html import render_html
from lossflow.comparison.optuna_study import load_plan
from lossflow.comparison.plan import Arm, ComparisonPlan, build_plan, with_changes
from lossflow.comparison.report import build_figures, metric_rows, payload, test_rows
from lossflow.comparison.results import StudyResult, TrialRecord, best_overlay
from lossflow.comparison.search import storage_of
from lossflow.comparison.summary import Comparison
from lossflow.config.compare import ArmConfig, CompareConfig
from lossflow.config.training import config_to_dict, load_training_config
from lossflow.errors import UserError
from lossflow.recipe import Recipe, project_changes
from lossflow.tracking import Runs, flatten, open_registry, open_runs
from lossflow.usecases.recipe import fetch_recipe, recipe_config

OVERLAY_FILE = "hpo_best.yaml"


def resolve_arm(
    name: str,
    arm: ArmConfig,
    settings: CompareConfig,
    config_dir: Path,
    recipe: Recipe | None = None,
) -> Arm:
    """The arm's training configuration: the project's training files (or ``recipe``), the
    shared overrides, its loss file, its own overrides and regularisers, with the project's
    ``data_dir`` and ``tracking``; a configuration error makes it a failed arm."""
    overrides = [*settings.overrides, f"loss={arm.loss}", *arm.overrides]
    stores = {"data_dir": str(settings.data_dir), "tracking": settings.tracking.model_dump()}
    try:
        if recipe is not None:  # a retrained version's recipe keeps its pool: the same rows
            changes = project_changes(settings.project, settings.data_dir, settings.tracking)
            by = f"the project {settings.project}"
            cfg = recipe_config(recipe, overrides, config_dir, changes=changes, changed_by=by)
        else:
            project = [f"project={settings.project}"] if settings.project else []
            cfg = load_training_config([*project, *overrides], config_dir)
            cfg = with_changes(cfg, **stores)
        if arm.regularizers is not None:
            cfg = with_changes(cfg, regularizers=[r.model_dump() for r in arm.regularizers])
    except UserError as err:
        return Arm(name, None, str(err), arm.loss)
    return Arm(name, cfg, None, arm.loss)


def plan_comparison(settings: CompareConfig, config_dir: Path) -> ComparisonPlan:
    """Resolve the arms (from ``settings.version``'s recipe when set) and plan the comparison
    (:func:`lossflow.comparison.plan.build_plan`).

    Raises:
        CompareError: the comparison cannot work (see ``build_plan``).
        RecipeError: the version has no usable recipe.
        lossflow.tracking.RegistryError: no such version.
    """
    recipe = None
    if settings.version is not None:
        registry = open_registry(settings.tracking, settings.data_dir)
        recipe = fetch_recipe(registry, settings.tracking.registered_model, settings.version)
    arms = tuple(
        resolve_arm(name, arm, settings, config_dir, recipe) for name, arm in settings.arms.items()
    )
    return build_plan(settings, arms, recipe)


def tracker_for(plan: ComparisonPlan) -> Runs:
    """The comparison experiment's runs, in the arms' tracking store."""
    reference = plan.reference
    return open_runs(reference.tracking, reference.data_dir, "compare")


def _finite(metrics: Mapping[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def log_units(
    tracker: Runs, parent_run_id: str, plan: ComparisonPlan, results: Sequence[UnitResult]
) -> list[str]:
    """One nested run per arm x fold: its config, per-epoch history, fold metrics, status."""
    ids = []
    for unit in results:
        cfg = plan.config_of(unit.arm)
        arm = next(a for a in plan.runnable if a.name == unit.arm)
        history_path = unit.directory / "history.json"
        history = json.loads(history_path.read_text()) if history_path.is_file() else {}
        metrics: dict[str, float | None] = {f"fold/{k}": v for k, v in (unit.metrics or {}).items()}
        metrics.update(
            {
                "fold/wall_s": unit.wall_s,
                "fold/epochs": float(unit.epochs),
                "fold/epochs_to_95": unit.epochs_to_95,
                "fold/threshold": unit.threshold,
            }
        )
        run_id = tracker.log_child_run(
            parent_run_id,
            f"{unit.arm}/{unit.fold}",
            tags={
                "lossflow.kind": "ablation" if arm.ablation_of else "fold",
                "lossflow.arm": unit.arm,
                "lossflow.fold": unit.fold,
                "lossflow.repeat": str(unit.repeat),
                "lossflow.fold_index": str(unit.index),
                "lossflow.loss": cfg.loss.name,
            },
            params=flatten(config_to_dict(cfg)),
            metrics=_finite(metrics),
            history={k: v for k, v in history.items() if k != "epoch"},
            error=unit.error,
        )
        if (unit.directory / "error.txt").is_file():
            tracker.log_artifact(run_id, unit.directory / "error.txt")
        ids.append(run_id)
    return ids


def log_trials(tracker: Runs, parent_run_id: str, study: StudyResult) -> list[str]:
    """One nested run per trial: its parameters, objective, per-epoch values and state."""
    ids = []
    for trial in study.trials:
        history = [trial.intermediate[k] for k in sorted(trial.intermediate)]
        error = trial.error if trial.state == "FAIL" else None
        if trial.state == "FAIL" and error is None:
            error = "closed without training (no ticket left)" if trial.ticket is None else "failed"
        ids.append(
            tracker.log_child_run(
                parent_run_id,
                f"trial-{trial.number}",
                tags={
                    "lossflow.kind": "trial",
                    "lossflow.trial": str(trial.number),
                    "lossflow.state": trial.state,
                    "lossflow.study": study.name,
                },
                params=dict(trial.params),
                metrics=_finite({"hpo/objective": trial.value, "hpo/duration_s": trial.duration_s}),
                history={f"hpo/{study.metric}": history} if history else None,
                error=error,
            )
        )
    return ids


@dataclass(frozen=True)
class Published:
    """Where the report went.

    Attributes:
        report: the HTML report on disk (also the run's ``report.html``).
        overlay: the best trial's experiment overlay, when there was a search.
        figures: the figure file names logged under ``plots/``.
    """

    report: Path
    overlay: Path | None
    figures: tuple[str, ...]


def write_overlay(
    path: Path, overlay: Mapping[str, object], study: StudyResult, best: TrialRecord
) -> Path:
    """Write ``overlay`` as YAML with a header saying where it came from and how to use it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        f"# Best trial {best.number} of Optuna study {study.name!r} ({study.metric} = "
        f"{best.value:.6g}).\n"
        f"# Copy it to configs/experiment/ and train it: lossflow train experiment={path.stem}\n"
    )
    path.write_text(header + yaml.safe_dump(dict(overlay), sort_keys=False))
    return path


def publish(
    tracker: Runs,
    parent_run_id: str,
    plan: ComparisonPlan,
    folds: FoldSet,
    results: Sequence[UnitResult],
    comparison: Comparison,
    study: StudyResult | None,
    directory: Path,
) -> Published:
    """Draw the figures, write the best trial's overlay and the HTML report, and log them all
    with the comparison's tables to the parent run."""
    directory.mkdir(parents=True, exist_ok=True)
    figures = build_figures(plan, folds, results, comparison, study)
    overlay_path: Path | None = None
    overlay_text: str | None = None
    if study is not None and study.best is not None:
        stored = load_plan(storage_of(plan), study.name)
        overlay_path = write_overlay(
            directory / OVERLAY_FILE, best_overlay(stored, study.best), study, study.best
        )
        overlay_text = overlay_path.read_text()
    text = render_html(comparison, figures, study, overlay_text)
    report_path = directory / "report.html"
    report_path.write_text(text)
    log_comparison(tracker, parent_run_id, comparison, figures, text, study, overlay_path)
    return Published(report_path, overlay_path, tuple(figures))


def log_comparison(
    tracker: Runs,
    parent_run_id: str,
    comparison: Comparison,
    figures: Mapping[str, Figure],
    report_html: str,
    study: StudyResult | None,
    overlay_path: Path | None,
) -> None:
    """The parent run's metrics, tables, figures and report."""
    metrics: dict[str, float] = {
        "cv/elapsed_s": comparison.elapsed_s,
        "cv/busy_s": comparison.busy_s,
        "cv/parallel_efficiency": comparison.efficiency,
    }
    for arm in comparison.arms:
        for name, interval in arm.metrics.items():
            metrics[f"cv/{arm.name}/{name}"] = interval.mean
    tracker.log_metrics(parent_run_id, _finite(metrics), None)
    tracker.set_tags(
        parent_run_id,
        {
            "lossflow.verdict": comparison.verdict.text,
            "lossflow.winner": comparison.verdict.winner or "",
        },
    )
    tracker.log_dict(parent_run_id, payload(comparison, study), "comparison.json")
    arms = metric_rows(comparison, [*comparison.arms, *comparison.ablations])
    tracker.log_text(parent_run_id, pd.DataFrame(arms).to_csv(index=False), "comparison.csv")
    tests = test_rows([*comparison.pairs, *comparison.ablation_tests])
    tracker.log_text(parent_run_id, pd.DataFrame(tests).to_csv(index=False), "tests.csv")
    for name, figure in figures.items():
        tracker.log_figure(parent_run_id, figure, f"plots/{name}")
    tracker.log_text(parent_run_id, report_html, "report.html")
    if overlay_path is not None:
        tracker.log_artifact(parent_run_id, overlay_path, "hpo")
