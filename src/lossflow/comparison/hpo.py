"""Hyper-parameter search over losses with Optuna -- the only module that imports optuna.

The loss is a search dimension: the categorical parameter ``loss`` chooses an arm of the
comparison (a loss file with its regularisers and overrides), and the arm's own parameters are
searched only when it is chosen (``focal.gamma`` for an arm ``focal``, ``logit_adjusted.tau``,
``huber.delta``, ``quantile.quantile``, the strength of each of its regularisers), beside the
learning rate ``optimizer.lr``. Samplers: ``tpe`` (Bayesian; each parameter modelled from the
trials that have it), ``random``, ``grid`` (every combination of ``grid_points`` values per
parameter, each arm with only its own parameters). Bad trials are pruned from their per-epoch
validation metric (median rule).

**Scale-out.** The study lives in an RDB storage (SQLite by default; PostgreSQL to share it
between processes and machines) and carries everything a worker needs: the plan (the arms'
resolved training configurations and the search space) is a user attribute of the study, and the
requested number of trials is enqueued as *tickets* (waiting trials; for a grid, each holds its
grid point). A worker -- any process that can reach the storage -- takes tickets until none is
left: Optuna moves a waiting trial to running with a conditional update, so two workers never
run the same ticket, and together they run exactly the tickets there are. A worker that asks
after another took the last ticket gets a fresh trial with no ticket, which it closes as failed
without training (``lossflow.extra``), so the study's finished trials stay exactly the
requested ones.
"""

from __future__ import annotations

import copy
import itertools
import json
import math
import os
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import optuna
import yaml
from optuna.importance import FanovaImportanceEvaluator, get_param_importances
from optuna.trial import Trial, TrialState
from scipy import stats

from lossflow.comparison.parallel import run_in_processes
from lossflow.comparison.plan import ComparisonPlan, revalidate
from lossflow.comparison.scoring import Direction
from lossflow.config.training import TrainingConfig, config_to_dict
from lossflow.data.prepare import PreparedData, oversampled, prepare_data
from lossflow.errors import UserError
from lossflow.models.build import Split, fit_model

PLAN_ATTR = "lossflow.plan"
TICKET_ATTR = "lossflow.ticket"
WORKER_ATTR = "lossflow.worker"
EXTRA_ATTR = "lossflow.extra"
ERROR_ATTR = "lossflow.error"
ARM_PARAM = "loss"
LR_PARAM = "optimizer.lr"
DEFAULT_TRIALS = 20
STORAGE_FILE = "optuna.db"
# Overlay keys that describe where a run goes, not what it trains.
_NOT_IN_OVERLAY = ("data_dir", "tracking", "schedule")

optuna.logging.set_verbosity(optuna.logging.WARNING)


class HPOError(UserError, ValueError):
    """The search cannot run (an existing study with another plan, an unreachable storage)."""


Range = tuple[float, float, bool]


@dataclass(frozen=True)
class StudyPlan:
    """What a worker needs to run trials; stored in the study as JSON.

    Attributes:
        arms: arm -> its resolved training configuration (JSON form).
        loss_files: arm -> the loss file it was built from (for the overlay's ``defaults``).
        loss_params: arm -> option -> ``(low, high, log)``.
        lr: the learning-rate range, if searched.
        regularizer_strength: the range of each regulariser's strength, if searched.
        metric: the ``val/`` metric trials are scored (and pruned) by.
        better: which way it is better.
        sampler: ``tpe``, ``random`` or ``grid``.
        seed: the sampler's seed (a worker adds its index).
        n_trials: tickets (trials) the study runs.
        grid_points: values per parameter of a grid.
        pruner: ``median`` or ``none``.
        pruner_startup_trials: trials before any is pruned.
        pruner_warmup_epochs: epochs before a trial is pruned.
    """

    arms: dict[str, dict[str, Any]]
    loss_files: dict[str, str]
    loss_params: dict[str, dict[str, Range]]
    lr: Range | None
    regularizer_strength: Range | None
    metric: str
    better: Direction
    sampler: str
    seed: int
    n_trials: int
    grid_points: int
    pruner: str
    pruner_startup_trials: int
    pruner_warmup_epochs: int

    def to_json(self) -> str:
        """The plan as JSON text (what the study stores)."""
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> StudyPlan:
        """The plan stored by :meth:`to_json`."""
        data = json.loads(text)
        data["loss_params"] = {
            arm: {k: tuple(v) for k, v in options.items()}
            for arm, options in data["loss_params"].items()
        }
        for key in ("lr", "regularizer_strength"):
            data[key] = None if data[key] is None else tuple(data[key])
        return cls(**data)

    @property
    def direction(self) -> Literal["maximize", "minimize"]:
        """Optuna's ``maximize`` or ``minimize``."""
        return "maximize" if self.better == "max" else "minimize"


def _regularizer_params(plan: StudyPlan, arm: str) -> list[tuple[int, str]]:
    regs = plan.arms[arm].get("regularizers") or []
    return [(i, f"{arm}.regularizers.{i}_{reg['name']}.strength") for i, reg in enumerate(regs)]


def _space(plan: StudyPlan, arm: str) -> dict[str, Range]:
    """The parameters searched when ``arm`` is chosen, by name, with their ranges."""
    space = {f"{arm}.{option}": rng for option, rng in plan.loss_params.get(arm, {}).items()}
    if plan.lr is not None:
        space[LR_PARAM] = plan.lr
    if plan.regularizer_strength is not None:
        for _, name in _regularizer_params(plan, arm):
            space[name] = plan.regularizer_strength
    return space


def grid_points(plan: StudyPlan) -> list[dict[str, Any]]:
    """Every grid point: each arm with the combinations of its own parameters' values
    (``grid_points`` per parameter, evenly spaced, geometrically for a log range)."""
    points: list[dict[str, Any]] = []
    for arm in plan.arms:
        space = _space(plan, arm)
        axes = [
            (np.geomspace if log else np.linspace)(low, high, plan.grid_points).tolist()
            for low, high, log in space.values()
        ]
        for values in itertools.product(*axes):
            points.append({ARM_PARAM: arm, **dict(zip(space, values, strict=True))})
    return points


def suggest(trial: Trial, plan: StudyPlan) -> dict[str, Any]:
    """The trial's parameters: the arm first, then only that arm's parameters."""
    arm = trial.suggest_categorical(ARM_PARAM, list(plan.arms))
    params: dict[str, Any] = {ARM_PARAM: arm}
    for name, (low, high, log) in _space(plan, str(arm)).items():
        params[name] = trial.suggest_float(name, low, high, log=log)
    return params


def trial_config(
    plan: StudyPlan, params: Mapping[str, Any], data_dir: Path | None = None
) -> TrainingConfig:
    """The training configuration a trial with ``params`` trains (the plan's arm with the
    searched values set; ``data_dir`` replaced when given).

    Raises:
        ConfigError: the values do not make a valid configuration.
    """
    arm = str(params[ARM_PARAM])
    data = copy.deepcopy(plan.arms[arm])
    for option in plan.loss_params.get(arm, {}):
        if f"{arm}.{option}" in params:
            data["loss"][option] = params[f"{arm}.{option}"]
    if LR_PARAM in params:
        data["optimizer"]["lr"] = params[LR_PARAM]
    for i, name in _regularizer_params(plan, arm):
        if name in params:
            data["regularizers"][i]["strength"] = params[name]
    if data_dir is not None:
        data["data_dir"] = str(data_dir)
    return revalidate(data)


def study_plan(plan: ComparisonPlan) -> StudyPlan:
    """The search of ``plan`` as a worker reads it.

    Raises:
        HPOError: the plan has no search, or a grid with a trial count that is not the grid's.
    """
    search = plan.search
    hpo = plan.settings.hpo
    if search is None:
        raise HPOError("hpo.enabled is false: there is no search to run")
    arms = {a.name: a for a in plan.arms}
    study = StudyPlan(
        arms={name: config_to_dict(plan.config_of(name)) for name in search.arms},
        loss_files={name: arms[name].loss_file for name in search.arms},
        loss_params=search.loss_params,
        lr=search.lr,
        regularizer_strength=search.regularizer_strength,
        metric=search.metric,
        better=search.better,
        sampler=hpo.sampler,
        seed=hpo.seed,
        n_trials=hpo.n_trials or DEFAULT_TRIALS,
        grid_points=hpo.grid_points,
        pruner=hpo.pruner,
        pruner_startup_trials=hpo.pruner_startup_trials,
        pruner_warmup_epochs=hpo.pruner_warmup_epochs,
    )
    if hpo.sampler == "grid":
        size = len(grid_points(study))
        if hpo.n_trials is not None and hpo.n_trials != size:
            raise HPOError(
                f"hpo.n_trials: the grid has {size} points ({hpo.grid_points} per parameter); "
                f"leave n_trials unset to run them all, or change hpo.grid_points"
            )
        study = StudyPlan(**{**asdict(study), "n_trials": size})
    return study


def default_storage(data_dir: Path) -> str:
    """The embedded study store: ``sqlite:///<absolute data_dir>/optuna.db``."""
    return f"sqlite:///{(data_dir.expanduser().resolve() / STORAGE_FILE).as_posix()}"


def _storage(url: str) -> optuna.storages.RDBStorage:
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


def _waiting(study: optuna.Study) -> bool:
    return bool(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def _objective(trial: Trial, plan: StudyPlan, prepared: PreparedData, work_dir: Path) -> float:
    cfg = trial_config(plan, suggest(trial, plan), work_dir)

    def sink(metrics: Mapping[str, float], step: int) -> None:
        value = metrics.get(plan.metric)
        if value is None:
            return
        trial.report(value, step)
        if trial.should_prune():
            raise optuna.TrialPruned(f"{plan.metric} {value:.4g} at epoch {step}")

    pre = prepared.preprocessor()
    result = fit_model(
        cfg,
        pre,
        Split(*oversampled(cfg, *prepared.arrays("train"))),
        Split(*prepared.arrays("val")),
        prepared.class_counts,
        work_dir / f"trial-{trial.number}",
        sink=sink,
    )
    values = [v for v in result.history.get(plan.metric, []) if math.isfinite(v)]
    if not values:
        raise HPOError(f"trial {trial.number} logged no finite {plan.metric}")
    return max(values) if plan.better == "max" else min(values)


def open_study(storage: str, study_name: str, worker: int = 0) -> tuple[optuna.Study, StudyPlan]:
    """The study with worker ``worker``'s sampler and the plan's pruner, and its plan.

    Raises:
        HPOError: the storage cannot be opened or holds no lossflow study of that name.
    """
    plan = load_plan(storage, study_name)
    return _load(storage, study_name, _sampler(plan, worker), _pruner(plan)), plan


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

    def objective(trial: Trial) -> float:
        return _objective(trial, plan, prepared, work_dir)

    return take_tickets(study, objective, worker)


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
    storage = hpo.storage or default_storage(plan.reference.data_dir)
    name = hpo.study_name or f"compare-{parent_run_id}"
    create_study(study, storage, name)
    jobs = [(storage, name, str(work_dir), worker) for worker in range(hpo.workers)]
    run_in_processes(worker_job, jobs, hpo.workers)
    return study_result(storage, name)


def worker_job(job: tuple[str, str, str, int]) -> int:
    """:func:`run_worker` on ``(storage, study name, work dir, worker index)``, for a process
    pool."""
    storage, name, work_dir, worker = job
    return run_worker(storage, name, Path(work_dir), worker)


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial as the report shows it."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    intermediate: dict[int, float]
    worker: int | None
    error: str | None
    ticket: int | None
    duration_s: float | None


@dataclass(frozen=True)
class Sensitivity:
    """How the objective moves with one parameter of one arm, over that arm's trials.

    Attributes:
        arm: the arm.
        param: the parameter.
        trials: completed trials of the arm.
        spearman: Spearman's rank correlation of the parameter and the objective (None when
            either is constant or fewer than 3 trials).
        spread: the objective's range over those trials.
    """

    arm: str
    param: str
    trials: int
    spearman: float | None
    spread: float


@dataclass(frozen=True)
class StudyResult:
    """The study after its workers are done."""

    name: str
    storage: str
    metric: str
    better: Direction
    sampler: str
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str | None = None
    sensitivity: tuple[Sensitivity, ...] = ()

    def finished(self) -> list[TrialRecord]:
        """Trials that ran to the end or were pruned (the extra ones closed without training
        are not among them)."""
        return [t for t in self.trials if t.state in ("COMPLETE", "PRUNED")]


def _record(trial: optuna.trial.FrozenTrial) -> TrialRecord:
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


def _sensitivity(plan: StudyPlan, trials: Sequence[TrialRecord]) -> list[Sensitivity]:
    out = []
    for arm in plan.arms:
        done = [t for t in trials if t.state == "COMPLETE" and t.params.get(ARM_PARAM) == arm]
        for param in _space(plan, arm):
            pairs = [(t.params[param], t.value) for t in done if param in t.params]
            if not pairs:
                continue
            xs = np.array([p[0] for p in pairs], dtype=np.float64)
            ys = np.array([p[1] for p in pairs], dtype=np.float64)
            rho: float | None = None
            if len(pairs) >= 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0:
                rho = float(stats.spearmanr(xs, ys).statistic)
            out.append(Sensitivity(arm, param, len(pairs), rho, float(np.ptp(ys))))
    return out


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
        sensitivity=tuple(_sensitivity(plan, trials)),
    )


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


def best_overlay(plan: StudyPlan, best: TrialRecord) -> dict[str, Any]:
    """The best trial as an experiment overlay: its loss file as the ``loss`` group, then its
    whole resolved training configuration but where it runs (``data_dir``, ``tracking``,
    ``schedule``), so ``lossflow train experiment=<file>`` trains exactly that trial."""
    cfg = config_to_dict(trial_config(plan, best.params))
    arm = str(best.params[ARM_PARAM])
    body = {k: v for k, v in cfg.items() if k not in _NOT_IN_OVERLAY}
    return {"defaults": {"loss": plan.loss_files[arm]}, **body}


def write_overlay(
    path: Path, overlay: Mapping[str, Any], study: StudyResult, best: TrialRecord
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
