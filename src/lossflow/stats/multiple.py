"""Multiple-testing corrections: Holm (family-wise error) and Benjamini–Hochberg (false
discovery rate).

Holm (1979) controls the probability of any false rejection among ``m`` tests at ``alpha``
under any dependence; lossflow uses it where one wrong verdict is costly (an A/B arm against the
champion, a pair of losses in an offline comparison). Benjamini & Hochberg (1995) control the
expected share of false rejections at ``alpha`` for independent or positively dependent tests;
lossflow uses it across the features of a drift report, where many columns are tested at once.

Both return the adjusted p-values (monotone, capped at 1) and which hypotheses are rejected
(by the procedures' own thresholds, so a p-value exactly at one is rejected as statsmodels does).

Example:
    >>> rejected, adjusted = holm([0.01, 0.04, 0.03], alpha=0.05)
    >>> rejected.tolist(), adjusted.round(3).tolist()
    ([True, False, False], [0.03, 0.06, 0.06])
    >>> benjamini_hochberg([0.01, 0.04, 0.03], alpha=0.05)[0].tolist()
    [True, True, True]
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

BoolArray = npt.NDArray[np.bool_]
FloatArray = npt.NDArray[np.float64]


def _p_values(p_values: npt.ArrayLike, alpha: float) -> FloatArray:
    p = np.asarray(p_values, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"p_values must be a 1-D sequence; got shape {p.shape}")
    if np.isnan(p).any() or (p < 0).any() or (p > 1).any():
        raise ValueError("p_values must lie in [0, 1] (no NaN)")
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1; got {alpha}")
    return p


def holm(p_values: npt.ArrayLike, alpha: float = 0.05) -> tuple[BoolArray, FloatArray]:
    """Holm's step-down correction.

    Args:
        p_values: one p-value per hypothesis.
        alpha: family-wise error rate.

    Returns:
        ``(rejected, adjusted)`` in the order of ``p_values``.

    Raises:
        ValueError: a p-value outside [0, 1], or ``alpha`` outside (0, 1).
    """
    p = _p_values(p_values, alpha)
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p, kind="stable")
    stepped = np.maximum.accumulate((m - np.arange(m)) * p[order])
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    # Step down on the thresholds themselves (p_(i) <= alpha / (m - i + 1)), not on the
    # adjusted values, whose rounding can differ from alpha at the boundary.
    below = p[order] <= alpha / (m - np.arange(m))
    passed = int(np.argmin(below)) if not below.all() else m
    rejected = np.zeros(m, dtype=bool)
    rejected[order[:passed]] = True
    return rejected, adjusted


def benjamini_hochberg(
    p_values: npt.ArrayLike, alpha: float = 0.05
) -> tuple[BoolArray, FloatArray]:
    """The Benjamini–Hochberg step-up procedure.

    Args:
        p_values: one p-value per hypothesis.
        alpha: false discovery rate.

    Returns:
        ``(rejected, adjusted)`` in the order of ``p_values``.

    Raises:
        ValueError: a p-value outside [0, 1], or ``alpha`` outside (0, 1).
    """
    p = _p_values(p_values, alpha)
    m = p.size
    if m == 0:
        return np.zeros(0, dtype=bool), np.zeros(0)
    order = np.argsort(p, kind="stable")
    ranked = p[order] * m / np.arange(1, m + 1)
    stepped = np.minimum.accumulate(ranked[::-1])[::-1]
    adjusted = np.empty(m)
    adjusted[order] = np.minimum(stepped, 1.0)
    # Step up on the thresholds themselves: the largest k with p_(k) <= k alpha / m.
    below = np.flatnonzero(p[order] <= np.arange(1, m + 1) * alpha / m)
    rejected = np.zeros(m, dtype=bool)
    if below.size:
        rejected[order[: below[-1] + 1]] = True
    return rejected, adjusted
