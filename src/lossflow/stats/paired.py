r"""Paired comparison of two learners on the same resampled folds: the Nadeau–Bengio corrected
resampled t-test, and the interval of one learner's mean fold score under the same correction.

Scores from cross-validation are not independent: every two folds share most of their training
rows, so the fold differences are positively correlated and the naive paired t-test (variance of
the mean ``s² / J``) is far too confident. Nadeau & Bengio ("Inference for the Generalization
Error", Machine Learning 52, 2003, eq. 6 and section 5) replace the variance of the mean of ``J``
resampled differences by

.. math:: \left(\frac{1}{J} + \frac{n_2}{n_1}\right) s^2

where ``n_1`` is the number of training rows and ``n_2`` the number of test rows of one fold
(for 10-fold CV ``n_2 / n_1 = 1/9``; at 10 x 10 CV the naive standard error is then
``sqrt((1/100 + 1/9) / (1/100)) ≈ 3.5`` times too small). The statistic is referred to Student's
t with ``J - 1`` degrees of freedom. Bouckaert & Frank (PAKDD 2004) showed it keeps its nominal
type-I error on repeated CV where the naive test rejects a true null most of the time.

Example:
    >>> test = corrected_resampled_ttest([0.81, 0.80, 0.83], [0.80, 0.80, 0.80],
    ...                                  n_train=200, n_test=100)
    >>> round(test.mean_difference, 4), round(test.t, 3), test.df
    (0.0133, 0.956, 2)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Interval:
    """A mean with its two-sided confidence interval.

    Attributes:
        mean: the mean of the fold values.
        low: lower end of the interval.
        high: upper end of the interval.
        confidence: the interval's nominal coverage, e.g. 0.95.
    """

    mean: float
    low: float
    high: float
    confidence: float


@dataclass(frozen=True)
class CorrectedTTest:
    """The Nadeau–Bengio corrected resampled t-test of ``a - b`` (and the naive one beside it).

    Attributes:
        mean_difference: mean of the fold differences ``a - b``.
        std: sample standard deviation (ddof 1) of the fold differences.
        standard_error: the corrected standard error of the mean difference.
        n_folds: ``J``, the number of paired fold scores (folds x repeats).
        df: degrees of freedom, ``J - 1``.
        t: the corrected statistic.
        p_value: its two-sided p-value.
        ci_low: lower end of the corrected interval of the mean difference.
        ci_high: upper end of the corrected interval of the mean difference.
        confidence: coverage of the interval (``1 - alpha``).
        naive_t: the naive paired t statistic (variance of the mean ``s² / J``).
        naive_p_value: its two-sided p-value.
        min_detectable_effect: the smallest true mean difference the design detects with
            probability ``power`` at level ``alpha`` (:func:`min_detectable_effect`).
    """

    mean_difference: float
    std: float
    standard_error: float
    n_folds: int
    df: int
    t: float
    p_value: float
    ci_low: float
    ci_high: float
    confidence: float
    naive_t: float
    naive_p_value: float
    min_detectable_effect: float


def _scores(name: str, values: npt.ArrayLike) -> FloatArray:
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"{name} must be a 1-D sequence of fold scores; got shape {arr.shape}")
    if arr.size < 2:
        raise ValueError(f"{name} needs at least 2 fold scores; got {arr.size}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds NaN or infinite fold scores")
    return arr


def _check_sizes(n_train: float, n_test: float) -> None:
    for name, value in (("n_train", n_train), ("n_test", n_test)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be a positive number of rows; got {value!r}")


def _check_probability(name: str, value: float) -> None:
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {value}")


def corrected_standard_error(
    values: npt.ArrayLike, *, n_train: float, n_test: float
) -> tuple[float, float]:
    """The mean of fold values and its Nadeau–Bengio corrected standard error.

    Args:
        values: one value per fold (a score, or a paired difference of scores).
        n_train: training rows of one fold (the mean over folds when they differ).
        n_test: test rows of one fold.

    Returns:
        ``(mean, se)`` with ``se = sqrt((1/J + n_test/n_train) * s²)``.

    Raises:
        ValueError: fewer than 2 values, non-finite values, or sizes that are not positive.
    """
    arr = _scores("values", values)
    _check_sizes(n_train, n_test)
    variance = float(arr.var(ddof=1))
    return float(arr.mean()), math.sqrt((1.0 / arr.size + n_test / n_train) * variance)


def corrected_interval(
    values: npt.ArrayLike, *, n_train: float, n_test: float, confidence: float = 0.95
) -> Interval:
    """The mean of one learner's fold scores with its corrected t interval.

    Raises:
        ValueError: as :func:`corrected_standard_error`, or ``confidence`` outside (0, 1).
    """
    _check_probability("confidence", confidence)
    mean, se = corrected_standard_error(values, n_train=n_train, n_test=n_test)
    df = np.asarray(values).size - 1
    half = float(stats.t.ppf(0.5 + confidence / 2.0, df)) * se
    return Interval(mean, mean - half, mean + half, confidence)


def min_detectable_effect(standard_error: float, df: int, alpha: float, power: float) -> float:
    """The smallest true mean difference a two-sided level-``alpha`` t-test with this standard
    error and ``df`` degrees of freedom detects with probability ``power``:
    ``(t_{1-alpha/2, df} + t_{power, df}) * se`` (the usual normal-approximation power formula
    with t quantiles).

    Raises:
        ValueError: ``alpha`` or ``power`` outside (0, 1), or ``df < 1``.
    """
    _check_probability("alpha", alpha)
    _check_probability("power", power)
    if df < 1:
        raise ValueError(f"df must be at least 1; got {df}")
    quantiles = float(stats.t.ppf(1.0 - alpha / 2.0, df)) + float(stats.t.ppf(power, df))
    return quantiles * standard_error


def _two_sided(mean: float, se: float, df: int) -> tuple[float, float]:
    """``(t, p)``; zero variance gives ``t = ±inf, p = 0`` unless the mean is 0 too (``0, 1``)."""
    if se == 0.0:
        return (0.0, 1.0) if mean == 0.0 else (math.copysign(math.inf, mean), 0.0)
    t = mean / se
    return t, float(2.0 * stats.t.sf(abs(t), df))


def corrected_resampled_ttest(
    a: npt.ArrayLike,
    b: npt.ArrayLike,
    *,
    n_train: float,
    n_test: float,
    alpha: float = 0.05,
    power: float = 0.8,
) -> CorrectedTTest:
    """Test whether two learners scored on the same folds differ in their mean score.

    Args:
        a: learner A's score on each fold (folds x repeats, in a fixed order).
        b: learner B's score on the same folds, in the same order.
        n_train: training rows of one fold (the mean over folds when they differ).
        n_test: test rows of one fold.
        alpha: level of the interval (``1 - alpha``) and of the minimum detectable effect.
        power: power at which :attr:`CorrectedTTest.min_detectable_effect` is computed.

    Returns:
        The corrected test, its interval and the naive test for reference.

    Raises:
        ValueError: unequal lengths, fewer than 2 folds, non-finite scores, non-positive
            sizes, or ``alpha``/``power`` outside (0, 1).
    """
    first, second = _scores("a", a), _scores("b", b)
    if first.shape != second.shape:
        raise ValueError(
            f"a and b must hold one score per fold for the same folds; got {first.size} and "
            f"{second.size} scores"
        )
    _check_probability("alpha", alpha)
    _check_probability("power", power)
    diff = first - second
    mean, se = corrected_standard_error(diff, n_train=n_train, n_test=n_test)
    n = diff.size
    df = n - 1
    std = float(diff.std(ddof=1))
    t, p = _two_sided(mean, se, df)
    naive_t, naive_p = _two_sided(mean, std / math.sqrt(n), df)
    quantile = float(stats.t.ppf(1.0 - alpha / 2.0, df))
    return CorrectedTTest(
        mean_difference=mean,
        std=std,
        standard_error=se,
        n_folds=n,
        df=df,
        t=t,
        p_value=p,
        ci_low=mean - quantile * se,
        ci_high=mean + quantile * se,
        confidence=1.0 - alpha,
        naive_t=naive_t,
        naive_p_value=naive_p,
        min_detectable_effect=min_detectable_effect(se, df, alpha, power),
    )


@dataclass(frozen=True)
class PairedTTest:
    """The paired t-test of ``a - b`` on independent pairs (one per unit).

    Attributes:
        mean_difference: mean of ``a - b``.
        ci_low: lower end of its ``1 - alpha`` interval.
        ci_high: upper end.
        p_value: two-sided p-value of "no difference".
        n: pairs.
        confidence: the interval's coverage.
    """

    mean_difference: float
    ci_low: float
    ci_high: float
    p_value: float
    n: int
    confidence: float


def paired_ttest(a: npt.ArrayLike, b: npt.ArrayLike, *, alpha: float = 0.05) -> PairedTTest:
    """Student's paired t-test and interval of ``mean(a - b)`` for independent pairs.

    For two models scored on the same held-out rows: pair them per randomisation unit (a
    unit's mean loss under each model), so that pairs are independent. Unlike fold scores of
    cross-validation (:func:`corrected_resampled_ttest`), held-out units share no training rows.

    Raises:
        ValueError: unequal lengths, fewer than 2 pairs, non-finite values, ``alpha`` outside
            (0, 1).
    """
    first, second = _scores("a", a), _scores("b", b)
    if first.shape != second.shape:
        raise ValueError(f"a and b must be paired; got {first.size} and {second.size} values")
    _check_probability("alpha", alpha)
    diff = first - second
    n = diff.size
    mean = float(diff.mean())
    se = float(diff.std(ddof=1)) / math.sqrt(n)
    _, p = _two_sided(mean, se, n - 1)
    half = float(stats.t.ppf(1.0 - alpha / 2.0, n - 1)) * se
    return PairedTTest(mean, mean - half, mean + half, p, n, 1.0 - alpha)
