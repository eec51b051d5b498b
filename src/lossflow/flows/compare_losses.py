"""The ``compare_losses`` flow: plan → folds → arm x fold trainings → nested runs → search →
summary → report.

Each task is one call into ``lossflow.comparison`` or its use cases
(``lossflow.usecases.compare``); MLflow calls retry. Everything lands in one
MLflow parent run (experiment ``lossflow-compare``) with a nested run per arm x fold and per
trial; the parent holds the comparison table, the tests, the figures and ``report.html``.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from lossflow.comparison import cv, hpo_worker, summary
from lossflow.comparison.plan import ComparisonPlan
from lossflow.comparison.results import StudyResult
from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.compare import load_compare_config
from lossflow.config.training import config_to_dict
from lossflow.tracking import flatten, git_commit
from lossflow.usecases import compare

RETRIES = 2
RETRY_DELAY_S = 3


@task(name="plan-comparison", cache_policy=NO_CACHE)
def plan(overrides: list[str], config_dir: Path) -> ComparisonPlan:
    return compare.plan_comparison(load_compare_config(overrides, config_dir), config_dir)


@task(name="prepare-folds", cache_policy=NO_CACHE)
def prepare_folds(comparison: ComparisonPlan, directory: Path) -> cv.FoldSet:
    return cv.prepare_folds(
        comparison.reference,
        comparison.settings.cv,
        comparison.cv_kind,
        comparison.slices,
        directory,
    )


@task(name="cross-validate", cache_policy=NO_CACHE)
def cross_validate(
    comparison: ComparisonPlan, folds: cv.FoldSet, directory: Path
) -> cv.CrossValidation:
    return cv.cross_validate(comparison, folds, directory)


@task(name="log-folds", cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S)
def log_folds(run_id: str, comparison: ComparisonPlan, trained: cv.CrossValidation) -> list[str]:
    return compare.log_units(compare.tracker_for(comparison), run_id, comparison, trained.results)


@task(name="search", cache_policy=NO_CACHE)
def search(comparison: ComparisonPlan, run_id: str, directory: Path) -> StudyResult:
    return hpo_worker.run_search(comparison, run_id, directory)


@task(name="log-trials", cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S)
def log_trials(run_id: str, comparison: ComparisonPlan, study: StudyResult) -> list[str]:
    return compare.log_trials(compare.tracker_for(comparison), run_id, study)


@task(name="summarize", cache_policy=NO_CACHE)
def summarize(
    comparison: ComparisonPlan, folds: cv.FoldSet, trained: cv.CrossValidation
) -> summary.Comparison:
    return summary.summarize(
        comparison, folds, trained.results, elapsed_s=trained.elapsed_s, workers=trained.workers
    )


@task(name="report", cache_policy=NO_CACHE, retries=RETRIES, retry_delay_seconds=RETRY_DELAY_S)
def publish(
    run_id: str,
    comparison: ComparisonPlan,
    folds: cv.FoldSet,
    trained: cv.CrossValidation,
    result: summary.Comparison,
    study: StudyResult | None,
    directory: Path,
) -> compare.Published:
    return compare.publish(
        compare.tracker_for(comparison),
        run_id,
        comparison,
        folds,
        trained.results,
        result,
        study,
        directory,
    )


@dataclass(frozen=True)
class CompareOutcome:
    """What ``lossflow compare`` prints."""

    run_id: str
    tracking_uri: str
    experiment: str
    comparison: summary.Comparison
    study: StudyResult | None
    report: Path
    overlay: Path | None
    work_dir: Path


def _tags(comparison: ComparisonPlan) -> dict[str, str]:
    tags = {
        "lossflow.kind": "comparison",
        "lossflow.arms": ",".join(a.name for a in comparison.arms),
        "lossflow.metric": comparison.metric,
        "lossflow.task": comparison.reference.data.task,
    }
    commit = git_commit()
    if commit is not None:
        tags["lossflow.git_commit"] = commit
    return tags


@flow(name="compare_losses", log_prints=True)
def compare_losses(
    overrides: list[str] | None = None, config_dir: str = str(DEFAULT_CONFIG_DIR)
) -> CompareOutcome:
    """Compare loss arms on the same folds: tests, ablations, search, landscapes, report.

    Args:
        overrides: ``loss=focal,bce``, comparison keys (``cv.folds=10``, ``hpo.enabled=true``)
            and training overrides for every arm (``trainer.max_epochs=3``).
        config_dir: the configuration directory.
    """
    comparison = plan(overrides or [], Path(config_dir))
    tracker = compare.tracker_for(comparison)
    name = f"compare-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    with tracker.start_run(name, _tags(comparison)) as run_id:
        tracker.log_params(run_id, flatten(comparison.settings.model_dump(mode="json")))
        tracker.log_dict(
            run_id,
            {a.name: config_to_dict(a.config) for a in comparison.runnable if a.config},
            "arms.json",
        )
        work = comparison.reference.data_dir / "compare" / run_id
        folds = prepare_folds(comparison, work / "folds")
        trained = cross_validate(comparison, folds, work / "units")
        log_folds(run_id, comparison, trained)
        study = search(comparison, run_id, work / "hpo") if comparison.search else None
        if study is not None:
            log_trials(run_id, comparison, study)
        result = summarize(comparison, folds, trained)
        published = publish(run_id, comparison, folds, trained, result, study, work / "report")
    return CompareOutcome(
        run_id=run_id,
        tracking_uri=tracker.tracking_uri,
        experiment=comparison.reference.tracking.experiment_of("compare"),
        comparison=result,
        study=study,
        report=published.report,
        overlay=published.overlay,
        work_dir=work,
    )
