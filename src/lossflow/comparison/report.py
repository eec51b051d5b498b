"""The comparison's report: its tables, figures, a self-contained HTML page that reads top to
bottom (verdict, table, tests, ablations, landscapes, slices, later months, importances, search),
and what goes to MLflow: one parent run with a nested run per arm x fold and per trial."""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from lossflow.comparison.cv import FoldSet, UnitResult
from lossflow.comparison.hpo import (
    StudyResult,
    best_overlay,
    default_storage,
    load_plan,
    write_overlay,
)
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
from lossflow.comparison.summary import ArmSummary, Comparison, PairTest, SliceSummary
from lossflow.config.training import config_to_dict
from lossflow.models.build import resolved_loss_spec
from lossflow.tracking import Tracker, flatten, resolve_tracking_uri

MARGIN_SPAN = 6.0


def tracker_for(plan: ComparisonPlan) -> Tracker:
    """The MLflow tracker of the comparison's experiment, in the arms' tracking store."""
    reference = plan.reference
    uri = resolve_tracking_uri(reference.tracking.tracking_uri, reference.data_dir)
    return Tracker(uri, reference.tracking.experiment_of("compare"), None)


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


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


def _png(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _table(rows: Sequence[Mapping[str, Any]], columns: Sequence[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c)
            text = _num(value) if isinstance(value, float) else ("" if value is None else value)
            cells.append(f"<td>{html.escape(str(text))}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    return f"<table><tr>{head}</tr>{''.join(body)}</table>"


def _interval_text(arm: ArmSummary, metric: str) -> str:
    interval = arm.metrics.get(metric)
    if interval is None:
        return "-"
    return f"{_num(interval.mean)} [{_num(interval.low)}, {_num(interval.high)}]"


def _slice_rows(slices: Sequence[SliceSummary]) -> list[dict[str, Any]]:
    return [
        {
            "slice": s.slice,
            "value": s.value,
            "rows": s.rows,
            "folds": s.folds,
            "mean": None if s.interval is None else s.interval.mean,
            "low": None if s.interval is None else s.interval.low,
            "high": None if s.interval is None else s.interval.high,
            "note": s.reason,
        }
        for s in slices
    ]


def _img(figures: Mapping[str, Figure], name: str) -> str:
    if name not in figures:
        return ""
    return f'<img alt="{name}" src="data:image/png;base64,{_png(figures[name])}">'


_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;color:#222}"
    "table{border-collapse:collapse;margin:.5em 0 1.5em}td,th{border:1px solid #ccc;"
    "padding:3px 8px;font-size:13px}th{background:#f3f3f3}.verdict{font-size:1.2em;"
    "padding:.8em;background:#eef5ff;border-left:4px solid #36c}img{max-width:100%}"
    ".failed{color:#a00}"
)


def render_html(
    comparison: Comparison,
    figures: Mapping[str, Figure],
    study: StudyResult | None = None,
    overlay: str | None = None,
) -> str:
    """The report as one self-contained HTML page (figures embedded)."""
    c = comparison
    m = c.metric
    parts = [
        f"<html><head><meta charset='utf-8'><title>lossflow comparison</title>"
        f"<style>{_STYLE}</style></head><body>",
        "<h1>Offline loss comparison</h1>",
        f"<p class='verdict'><b>Verdict.</b> {html.escape(c.verdict.text)}</p>",
        f"<p>Deciding metric <b>{html.escape(m)}</b> ({'higher' if c.better == 'max' else 'lower'}"
        f" is better); {c.kind} cross-validation, {c.folds} folds x {c.repeats} repeat(s) on "
        f"{c.pool_rows} rows (about {c.n_train:.0f} training and {c.n_test:.0f} test rows per "
        f"fold); intervals are {1 - c.alpha:.0%} Nadeau-Bengio corrected t intervals. "
        f"{len(c.arms) + len(c.ablations)} arms x folds ran in {c.elapsed_s:.0f} s on "
        f"{c.workers} worker(s), parallel efficiency {c.efficiency:.0%}.</p>",
        "<h2>Arms</h2>",
    ]
    rows = [
        {
            "arm": a.name,
            "status": "ok" if a.ok else "failed",
            "loss": a.loss,
            **{name: _interval_text(a, name) for name in (a.metrics or {})},
            "epochs": a.epochs,
            "epochs to 95%": a.epochs_to_95,
            "wall s": a.wall_s,
        }
        for a in c.arms
    ]
    metric_columns = list(next((a.metrics for a in c.arms if a.ok), {}))
    parts.append(
        _table(
            rows, ["arm", "status", "loss", *metric_columns, "epochs", "epochs to 95%", "wall s"]
        )
    )
    failed = [a for a in (*c.arms, *c.ablations) if not a.ok]
    for arm in failed:
        parts.append(
            f"<p class='failed'><b>{html.escape(arm.name)} failed:</b> "
            f"{html.escape(str(arm.error))}</p>"
        )
    parts.append(_img(figures, "fold_scores.png"))
    test_columns = [
        "first",
        "second",
        "mean_difference",
        "ci_low",
        "ci_high",
        "effect_size_d",
        "t",
        "p_value",
        "naive_p_value",
        "p_holm",
        "significant",
        "better",
        "min_detectable_effect",
    ]
    parts += [
        "<h2>Tests between arms</h2>",
        f"<p>Corrected resampled t-test (Nadeau &amp; Bengio 2003) on the paired fold scores of "
        f"{m}, Holm's correction across the {len(c.pairs)} pairs; the naive paired t-test's p is "
        f"shown beside it. The detectable difference is at Holm's most stringent level with "
        f"{c.power:.0%} power.</p>",
        _table(test_rows(c.pairs), test_columns),
        "<h2>Ablations</h2>",
    ]
    if c.ablations:
        parts.append(
            "<p>Each variant removes one composite term or one regulariser of its arm and is "
            "tested against the full arm (Holm across the variants).</p>"
        )
        ablation_rows = [
            {
                "variant": a.name,
                "of": a.ablation_of,
                "removes": a.removed,
                "status": "ok" if a.ok else "failed",
                m: _interval_text(a, m),
            }
            for a in c.ablations
        ]
        parts.append(_table(ablation_rows, ["variant", "of", "removes", "status", m]))
        parts.append(_table(test_rows(c.ablation_tests), test_columns))
    else:
        parts.append("<p>No arm has a composite loss or a regulariser to remove.</p>")
    parts += [
        "<h2>Loss landscapes</h2>",
        "<p>Each arm's training objective along one and two filter-normalised random "
        "directions around its first fold's trained weights (Li et al. 2018).</p>",
        _img(figures, "landscape_1d.png"),
        _img(figures, "landscape_2d.png"),
        "<h3>The losses against the margin</h3>",
        _img(figures, "loss_vs_margin.png"),
        "<h2>Slices</h2>",
    ]
    for arm in c.arms:
        if not arm.ok or not arm.slices:
            continue
        worst = arm.worst_slice
        if worst is not None and worst.interval is not None:
            parts.append(
                f"<p><b>{html.escape(arm.name)}</b>: worst slice {html.escape(worst.slice)} = "
                f"{html.escape(worst.value)} with {m} {_num(worst.interval.mean)} "
                f"[{_num(worst.interval.low)}, {_num(worst.interval.high)}]</p>"
            )
        parts.append(
            f"<details><summary>{html.escape(arm.name)}: every slice</summary>"
            + _table(_slice_rows(arm.slices), ["slice", "value", "rows", "folds", "mean", "low",
                                               "high", "note"])
            + "</details>"
        )  # fmt: skip
    parts += ["<h2>Later months</h2>", _img(figures, "later_months.png")]
    for arm in c.arms:
        if arm.ok and arm.later:
            parts.append(
                f"<details><summary>{html.escape(arm.name)}</summary>"
                + _table(_slice_rows(arm.later), ["value", "rows", "folds", "mean", "low", "high",
                                                  "note"])
                + "</details>"
            )  # fmt: skip
    parts += ["<h2>Permutation importances</h2>", _img(figures, "importances.png")]
    importance_rows = _importance_rows(c)
    if importance_rows:
        parts.append(_table(importance_rows, list(importance_rows[0])))
    if study is not None:
        parts += _study_html(study, figures, overlay)
    parts.append("</body></html>")
    return "\n".join(p for p in parts if p)


def _importance_rows(c: Comparison) -> list[dict[str, Any]]:
    arms = [a for a in c.arms if a.ok and a.importances]
    if not arms:
        return []
    features = list(arms[0].importances)
    return [{"feature": f, **{a.name: a.importances[f][0] for a in arms}} for f in features]


def _study_html(
    study: StudyResult, figures: Mapping[str, Figure], overlay: str | None
) -> list[str]:
    out = [
        "<h2>Hyper-parameter search</h2>",
        f"<p>Optuna study {html.escape(study.name)} ({html.escape(study.sampler)} sampler) on "
        f"{html.escape(study.metric)}: {len(study.finished())} trials finished "
        f"({sum(t.state == 'PRUNED' for t in study.trials)} pruned).</p>",
    ]
    if study.best is not None:
        params = ", ".join(f"{k}={_num(v) if isinstance(v, float) else v}"
                           for k, v in study.best.params.items())  # fmt: skip
        out.append(
            f"<p><b>Best trial {study.best.number}</b>: {html.escape(params)} -> "
            f"{html.escape(study.metric)} {_num(study.best.value)}</p>"
        )
    if overlay is not None:
        out.append(
            f"<p>Its configuration as an experiment overlay:</p><pre>{html.escape(overlay)}</pre>"
        )
    out += [_img(figures, "hpo_history.png"), _img(figures, "hpo_importances.png")]
    if study.importance_note:
        out.append(f"<p>{html.escape(study.importance_note)}</p>")
    rows = [
        {
            "arm": s.arm,
            "parameter": s.param,
            "trials": s.trials,
            "spearman": s.spearman,
            "objective spread": s.spread,
        }
        for s in study.sensitivity
    ]
    if rows:
        out.append("<h3>Sensitivity of the metric to each loss parameter</h3>")
        out.append(_table(rows, list(rows[0])))
    return out


def payload(comparison: Comparison, study: StudyResult | None) -> dict[str, Any]:
    """The comparison (and search) as JSON-able data."""
    data = {"comparison": asdict(comparison), "study": None if study is None else asdict(study)}
    decoded: dict[str, Any] = json.loads(json.dumps(data, default=str, allow_nan=True))
    return decoded


def _finite(metrics: Mapping[str, float | None]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def log_units(
    tracker: Tracker, parent_run_id: str, plan: ComparisonPlan, results: Sequence[UnitResult]
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


def log_trials(tracker: Tracker, parent_run_id: str, study: StudyResult) -> list[str]:
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


OVERLAY_FILE = "hpo_best.yaml"


def publish(
    tracker: Tracker,
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
        stored = load_plan(
            plan.settings.hpo.storage or default_storage(plan.reference.data_dir), study.name
        )
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
    tracker: Tracker,
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
