"""Label-prior shift: has the share of each class moved since training?

- **Observed**, on labelled feedback: the window's class shares against the training prior,
  tested with an exact binomial test (two classes) or Pearson's chi-squared test (more).
- **Estimated**, before labels arrive, by black-box shift estimation (Lipton, Wang & Smola,
  ICML 2018): with ``C[i, j] = P(predicted i, true j)`` measured on the validation split and
  ``mu[i]`` the share of the window's rows predicted ``i``, the importance weights of the classes
  solve ``C w = mu`` and the window's prior is ``q = w * p_val`` (clipped at 0, normalised). It
  assumes pure label shift (``P(x | y)`` unchanged) and an invertible confusion matrix. Its
  interval comes from resampling both the validation confusion counts and the window's predicted
  counts.

A shift is reported when the observed shares differ significantly (``alpha``) and by more than
``tolerance`` in some class, or, with too few labels, when the estimate's interval lies beyond
the training prior by more than ``tolerance``. This is the case ``logit_adjusted`` and
``class_balanced`` exist for.

Example:
    >>> confusion = np.array([[70.0, 10.0], [5.0, 15.0]])  # validation: predicted x true
    >>> q = bbse_prior(confusion, np.array([60.0, 40.0]))   # window: predicted counts
    >>> [round(float(v), 3) for v in q]
    [0.375, 0.625]
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from scipy import stats

FloatArray = npt.NDArray[np.float64]


def bbse_prior(confusion: npt.ArrayLike, predicted: npt.ArrayLike) -> FloatArray:
    """The window's class prior estimated from its predicted-label counts.

    Args:
        confusion: ``(K, K)`` counts of (predicted, true) on the validation split.
        predicted: ``(K,)`` counts of predicted labels in the window.

    Raises:
        ValueError: the shapes disagree or the confusion matrix is singular (a class the model
            never predicts).
    """
    c = np.asarray(confusion, dtype=np.float64)
    mu = np.asarray(predicted, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1] or mu.shape != (c.shape[0],):
        raise ValueError(f"confusion must be (K, K) and predicted (K,); got {c.shape}, {mu.shape}")
    joint = c / c.sum()
    source_prior = joint.sum(axis=0)
    try:
        weights = np.linalg.solve(joint, mu / mu.sum())
    except np.linalg.LinAlgError as err:
        raise ValueError(
            "the validation confusion matrix is singular (the model never predicts some class); "
            "black-box shift estimation needs every class predicted"
        ) from err
    q = np.clip(weights, 0.0, None) * source_prior
    prior: FloatArray = q / q.sum() if q.sum() > 0 else source_prior
    return prior


@dataclass(frozen=True)
class PriorShift:
    """The class prior of a window against training.

    Attributes:
        classes: class names in order.
        reference: training prior.
        basis: ``labels`` (observed), ``predictions`` (estimated) or ``none`` (neither possible).
        observed: the labelled rows' shares (``None`` without enough labels).
        labelled: labelled rows.
        p_value: the observed shares' test against the training prior.
        estimated: the black-box shift estimate (``None`` when it cannot be computed).
        estimated_low: lower ends of its interval per class.
        estimated_high: upper ends.
        change: the largest absolute change of a class share (on the basis used).
        shifted: the verdict (see the module).
        note: why a basis was not available.
    """

    classes: list[str]
    reference: list[float]
    basis: Literal["labels", "predictions", "none"]
    observed: list[float] | None
    labelled: int
    p_value: float | None
    estimated: list[float] | None
    estimated_low: list[float] | None
    estimated_high: list[float] | None
    change: float
    shifted: bool
    note: str | None = None

    @property
    def new_prior(self) -> list[float] | None:
        """The window's prior on the basis used."""
        return self.observed if self.basis == "labels" else self.estimated

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return dict(self.__dict__)


def _observed_test(counts: FloatArray, reference: FloatArray) -> float:
    n = int(counts.sum())
    if reference.size == 2:
        return float(stats.binomtest(int(counts[1]), n, float(reference[1])).pvalue)
    return float(stats.chisquare(counts, reference * n).pvalue)


def prior_shift(
    classes: Sequence[str],
    reference: Sequence[float],
    label_counts: Mapping[str, int],
    confusion: npt.ArrayLike | None,
    predicted_counts: Mapping[str, int],
    *,
    min_labels: int,
    alpha: float,
    tolerance: float,
    resamples: int = 500,
    confidence: float = 0.95,
    seed: int = 0,
) -> PriorShift:
    """Judge the window's class prior (see the module).

    Args:
        classes: class names (``["0", "1"]`` for binary).
        reference: the training prior, one share per class.
        label_counts: labelled rows per class in the window.
        confusion: validation ``(predicted, true)`` counts, or ``None`` (no estimate).
        predicted_counts: the window's rows per predicted class.
        min_labels: labelled rows needed to judge on labels.
        alpha: significance of the observed test.
        tolerance: smallest change of a class share that counts.
        resamples: bootstrap resamples of the estimate's interval.
        confidence: the interval's coverage.
        seed: the resampling seed.
    """
    names = [str(c) for c in classes]
    ref = np.asarray(reference, dtype=np.float64)
    counts = np.array([label_counts.get(c, 0) for c in names], dtype=np.float64)
    labelled = int(counts.sum())
    observed = p_value = None
    if labelled >= min_labels:
        observed = (counts / labelled).tolist()
        p_value = _observed_test(counts, ref)
    estimated = low = high = None
    note = None
    predicted = np.array([predicted_counts.get(c, 0) for c in names], dtype=np.float64)
    if confusion is not None and predicted.sum() > 0:
        try:
            estimated, low, high = _estimate(
                np.asarray(confusion, np.float64), predicted, resamples, confidence, seed
            )
        except ValueError as err:
            note = str(err)
    if observed is not None and p_value is not None:
        change = float(np.max(np.abs(np.asarray(observed) - ref)))
        shifted = p_value <= alpha and change > tolerance
        basis: Literal["labels", "predictions", "none"] = "labels"
    elif estimated is not None and low is not None and high is not None:
        change = float(np.max(np.abs(np.asarray(estimated) - ref)))
        beyond = np.maximum(np.asarray(low) - ref, ref - np.asarray(high))
        shifted = bool(np.max(beyond) > tolerance)
        basis = "predictions"
    else:
        change, shifted, basis = 0.0, False, "none"
        note = note or "no labels and no validation confusion matrix"
    return PriorShift(
        classes=names,
        reference=ref.tolist(),
        basis=basis,
        observed=observed,
        labelled=labelled,
        p_value=p_value,
        estimated=estimated,
        estimated_low=low,
        estimated_high=high,
        change=change,
        shifted=bool(shifted),
        note=note,
    )


def _estimate(
    confusion: FloatArray, predicted: FloatArray, resamples: int, confidence: float, seed: int
) -> tuple[list[float], list[float], list[float]]:
    point = bbse_prior(confusion, predicted)
    rng = np.random.default_rng(seed)
    n_val, n_win = int(confusion.sum()), int(predicted.sum())
    flat = confusion.ravel() / confusion.sum()
    draws = []
    for _ in range(resamples):
        c = rng.multinomial(n_val, flat).reshape(confusion.shape).astype(np.float64)
        mu = rng.multinomial(n_win, predicted / n_win).astype(np.float64)
        try:
            draws.append(bbse_prior(c, mu))
        except ValueError:
            continue
    if not draws:
        return point.tolist(), point.tolist(), point.tolist()
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(np.vstack(draws), [tail, 100 - tail], axis=0)
    return point.tolist(), low.tolist(), high.tolist()
