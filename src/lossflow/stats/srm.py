"""Sample-ratio mismatch: are units reaching the variants in the configured proportions?

A mismatch means the assignment, the logging or the unit ids are broken, and then no metric
comparison between the variants means anything: an A/B test that fails it is not decided.

- :func:`srm_test`: Pearson's chi-squared test of the unit counts against the weights — valid
  when checked once.
- :func:`sequential_srm_test`: Lindon & Malek (2022)'s anytime-valid test: the Bayes factor of
  a Dirichlet-multinomial (prior ``Dirichlet(k * weights)``) against the multinomial with the
  configured weights. ``min(1, 1 / BF)`` is a p-value that stays valid however often the counts
  are checked (Ville's inequality), so a cron job may look every hour.

Example:
    >>> round(srm_test([5_100, 4_900], [50, 50]), 4)
    0.0455
    >>> sequential_srm_test([5_100, 4_900], [50, 50]) > 0.05  # not enough for an always-valid test
    True
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import stats
from scipy.special import gammaln, xlogy

DEFAULT_CONCENTRATION = 100.0


def _shares(counts: npt.ArrayLike, weights: npt.ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    n = np.asarray(counts, dtype=np.float64)
    w = np.asarray(weights, dtype=np.float64)
    if n.ndim != 1 or w.shape != n.shape or n.size < 2:
        raise ValueError(
            f"counts and weights need one entry per variant (at least two); got {n.shape}, "
            f"{w.shape}"
        )
    if (n < 0).any() or (w <= 0).any() or not np.isfinite(w).all():
        raise ValueError("counts must be >= 0 and weights > 0 (a variant with weight 0 is out)")
    return n, w / w.sum()


def srm_test(counts: npt.ArrayLike, weights: npt.ArrayLike) -> float:
    """p-value of the chi-squared test of ``counts`` (units per variant) against ``weights``.

    Raises:
        ValueError: mismatched lengths, negative counts or non-positive weights.
    """
    n, theta = _shares(counts, weights)
    total = n.sum()
    if total == 0:
        return 1.0
    return float(stats.chisquare(n, theta * total).pvalue)


def srm_bayes_factor(
    counts: npt.ArrayLike, weights: npt.ArrayLike, concentration: float = DEFAULT_CONCENTRATION
) -> float:
    """The Dirichlet-multinomial Bayes factor of mismatch against the configured weights."""
    n, theta = _shares(counts, weights)
    alpha = concentration * theta
    log_marginal = (
        gammaln(alpha.sum())
        - gammaln(alpha.sum() + n.sum())
        + (gammaln(alpha + n) - gammaln(alpha)).sum()
    )
    log_null = float(xlogy(n, theta).sum())
    return float(np.exp(min(log_marginal - log_null, 700.0)))


def sequential_srm_test(
    counts: npt.ArrayLike, weights: npt.ArrayLike, concentration: float = DEFAULT_CONCENTRATION
) -> float:
    """Anytime-valid p-value ``min(1, 1 / BF)`` of a sample-ratio mismatch.

    Raises:
        ValueError: mismatched lengths, negative counts or non-positive weights.
    """
    return min(1.0, 1.0 / srm_bayes_factor(counts, weights, concentration))
