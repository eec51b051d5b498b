"""The A/B statistics against independent implementations (scipy; ``savvi``, the authors' own
anytime-valid inference package, as a test-only oracle) and their error rates by simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lossflow.stats.sequential import always_valid_test, unit_means
from lossflow.stats.srm import sequential_srm_test, srm_bayes_factor, srm_test


def test_srm_chi_squared_equals_scipy() -> None:
    counts, weights = [4_810, 5_190], [1.0, 1.0]
    expected = stats.chisquare(counts, [5_000, 5_000]).pvalue
    assert srm_test(counts, weights) == pytest.approx(expected, rel=1e-12)
    three = [3000, 2000, 5100]
    assert srm_test(three, [30, 20, 50]) == pytest.approx(
        stats.chisquare(three, np.array([0.3, 0.2, 0.5]) * sum(three)).pvalue
    )


def test_sequential_srm_equals_savvi_multinomial() -> None:
    from savvi.multinomial import Multinomial

    rng = np.random.default_rng(0)
    theta = np.array([0.5, 0.5])
    oracle = Multinomial(0.001, theta, k=100)
    counts = np.zeros(2, dtype=np.int64)
    for _ in range(20):
        batch = rng.multinomial(500, [0.49, 0.51])
        oracle.update(batch)
        counts += batch
        assert srm_bayes_factor(counts, [50, 50]) == pytest.approx(oracle.odds, rel=1e-9)
        assert sequential_srm_test(counts, [50, 50]) == pytest.approx(
            min(1.0, oracle.calculate_p_value()), rel=1e-9
        )


def test_the_always_valid_t_test_equals_savvi_linear_regression() -> None:
    from savvi.linear_regression import LinearRegression

    rng = np.random.default_rng(1)
    n = 3000
    arm = rng.integers(0, 2, size=n)
    y = rng.normal(loc=0.1 * arm, scale=1.0)
    oracle = LinearRegression(0.05, 2, phi=1.0)
    for yi, ti in zip(y, arm, strict=True):
        oracle.update(np.array([yi, 1.0, ti]))
    ci = oracle.calculate_conf_int()[1]
    p = oracle.calculate_p_value()[1]
    ours = always_valid_test(y[arm == 0], y[arm == 1], 0.05, phi=1.0, variance="pooled")
    assert ours.estimate == pytest.approx(oracle.beta[1], rel=1e-6)
    assert ours.p_value == pytest.approx(min(1.0, p), rel=1e-5)
    assert ours.ci_low == pytest.approx(ci[0], rel=1e-5)
    assert ours.ci_high == pytest.approx(ci[1], rel=1e-5)
    welch = always_valid_test(y[arm == 0], y[arm == 1], 0.05)
    assert welch.estimate == ours.estimate
    assert welch.ci_low == pytest.approx(ours.ci_low, rel=0.05), "equal spreads: close"


def _peeking(
    rng: np.random.Generator,
    experiments: int,
    looks: int,
    per_look: int,
    effect: float,
    scale_t: float = 1.0,
    share_t: float = 0.5,
) -> tuple[float, float]:
    """Share of experiments where the always-valid test, and a t-test, reject at some look."""
    ours = naive = 0
    for _ in range(experiments):
        n_t = int(per_look * looks * share_t)
        n_c = per_look * looks - n_t
        c = rng.normal(0, 1, n_c)
        t = rng.normal(effect, scale_t, n_t)
        hit_ours = hit_naive = False
        for k in range(1, looks + 1):
            cc, tt = c[: n_c * k // looks], t[: n_t * k // looks]
            if not hit_ours and always_valid_test(cc, tt, 0.05).decision == "reject":
                hit_ours = True
            if not hit_naive and stats.ttest_ind(cc, tt, equal_var=False).pvalue < 0.05:
                hit_naive = True
        ours += hit_ours
        naive += hit_naive
    return ours / experiments, naive / experiments


def test_continuous_monitoring_keeps_the_false_positive_rate_below_alpha() -> None:
    # 300 A/A experiments, 50 looks each: the always-valid test rejects in at most 5% (+ the
    # binomial 3-sigma margin of 0.038), the naive t-test checked at every look far more often.
    rng = np.random.default_rng(2)
    ours, naive = _peeking(rng, 300, 50, 40, effect=0.0)
    assert ours <= 0.05 + 0.038
    assert naive > 0.15


def test_unequal_arms_and_spreads_stay_valid_with_the_robust_variance() -> None:
    # 90/10 split, the small arm three times as spread: 300 A/A experiments, 30 looks.
    rng = np.random.default_rng(3)
    ours, _ = _peeking(rng, 300, 30, 60, effect=0.0, scale_t=3.0, share_t=0.1)
    assert ours <= 0.05 + 0.038


def test_a_real_effect_is_found() -> None:
    rng = np.random.default_rng(4)
    power, _ = _peeking(rng, 100, 20, 100, effect=0.3)
    assert power >= 0.9


def test_interval_coverage_at_a_fixed_look() -> None:
    rng = np.random.default_rng(5)
    covered = sum(
        (r := always_valid_test(rng.normal(0, 1, 500), rng.normal(0.2, 1, 500))).ci_low
        <= 0.2
        <= r.ci_high
        for _ in range(400)
    )
    assert covered / 400 >= 0.95  # an always-valid interval over-covers at any single look


def test_unit_means_aggregate_requests_of_one_unit() -> None:
    means = unit_means(["u1", "u2", "u1", "u3"], [1.0, 2.0, 3.0, 4.0])
    assert sorted(means.tolist()) == [2.0, 2.0, 4.0]
    with pytest.raises(ValueError, match="one entry per request"):
        unit_means(["a"], [1.0, 2.0])


@pytest.mark.parametrize(("alpha", "phi"), [(0.0, 1.0), (1.0, 1.0), (0.05, 0.0)])
def test_invalid_options_are_named(alpha: float, phi: float) -> None:
    with pytest.raises(ValueError, match=r"alpha|phi"):
        always_valid_test([1.0, 2.0, 3.0], [1.0, 2.0, 3.0], alpha, phi=phi)


def test_too_few_units_continue() -> None:
    result = always_valid_test([1.0], [2.0, 3.0])
    assert result.decision == "continue"
    assert result.p_value == 1.0
