"""What a comparison will train: its arms (each a whole training configuration, resolved by
:func:`lossflow.usecases.compare.plan_comparison`), the ablation variants of each arm, and the
checks that must pass before any training starts.

An arm whose configuration cannot be resolved (a loss that does not fit the task, a bad option)
is kept as a failed arm with its error; the others still compare. A comparison that cannot work
at all (fewer than two arms left, arms that would not see the same data, a metric the task does
not report) is refused with :class:`CompareError`.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lossflow.comparison.scoring import Direction, default_metric, direction, metric_names
from lossflow.config.compare import CompareConfig
from lossflow.config.training import (
    TrainingConfig,
    config_from_dict,
    config_to_dict,
    monitored_metrics,
    primary_metric,
)
from lossflow.data.folds import FoldKind
from lossflow.errors import UserError
from lossflow.losses import LOSS_SPECS
from lossflow.losses.composite import CompositeSpec
from lossflow.recipe import Recipe

# Loss options searched by default when the chosen arm has that loss: (low, high, log).
DEFAULT_LOSS_PARAMS: dict[str, dict[str, tuple[float, float, bool]]] = {
    "focal": {"gamma": (0.0, 5.0, False)},
    "logit_adjusted": {"tau": (0.0, 2.0, False)},
    "huber": {"delta": (1.0, 50.0, True)},
    "quantile": {"quantile": (0.05, 0.95, False)},
    "class_balanced": {"beta": (0.9, 0.9999, False)},
}
# Slices by dataset when robustness.slices is not set.
DEFAULT_SLICES: dict[str, tuple[str, ...]] = {
    "flights": ("carrier", "origin", "month", "hour_band"),
    "digits": ("class",),
}


class CompareError(UserError, ValueError):
    """The comparison cannot run as configured; the message says what to change."""


@dataclass(frozen=True)
class Arm:
    """One arm of the comparison (or an ablation variant of one).

    Attributes:
        name: the arm's name (runs and files are named after it).
        config: its whole training configuration; None when it could not be resolved.
        error: why it could not be resolved.
        loss_file: the file of ``configs/loss/`` it was built from.
        ablation_of: for an ablation variant, the arm it removes a part of.
        removed: what the variant removes (``term focal``, ``regulariser 0_l2``).
    """

    name: str
    config: TrainingConfig | None
    error: str | None = None
    loss_file: str = ""
    ablation_of: str | None = None
    removed: str | None = None


@dataclass(frozen=True)
class SearchSpace:
    """The Optuna search resolved from ``hpo``: arms to choose from and ranges by arm."""

    arms: tuple[str, ...]
    loss_params: dict[str, dict[str, tuple[float, float, bool]]]
    lr: tuple[float, float, bool] | None
    regularizer_strength: tuple[float, float, bool] | None
    metric: str
    better: Direction


@dataclass(frozen=True)
class ComparisonPlan:
    """Everything the comparison trains and how it decides.

    Attributes:
        settings: the comparison's configuration.
        recipe: the registered version every arm started from (``settings.version``).
        arms: the requested arms, failed ones included.
        ablations: ablation variants of the runnable arms.
        metric: the fold metric that decides.
        better: which way it is better.
        cv_kind: the fold kind ``auto`` resolved to.
        slices: the slice columns of the robustness section.
        workers: processes that train arm x fold units.
        search: the hyper-parameter search, when enabled.
    """

    settings: CompareConfig
    recipe: Recipe | None
    arms: tuple[Arm, ...]
    ablations: tuple[Arm, ...]
    metric: str
    better: Direction
    cv_kind: FoldKind
    slices: tuple[str, ...]
    workers: int
    search: SearchSpace | None

    @property
    def runnable(self) -> tuple[Arm, ...]:
        """The arms (then the ablation variants) that resolved."""
        return tuple(a for a in (*self.arms, *self.ablations) if a.config is not None)

    @property
    def reference(self) -> TrainingConfig:
        """The first runnable arm's configuration: the data, evaluation and stores all share
        (a plan always has two runnable arms)."""
        return _resolved(self.arms)[0][1]

    def config_of(self, name: str) -> TrainingConfig:
        """The training configuration of the runnable arm (or variant) ``name``.

        Raises:
            KeyError: no runnable arm of that name.
        """
        for arm in self.runnable:
            if arm.name == name and arm.config is not None:
                return arm.config
        raise KeyError(name)


def with_changes(cfg: TrainingConfig, **changes: Any) -> TrainingConfig:
    """``cfg`` with whole top-level values replaced (``loss``, ``regularizers``...), validated
    again.

    Raises:
        ConfigError: the result is not a valid configuration.
    """
    return config_from_dict({**config_to_dict(cfg), **changes})


def ablation_arms(arm: Arm) -> list[Arm]:
    """The arm without each term of its composite loss and without each regulariser."""
    cfg = arm.config
    if cfg is None:
        return []
    out: list[Arm] = []
    variants: list[tuple[str, str, dict[str, Any]]] = []
    if isinstance(cfg.loss, CompositeSpec) and len(cfg.loss.terms) > 1:
        loss = cfg.loss.model_dump(mode="json")
        for term in cfg.loss.terms:
            kept = {k: v for k, v in loss["terms"].items() if k != term}
            variants.append((f"no-{term}", f"term {term}", {"loss": {**loss, "terms": kept}}))
    regs = [r.model_dump(mode="json") for r in cfg.regularizers]
    for i, reg in enumerate(cfg.regularizers):
        label = f"{i}_{reg.name}"
        kept_regs = regs[:i] + regs[i + 1 :]
        variants.append((f"no-{label}", f"regulariser {label}", {"regularizers": kept_regs}))
    for suffix, removed, changes in variants:
        name = f"{arm.name}-{suffix}"
        try:
            variant = Arm(
                name, with_changes(cfg, **changes), None, arm.loss_file, arm.name, removed
            )
        except UserError as err:
            variant = Arm(name, None, str(err), arm.loss_file, arm.name, removed)
        out.append(variant)
    return out


def _shared(cfg: TrainingConfig) -> dict[str, Any]:
    """What every arm must share: the data (but its augmentation), evaluation and stores."""
    data = config_to_dict(cfg)
    data["data"].pop("augment")
    return {key: data[key] for key in ("data", "evaluation", "data_dir", "tracking")}


def _first_difference(a: Mapping[str, Any], b: Mapping[str, Any], prefix: str = "") -> str:
    for key in sorted(set(a) | set(b)):
        left, right = a.get(key), b.get(key)
        if isinstance(left, Mapping) and isinstance(right, Mapping):
            found = _first_difference(left, right, f"{prefix}{key}.")
            if found:
                return found
        elif left != right:
            return f"{prefix}{key}"
    return ""


Resolved = tuple[Arm, TrainingConfig]


def _resolved(arms: Sequence[Arm]) -> list[Resolved]:
    return [(a, a.config) for a in arms if a.config is not None]


def _check_shared(arms: Sequence[Resolved]) -> None:
    first, first_cfg = arms[0]
    reference = _shared(first_cfg)
    for arm, cfg in arms[1:]:
        key = _first_difference(reference, _shared(cfg))
        if key:
            raise CompareError(
                f"arms {first.name!r} and {arm.name!r} differ in {key}; every arm must see the "
                "same data and be scored the same way: move that setting to the overrides all "
                "arms share"
            )


def _cv_kind(settings: CompareConfig, cfg: TrainingConfig) -> FoldKind:
    task = cfg.data.task
    kind = settings.cv.kind
    split = cfg.data.split if cfg.pool is None else cfg.pool.split(task, False)
    if kind == "auto":
        if split.kind == "time":
            return "time"
        return "stratified" if task in ("binary", "multiclass") else "kfold"
    if kind == "stratified" and task not in ("binary", "multiclass"):
        raise CompareError(
            f"cv.kind: stratified folds need class labels but the task is {task!r}; use "
            "cv.kind=kfold or time"
        )
    if kind == "time" and split.kind != "time":
        raise CompareError(
            "cv.kind: time folds need time-ordered data (a data.split of kind time); use "
            "cv.kind=stratified or kfold"
        )
    return kind


def _loss_params(
    table: Mapping[str, Mapping[str, Any]] | None,
) -> dict[str, dict[str, tuple[float, float, bool]]]:
    if table is None:
        return DEFAULT_LOSS_PARAMS
    out: dict[str, dict[str, tuple[float, float, bool]]] = {}
    for loss, options in table.items():
        if loss not in LOSS_SPECS:
            raise CompareError(
                f"hpo.loss_params: unknown loss {loss!r}; known: {', '.join(sorted(LOSS_SPECS))}"
            )
        valid = [f for f in LOSS_SPECS[loss].model_fields if f not in ("name", "reduction")]
        for option in options:
            if option not in valid:
                raise CompareError(
                    f"hpo.loss_params.{loss}.{option}: not an option of loss {loss!r}; "
                    f"options: {', '.join(valid)}"
                )
        out[loss] = {k: (r.low, r.high, r.log) for k, r in options.items()}
    return out


def _search_space(settings: CompareConfig, arms: Sequence[Resolved]) -> SearchSpace | None:
    hpo = settings.hpo
    if not hpo.enabled:
        return None
    names = [a.name for a, _ in arms if a.ablation_of is None]
    wanted = list(hpo.arms or names)
    configs = {a.name: cfg for a, cfg in arms if a.name in wanted and a.ablation_of is None}
    if not configs:
        raise CompareError(
            f"hpo.arms: none of {', '.join(wanted)} could be resolved, so there is nothing to "
            "search; fix the failed arms or choose others"
        )
    table = _loss_params(hpo.loss_params)
    reference = next(iter(configs.values()))
    metric = hpo.metric or primary_metric(reference.data.task, reference.loss)
    for name, cfg in configs.items():
        logged = monitored_metrics(cfg.data.task, cfg.loss, cfg.regularizers)
        if metric not in logged:
            raise CompareError(
                f"hpo.metric: {metric!r} is not logged by arm {name!r}; choose one of "
                f"{', '.join(logged)}"
            )
    better = monitored_metrics(reference.data.task, reference.loss, reference.regularizers)[metric]
    lr, reg = hpo.lr, hpo.regularizer_strength
    return SearchSpace(
        arms=tuple(configs),
        loss_params={name: table.get(cfg.loss.name, {}) for name, cfg in configs.items()},
        lr=None if lr is None else (lr.low, lr.high, lr.log),
        regularizer_strength=None if reg is None else (reg.low, reg.high, reg.log),
        metric=metric,
        better=better,
    )


def build_plan(
    settings: CompareConfig, arms: tuple[Arm, ...], recipe: Recipe | None = None
) -> ComparisonPlan:
    """The plan of ``arms`` (resolved by the caller, failed ones included) with their ablation
    variants, after checking the comparison can work.

    Raises:
        CompareError: fewer than two arms resolve, the arms differ in data or scoring, the
            metric is not reported by the task, the fold kind does not fit the data, or the
            search names what the arms do not have.
    """
    ok = _resolved(arms)
    if len(ok) < 2:
        failed = "; ".join(f"{a.name}: {a.error}" for a in arms if a.error)
        raise CompareError(
            f"only {len(ok)} of {len(arms)} arms can be trained, and a comparison needs 2; "
            f"fix the failed arms: {failed}"
        )
    ablations = tuple(v for a, _ in ok for v in ablation_arms(a)) if settings.ablation else ()
    runnable = [*ok, *_resolved(ablations)]
    _check_shared(runnable)
    reference = ok[0][1]
    metric = settings.metric or default_metric(reference)
    for arm, cfg in runnable:
        names = metric_names(cfg)
        if metric not in names:
            hint = (
                " (expected_cost needs evaluation.fn_cost and fp_cost, e.g. "
                "experiment=flights_cost)"
                if metric == "expected_cost"
                else ""
            )
            raise CompareError(
                f"metric: {metric!r} is not a fold score of arm {arm.name!r}; choose one of "
                f"{', '.join(names)}{hint}"
            )
    slices = settings.robustness.slices
    if slices is None:
        slices = list(DEFAULT_SLICES.get(reference.data.source, ()))
    return ComparisonPlan(
        settings=settings,
        recipe=recipe,
        arms=arms,
        ablations=ablations,
        metric=metric,
        better=direction(metric),
        cv_kind=_cv_kind(settings, reference),
        slices=tuple(slices),
        workers=settings.workers or os.cpu_count() or 1,
        search=_search_space(settings, runnable),
    )
