"""The search's workers: what a trial trains, a worker that takes a study's tickets, and the
search of a comparison run in ``hpo.workers`` processes.

**Scale-out.** The study lives in an RDB storage (SQLite by default; PostgreSQL to share it
between processes and machines) and carries everything a worker needs: the plan (the arms'
resolved training configurations and the search space) and the requested number of trials as
tickets (:mod:`lossflow.comparison.optuna_study`). A worker -- any process that can reach the
storage (``lossflow hpo-worker``) -- takes tickets until none is left; together the workers run
exactly the tickets there are. Bad trials are pruned from their per-epoch validation metric
(median rule).
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path
from typing import Any

from lossflow.comparison.optuna_study import (
    Sink,
    TrainTrial,
    create_study,
    objective,
    open_study,
    study_result,
    take_tickets,
)
from lossflow.comparison.parallel import run_in_processes
from lossflow.comparison.plan import ComparisonPlan
from lossflow.comparison.results import StudyResult
from lossflow.comparison.search import (
    ARM_PARAM,
    HPOError,
    StudyPlan,
    storage_of,
    study_plan,
    trial_config,
)
from lossflow.config.training import TrainingConfig
from lossflow.data.prepare import PreparedData, oversampled, prepare_data
from lossflow.models.build import Split, fit_model


def _prepared(cfg: TrainingConfig, work_dir: Path) -> PreparedData:
    """The trials' prepared splits, written once per work directory (workers sharing one may
    race: each prepares aside and the first rename wins)."""
    final = work_dir / "prepared"
    if not (final / "prepared.json").is_file():
        aside = work_dir / f"prepared.{os.getpid()}"
        prepare_data(cfg, aside, oversample_train=False)
        try:
            aside.rename(final)
        except OSError:  # another worker's copy is already there
            shutil.rmtree(aside)
    return PreparedData.load(final)


def trainer_of(plan: StudyPlan, prepared: PreparedData, work_dir: Path) -> TrainTrial:
    """What a trial trains: the plan's arm with the trial's parameters on the prepared splits,
    scored by the best finite ``plan.metric`` over its epochs."""

    def train(number: int, params: dict[str, Any], sink: Sink) -> float:
        cfg = trial_config(plan, params, work_dir)
        result = fit_model(
            cfg,
            prepared.preprocessor(),
            Split(*oversampled(cfg, *prepared.arrays("train"))),
            Split(*prepared.arrays("val")),
            prepared.class_counts,
            work_dir / f"trial-{number}",
            sink=sink,
        )
        values = [v for v in result.history.get(plan.metric, []) if math.isfinite(v)]
        if not values:
            raise HPOError(f"trial {number} logged no finite {plan.metric}")
        return max(values) if plan.better == "max" else min(values)

    return train


def run_worker(storage: str, study_name: str, work_dir: Path, worker: int = 0) -> int:
    """Run tickets of the study until none is left; return how many this worker ran.

    A trial whose training fails with a user error (a diverging loss) is recorded as failed
    with its error and the worker goes on; a pruned trial is recorded as pruned.

    Raises:
        HPOError: the storage cannot be opened or holds no lossflow study of that name.
    """
    study, plan = open_study(storage, study_name, worker)
    work_dir.mkdir(parents=True, exist_ok=True)
    prepared = _prepared(trial_config(plan, {ARM_PARAM: next(iter(plan.arms))}, work_dir), work_dir)
    return take_tickets(study, objective(plan, trainer_of(plan, prepared, work_dir)), worker)


def worker_job(job: tuple[str, str, str, int]) -> int:
    """:func:`run_worker` on ``(storage, study name, work dir, worker index)``, for a process
    pool."""
    storage, name, work_dir, worker = job
    return run_worker(storage, name, Path(work_dir), worker)


def run_search(plan: ComparisonPlan, parent_run_id: str, work_dir: Path) -> StudyResult:
    """Create the study of ``plan``'s search, run its tickets in ``hpo.workers`` processes and
    read the result.

    The study is ``hpo.study_name`` (default ``compare-<parent run id>``) in ``hpo.storage``
    (default ``sqlite:///<data_dir>/optuna.db``); more workers, on this machine or others, can
    join it while it runs (``lossflow hpo-worker``).

    Raises:
        HPOError: the search cannot run.
    """
    hpo = plan.settings.hpo
    study = study_plan(plan)
    storage = storage_of(plan)
    name = hpo.study_name or f"compare-{parent_run_id}"
    create_study(study, storage, name)
    jobs = [(storage, name, str(work_dir), worker) for worker in range(hpo.workers)]
    run_in_processes(worker_job, jobs, hpo.workers)
    return study_result(storage, name)
