"""From fold results to a comparison: each arm's metrics with intervals, the pairwise corrected
tests with Holm's correction, ablations, slices, later months, importances and the verdict.

Intervals of an arm's mean fold score use the Nadeau–Bengio corrected variance (the folds share
training rows, so the naive interval is too narrow); pairs of arms are compared with the
corrected resampled t-test on the paired fold scores and Holm's correction across all pairs;
each ablation variant is compared with its full arm the same way, with Holm across the variants.
A winner is named only when it is significantly better than every other arm; otherwise the
verdict is "no detectable difference" with the smallest difference the design could detect.
"""

from __future__ import annotations

import itertools
import json
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from lossflow.comparison.cv import FoldSet, UnitResult
from lossflow.comparison.plan import Arm, ComparisonPlan
from lossflow.comparison.scoring import Direction, score
from lossflow.comparison.slices import SliceScore, later_groups, slice_scores
from lossflow.config.training import TrainingConfig
from lossflow.evaluation.baseline import Verdict as BaselineVerdict
from lossflow.losses import loss_id
from lossflow.models.build import resolved_loss_spec
from lossflow.stats.multiple import holm
from lossflow.stats.paired import (
    CorrectedTTest,
    Interval,
    corrected_interval,
    corrected_resampled_ttest,
    min_detectable_effect,
)


@dataclass(frozen=True)
class SliceSummary:
    """One slice value of one arm over the folds.

    Attributes:
        slice: the slice column.
        value: the slice value.
        rows: rows of the slice over all folds (or per held-out group).
        folds: folds on which it was scored.
        interval: the mean score and its corrected interval (needs 2 scored folds).
        reason: why there is no interval.
    """

    slice: str
    value: str
    rows: int
    folds: int
    interval: Interval | None
    reason: str | None = None


@dataclass(frozen=True)
class ArmSummary:
    """One arm (or ablation variant) over its folds.

    Attributes:
        name: the arm.
        loss: the loss name.
        loss_id: the stable id of its loss decision (with the first fold's class counts).
        error: why it failed (config, or the first failing fold); None when every fold trained.
        ablation_of: the full arm of an ablation variant.
        removed: what the variant removes.
        metrics: every fold metric's mean and corrected interval.
        scores: the deciding metric on each fold, in fold order.
        epochs: mean epochs trained.
        epochs_to_95: mean epochs to come within 5 % of the best validation value.
        wall_s: seconds of all its units together.
        fold_wall_s: mean seconds of one unit.
        slices: per-slice scores.
        worst_slice: the slice value with the worst mean score.
        later: scores per held-out month (or part).
        importances: feature -> (mean, standard deviation over fold models).
        baseline: the trivial baseline beside the arm over the same folds (None: none applies).
    """

    name: str
    loss: str
    loss_id: str | None
    error: str | None
    ablation_of: str | None = None
    removed: str | None = None
    metrics: dict[str, Interval] = field(default_factory=dict)
    scores: tuple[float, ...] = ()
    epochs: float | None = None
    epochs_to_95: float | None = None
    wall_s: float = 0.0
    fold_wall_s: float = 0.0
    slices: tuple[SliceSummary, ...] = ()
    worst_slice: SliceSummary | None = None
    later: tuple[SliceSummary, ...] = ()
    importances: dict[str, tuple[float, float]] = field(default_factory=dict)
    baseline: BaselineVerdict | None = None

    @property
    def ok(self) -> bool:
        """Whether every fold of the arm trained and scored."""
        return self.error is None

    @property
    def beats_baseline(self) -> bool:
        """Whether the arm beats its trivial baseline (``True`` when none applies)."""
        return self.baseline is None or self.baseline.beats


@dataclass(frozen=True)
class PairTest:
    """The corrected test of ``first - second`` on the deciding metric.

    Attributes:
        first: one arm (for an ablation: the variant).
        second: the other arm (for an ablation: the full arm).
        test: the corrected resampled t-test.
        p_holm: the Holm-adjusted p-value within its family.
        significant: ``p_holm <= alpha``.
        better: the better arm when significant.
        min_detectable_effect: the smallest difference detectable at the family's most stringent
            Holm level (``alpha / pairs``) with the configured power.
    """

    first: str
    second: str
    test: CorrectedTTest
    p_holm: float
    significant: bool
    better: str | None
    min_detectable_effect: float


@dataclass(frozen=True)
class Verdict:
    """What the comparison concludes.

    Attributes:
        winner: the arm significantly better than every other one, if any.
        text: one sentence a reader can act on.
        min_detectable_effect: the largest of the pairs' smallest detectable differences.
    """

    winner: str | None
    text: str
    min_detectable_effect: float | None


@dataclass(frozen=True)
class Comparison:
    """The whole result of an offline comparison (without the search)."""

    metric: str
    better: Direction
    alpha: float
    power: float
    kind: str
    folds: int
    repeats: int
    n_train: float
    n_test: float
    pool_rows: int
    arms: tuple[ArmSummary, ...]
    pairs: tuple[PairTest, ...]
    ablations: tuple[ArmSummary, ...]
    ablation_tests: tuple[PairTest, ...]
    verdict: Verdict
    workers: int
    elapsed_s: float
    busy_s: float

    @property
    def efficiency(self) -> float:
        """Parallel efficiency: unit seconds over (elapsed seconds x workers)."""
        if self.elapsed_s <= 0 or self.workers < 1:
            return 0.0
        return self.busy_s / (self.elapsed_s * self.workers)

    def arm(self, name: str) -> ArmSummary:
        """The summary of arm (or variant) ``name``.

        Raises:
            KeyError: no such arm.
        """
        for arm in (*self.arms, *self.ablations):
            if arm.name == name:
                return arm
        raise KeyError(name)


def _interval(values: Sequence[float], folds: FoldSet, alpha: float) -> Interval:
    return corrected_interval(
        values, n_train=folds.n_train, n_test=folds.n_test, confidence=1.0 - alpha
    )


def _aggregate(
    per_fold: Sequence[Sequence[SliceScore]], folds: FoldSet, alpha: float
) -> list[SliceSummary]:
    grouped: dict[tuple[str, str], list[SliceScore]] = {}
    for scores in per_fold:
        for s in scores:
            grouped.setdefault((s.slice, s.value), []).append(s)
    out = []
    for (name, value), scores in grouped.items():
        defined = [s.score for s in scores if s.score is not None]
        rows = sum(s.rows for s in scores)
        reasons = sorted({s.reason for s in scores if s.reason})
        if len(defined) >= 2:
            out.append(
                SliceSummary(name, value, rows, len(defined), _interval(defined, folds, alpha))
            )
        else:
            why = "; ".join(reasons) or "scored on fewer than 2 folds"
            out.append(SliceSummary(name, value, rows, len(defined), None, why))
    return out


def _scorer(
    cfg: TrainingConfig, metric: str, y: np.ndarray, output: np.ndarray, threshold: float | None
) -> Callable[[np.ndarray], float]:
    def at(rows: np.ndarray) -> float:
        return score(cfg, y[rows], output[rows], threshold)[metric]

    return at


def _later(
    cfg: TrainingConfig,
    plan: ComparisonPlan,
    folds: FoldSet,
    units: Sequence[UnitResult],
    raw: pd.DataFrame,
) -> list[SliceSummary]:
    groups = later_groups(raw, folds.time).to_numpy()
    per_fold = []
    for unit in units:
        pred = unit.predictions()
        y = np.concatenate([pred[f"{part}_y"] for part in folds.heldout])
        output = np.concatenate([pred[f"{part}_output"] for part in folds.heldout])
        at = _scorer(cfg, plan.metric, y, output, unit.threshold)
        frame = pd.DataFrame({"later": groups})
        per_fold.append(
            slice_scores(
                frame,
                ["later"],
                "later",
                at,
                min_rows=plan.settings.robustness.min_rows,
                in_order=True,
            )
        )
    return _aggregate(per_fold, folds, plan.settings.alpha)


def _slices(
    cfg: TrainingConfig, plan: ComparisonPlan, folds: FoldSet, units: Sequence[UnitResult]
) -> list[SliceSummary]:
    by_name = {f.name: f for f in folds.folds}
    per_fold = []
    for unit in units:
        pred = unit.predictions()
        raw = by_name[unit.fold].prepared.raw("test")
        at = _scorer(cfg, plan.metric, pred["test_y"], pred["test_output"], unit.threshold)
        per_fold.append(
            slice_scores(
                raw, plan.slices, folds.target, at, min_rows=plan.settings.robustness.min_rows
            )
        )
    return _aggregate(per_fold, folds, plan.settings.alpha)


def _worst(slices: Sequence[SliceSummary], better: Direction) -> SliceSummary | None:
    scored = [s for s in slices if s.interval is not None]
    if not scored:
        return None
    pick = min if better == "max" else max
    return pick(scored, key=lambda s: s.interval.mean if s.interval is not None else math.nan)


def _importances(units: Sequence[UnitResult]) -> dict[str, tuple[float, float]]:
    tables = [
        json.loads((u.directory / "importance.json").read_text())
        for u in units
        if (u.directory / "importance.json").is_file()
    ]
    if not tables:
        return {}
    out = {}
    for feature in tables[0]:
        values = np.array([t[feature] for t in tables])
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        out[feature] = (float(values.mean()), std)
    return out


def summarize_arm(
    arm: Arm,
    plan: ComparisonPlan,
    folds: FoldSet,
    units: Sequence[UnitResult],
    raw_heldout: pd.DataFrame | None,
) -> ArmSummary:
    """One arm's metrics, speed, slices, later months and importances over its folds."""
    cfg = arm.config
    if cfg is None:
        return ArmSummary(arm.name, "?", None, arm.error, arm.ablation_of, arm.removed)
    first = folds.folds[0].prepared.class_counts
    lid = loss_id(resolved_loss_spec(cfg, first), cfg.regularizers)
    failed = [u for u in units if not u.ok]
    if failed:
        error = f"fold {failed[0].fold}: {failed[0].error}"
        return ArmSummary(arm.name, cfg.loss.name, lid, error, arm.ablation_of, arm.removed)
    alpha = plan.settings.alpha
    names = list(units[0].metrics or {})
    metrics = {
        name: _interval([(u.metrics or {})[name] for u in units], folds, alpha) for name in names
    }
    converged = [u.epochs_to_95 for u in units if u.epochs_to_95 is not None]
    judged = [u.baseline for u in units if u.baseline is not None]
    baseline = None
    if judged and len(judged) == len(units):
        kind, metric, _ = judged[0]
        model = float(np.mean([(u.metrics or {})[metric] for u in units]))
        trivial = float(np.mean([value for _, _, value in judged]))
        described = f"the fold's training {kind}"
        baseline = BaselineVerdict(metric, model, trivial, "min", described)
    main = arm.ablation_of is None
    slices = _slices(cfg, plan, folds, units) if main and plan.slices else []
    later = (
        _later(cfg, plan, folds, units, raw_heldout)
        if main and raw_heldout is not None and plan.settings.robustness.later
        else []
    )
    return ArmSummary(
        name=arm.name,
        loss=cfg.loss.name,
        loss_id=lid,
        error=None,
        ablation_of=arm.ablation_of,
        removed=arm.removed,
        metrics=metrics,
        scores=tuple((u.metrics or {})[plan.metric] for u in units),
        epochs=float(np.mean([u.epochs for u in units])),
        epochs_to_95=float(np.mean(converged)) if converged else None,
        wall_s=float(sum(u.wall_s for u in units)),
        fold_wall_s=float(np.mean([u.wall_s for u in units])),
        slices=tuple(slices),
        worst_slice=_worst(slices, plan.better),
        later=tuple(later),
        importances=_importances(units),
        baseline=baseline,
    )


def pairwise_tests(
    pairs: Sequence[tuple[ArmSummary, ArmSummary]],
    *,
    n_train: float,
    n_test: float,
    better: Direction,
    alpha: float,
    power: float,
) -> list[PairTest]:
    """The corrected test of each pair's fold scores, with Holm's correction across the pairs.

    The smallest detectable difference of each pair is computed at ``alpha / len(pairs)``, the
    most stringent level Holm applies, so "no detectable difference" is not overstated.
    """
    if not pairs:
        return []
    tests = [
        corrected_resampled_ttest(
            a.scores, b.scores, n_train=n_train, n_test=n_test, alpha=alpha, power=power
        )
        for a, b in pairs
    ]
    rejected, adjusted = holm([t.p_value for t in tests], alpha)
    out = []
    for (a, b), test, reject, p_holm in zip(pairs, tests, rejected, adjusted, strict=True):
        winner: str | None = None
        if reject:
            first_better = test.mean_difference > 0 if better == "max" else test.mean_difference < 0
            winner = a.name if first_better else b.name
        mde = min_detectable_effect(test.standard_error, test.df, alpha / len(pairs), power)
        out.append(PairTest(a.name, b.name, test, float(p_holm), bool(reject), winner, mde))
    return out


def decide(
    arms: Sequence[ArmSummary], pairs: Sequence[PairTest], metric: str, alpha: float, power: float
) -> Verdict:
    """Name a winner only when it beats every other arm significantly (Holm); say which arms do
    not beat their trivial baseline (a winner among them is no winner for production)."""
    verdict = _decide(arms, pairs, metric, alpha, power)
    below = [a for a in arms if a.ok and not a.beats_baseline and a.baseline is not None]
    if not below:
        return verdict
    listed = "; ".join(f"{a.name}: {a.baseline.line()}" for a in below if a.baseline)
    return Verdict(
        verdict.winner,
        f"{verdict.text}. NOT beating the trivial baseline: {listed}",
        verdict.min_detectable_effect,
    )


def _decide(
    arms: Sequence[ArmSummary], pairs: Sequence[PairTest], metric: str, alpha: float, power: float
) -> Verdict:
    ok = [a.name for a in arms if a.ok]
    if len(ok) < 2:
        return Verdict(None, "no comparison: fewer than two arms trained on every fold", None)
    mde = max(p.min_detectable_effect for p in pairs)
    for name in ok:
        mine = [p for p in pairs if name in (p.first, p.second)]
        if mine and all(p.better == name for p in mine):
            worst = max(p.p_holm for p in mine)
            return Verdict(
                name,
                f"{name} is better on {metric} than every other arm (corrected resampled t-test, "
                f"Holm-adjusted p <= {worst:.3g} at alpha {alpha:g})",
                mde,
            )
    smallest = min(p.min_detectable_effect for p in pairs)
    detects = (
        f"a difference of {mde:.3g}"
        if len(pairs) == 1 or smallest > 0.8 * mde
        else f"differences from {smallest:.3g} to {mde:.3g}, depending on the pair,"
    )
    wins = [p for p in pairs if p.significant]
    if not wins:
        return Verdict(
            None,
            f"no detectable difference at this data size: no pair differs significantly on "
            f"{metric} (Holm, alpha {alpha:g}); the design detects {detects} with {power:.0%} "
            "power",
            mde,
        )
    listed = "; ".join(
        f"{p.better} beats {p.second if p.better == p.first else p.first} (p_holm {p.p_holm:.3g})"
        for p in wins
    )
    return Verdict(
        None,
        f"no single winner on {metric}: {listed}; the other pairs show no detectable difference "
        f"(the design detects {detects} with {power:.0%} power)",
        mde,
    )


def summarize(
    plan: ComparisonPlan,
    folds: FoldSet,
    results: Sequence[UnitResult],
    *,
    elapsed_s: float,
    workers: int,
) -> Comparison:
    """The comparison from every unit's result.

    Args:
        plan: what was trained.
        folds: the folds.
        results: every unit's result.
        elapsed_s: wall-clock seconds of the whole cross-validation.
        workers: processes it ran in.
    """
    by_arm: dict[str, list[UnitResult]] = {}
    for result in results:
        by_arm.setdefault(result.arm, []).append(result)
    order = {f.name: i for i, f in enumerate(folds.folds)}
    for units in by_arm.values():
        units.sort(key=lambda u: order[u.fold])
    raw = folds.heldout_raw() if folds.heldout else None

    def one(arm: Arm) -> ArmSummary:
        return summarize_arm(arm, plan, folds, by_arm.get(arm.name, []), raw)

    alpha, power = plan.settings.alpha, plan.settings.power
    arms = [one(a) for a in plan.arms]
    ok = [a for a in arms if a.ok]
    sizes = {"n_train": folds.n_train, "n_test": folds.n_test}
    pairs = pairwise_tests(
        list(itertools.combinations(ok, 2)), **sizes, better=plan.better, alpha=alpha, power=power
    )
    ablations = [one(a) for a in plan.ablations]
    full: Mapping[str, ArmSummary] = {a.name: a for a in ok}
    ablation_pairs = [
        (v, full[v.ablation_of]) for v in ablations if v.ok and v.ablation_of is not None
    ]
    return Comparison(
        metric=plan.metric,
        better=plan.better,
        alpha=alpha,
        power=power,
        kind=folds.kind,
        folds=plan.settings.cv.folds,
        repeats=plan.settings.cv.repeats if folds.kind != "time" else 1,
        n_train=folds.n_train,
        n_test=folds.n_test,
        pool_rows=folds.pool_rows,
        arms=tuple(arms),
        pairs=tuple(pairs),
        ablations=tuple(ablations),
        ablation_tests=tuple(
            pairwise_tests(ablation_pairs, **sizes, better=plan.better, alpha=alpha, power=power)
        ),
        verdict=decide(arms, pairs, plan.metric, alpha, power),
        workers=workers,
        elapsed_s=elapsed_s,
        busy_s=float(sum(r.total_s for r in results)),
    )
