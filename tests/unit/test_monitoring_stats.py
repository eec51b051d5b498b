"""Monitoring's statistics against independent implementations (scipy, scikit-learn) and their
claimed error rates by seeded simulation."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats
from scipy.spatial import distance
from sklearn.metrics import average_precision_score, roc_auc_score

from lossflow.monitoring.distributions import CategoricalSummary, NumericSummary
from lossflow.monitoring.drift import (
    DriftMethods,
    chisquare_test,
    drift_report,
    jensenshannon,
    ks_test,
    psi,
    wasserstein_normed,
)
from lossflow.monitoring.performance import (
    estimated_binary_metrics,
    measured_metrics,
    point_metrics,
)
from lossflow.monitoring.prior import bbse_prior, prior_shift


def test_summaries_are_exact_until_they_must_sketch() -> None:
    rng = np.random.default_rng(11)
    x = np.round(rng.normal(size=50_000), 2)
    exact = NumericSummary.of(x)
    assert exact.exact
    np.testing.assert_array_equal(exact.raw(), np.sort(x))
    halves = NumericSummary.of(x[:20_000]).merge(NumericSummary.of(x[20_000:]))
    np.testing.assert_array_equal(halves.values, exact.values)
    np.testing.assert_array_equal(halves.counts, exact.counts)
    continuous = rng.normal(size=100_000)
    sketch = NumericSummary.of(continuous, max_distinct=1000, sketch_points=2001)
    assert not sketch.exact
    assert sketch.present == pytest.approx(100_000)
    grid = np.linspace(-3, 3, 61)
    cdf = np.cumsum(sketch.counts) / sketch.present
    at = np.searchsorted(sketch.values, grid, side="right") - 1
    empirical = np.searchsorted(np.sort(continuous), grid, side="right") / continuous.size
    assert np.max(np.abs(np.where(at >= 0, cdf[np.clip(at, 0, None)], 0) - empirical)) < 1e-3


@pytest.mark.parametrize("n", [500, 30_000])
def test_numeric_statistics_equal_scipy_on_the_raw_values(n: int) -> None:
    rng = np.random.default_rng(11)
    ref = np.round(rng.normal(50, 10, size=n), 1)
    cur = np.round(rng.normal(52, 11, size=n // 2), 1)
    r, c = NumericSummary.of(ref), NumericSummary.of(cur)
    expected = stats.wasserstein_distance(ref, cur) / np.std(ref)
    assert wasserstein_normed(r, c) == pytest.approx(expected, rel=1e-9)
    d, p = ks_test(r, c)
    scipy_result = stats.ks_2samp(ref, cur)
    assert d == pytest.approx(scipy_result.statistic, abs=1e-12)
    assert p == pytest.approx(scipy_result.pvalue, rel=1e-6, abs=1e-300)


def test_categorical_statistics_equal_scipy() -> None:
    rng = np.random.default_rng(11)
    ref_values = rng.choice(list("abcde"), p=[0.4, 0.3, 0.2, 0.05, 0.05], size=5000).tolist()
    cur_values = rng.choice(list("abcdf"), p=[0.3, 0.3, 0.2, 0.1, 0.1], size=3000).tolist()
    r, c = CategoricalSummary.of(ref_values), CategoricalSummary.of([*cur_values, None])
    keys = sorted(set(ref_values) | set(cur_values))
    rp = np.array([ref_values.count(k) for k in keys]) / len(ref_values)
    cp = np.array([cur_values.count(k) for k in keys]) / len(cur_values)
    assert jensenshannon(r, c) == pytest.approx(distance.jensenshannon(rp, cp), rel=1e-12)
    assert chisquare_test(r, c) == 0.0, "a category the reference never saw"
    same = CategoricalSummary.of(rng.choice(list("abcde"), size=3000).tolist())
    observed = np.array([same.counts.get(k, 0) for k in sorted(r.counts)])
    expected = np.array([r.counts[k] for k in sorted(r.counts)]) * same.present / r.present
    assert chisquare_test(r, same) == pytest.approx(stats.chisquare(observed, expected).pvalue)


def test_psi_is_zero_for_identical_and_grows_with_the_shift() -> None:
    rng = np.random.default_rng(11)
    base = NumericSummary.of(np.round(rng.normal(size=20_000), 2))
    assert psi(base, base) == pytest.approx(0.0, abs=1e-12)
    small = psi(base, NumericSummary.of(np.round(rng.normal(0.2, 1, size=20_000), 2)))
    large = psi(base, NumericSummary.of(np.round(rng.normal(1.0, 1, size=20_000), 2)))
    assert 0 < small < large


def test_a_column_drifts_only_with_effect_and_corrected_significance() -> None:
    rng = np.random.default_rng(11)
    n = 200_000
    ref = {"tiny": NumericSummary.of(np.round(rng.normal(0, 1, n), 2))}
    cur = {"tiny": NumericSummary.of(np.round(rng.normal(0.03, 1, n), 2))}
    report = drift_report(ref, cur, DriftMethods())
    column = report.column("tiny")
    assert column.p_adjusted < 1e-6, "at this size the test is significant..."
    assert not column.drifted, "...but the effect (0.03 sd) is below the 0.1 threshold"
    small = {"big": NumericSummary.of(rng.normal(0, 1, 15))}
    moved = {"big": NumericSummary.of(rng.normal(0.5, 1, 15))}
    noisy = drift_report(small, moved, DriftMethods()).column("big")
    assert noisy.effect > 0.1
    assert not noisy.drifted or noisy.p_adjusted <= 0.05


def test_dataset_drift_false_alarm_rate_under_no_drift() -> None:
    # 400 windows of 2,000 rows drawn from the reference distribution itself, 10 features:
    # the dataset-drift verdict (>= 50% of features drifting) must fire in at most 5% of them;
    # a single column's false alarm (effect >= 0.1 and BH-significant) is rarer still.
    rng = np.random.default_rng(11)
    methods = DriftMethods()
    ref = {f"x{i}": NumericSummary.of(np.round(rng.normal(size=50_000), 2)) for i in range(10)}
    alarms = column_alarms = 0
    windows = 400
    for _ in range(windows):
        cur = {k: NumericSummary.of(np.round(rng.normal(size=2000), 2)) for k in ref}
        report = drift_report(ref, cur, methods)
        alarms += report.dataset_drift
        column_alarms += sum(c.drifted for c in report.columns)
    assert alarms / windows <= 0.05
    assert column_alarms / (windows * 10) <= 0.05


def test_point_metrics_equal_scikit_learn_and_intervals_cover() -> None:
    rng = np.random.default_rng(11)
    n = 4000
    p = rng.uniform(0.01, 0.99, n)
    y = (rng.uniform(size=n) < p).astype(np.float64)
    points = point_metrics("binary", y, p, 0.5)
    assert points["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    assert points["pr_auc"] == pytest.approx(average_precision_score(y, p))
    estimates = measured_metrics("binary", y, p, 0.5, resamples=300, seed=1)
    for name in ("roc_auc", "pr_auc", "log_loss", "brier", "accuracy"):
        e = estimates[name]
        assert e.low <= e.value <= e.high, name
    # the calibration error is biased upwards, so its resamples sit above the point estimate
    assert estimates["ece"].high > estimates["ece"].value
    # the bootstrap's weighted AUC with unit weights is scikit-learn's AUC
    from lossflow.monitoring.performance import _weighted_auc, _weighted_average_precision

    order = np.argsort(p, kind="stable")
    ones = np.ones((1, n))
    assert _weighted_auc(p[order], y[order], ones)[0] == pytest.approx(roc_auc_score(y, p))
    assert _weighted_average_precision(p[order], y[order], ones)[0] == pytest.approx(
        average_precision_score(y, p)
    )


def test_auc_interval_coverage_holds_in_simulation() -> None:
    # 200 windows of 1,500 labelled rows from a model whose population AUC is known: the 95%
    # percentile-bootstrap interval covers it in at least 90% of windows (binomial 3-sigma of
    # 0.95 at 200 windows is 0.046).
    def draw(n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.uniform(size=n) < 0.3).astype(np.float64)
        score = rng.normal(loc=y * 1.2, scale=1.0)
        return y, 1 / (1 + np.exp(-score))

    rng = np.random.default_rng(3)
    y_pop, p_pop = draw(400_000, rng)
    truth = roc_auc_score(y_pop, p_pop)
    covered = 0
    for k in range(200):
        y, p = draw(1500, rng)
        auc = measured_metrics("binary", y, p, 0.5, resamples=200, seed=k)["roc_auc"]
        covered += auc.low <= truth <= auc.high
    assert covered / 200 >= 0.90


def test_cbpe_matches_the_measured_metrics_of_a_calibrated_model() -> None:
    rng = np.random.default_rng(11)
    p = rng.beta(2, 5, 200_000)
    y = (rng.uniform(size=p.size) < p).astype(np.float64)  # calibrated by construction
    values, counts = np.unique(np.round(p, 4), return_counts=True)
    estimated = estimated_binary_metrics(values, counts.astype(np.float64), 0.5)
    measured = point_metrics("binary", y, np.round(p, 4), 0.5)
    for name in ("roc_auc", "accuracy", "log_loss", "brier"):
        assert estimated[name] == pytest.approx(measured[name], abs=0.005), name


def test_bbse_recovers_a_shifted_prior_and_its_interval_covers_it() -> None:
    # Source prior 0.25 positive, target 0.10, the same P(x | y) (pure label shift). Over 60
    # simulated windows the estimate centres on 0.10 and its 95% interval covers 0.10 in at least
    # 85% of them (binomial 3-sigma of 0.95 at 60 windows: 0.084).
    rng = np.random.default_rng(5)

    def sample(n: int, positive: float) -> tuple[np.ndarray, np.ndarray]:
        y = (rng.uniform(size=n) < positive).astype(np.int64)
        predicted = (rng.normal(loc=y * 1.5, scale=1.0) > 1.0).astype(np.int64)
        return y, predicted

    estimates, covered, shifted = [], 0, 0
    for k in range(60):
        y_val, pred_val = sample(20_000, 0.25)
        confusion = np.zeros((2, 2))
        np.add.at(confusion, (pred_val, y_val), 1)
        _, pred_target = sample(20_000, 0.10)
        counts = np.bincount(pred_target, minlength=2)
        estimates.append(bbse_prior(confusion, counts)[1])
        shift = prior_shift(
            ["0", "1"],
            [0.75, 0.25],
            {},
            confusion,
            {"0": int(counts[0]), "1": int(counts[1])},
            min_labels=200,
            alpha=0.01,
            tolerance=0.03,
            resamples=200,
            seed=k,
        )
        assert shift.basis == "predictions"
        assert shift.estimated_low is not None
        assert shift.estimated_high is not None
        covered += shift.estimated_low[1] <= 0.10 <= shift.estimated_high[1]
        shifted += shift.shifted
    assert float(np.mean(estimates)) == pytest.approx(0.10, abs=0.005)
    assert covered / 60 >= 0.85
    assert shifted / 60 >= 0.95, "a 15-point drop of the positive share is seen"


def test_observed_prior_shift_uses_the_binomial_test() -> None:
    shift = prior_shift(
        ["0", "1"], [0.75, 0.25], {"0": 870, "1": 130}, None, {}, min_labels=200,
        alpha=0.01, tolerance=0.03,
    )  # fmt: skip
    assert shift.basis == "labels"
    assert shift.p_value == pytest.approx(stats.binomtest(130, 1000, 0.25).pvalue)
    assert shift.shifted
    same = prior_shift(
        ["0", "1"], [0.75, 0.25], {"0": 745, "1": 255}, None, {}, min_labels=200,
        alpha=0.01, tolerance=0.03,
    )  # fmt: skip
    assert not same.shifted
