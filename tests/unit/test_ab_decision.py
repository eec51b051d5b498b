"""The A/B decision rules on per-unit outcomes, and the per-unit measurement of logged requests.

Every verdict here is on simulated per-unit outcomes with fixed seeds; the rules' error rates
under repeated looks are measured by ``benchmarks/ab_validity.py`` (and the statistics' by
``test_stats_ab.py``)."""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pytest

from lossflow.ab.decision import Policy, decide
from lossflow.ab.metrics import VariantMetrics, record_loss, variant_metrics
from lossflow.predlog.reader import OutcomeChunk

T0 = datetime(2026, 11, 1, tzinfo=UTC)
POLICY = Policy(metric="log_loss", min_units=500, min_duration_s=3600.0)


def _arm(
    name: str,
    outcome: np.ndarray,
    *,
    units: int | None = None,
    latency: float = 2.0,
    errors: float = 0.0,
    positive: float = 0.3,
    calibration: float = 0.0,
    hours: float = 48.0,
    seed: int = 0,
) -> VariantMetrics:
    rng = np.random.default_rng(seed)
    n = units if units is not None else outcome.size
    return VariantMetrics(
        variant=name,
        units=n,
        requests=3 * n,
        failed=int(errors * 3 * n),
        labelled_units=outcome.size,
        coverage=outcome.size / n,
        outcome=outcome,
        latency_ms=rng.normal(latency, 0.5, n),
        error_rate=(rng.random(n) < errors).astype(float),
        positive_rate=np.clip(rng.normal(positive, 0.05, n), 0, 1),
        calibration=rng.normal(calibration, 0.05, outcome.size),
        p99_latency_ms=latency * 3,
        first=T0,
        last=T0 + timedelta(hours=hours),
    )


def _outcomes(mean: float, n: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).gamma(2.0, mean / 2.0, n)  # log losses: skewed, positive


WEIGHTS = {"champion": 50.0, "challenger": 50.0}


def _decide(champion: VariantMetrics, *challengers: VariantMetrics, **policy: Any) -> Any:
    measured = {m.variant: m for m in (champion, *challengers)}
    weights = {m.variant: 50.0 for m in measured.values()}
    rules = Policy(**{**POLICY.__dict__, **policy})
    return decide(measured, "champion", [c.variant for c in challengers], weights, rules)


def test_a_clearly_better_challenger_is_promoted() -> None:
    d = _decide(
        _arm("champion", _outcomes(0.50, 4000, 1)),
        _arm("challenger", _outcomes(0.45, 4000, 2), seed=1),
    )
    assert d.verdict == "promote"
    assert d.challenger == "challenger"
    c = d.comparisons[0]
    assert c.test.ci_high < 0
    assert c.p_holm <= 0.05
    assert {g.name for g in c.guardrails} == {
        "latency_ms",
        "error_rate",
        "positive_rate",
        "calibration",
    }
    assert all(g.passed for g in c.guardrails)
    assert "is better" in d.reasons[0]


def test_a_clearly_worse_challenger_is_rejected_and_a_futile_one_too() -> None:
    worse = _decide(
        _arm("champion", _outcomes(0.45, 3000, 1)), _arm("challenger", _outcomes(0.52, 3000, 2))
    )
    assert worse.verdict == "reject"
    assert "is worse" in worse.reasons[0]
    same = _outcomes(0.5, 200_000, 3)
    futile = _decide(
        _arm("champion", same[:100_000]), _arm("challenger", same[100_000:]), min_effect=0.01
    )
    assert futile.verdict == "reject"
    assert "futile" in futile.reasons[0]


def test_better_but_short_of_units_or_time_continues() -> None:
    few = _decide(
        _arm("champion", _outcomes(0.5, 300, 1)), _arm("challenger", _outcomes(0.3, 300, 2))
    )
    assert few.verdict == "continue"
    assert any("300 labelled units of 500" in r for r in few.reasons)
    short = _decide(
        _arm("champion", _outcomes(0.5, 4000, 1), hours=0.5),
        _arm("challenger", _outcomes(0.45, 4000, 2), hours=0.5),
    )
    assert short.verdict == "continue"
    assert any("traffic spans 0:30:00 of 1:00:00" in r for r in short.reasons)


def test_a_failed_guardrail_holds_a_better_challenger() -> None:
    champion = _arm("champion", _outcomes(0.50, 4000, 1))
    slow = _decide(champion, _arm("challenger", _outcomes(0.45, 4000, 2), latency=9.0))
    assert slow.verdict == "continue"
    assert any(r.startswith("guardrail latency_ms") for r in slow.reasons)
    failing = _decide(champion, _arm("challenger", _outcomes(0.45, 4000, 2), errors=0.05))
    assert failing.verdict == "continue"
    assert any(r.startswith("guardrail error_rate") for r in failing.reasons)
    # Calibration: further from zero fails, closer to zero passes.
    off = _decide(champion, _arm("challenger", _outcomes(0.45, 4000, 2), calibration=0.06))
    assert any(r.startswith("guardrail calibration") for r in off.reasons)
    miscalibrated = _arm("champion", _outcomes(0.50, 4000, 1), calibration=0.10)
    fixed = _decide(miscalibrated, _arm("challenger", _outcomes(0.45, 4000, 2), calibration=0.0))
    assert fixed.verdict == "promote"
    # A guardrail set to None is not checked.
    unchecked = _decide(
        champion, _arm("challenger", _outcomes(0.45, 4000, 2), latency=9.0), latency_margin_ms=None
    )
    assert unchecked.verdict == "promote"


def test_a_sample_ratio_mismatch_is_invalid_and_decides_nothing() -> None:
    d = _decide(
        _arm("champion", _outcomes(0.5, 4000, 1), units=10_000),
        _arm("challenger", _outcomes(0.3, 4000, 2), units=9_000),
    )
    assert d.verdict == "invalid"
    assert d.comparisons == []
    assert "sample-ratio mismatch" in d.reasons[0]
    assert d.unit_counts == {"champion": 10_000, "challenger": 9_000}
    assert d.srm_p is not None
    assert d.srm_p < 0.001


def test_missing_arms_and_zero_weights_are_statuses() -> None:
    only = decide(
        {"champion": _arm("champion", _outcomes(0.5, 100, 1))}, "champion", [], {}, POLICY
    )
    assert only.verdict == "no_challenger"
    assert "no challenger" in only.reasons[0]
    silent = decide(
        {"champion": _arm("champion", _outcomes(0.5, 100, 1))}, "champion", ["challenger"],
        WEIGHTS, POLICY,
    )  # fmt: skip
    assert silent.verdict == "no_challenger"
    assert "challenger" in silent.reasons[0]
    champion, challenger = (
        _arm("champion", _outcomes(0.5, 100, 1)),
        _arm("challenger", _outcomes(0.5, 100, 2)),
    )
    zero = decide({"champion": champion, "challenger": challenger}, "champion", ["challenger"],
                  {"champion": 100.0, "challenger": 0.0}, POLICY)  # fmt: skip
    assert zero.verdict == "invalid"
    assert "no traffic weight" in zero.reasons[0]


def test_two_challengers_are_each_compared_with_holm_and_the_best_is_promoted() -> None:
    champion = _arm("champion", _outcomes(0.50, 4000, 1))
    a = _arm("a", _outcomes(0.46, 4000, 2), seed=2)
    b = _arm("b", _outcomes(0.42, 4000, 3), seed=3)
    d = _decide(champion, a, b)
    assert [c.challenger for c in d.comparisons] == ["a", "b"]
    assert all(c.p_holm >= c.test.p_value for c in d.comparisons)
    assert all(c.test.alpha == pytest.approx(0.025) for c in d.comparisons), "alpha / k"
    assert d.verdict == "promote"
    assert d.challenger == "b"


def test_label_coverage_that_differs_between_arms_is_flagged() -> None:
    d = _decide(
        _arm("champion", _outcomes(0.5, 4000, 1), units=5000),
        _arm("challenger", _outcomes(0.5, 3000, 2), units=5000),
    )
    assert d.coverage_flag is not None
    assert "labels reach challenger less often" in d.coverage_flag


def test_higher_is_better_for_accuracy() -> None:
    rng = np.random.default_rng(5)
    d = _decide(
        _arm("champion", rng.binomial(1, 0.70, 5000).astype(float)),
        _arm("challenger", rng.binomial(1, 0.76, 5000).astype(float)),
        metric="accuracy",
    )
    assert d.verdict == "promote"


# --- measuring logged requests ---------------------------------------------------------------


def test_record_loss_per_metric() -> None:
    binary = {"probability": 0.8, "label": 1}
    assert record_loss("log_loss", binary, 1) == pytest.approx(-math.log(0.8))
    assert record_loss("log_loss", binary, 0) == pytest.approx(-math.log(0.2))
    assert record_loss("brier", binary, 0) == pytest.approx(0.64)
    assert record_loss("accuracy", binary, 0) == 0.0
    assert record_loss("expected_cost", binary, 0, fn_cost=5.0, fp_cost=1.0) == 1.0
    assert (
        record_loss("expected_cost", {"probability": 0.1, "label": 0}, 1, fn_cost=5.0, fp_cost=1.0)
        == 5.0
    )
    multi = {"probabilities": {"a": 0.7, "b": 0.3}, "label": "a"}
    assert record_loss("log_loss", multi, "b") == pytest.approx(-math.log(0.3))
    assert record_loss("accuracy", multi, "a") == 1.0
    value = {"value": 2.0}
    assert record_loss("mse", value, 5.0) == 9.0
    assert record_loss("mae", value, 1.0) == 1.0
    assert record_loss("pinball", value, 5.0, quantile=0.9) == pytest.approx(2.7)
    with pytest.raises(ValueError, match="does not apply"):
        record_loss("mse", binary, 1)


def test_outcomes_are_aggregated_per_unit_not_per_request() -> None:
    ts = [T0 + timedelta(minutes=i) for i in range(5)]
    out = {"probability": 0.8, "label": 1}
    chunk = OutcomeChunk(
        unit_id=["u1", "u1", "u1", "u2", "u3"],
        variant=["champion", "champion", "champion", "champion", "challenger"],
        ts=ts,
        latency_ms=np.array([1.0, 2.0, 3.0, 10.0, 4.0]),
        outputs=[[out], [out, {"probability": 0.4, "label": 0}], [out], [out], [out]],
        labels=[[1], [1, 0], None, [0], None],
    )
    m = variant_metrics([chunk], "log_loss", failures=[("u4", "challenger", ts[4])])
    champion, challenger = m["champion"], m["challenger"]
    assert (champion.units, champion.requests, champion.labelled_units) == (2, 4, 2)
    u1 = np.mean([-math.log(0.8), np.mean([-math.log(0.8), -math.log(0.6)])])
    assert sorted(champion.outcome.tolist()) == pytest.approx(sorted([u1, -math.log(0.2)]))
    assert sorted(champion.latency_ms.tolist()) == [2.0, 10.0]
    assert champion.coverage == 1.0
    assert (challenger.units, challenger.requests, challenger.failed) == (2, 1, 1)
    assert sorted(challenger.error_rate.tolist()) == [0.0, 1.0]
    assert challenger.coverage == 0.0
    assert challenger.outcome.size == 0
    assert champion.first == ts[0]
    assert champion.last == ts[3]
    summary = challenger.summary()
    assert summary["error_rate"] == 0.5
    assert summary["metric_mean"] is None
