"""What ``lossflow ab status`` and ``lossflow ab decide`` print: the arms, the comparisons with
their guardrails, the decision and what was (or would be) done."""

from __future__ import annotations

import math
from typing import Any

from rich.table import Table

from lossflow.ab.decision import AbDecision
from lossflow.ab.metrics import HIGHER_IS_BETTER, VariantMetrics
from lossflow.ab.setup import Setup


def _num(value: Any, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def arms_table(setup: Setup, measured: dict[str, VariantMetrics], metric: str) -> Table:
    """One row per arm: version, loss, units, labels, the metric, the guardrails."""
    table = Table(
        title=(
            f"A/B test {setup.experiment!r} of {setup.model_name}: "
            f"{setup.start:%Y-%m-%d %H:%M} -> {setup.end:%Y-%m-%d %H:%M} UTC "
            f"(starts: {setup.start_reason})"
        )
    )
    for column in ("variant", "version", "loss", "weight", "units", "requests", "labelled",
                   metric, "baseline", "p99 ms", "errors", "positive"):  # fmt: skip
        table.add_column(column, justify="left" if column in ("variant", "loss") else "right")
    total = sum(setup.weights.values()) or 1.0
    for arm in setup.arms:
        m = measured.get(arm.variant)
        s = m.summary() if m is not None else {}
        table.add_row(
            arm.variant,
            str(arm.model_version or "-"),
            arm.loss_id or "-",
            f"{setup.weights.get(arm.variant, 0.0) / total:.0%}",
            _num(s.get("units")),
            _num(s.get("requests")),
            "-" if m is None else f"{m.labelled_units} ({m.coverage:.0%})",
            _num(s.get("metric_mean"), 5),
            _baseline_cell(m, metric),
            _num(s.get("p99_latency_ms"), 2),
            "-" if m is None else f"{s['error_rate']:.2%}",
            "-" if s.get("positive_rate") is None else f"{s['positive_rate']:.1%}",
        )
    return table


def _baseline_cell(measured: VariantMetrics | None, metric: str) -> str:
    """The champion's trivial baseline on the arm's units, flagged when the arm does not beat
    it."""
    if measured is None or measured.baseline_mean is None:
        return "-"
    beats = measured.beats_baseline(metric in HIGHER_IS_BETTER)
    return f"{measured.baseline_mean:.5g}" + ("" if beats else " (NOT beaten)")


def comparisons_table(decision: AbDecision, metric: str) -> Table | None:
    """Per challenger: the effect with its always-valid interval, p-values, guardrails, verdict."""
    if not decision.comparisons:
        return None
    table = Table(title=f"challenger - champion on {metric} (always-valid intervals)")
    for column in ("challenger", "effect", "interval", "p", "p (Holm)", "guardrails", "verdict"):
        table.add_column(column)
    for c in decision.comparisons:
        guards = ", ".join(f"{g.name} {'ok' if g.passed else 'FAIL'}" for g in c.guardrails)
        table.add_row(
            c.challenger,
            f"{c.test.estimate:+.5f}",
            f"[{c.test.ci_low:+.5f}, {c.test.ci_high:+.5f}]",
            f"{c.test.p_value:.3g}",
            f"{c.p_holm:.3g}",
            guards or "-",
            c.verdict,
        )
    return table


def decision_lines(decision: AbDecision, action: dict[str, Any] | None = None) -> list[str]:
    """The verdict, its reasons, the SRM check and the action, as lines of text."""
    lines = [f"decision: {decision.verdict.upper()}"
             + (f" ({decision.challenger})" if decision.challenger else "")]  # fmt: skip
    lines += [f"  - {r}" for r in decision.reasons]
    if decision.srm_p is not None:
        lines.append(
            f"sample ratio: units {decision.unit_counts}, anytime-valid p = {decision.srm_p:.3g}"
            f" (chi-squared p = {decision.srm_chi2_p:.3g})"
        )
    if decision.coverage_flag:
        lines.append(f"warning: {decision.coverage_flag}")
    if action is not None:
        lines.append(f"action: {action['message']}")
    return lines
