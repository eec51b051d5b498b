"""What the comparison's report holds: the tables (one row per arm, one per pair of arms), the
figures and the JSON payload. :mod:`lossflow.comparison.html` lays them out as a page;
:func:`lossflow.usecases.compare.publish` writes them and logs them to MLflow."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from lossflow.comparison.cv import FoldSet, UnitResult
from lossflow.comparison.landscape import Landscape, MarginCurve, loss_vs_margin
from lossflow.comparison.plan import ComparisonPlan
from lossflow.comparison.plots import (
    plot_fold_scores,
    plot_hpo_history,
    plot_hpo_importances,
    plot_importances,
    plot_landscape_contours,
    plot_landscape_lines,
    plot_later,
    plot_loss_vs_margin,
)
from lossflow.comparison.results import StudyResult
from lossflow.comparison.summary import ArmSummary, Comparison, PairTest
from lossflow.models.build import resolved_loss_spec

MARGIN_SPAN = 6.0


def metric_rows(comparison: Comparison, arms: Sequence[ArmSummary]) -> list[dict[str, Any]]:
    """One row per arm: status, each metric's mean and interval, speed, the error if failed."""
    rows = []
    for arm in arms:
        row: dict[str, Any] = {
            "arm": arm.name,
            "status": "ok" if arm.ok else "failed",
            "loss": arm.loss,
            "loss_id": arm.loss_id,
        }
        for name, interval in arm.metrics.items():
            row[name] = interval.mean
            row[f"{name}_low"] = interval.low
            row[f"{name}_high"] = interval.high
        row.update(
            {
                "epochs": arm.epochs,
                "epochs_to_95": arm.epochs_to_95,
                "wall_s": arm.wall_s,
                "fold_wall_s": arm.fold_wall_s,
                "error": arm.error,
            }
        )
        if arm.ablation_of is not None:
            row.update({"ablation_of": arm.ablation_of, "removed": arm.removed})
        rows.append(row)
    return rows


def test_rows(tests: Sequence[PairTest]) -> list[dict[str, Any]]:
    """One row per pair: the mean difference with its interval, t, p (corrected, naive, Holm)."""
    return [
        {
            "first": p.first,
            "second": p.second,
            "mean_difference": p.test.mean_difference,
            "ci_low": p.test.ci_low,
            "ci_high": p.test.ci_high,
            "effect_size_d": (p.test.mean_difference / p.test.std if p.test.std > 0 else math.nan),
            "t": p.test.t,
            "df": p.test.df,
            "p_value": p.test.p_value,
            "naive_p_value": p.test.naive_p_value,
            "p_holm": p.p_holm,
            "significant": p.significant,
            "better": p.better,
            "min_detectable_effect": p.min_detectable_effect,
        }
        for p in tests
    ]


def _landscapes(results: Sequence[UnitResult]) -> dict[str, Landscape]:
    out = {}
    for unit in results:
        path = unit.directory / "landscape.npz"
        if unit.ok and path.is_file() and unit.arm not in out:
            with np.load(path) as data:
                out[unit.arm] = Landscape(
                    data["steps"],
                    data["line"],
                    data["grid"],
                    data["surface"],
                    float(data["center"]),
                )
    return out


def margin_curves(plan: ComparisonPlan, folds: FoldSet) -> dict[str, MarginCurve]:
    """Each arm's loss (with the first fold's class counts) against the margin."""
    first = folds.folds[0].prepared
    counts = first.class_counts
    task = plan.reference.data.task
    span = MARGIN_SPAN
    if task == "regression":
        _, target = first.arrays("train")
        span = 3.0 * float(np.std(target)) or 1.0
    out = {}
    for arm in plan.arms:
        cfg = arm.config
        if cfg is None:
            continue
        curve = loss_vs_margin(
            resolved_loss_spec(cfg, counts).build(),
            task,
            n_classes=len(counts or ()),
            span=span,
        )
        if curve is not None:
            out[arm.name] = curve
    return out


def build_figures(
    plan: ComparisonPlan,
    folds: FoldSet,
    results: Sequence[UnitResult],
    comparison: Comparison,
    study: StudyResult | None,
) -> dict[str, Figure]:
    """Every figure of the report, by file name."""
    ok = [a for a in comparison.arms if a.ok]
    figures: dict[str, Figure] = {}
    if ok:
        intervals = {
            a.name: (
                a.metrics[comparison.metric].mean,
                a.metrics[comparison.metric].low,
                a.metrics[comparison.metric].high,
            )
            for a in ok
        }
        figures["fold_scores.png"] = plot_fold_scores(
            {a.name: a.scores for a in ok}, intervals, comparison.metric
        )
    landscapes = _landscapes(results)
    if landscapes:
        figures["landscape_1d.png"] = plot_landscape_lines(landscapes)
        figures["landscape_2d.png"] = plot_landscape_contours(landscapes)
    curves = margin_curves(plan, folds)
    if curves:
        figures["loss_vs_margin.png"] = plot_loss_vs_margin(curves)
    importances = {a.name: a.importances for a in ok if a.importances}
    if importances:
        figures["importances.png"] = plot_importances(importances)
    later = {
        a.name: [
            (s.value, s.interval.mean, s.interval.low, s.interval.high)
            for s in a.later
            if s.interval is not None
        ]
        for a in ok
    }
    if any(later.values()):
        figures["later_months.png"] = plot_later(later, comparison.metric)
    if study is not None:
        done = [
            (t.number, str(t.params.get("loss")), t.value)
            for t in study.trials
            if t.state == "COMPLETE" and t.value is not None
        ]
        if done:
            figures["hpo_history.png"] = plot_hpo_history(done, study.metric, study.better)
        if study.importances:
            figures["hpo_importances.png"] = plot_hpo_importances(study.importances)
    return figures


def payload(comparison: Comparison, study: StudyResult | None) -> dict[str, Any]:
    """The comparison (and search) as JSON-able data."""
    data = {"comparison": asdict(comparison), "study": None if study is None else asdict(study)}
    decoded: dict[str, Any] = json.loads(json.dumps(data, default=str, allow_nan=True))
    return decoded
