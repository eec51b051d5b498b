"""Metrics per task, with their input checks. No matplotlib: monitoring and A/B analysis import
exactly this.

Inputs are numpy arrays (or anything ``numpy.asarray`` accepts) of model outputs that are already
probabilities or predictions, never logits. Every function validates its inputs and raises
``ValueError`` naming the problem: mismatched lengths, non-finite predictions, probabilities
outside [0, 1], labels that are not class indices, or a single class where AUC is undefined.

Binary decisions follow one rule everywhere: **predict positive iff** ``prob >= threshold``.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_pinball_loss,
    ndcg_score,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    root_mean_squared_error,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

NDCG_K = 10
# Rows of a multiclass probability matrix must sum to 1 within this tolerance (float32 softmax
# outputs are off by a few 1e-7; a matrix of logits or unnormalised scores is off by far more).
_ROW_SUM_ATOL = 1e-4
_SPLIT_HINT = (
    "check the split these labels come from (the validation split when choosing a threshold, "
    "the test split when reporting): use a stratified split or more rows"
)


# --------------------------------------------------------------------------------------------
# Input validation


def _array(name: str, values: npt.ArrayLike, ndim: int) -> FloatArray:
    """``values`` as a non-empty float64 array with ``ndim`` dimensions."""
    try:
        arr = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{name} must be numeric; could not convert it to float: {exc}") from exc
    if arr.ndim != ndim:
        raise ValueError(f"{name} must be {ndim}-D; got shape {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"{name} is empty; evaluate on a split with at least one row")
    return arr


def _check_length(name: str, arr: npt.NDArray[np.generic], n: int) -> None:
    if arr.shape[0] != n:
        raise ValueError(
            f"length mismatch: y_true has {n} rows but {name} has {arr.shape[0]}; pass outputs "
            "and labels of the same split, in the same order"
        )


def _check_finite(name: str, arr: FloatArray) -> None:
    bad = ~np.isfinite(arr)
    if bad.any():
        first = tuple(int(i) for i in np.argwhere(bad)[0])
        where = first[0] if len(first) == 1 else first
        raise ValueError(
            f"{name} contains {int(bad.sum())} NaN/inf values (first at index {where}); the "
            "model produced non-finite outputs: check training for divergence"
        )


def _check_unit_interval(name: str, arr: FloatArray) -> None:
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 or hi > 1.0:
        raise ValueError(
            f"{name} must be probabilities in [0, 1]; got values in [{lo:.6g}, {hi:.6g}]: "
            "apply sigmoid/softmax to logits before evaluating"
        )


def _binary_labels(y_true: npt.ArrayLike) -> IntArray:
    arr = _array("y_true", y_true, 1)
    is_binary = (arr == 0.0) | (arr == 1.0)
    if not is_binary.all():
        found = np.unique(arr[~is_binary])[:5].tolist()
        raise ValueError(
            f"y_true must hold binary labels 0/1; found other values such as {found}: encode "
            "the positive class as 1 and the negative class as 0"
        )
    return arr.astype(np.int64)


def _class_labels(name: str, values: npt.ArrayLike, n_classes: int) -> IntArray:
    arr = _array(name, values, 1)
    _check_finite(name, arr)
    valid = (arr == np.round(arr)) & (arr >= 0) & (arr < n_classes)
    if not valid.all():
        found = np.unique(arr[~valid])[:5].tolist()
        raise ValueError(
            f"{name} must hold class indices 0..{n_classes - 1}; found values such as {found}"
        )
    return arr.astype(np.int64)


def _probabilities(prob: npt.ArrayLike, n: int) -> FloatArray:
    arr = _array("prob", prob, 1)
    _check_length("prob", arr, n)
    _check_finite("prob", arr)
    _check_unit_interval("prob", arr)
    return arr


def _binary_inputs(y_true: npt.ArrayLike, prob: npt.ArrayLike) -> tuple[IntArray, FloatArray]:
    y = _binary_labels(y_true)
    return y, _probabilities(prob, y.shape[0])


def _require_both_classes(y: IntArray, what: str) -> None:
    if y.min() == y.max():
        raise ValueError(
            f"{what} is undefined: y_true has only class {int(y[0])} ({y.shape[0]} rows); "
            + _SPLIT_HINT
        )


def _costs(fn_cost: float | None, fp_cost: float | None) -> tuple[float, float] | None:
    if fn_cost is None and fp_cost is None:
        return None
    if fn_cost is None or fp_cost is None:
        missing = "fn_cost" if fn_cost is None else "fp_cost"
        raise ValueError(f"cost-based evaluation needs both fn_cost and fp_cost; {missing} is None")
    for name, value in (("fn_cost", fn_cost), ("fp_cost", fp_cost)):
        if not (math.isfinite(value) and value > 0.0):
            raise ValueError(f"{name} must be a finite positive number; got {value}")
    return float(fn_cost), float(fp_cost)


def _check_threshold(threshold: float) -> float:
    if not math.isfinite(threshold):
        raise ValueError(f"threshold must be finite; got {threshold}")
    return float(threshold)


def binary_metrics(
    y_true: npt.ArrayLike,
    prob: npt.ArrayLike,
    threshold: float,
    *,
    fn_cost: float | None = None,
    fp_cost: float | None = None,
) -> dict[str, float]:
    """Ranking, probabilistic and thresholded metrics of a binary classifier.

    Args:
        y_true: binary labels (0/1).
        prob: predicted probability of the positive class, same length.
        threshold: predict positive iff ``prob >= threshold``.
        fn_cost: cost of one false negative; give both costs or neither.
        fp_cost: cost of one false positive.

    Returns:
        ``roc_auc``, ``pr_auc`` (average precision), ``log_loss``, ``brier``, and at the
        threshold ``f1``, ``precision``, ``recall``, ``accuracy``, ``positive_rate`` (fraction of
        rows predicted positive); with costs also ``expected_cost``
        (``(fn_cost * FN + fp_cost * FP) / N``). Precision of no positive predictions is 0.

    Raises:
        ValueError: on invalid inputs, only one cost given, or a single class in ``y_true``
            (AUC is undefined).
    """
    y, p = _binary_inputs(y_true, prob)
    costs = _costs(fn_cost, fp_cost)
    t = _check_threshold(threshold)
    _require_both_classes(y, "ROC AUC")
    pred = (p >= t).astype(np.int64)
    metrics = {
        "roc_auc": float(roc_auc_score(y, p)),
        "pr_auc": float(average_precision_score(y, p)),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "f1": float(f1_score(y, pred, zero_division=0.0)),
        "precision": float(precision_score(y, pred, zero_division=0.0)),
        "recall": float(recall_score(y, pred, zero_division=0.0)),
        "accuracy": float(accuracy_score(y, pred)),
        "positive_rate": float(pred.mean()),
    }
    if costs is not None:
        fn = int(((pred == 0) & (y == 1)).sum())
        fp = int(((pred == 1) & (y == 0)).sum())
        metrics["expected_cost"] = (costs[0] * fn + costs[1] * fp) / y.shape[0]
    return metrics


def _class_probabilities(prob: npt.ArrayLike, n: int) -> FloatArray:
    arr = _array("prob", prob, 2)
    _check_length("prob", arr, n)
    if arr.shape[1] < 2:
        raise ValueError(f"prob must have one column per class (>= 2); got shape {arr.shape}")
    _check_finite("prob", arr)
    _check_unit_interval("prob", arr)
    row_sums = arr.sum(axis=1)
    off = np.abs(row_sums - 1.0) > _ROW_SUM_ATOL
    if off.any():
        row = int(np.argmax(off))
        raise ValueError(
            f"rows of prob must sum to 1; row {row} sums to {row_sums[row]:.6g} "
            f"({int(off.sum())} rows off): apply softmax to logits before evaluating"
        )
    # float32 softmax rows are off by ~1e-7; renormalised, they are what log_loss expects.
    normalised: FloatArray = arr / row_sums[:, None]
    return normalised


def multiclass_metrics(y_true: npt.ArrayLike, prob: npt.ArrayLike) -> dict[str, float]:
    """Metrics of a multiclass classifier from its class probabilities.

    Args:
        y_true: class indices in ``0..C-1``, shape ``(N,)``.
        prob: class probabilities, shape ``(N, C)``, rows summing to 1.

    Returns:
        ``accuracy`` and ``macro_f1`` of the arg-max prediction (macro over the classes present
        in ``y_true`` or predicted; F1 of a class never predicted is 0), and ``log_loss`` with
        ``labels=range(C)``.

    Raises:
        ValueError: on invalid inputs.
    """
    n = _array("y_true", y_true, 1).shape[0]
    p = _class_probabilities(prob, n)
    n_classes = p.shape[1]
    y = _class_labels("y_true", y_true, n_classes)
    pred = p.argmax(axis=1)
    return {
        "accuracy": float(accuracy_score(y, pred)),
        "macro_f1": float(f1_score(y, pred, average="macro", zero_division=0.0)),
        "log_loss": float(log_loss(y, p, labels=list(range(n_classes)))),
    }


def _regression_inputs(y_true: npt.ArrayLike, pred: npt.ArrayLike) -> tuple[FloatArray, FloatArray]:
    y = _array("y_true", y_true, 1)
    p = _array("pred", pred, 1)
    _check_length("pred", p, y.shape[0])
    _check_finite("y_true", y)
    _check_finite("pred", p)
    return y, p


def regression_metrics(
    y_true: npt.ArrayLike, pred: npt.ArrayLike, *, quantile: float | None = None
) -> dict[str, float]:
    """Metrics of point (or quantile) predictions.

    Args:
        y_true: targets, shape ``(N,)``, ``N >= 2``.
        pred: predictions, same shape.
        quantile: the quantile level the model predicts, in (0, 1); adds ``pinball``.

    Returns:
        ``rmse``, ``mae``, ``r2``; with ``quantile`` also ``pinball`` (mean pinball loss at
        ``alpha=quantile``).

    Raises:
        ValueError: on invalid inputs, fewer than two rows, or a quantile outside (0, 1).
    """
    y, p = _regression_inputs(y_true, pred)
    if y.shape[0] < 2:
        raise ValueError("R² is undefined for a single row; evaluate on at least two rows")
    if quantile is not None and not 0.0 < quantile < 1.0:
        raise ValueError(f"quantile must be in (0, 1); got {quantile}")
    metrics = {
        "rmse": float(root_mean_squared_error(y, p)),
        "mae": float(mean_absolute_error(y, p)),
        "r2": float(r2_score(y, p)),
    }
    if quantile is not None:
        metrics["pinball"] = float(mean_pinball_loss(y, p, alpha=quantile))
    return metrics


def _ranking_inputs(
    relevance: npt.ArrayLike, scores: npt.ArrayLike, mask: npt.ArrayLike
) -> tuple[FloatArray, FloatArray, np.ndarray]:
    rel = _array("relevance", relevance, 2)
    sc = _array("scores", scores, 2)
    m = np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be a boolean array; got dtype {m.dtype}")
    if sc.shape != rel.shape or m.shape != rel.shape:
        raise ValueError(
            "length mismatch: relevance, scores and mask must have the same (Q, L) shape; got "
            f"{rel.shape}, {sc.shape} and {m.shape}"
        )
    if rel.shape[1] < 2:
        raise ValueError(f"NDCG needs at least 2 items per query (L >= 2); got shape {rel.shape}")
    empty = ~m.any(axis=1)
    if empty.any():
        raise ValueError(
            f"query {int(np.argmax(empty))} has no real items ({int(empty.sum())} such queries); "
            "drop empty queries before evaluating"
        )
    _check_finite("relevance", rel[m])
    _check_finite("scores", sc[m])
    if (rel[m] < 0).any():
        raise ValueError("relevance must be non-negative on real items; got negative values")
    return rel, sc, m


def _dense_ranks(sc: FloatArray, m: np.ndarray) -> FloatArray:
    """Dense ranks over all real scores (each query's order and ties kept); padding gets 0."""
    ranks = np.zeros(sc.shape, dtype=np.float64)
    ranks[m] = np.unique(sc[m], return_inverse=True)[1] + 1.0
    return ranks


def per_query_ndcg(
    relevance: npt.ArrayLike, scores: npt.ArrayLike, mask: npt.ArrayLike, k: int = NDCG_K
) -> FloatArray:
    """NDCG@k of each query (``sklearn.metrics.ndcg_score`` of its real items), shape ``(Q,)``.

    A query whose real items all have relevance 0 scores 0. The inputs are checked as by
    :func:`ranking_metrics`.
    """
    rel, sc, m = _ranking_inputs(relevance, scores, mask)
    ranks = _dense_ranks(sc, m)
    gains = np.where(m, rel, 0.0)
    return np.array(
        [float(ndcg_score(gains[q : q + 1], ranks[q : q + 1], k=k)) for q in range(len(rel))]
    )


def list_ndcg(
    scores: npt.ArrayLike, relevance: npt.ArrayLike, lists: npt.ArrayLike, k: int = NDCG_K
) -> FloatArray:
    """NDCG@k of each list (the rows sharing a ``lists`` id), in order of first appearance.

    A list of one item scores 1 when it is relevant, else 0: its only order is the right one.
    """
    from lossflow.data.lists import gather, padded_index

    ids = pd.factorize(np.asarray(lists))[0].astype(np.int64)
    if ids.size == 0:
        return np.zeros(0)
    index, mask = padded_index(ids)
    gains = gather(np.asarray(relevance, dtype=np.float64), index, 0.0)
    if index.shape[1] < 2:
        return (gains[:, 0] > 0).astype(np.float64)
    ranked = gather(np.asarray(scores, dtype=np.float64), index, 0.0)
    return per_query_ndcg(gains, ranked, mask, k)


def ranking_metrics(
    relevance: npt.ArrayLike,
    scores: npt.ArrayLike,
    mask: npt.ArrayLike,
    ks: tuple[int, ...] | list[int] = (NDCG_K,),
    relevant_at: float | None = None,
) -> dict[str, float]:
    """NDCG@k, MRR, MAP and pairwise accuracy of per-query rankings stored as padded ``(Q, L)``
    matrices, each the mean over queries.

    Padding (``mask`` False) is excluded: padded items are ranked below every real item with
    zero gain, which leaves each query's DCG and ideal DCG unchanged. A query whose real items
    all have relevance 0 scores 0 in NDCG, MRR and MAP (scikit-learn's convention).

    - ``ndcg_<k>``: ``sklearn.metrics.ndcg_score(..., k=k)`` (linear gains = relevance; tied
      scores share their gain, as scikit-learn does).
    - ``mrr``: the reciprocal rank of the first relevant item.
    - ``map``: the mean over relevant items of the precision at each one's rank.
    - ``pairwise_accuracy``: over the pairs of real items with different relevance, the share
      the scores order correctly (a tie counts 1/2); queries without such a pair are left out
      (``nan`` if none has one).

    An item is relevant (MRR, MAP) iff its relevance is ``>= relevant_at``, or ``> 0`` when
    ``relevant_at`` is None; for MRR and MAP tied scores are broken by column order.

    Args:
        relevance: graded relevance, non-negative on real items, shape ``(Q, L)`` with ``L >= 2``.
        scores: model scores, higher ranks first, same shape.
        mask: boolean, True for real items; every query needs at least one.
        ks: the cut-offs of NDCG.
        relevant_at: the relevance from which an item counts as relevant.

    Raises:
        ValueError: on mismatched shapes, a non-boolean mask, an empty query, negative relevance
            or non-finite values on real items.
    """
    rel, sc, m = _ranking_inputs(relevance, scores, mask)
    ranks = _dense_ranks(sc, m)
    gains = np.where(m, rel, 0.0)
    metrics = {f"ndcg_{k}": float(ndcg_score(gains, ranks, k=k)) for k in ks}
    order = np.argsort(-ranks, axis=1, kind="stable")
    relevant = (gains >= relevant_at) if relevant_at is not None else gains > 0
    relevant_sorted = np.take_along_axis(relevant & m, order, axis=1)
    any_relevant = relevant_sorted.any(axis=1)
    first = np.argmax(relevant_sorted, axis=1)
    metrics["mrr"] = float(np.where(any_relevant, 1.0 / (first + 1.0), 0.0).mean())
    hits = np.cumsum(relevant_sorted, axis=1)
    precision = hits / np.arange(1, rel.shape[1] + 1)
    n_relevant = relevant_sorted.sum(axis=1)
    ap = (precision * relevant_sorted).sum(axis=1) / np.maximum(n_relevant, 1)
    metrics["map"] = float(ap.mean())
    correct = np.zeros(len(rel))
    pairs = np.zeros(len(rel))
    for lo in range(0, len(rel), 256):  # (256, L, L) at a time
        r, s, mm = rel[lo : lo + 256], sc[lo : lo + 256], m[lo : lo + 256]
        is_pair = (r[:, :, None] > r[:, None, :]) & mm[:, :, None] & mm[:, None, :]
        gap = s[:, :, None] - s[:, None, :]
        won = np.where(gap > 0, 1.0, np.where(gap == 0, 0.5, 0.0))
        correct[lo : lo + 256] = (won * is_pair).sum(axis=(1, 2))
        pairs[lo : lo + 256] = is_pair.sum(axis=(1, 2))
    with_pairs = pairs > 0
    metrics["pairwise_accuracy"] = (
        float((correct[with_pairs] / pairs[with_pairs]).mean()) if with_pairs.any() else math.nan
    )
    return metrics


def expected_calibration_error(
    y_true: npt.ArrayLike, prob: npt.ArrayLike, n_bins: int = 10
) -> float:
    """Expected calibration error of binary probabilities over ``n_bins`` equal-width bins:
    ``Σ_b (n_b / N) |mean(prob_b) - mean(y_b)|`` (a probability of 1 falls in the last bin).

    Example:
        >>> round(expected_calibration_error([0, 1, 1, 1], [0.1, 0.9, 0.8, 0.3]), 3)
        0.275

    Raises:
        ValueError: on invalid inputs or ``n_bins < 1``.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1; got {n_bins}")
    y, p = _binary_inputs(y_true, prob)
    index = np.minimum((p * n_bins).astype(np.int64), n_bins - 1)
    gaps = np.abs(
        np.bincount(index, weights=p, minlength=n_bins)
        - np.bincount(index, weights=y, minlength=n_bins)
    )
    return float(gaps.sum() / y.shape[0])


def point_predictions(output: npt.ArrayLike) -> FloatArray:
    """Regression output as ``(N,)`` point predictions: a gaussian ``(N, 2)`` output gives its
    mean (column 0).

    Raises:
        ValueError: the output is neither ``(N,)`` nor ``(N, 2)``.
    """
    pred = np.asarray(output, dtype=np.float64)
    if pred.ndim == 2 and pred.shape[1] == 2:
        return pred[:, 0]
    if pred.ndim != 1:
        raise ValueError(
            "regression output must be (N,) predictions or (N, 2) gaussian output "
            f"(mean, scale); got shape {pred.shape}"
        )
    return pred


def task_metrics(
    task: str,
    y_true: npt.ArrayLike,
    output: npt.ArrayLike,
    *,
    threshold: float | None = None,
    fn_cost: float | None = None,
    fp_cost: float | None = None,
    quantile: float | None = None,
) -> dict[str, float]:
    """The metrics of one task's model output: :func:`binary_metrics` (at ``threshold``, 0.5
    when None), :func:`multiclass_metrics` or :func:`regression_metrics`.

    Raises:
        ValueError: an unknown task or invalid inputs.
    """
    if task == "binary":
        t = 0.5 if threshold is None else threshold
        return binary_metrics(y_true, output, t, fn_cost=fn_cost, fp_cost=fp_cost)
    if task == "multiclass":
        return multiclass_metrics(y_true, output)
    if task == "regression":
        return regression_metrics(y_true, point_predictions(output), quantile=quantile)
    raise ValueError(f"task_metrics handles binary, multiclass and regression; got {task!r}")
