"""The search over losses as a worker reads it: the study's plan, the parameters each arm
searches, the grid, the configuration a trial trains and where the study is stored.

The loss is a search dimension: the categorical parameter ``loss`` chooses an arm of the
comparison (a loss file with its regularisers and overrides), and the arm's own parameters are
searched only when it is chosen (``focal.gamma`` for an arm ``focal``, ``logit_adjusted.tau``,
``huber.delta``, ``quantile.quantile``, the strength of each of its regularisers), beside the
learning rate ``optimizer.lr``. Samplers: ``tpe`` (Bayesian; each parameter modelled from the
trials that have it), ``random``, ``grid`` (every combination of ``grid_points`` values per
parameter, each arm with only its own parameters). Nothing here imports Optuna
(:mod:`lossflow.comparison.optuna_study` is its adapter).
"""

from __future__ import annotations

import copy
import itertools
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from lossflow.comparison.plan import ComparisonPlan
from lossflow.comparison.scoring import Direction
from lossflow.config.training import TrainingConfig, config_from_dict, config_to_dict
from lossflow.errors import UserError

ARM_PARAM = "loss"
LR_PARAM = "optimizer.lr"
DEFAULT_TRIALS = 20
STORAGE_FILE = "optuna.db"


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


def searched(plan: StudyPlan, arm: str) -> dict[str, Range]:
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
        space = searched(plan, arm)
        axes = [
            (np.geomspace if log else np.linspace)(low, high, plan.grid_points).tolist()
            for low, high, log in space.values()
        ]
        for values in itertools.product(*axes):
            points.append({ARM_PARAM: arm, **dict(zip(space, values, strict=True))})
    return points


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
    return config_from_dict(data)


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


def storage_of(plan: ComparisonPlan) -> str:
    """Where the comparison's study lives: ``hpo.storage``, else :func:`default_storage` in
    the arms' ``data_dir``."""
    return plan.settings.hpo.storage or default_storage(plan.reference.data_dir)
