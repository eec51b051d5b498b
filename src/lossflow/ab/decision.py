"""The A/B decision: a pure function of per-variant measurements and the policy.

For each challenger against the champion, on per-unit outcomes:

- **invalid** when units reach the variants out of proportion to the weights (the anytime-valid
  sample-ratio test below ``srm.alpha``): nothing is decided, the counts are reported;
- **promote** when the challenger is better on the primary metric — the always-valid interval
  of ``challenger - champion`` excludes zero on the better side and Holm's correction across the
  challengers keeps it significant —, every guardrail is non-inferior (its interval lies within
  the margin), and each arm has ``min_units`` labelled units over ``min_duration``;
- **reject** when it is worse (the interval on the worse side of zero) or futile (the interval
  within ``± min_effect``: any difference left is too small to matter);
- **continue** otherwise, with what is missing.

Intervals are at level ``alpha / k`` for ``k`` challengers, so they agree with Holm's verdicts.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any, Literal

import numpy as np

from lossflow.ab.metrics import HIGHER_IS_BETTER, VariantMetrics
from lossflow.stats.multiple import holm
from lossflow.stats.sequential import SequentialResult, always_valid_test
from lossflow.stats.srm import sequential_srm_test, srm_test

Verdict = Literal["promote", "reject", "continue", "invalid", "no_challenger"]


@dataclass(frozen=True)
class Policy:
    """The decision rules (from the A/B config)."""

    metric: str
    alpha: float = 0.05
    phi: float = 100.0
    min_effect: float = 0.002
    min_units: int = 500
    min_duration_s: float = 86_400.0
    srm_alpha: float = 0.001
    srm_concentration: float = 100.0
    latency_margin_ms: float | None = 5.0
    error_rate_margin: float | None = 0.01
    positive_rate_margin: float | None = 0.1
    calibration_margin: float | None = 0.02
    coverage_alpha: float = 0.001


@dataclass(frozen=True)
class Guardrail:
    """A metric a challenger must not make worse beyond ``margin``.

    Attributes:
        name: ``latency_ms``, ``error_rate``, ``positive_rate`` or ``calibration``.
        estimate: challenger - champion.
        ci_low: lower end of its always-valid interval.
        ci_high: upper end.
        margin: the allowed change (upwards for latency and errors, either way otherwise).
        passed: the interval lies within the margin.
    """

    name: str
    estimate: float
    ci_low: float
    ci_high: float
    margin: float
    passed: bool


@dataclass(frozen=True)
class Comparison:
    """One challenger against the champion."""

    challenger: str
    verdict: Verdict
    reasons: list[str]
    test: SequentialResult
    p_holm: float
    guardrails: list[Guardrail]
    better: bool
    worse: bool
    futile: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "challenger": self.challenger,
            "verdict": self.verdict,
            "reasons": self.reasons,
            "estimate": self.test.estimate,
            "ci_low": self.test.ci_low,
            "ci_high": self.test.ci_high,
            "p_value": self.test.p_value,
            "p_holm": self.p_holm,
            "units": [self.test.n_control, self.test.n_treatment],
            "guardrails": [g.__dict__ for g in self.guardrails],
        }


@dataclass(frozen=True)
class AbDecision:
    """What the analysis concluded.

    Attributes:
        verdict: the experiment's verdict (the chosen challenger's, ``invalid`` or
            ``no_challenger``).
        challenger: the challenger it concerns (the one promoted, when one is).
        reasons: why.
        comparisons: every challenger's comparison.
        srm_p: the anytime-valid sample-ratio p-value.
        srm_chi2_p: its fixed-horizon (chi-squared) counterpart.
        unit_counts: units per variant.
        weights: the configured weights.
        coverage_flag: a variant whose labels arrive less often (``None``: none).
    """

    verdict: Verdict
    challenger: str | None
    reasons: list[str]
    comparisons: list[Comparison] = field(default_factory=list)
    srm_p: float | None = None
    srm_chi2_p: float | None = None
    unit_counts: dict[str, int] = field(default_factory=dict)
    weights: dict[str, float] = field(default_factory=dict)
    coverage_flag: str | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "verdict": self.verdict,
            "challenger": self.challenger,
            "reasons": self.reasons,
            "comparisons": [c.to_json() for c in self.comparisons],
            "srm_p": self.srm_p,
            "srm_chi2_p": self.srm_chi2_p,
            "unit_counts": self.unit_counts,
            "weights": self.weights,
            "coverage_flag": self.coverage_flag,
        }


Direction = Literal["up", "both", "away_from_zero"]


def _guardrail(
    name: str,
    control: Any,
    treatment: Any,
    margin: float | None,
    alpha: float,
    phi: float,
    direction: Direction,
) -> Guardrail | None:
    """Non-inferiority of ``treatment - control`` on a per-unit guardrail metric.

    ``up``: may rise by less than ``margin`` (latency, errors); ``both``: may move by less than
    ``margin`` either way (positive rate); ``away_from_zero``: a signed error (calibration, mean
    ``probability - label``) may end at most ``margin`` further from zero than the champion's,
    at the worst end of the interval (moving towards zero always passes).
    """
    if margin is None or len(control) < 2 or len(treatment) < 2:
        return None
    r = always_valid_test(control, treatment, alpha, phi=phi)
    if direction == "up":
        passed = r.ci_high < margin
    elif direction == "both":
        passed = -margin < r.ci_low and r.ci_high < margin
    else:
        base = float(np.mean(control))
        worst = max(abs(base + r.ci_low), abs(base + r.ci_high))
        passed = worst < abs(base) + margin
    return Guardrail(name, r.estimate, r.ci_low, r.ci_high, margin, bool(passed))


def _coverage_flag(
    champion: VariantMetrics, challengers: list[VariantMetrics], alpha: float
) -> str | None:
    from scipy import stats

    for c in challengers:
        table = [
            [champion.labelled_units, champion.units - champion.labelled_units],
            [c.labelled_units, c.units - c.labelled_units],
        ]
        labelled, unlabelled = table[0][0] + table[1][0], table[0][1] + table[1][1]
        if min(champion.units, c.units, labelled, unlabelled) == 0:  # nothing to compare
            continue
        if stats.chi2_contingency(table).pvalue < alpha:
            low = c if c.coverage < champion.coverage else champion
            return (
                f"labels reach {low.variant} less often ({low.coverage:.1%} of units against "
                f"{max(c.coverage, champion.coverage):.1%}): its metric may be biased"
            )
    return None


def decide(
    measured: Mapping[str, VariantMetrics],
    champion: str,
    challengers: list[str],
    weights: Mapping[str, float],
    policy: Policy,
) -> AbDecision:
    """The decision for an experiment (see the module).

    Args:
        measured: per variant, its measurements (variants missing from the log are absent).
        champion: the control variant.
        challengers: the variants that challenge it.
        weights: the configured traffic weights of the variants.
        policy: the rules.
    """
    present = [c for c in challengers if c in measured]
    if champion not in measured or not present:
        missing = [v for v in (champion, *challengers) if v not in measured]
        why = (
            "no challenger is configured"
            if not challengers
            else f"no traffic logged for {', '.join(missing)} in the window"
        )
        return AbDecision("no_challenger", None, [why])
    arms = [champion, *present]
    counts = {v: measured[v].units for v in arms}
    unit_weights = [weights.get(v, 0.0) for v in arms]
    if any(w <= 0 for w in unit_weights):
        zero = [v for v, w in zip(arms, unit_weights, strict=True) if w <= 0]
        return AbDecision(
            "invalid", None, [f"variants {zero} have no traffic weight; fix the split"],
            unit_counts=counts, weights=dict(weights),
        )  # fmt: skip
    srm_p = sequential_srm_test(list(counts.values()), unit_weights, policy.srm_concentration)
    chi2_p = srm_test(list(counts.values()), unit_weights)
    arm_weights = {v: float(w) for v, w in zip(arms, unit_weights, strict=True)}
    base: dict[str, Any] = {
        "srm_p": srm_p, "srm_chi2_p": chi2_p, "unit_counts": counts, "weights": arm_weights,
    }  # fmt: skip
    if srm_p < policy.srm_alpha:
        shares = {v: n / max(sum(counts.values()), 1) for v, n in counts.items()}
        return AbDecision(
            "invalid",
            None,
            [
                f"sample-ratio mismatch: units {counts} (shares "
                f"{ {v: round(s, 4) for v, s in shares.items()} }) against weights "
                f"{base['weights']}; anytime-valid p = {srm_p:.2g} < {policy.srm_alpha:g}: the "
                "assignment or the logging is broken, nothing is decided"
            ],
            **base,
        )
    control = measured[champion]
    k = len(present)
    tests = {
        c: always_valid_test(control.outcome, measured[c].outcome, policy.alpha / k, phi=policy.phi)
        for c in present
    }
    _, p_holm = holm([tests[c].p_value for c in present], policy.alpha)
    higher = policy.metric in HIGHER_IS_BETTER
    comparisons = []
    for challenger, p_adj in zip(present, p_holm, strict=True):
        comparisons.append(
            _compare(
                challenger,
                control,
                measured[challenger],
                tests[challenger],
                float(p_adj),
                higher,
                k,
                policy,
            )
        )
    coverage = _coverage_flag(control, [measured[c] for c in present], policy.coverage_alpha)
    promotable = [c for c in comparisons if c.verdict == "promote"]
    if promotable:
        best = max(promotable, key=lambda c: c.test.estimate if higher else -c.test.estimate)
        return AbDecision(
            "promote", best.challenger, best.reasons, comparisons, coverage_flag=coverage, **base
        )
    rejected = [c for c in comparisons if c.verdict == "reject"]
    if len(rejected) == len(comparisons):
        first = rejected[0]
        return AbDecision(
            "reject", first.challenger, first.reasons, comparisons, coverage_flag=coverage, **base
        )
    waiting = [c for c in comparisons if c.verdict == "continue"]
    reasons = [r for c in waiting for r in c.reasons]
    return AbDecision(
        "continue", waiting[0].challenger, reasons, comparisons, coverage_flag=coverage, **base
    )


def _compare(
    name: str,
    control: VariantMetrics,
    treatment: VariantMetrics,
    test: SequentialResult,
    p_holm: float,
    higher: bool,
    k: int,
    policy: Policy,
) -> Comparison:
    alpha = policy.alpha / k
    better = p_holm <= policy.alpha and (test.ci_low > 0 if higher else test.ci_high < 0)
    worse = test.ci_high < 0 if higher else test.ci_low > 0
    futile = -policy.min_effect < test.ci_low and test.ci_high < policy.min_effect
    guardrails = [
        g
        for g in (
            _guardrail(
                "latency_ms",
                control.latency_ms,
                treatment.latency_ms,
                policy.latency_margin_ms,
                alpha,
                policy.phi,
                "up",
            ),
            _guardrail(
                "error_rate",
                control.error_rate,
                treatment.error_rate,
                policy.error_rate_margin,
                alpha,
                policy.phi,
                "up",
            ),
            _guardrail(
                "positive_rate",
                control.positive_rate,
                treatment.positive_rate,
                policy.positive_rate_margin,
                alpha,
                policy.phi,
                "both",
            ),
            _guardrail(
                "calibration",
                control.calibration,
                treatment.calibration,
                policy.calibration_margin,
                alpha,
                policy.phi,
                "away_from_zero",
            ),
        )
        if g is not None
    ]
    effect = (
        f"{policy.metric} {treatment.mean:.5f} vs {control.mean:.5f}: difference "
        f"{test.estimate:+.5f} [{test.ci_low:+.5f}, {test.ci_high:+.5f}], p = {test.p_value:.3g}"
        f" (Holm {p_holm:.3g})"
    )
    if worse:
        return Comparison(name, "reject", [f"{name} is worse: {effect}"], test, p_holm,
                          guardrails, better, worse, futile)  # fmt: skip
    if futile:
        return Comparison(
            name, "reject",
            [f"{name} is futile: the interval lies within +/-{policy.min_effect:g}: {effect}"],
            test, p_holm, guardrails, better, worse, futile,
        )  # fmt: skip
    missing = []
    for arm in (control, treatment):
        if arm.labelled_units < policy.min_units:
            missing.append(
                f"{arm.variant} has {arm.labelled_units} labelled units of {policy.min_units}"
            )
    span = [a for a in (control.first, treatment.first, control.last, treatment.last) if a]
    duration = (max(span) - min(span)) if span else timedelta(0)
    if duration.total_seconds() < policy.min_duration_s:
        missing.append(f"traffic spans {duration} of {timedelta(seconds=policy.min_duration_s)}")
    failed = [g for g in guardrails if not g.passed]
    if better and not missing and not failed:
        return Comparison(name, "promote", [f"{name} is better: {effect}"], test, p_holm,
                          guardrails, better, worse, futile)  # fmt: skip
    reasons = [*missing]
    reasons += [
        f"guardrail {g.name}: {g.estimate:+.4g} [{g.ci_low:+.4g}, {g.ci_high:+.4g}] not within "
        f"{g.margin:g}"
        for g in failed
    ]
    if not better:
        reasons.append(f"no significant difference yet: {effect}")
    return Comparison(name, "continue", reasons, test, p_holm, guardrails, better, worse, futile)
