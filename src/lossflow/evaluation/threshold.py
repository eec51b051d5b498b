"""The binary decision threshold, chosen on the validation split (F1- or cost-optimal)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from lossflow.evaluation.metrics import (
    FloatArray,
    IntArray,
    _binary_inputs,
    _costs,
    _require_both_classes,
)


@dataclass(frozen=True)
class ThresholdChoice:
    """A binary decision threshold chosen on the validation split.

    Attributes:
        threshold: predict positive iff ``prob >= threshold``.
        criterion: ``"f1"`` (maximised F1) or ``"cost"`` (minimised misclassification cost).
        value: the F1 at ``threshold``, or the expected cost per row
            ``(fn_cost * FN + fp_cost * FP) / N`` at ``threshold``.
    """

    threshold: float
    criterion: Literal["f1", "cost"]
    value: float


def _counts_by_threshold(
    y: IntArray, prob: FloatArray
) -> tuple[FloatArray, IntArray, IntArray, IntArray]:
    """Confusion counts at every distinct ``prob`` value used as a threshold.

    Returns the thresholds in ascending order (the same candidates as
    ``sklearn.metrics.precision_recall_curve``) and, for each, ``(tp, fp, fn)`` under the rule
    ``prob >= threshold``. One sort and a cumulative sum; counts are exact integers, so equal
    scores compare equal and ties resolve deterministically.
    """
    order = np.argsort(prob, kind="stable")
    sorted_prob, sorted_y = prob[order], y[order]
    thresholds = np.unique(sorted_prob)
    below = np.searchsorted(sorted_prob, thresholds, side="left")  # rows predicted negative
    positives_below = np.concatenate(([0], np.cumsum(sorted_y)))[below]
    n_pos = int(sorted_y.sum())
    n_neg = y.shape[0] - n_pos
    fn = positives_below.astype(np.int64)
    tp = n_pos - fn
    fp = n_neg - (below - fn)
    return thresholds, tp.astype(np.int64), fp.astype(np.int64), fn


def choose_threshold(
    y_true: npt.ArrayLike,
    prob: npt.ArrayLike,
    *,
    fn_cost: float | None = None,
    fp_cost: float | None = None,
) -> ThresholdChoice:
    """Choose the binary decision threshold on the validation split.

    The rule is **predict positive iff** ``prob >= threshold``. Candidates are every distinct
    value of ``prob`` (as in ``precision_recall_curve``); for the cost criterion also the
    threshold just above ``max(prob)`` (``numpy.nextafter``), which predicts no positives and
    may exceed 1. Without costs the F1-optimal candidate is returned; with both costs the one
    minimising ``fn_cost * FN + fp_cost * FP``. Ties go to the smallest threshold. Both criteria
    are computed for all candidates at once from one sort (no loop over thresholds).

    Args:
        y_true: binary labels (0/1) of the validation split.
        prob: predicted probability of the positive class, same length.
        fn_cost: cost of one false negative; give both costs or neither.
        fp_cost: cost of one false positive.

    Returns:
        The threshold, the criterion used, and its F1 or expected cost per row at the threshold.

    Raises:
        ValueError: on invalid inputs, a single class in ``y_true``, or only one cost given.

    Example:
        >>> choose_threshold([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8])
        ThresholdChoice(threshold=0.4, criterion='f1', value=0.8)
        >>> choose_threshold([0, 0, 1, 1], [0.1, 0.6, 0.4, 0.8], fn_cost=1.0, fp_cost=5.0)
        ThresholdChoice(threshold=0.8, criterion='cost', value=0.25)
    """
    y, p = _binary_inputs(y_true, prob)
    costs = _costs(fn_cost, fp_cost)
    _require_both_classes(y, "choosing a threshold")
    thresholds, tp, fp, fn = _counts_by_threshold(y, p)
    if costs is None:
        f1 = 2.0 * tp / (2 * tp + fp + fn)  # denominator >= n_pos > 0
        best = int(np.argmax(f1))  # first maximum = smallest threshold
        return ThresholdChoice(float(thresholds[best]), "f1", float(f1[best]))
    n_pos = int(y.sum())
    above_max = np.nextafter(thresholds[-1], np.inf)
    candidates = np.append(thresholds, above_max)
    fn_all = np.append(fn, n_pos)
    fp_all = np.append(fp, 0)
    cost = costs[0] * fn_all + costs[1] * fp_all
    best = int(np.argmin(cost))
    return ThresholdChoice(float(candidates[best]), "cost", float(cost[best]) / y.shape[0])
