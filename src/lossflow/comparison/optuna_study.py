"""The Optuna adapter -- the only module that imports optuna: the study in its RDB storage,
its tickets, the samplers and pruners, the trials' parameters and pruning, and the study read
back as :class:`~lossflow.comparison.results.StudyResult`.

A study carries everything a worker needs: the plan (:class:`~lossflow.comparison.search.
StudyPlan`) is a user attribute, and the requested trials are enqueued as *tickets* (waiting
trials; for a grid, each holds its grid point). :func:`take_tickets` runs tickets until none is
left: Optuna moves a waiting trial to running with a conditional update, so two workers never
run the same ticket. A worker that asks after another took the last ticket gets a fresh trial
with no ticket, which it closes as failed without training (``lossflow.extra``), so the study's
finished trials stay exactly the requested ones.

Optuna logs every trial at INFO; opening a study sets its verbosity to WARNING (importing this
module changes nothing).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import optuna
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import FrozenTrial, Trial, TrialState

from lossflow.comparison.results import StudyResult, TrialRecord, sensitivities
from lossflow.comparison.search import ARM_PARAM, HPOError, StudyPlan, grid_points, searched
from lossflow.errors import UserError

PLAN_ATTR = "lossflow.plan"
TICKET_ATTR = "lossflow.ticket"
WORKER_ATTR = "lossflow.worker"
EXTRA_ATTR = "lossflow.extra"
ERROR_ATTR = "lossflow.error"


class Sink(Protocol):
    """Where a trial's training sends its per-epoch validation metrics (the training's
    :class:`~lossflow.training.MetricSink`)."""

    def __call__(self, metrics: Mapping[str, float], step: int) -> None: ...


# What a worker trains for a trial: (trial number, its parameters, its sink) -> the objective.
TrainTrial = Callable[[int, dict[str, Any], Sink], float]


def _storage(url: str) -> optuna.storages.RDBStorage:
    """The storage every study is opened through (and Optuna's logging turned to WARNING)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if url.startswith(("postgresql://", "postgres://")):
        url = "postgresql+psycopg://" + url.split("://", 1)[1]
    kwargs: dict[str, Any] = {"pool_pre_ping": True}
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        # Several worker processes may write one SQLite file: wait for the lock, do not fail.
        kwargs = {"connect_args": {"timeout": 120}}
    try:
        return optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    except Exception as err:
        if not type(err).__module__.startswith("sqlalchemy"):
            raise
        # A database error: the storage URL is malformed or the server is unreachable.
        lines = str(getattr(err, "orig", None) or err).strip().splitlines() or [""]
        raise HPOError(
            f"hpo.storage: cannot open the Optuna storage {url.split('@')[-1]!r} "
            f"({type(err).__name__}: {lines[0]}); check the URL and that the database is reachable"
        ) from err


def _sampler(plan: StudyPlan, worker: int) -> optuna.samplers.BaseSampler:
    # Workers sample with different seeds, so their first (random) draws differ.
    seed = plan.seed + 1009 * worker
    if plan.sampler == "tpe":
        # Independent TPE: each parameter is modelled from the trials that have it, which is
        # what a conditional space needs without Optuna's experimental grouping.
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=max(2, min(10, plan.n_trials // 4))
        )
    # random, and grid (every parameter of a grid ticket is fixed)
    return optuna.samplers.RandomSampler(seed=seed)


def _pruner(plan: StudyPlan) -> optuna.pruners.BasePruner:
    if plan.pruner == "none":
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(
        n_startup_trials=plan.pruner_startup_trials, n_warmup_steps=plan.pruner_warmup_epochs
    )


def create_study(plan: StudyPlan, storage: str, name: str) -> int:
    """Create (or find) the study and enqueue its tickets; return the tickets it holds.

    A study that already exists with the same plan is left as it is (a restarted coordinator
    joins it); one with another plan is refused.

    Raises:
        HPOError: the study exists with another plan, or the storage cannot be opened.
    """
    study = optuna.create_study(
        study_name=name, storage=_storage(storage), direction=plan.direction, load_if_exists=True
    )
    stored = study.user_attrs.get(PLAN_ATTR)
    if stored is not None:
        if stored != plan.to_json():
            raise HPOError(
                f"study {name!r} in {storage.split('@')[-1]} already exists with another plan; "
                "choose another hpo.study_name or delete the study"
            )
        return sum(1 for t in study.get_trials(deepcopy=False) if TICKET_ATTR in t.user_attrs)
    study.set_user_attr(PLAN_ATTR, plan.to_json())
    points = grid_points(plan) if plan.sampler == "grid" else [{}] * plan.n_trials
    for ticket, params in enumerate(points):
        study.enqueue_trial(params, user_attrs={TICKET_ATTR: ticket})
    return len(points)


def _load(
    storage: str,
    study_name: str,
    sampler: optuna.samplers.BaseSampler | None = None,
    pruner: optuna.pruners.BasePruner | None = None,
) -> optuna.Study:
    try:
        return optuna.load_study(
            study_name=study_name, storage=_storage(storage), sampler=sampler, pruner=pruner
        )
    except KeyError as err:
        raise HPOError(f"no study {study_name!r} in {storage.split('@')[-1]}") from err


def _plan_of(study: optuna.Study) -> StudyPlan:
    text = study.user_attrs.get(PLAN_ATTR)
    if text is None:
        raise HPOError(f"study {study.study_name!r} was not created by lossflow (it has no plan)")
    return StudyPlan.from_json(text)


def load_plan(storage: str, study_name: str) -> StudyPlan:
    """The plan stored in a lossflow study.

    Raises:
        HPOError: no such study, or not a lossflow one.
    """
    return _plan_of(_load(storage, study_name))


def open_study(storage: str, study_name: str, worker: int = 0) -> tuple[optuna.Study, StudyPlan]:
    """The study with worker ``worker``'s sampler and the plan's pruner, and its plan.

    Raises:
        HPOError: the storage cannot be opened or holds no lossflow study of that name.
    """
    plan = load_plan(storage, study_name)
    return _load(storage, study_name, _sampler(plan, worker), _pruner(plan)), plan


def suggest(trial: Trial, plan: StudyPlan) -> dict[str, Any]:
    """The trial's parameters: the arm first, then only that arm's parameters."""
    arm = trial.suggest_categorical(ARM_PARAM, list(plan.arms))
    params: dict[str, Any] = {ARM_PARAM: arm}
    for name, (low, high, log) in searched(plan, str(arm)).items():
        params[name] = trial.suggest_float(name, low, high, log=log)
    return params


def objective(plan: StudyPlan, train: TrainTrial) -> Callable[[Trial], float]:
    """The Optuna objective of ``train``: the trial's parameters suggested, its per-epoch
    ``plan.metric`` reported to the pruner, the trial pruned when the pruner says so."""

    def run(trial: Trial) -> float:
        def sink(metrics: Mapping[str, float], step: int) -> None:
            value = metrics.get(plan.metric)
            if value is None:
                return
            trial.report(value, step)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{plan.metric} {value:.4g} at epoch {step}")

        return train(trial.number, suggest(trial, plan), sink)

    return run


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def take_tickets(study: optuna.Study, objective: Callable[[Trial], float], worker: int) -> int:
    """Run ``objective`` on the study's tickets until none is left; return how many ran.

    A pruned trial is told as pruned; one that fails with a user error (a diverging loss) is
    told as failed with the error as its ``lossflow.error`` attribute, and the next ticket runs.
    """
    ran = 0
    while _waiting(study):
        trial = study.ask()
        if TICKET_ATTR not in trial.user_attrs:  # another worker took the last ticket
            trial.set_user_attr(EXTRA_ATTR, True)
            study.tell(trial, state=TrialState.FAIL)
            break
        trial.set_user_attr(WORKER_ATTR, worker)
        try:
            value = objective(trial)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except UserError as err:
            trial.set_user_attr(ERROR_ATTR, str(err))
            study.tell(trial, state=TrialState.FAIL)
        else:
            study.tell(trial, value)
        ran += 1
    return ran


def _record(trial: FrozenTrial) -> TrialRecord:
    duration = trial.duration.total_seconds() if trial.duration is not None else None
    worker = trial.user_attrs.get(WORKER_ATTR)
    ticket = trial.user_attrs.get(TICKET_ATTR)
    return TrialRecord(
        number=trial.number,
        state=trial.state.name,
        params=dict(trial.params),
        value=None if trial.value is None else float(trial.value),
        intermediate={int(k): float(v) for k, v in trial.intermediate_values.items()},
        worker=None if worker is None else int(worker),
        error=trial.user_attrs.get(ERROR_ATTR),
        ticket=None if ticket is None else int(ticket),
        duration_s=duration,
    )


def study_result(storage: str, study_name: str) -> StudyResult:
    """The trials, the best one, parameter importances (fANOVA, over the completed trials) and
    each arm's parameter sensitivities.

    Raises:
        HPOError: the storage cannot be opened or holds no lossflow study of that name.
    """
    study = _load(storage, study_name)
    plan = _plan_of(study)
    trials = tuple(_record(t) for t in study.get_trials(deepcopy=False))
    complete = [t for t in trials if t.state == "COMPLETE" and t.value is not None]
    best = None
    if complete:
        pick = max if plan.better == "max" else min
        best = pick(complete, key=lambda t: t.value if t.value is not None else math.nan)
    importances: dict[str, float] = {}
    note: str | None = None
    if len(complete) >= 2:
        try:
            importances = get_param_importances(
                study, evaluator=FanovaImportanceEvaluator(seed=plan.seed)
            )
        except ValueError as err:  # e.g. no parameter varies over the completed trials
            note = f"parameter importances not computed: {err}"
    else:
        note = f"parameter importances need 2 completed trials; the study has {len(complete)}"
    return StudyResult(
        name=study_name,
        storage=storage.split("@")[-1],
        metric=plan.metric,
        better=plan.better,
        sampler=plan.sampler,
        trials=trials,
        best=best,
        importances={k: float(v) for k, v in importances.items()},
        importance_note=note,
        sensitivity=tuple(sensitivities(plan, trials)),
    )
