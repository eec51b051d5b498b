"""An always-valid test of a difference in means, for A/B tests that are looked at every hour.

Checking a fixed-horizon t-test at every look inflates its false positives several-fold. This
test stays valid under continuous monitoring: its p-value and confidence interval hold at any
stopping time, however the looks are chosen.

It is the anytime-valid t-test of Lindon, Ham, Tingley & Bojinov (2022, "Anytime-valid linear
models and regression adjusted causal inference") for the coefficient of the treatment indicator
in ``y = b0 + b1 * treatment``, i.e. the difference of the means: with ``t`` the t-statistic,
``nu = n - 3`` degrees of freedom, ``z2 = n_c n_t / n`` and prior scale ``phi``,
``log BF = 1/2 log r + (nu + 1) / 2 [log(1 + t²/nu) - log(1 + r t²/nu)]`` with
``r = phi / (phi + z2)``; the p-value is ``min(1, 1 / BF)`` and the interval inverts the test.
``variance="pooled"`` is the paper's (and the ``savvi`` package's) homoskedastic form;
``variance="welch"`` (the default) takes the heteroskedasticity-robust standard error
``sqrt(s_c²/n_c + s_t²/n_t)``, asymptotically valid when the arms differ in size and spread
(unequal traffic weights).

Outcomes are **per randomisation unit** (a user's mean log loss over their requests): units are
independent, requests of one unit are not. :func:`unit_means` does that aggregation.

Example:
    >>> rng = np.random.default_rng(0)
    >>> result = always_valid_test(rng.normal(0, 1, 2000), rng.normal(0.3, 1, 2000))
    >>> result.decision, result.ci_low > 0
    ('reject', True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]
Variance = Literal["welch", "pooled"]
DEFAULT_PHI = 1.0


@dataclass(frozen=True)
class SequentialResult:
    """An always-valid comparison of treatment against control (``treatment - control``).

    Attributes:
        estimate: the difference of the means.
        ci_low: lower end of the ``1 - alpha`` always-valid confidence interval.
        ci_high: upper end.
        p_value: the always-valid p-value of "no difference" (``margin`` 0).
        decision: ``reject`` (the interval excludes 0) or ``continue``.
        n_control: units in control.
        n_treatment: units in treatment.
        alpha: the error rate the interval and decision hold at.
    """

    estimate: float
    ci_low: float
    ci_high: float
    p_value: float
    decision: Literal["reject", "continue"]
    n_control: int
    n_treatment: int
    alpha: float


def _log_bf(t2: float, nu: float, phi: float, z2: float) -> float:
    r = phi / (phi + z2)
    return float(0.5 * np.log(r) + 0.5 * (nu + 1) * (np.log1p(t2 / nu) - np.log1p(r * t2 / nu)))


def always_valid_test(
    control: npt.ArrayLike,
    treatment: npt.ArrayLike,
    alpha: float = 0.05,
    *,
    phi: float = DEFAULT_PHI,
    variance: Variance = "welch",
) -> SequentialResult:
    """Always-valid test and interval of ``mean(treatment) - mean(control)``.

    Args:
        control: per-unit outcomes of the control arm (the champion).
        treatment: per-unit outcomes of the treatment arm (a challenger).
        alpha: error rate of the interval and of the decision.
        phi: prior scale of the mixture (larger: tighter late, looser early).
        variance: ``welch`` (robust to unequal spreads) or ``pooled`` (the paper's).

    Raises:
        ValueError: ``alpha`` outside (0, 1), a non-positive ``phi``, or outcomes that are not
            finite.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie strictly between 0 and 1; got {alpha}")
    if phi <= 0:
        raise ValueError(f"phi must be positive; got {phi}")
    c = np.asarray(control, dtype=np.float64).ravel()
    t = np.asarray(treatment, dtype=np.float64).ravel()
    if not (np.isfinite(c).all() and np.isfinite(t).all()):
        raise ValueError("per-unit outcomes must be finite numbers")
    n_c, n_t = c.size, t.size
    n = n_c + n_t
    if n_c < 2 or n_t < 2 or n - 3 <= 0:
        return SequentialResult(float("nan"), -np.inf, np.inf, 1.0, "continue", n_c, n_t, alpha)
    estimate = float(t.mean() - c.mean())
    ss = float(((c - c.mean()) ** 2).sum() + ((t - t.mean()) ** 2).sum())
    sigma2 = ss / (n - 2)
    if variance == "pooled":
        se = float(np.sqrt(sigma2 * (1 / n_c + 1 / n_t)))
    else:
        se = float(np.sqrt(c.var(ddof=1) / n_c + t.var(ddof=1) / n_t))
    nu = n - 3.0
    z2 = n_c * n_t / n
    if se == 0:
        decided = estimate != 0
        return SequentialResult(
            estimate, estimate, estimate, 0.0 if decided else 1.0,
            "reject" if decided else "continue", n_c, n_t, alpha,
        )  # fmt: skip
    p_value = float(min(1.0, np.exp(-_log_bf((estimate / se) ** 2, nu, phi, z2))))
    r = phi / (phi + z2)
    root = (r * alpha**2) ** (1 / (nu + 1))
    radius = se * float(np.sqrt(nu * (1 - root) / max(root - r, 1e-300)))
    low, high = estimate - radius, estimate + radius
    decision: Literal["reject", "continue"] = "reject" if low > 0 or high < 0 else "continue"
    return SequentialResult(estimate, low, high, p_value, decision, n_c, n_t, alpha)


def unit_means(units: Sequence[str] | npt.ArrayLike, values: npt.ArrayLike) -> FloatArray:
    """Mean of ``values`` per unit (the outcome an A/B test compares), in no particular order.

    Example:
        >>> unit_means(["a", "b", "a"], [1.0, 5.0, 3.0]).tolist()
        [2.0, 5.0]
    """
    keys = np.asarray(units)
    v = np.asarray(values, dtype=np.float64)
    if keys.shape != v.shape:
        raise ValueError("units and values need one entry per request")
    uniques, index = np.unique(keys, return_inverse=True)
    sums = np.bincount(index, weights=v, minlength=uniques.size)
    counts = np.bincount(index, minlength=uniques.size)
    means: FloatArray = sums / counts
    return means
