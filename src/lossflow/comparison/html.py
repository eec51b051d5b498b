"""The comparison's report as one self-contained HTML page that reads top to bottom: verdict,
table, tests, ablations, landscapes, slices, later months, importances, search (figures
embedded)."""

from __future__ import annotations

import base64
import html
import io
import math
from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.figure import Figure

from lossflow.comparison.report import test_rows
from lossflow.comparison.results import StudyResult
from lossflow.comparison.summary import ArmSummary, Comparison, SliceSummary


def _num(value: float | None, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:.{digits}g}"


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
