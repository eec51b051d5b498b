"""Offline evaluation: metrics per task, the binary decision threshold, and diagnostic plots.

Inputs are numpy arrays (or anything ``numpy.asarray`` accepts) of model outputs that are already
probabilities or predictions, never logits. Every function validates its inputs and raises
``ValueError`` naming the problem: mismatched lengths, non-finite predictions, probabilities
outside [0, 1], labels that are not class indices, or a single class where AUC is undefined.

Binary decisions follow one rule everywhere: **predict positive iff** ``prob >= threshold``.

Plots are ``matplotlib.figure.Figure`` objects drawn on an Agg canvas; pyplot's global state is
never touched, so figures are garbage-collected like any other object and are safe in threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    confusion_matrix,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_pinball_loss,
    ndcg_score,
    precision_recall_curve,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
    roc_curve,
    root_mean_squared_error,
)

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]

TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")
FIGSIZE: tuple[float, float] = (6.0, 4.5)
DPI = 100
MAX_SCATTER_POINTS = 5000
NDCG_K = 10
# Rows of a multiclass probability matrix must sum to 1 within this tolerance (float32 softmax
# outputs are off by a few 1e-7; a matrix of logits or unnormalised scores is off by far more).
_ROW_SUM_ATOL = 1e-4
_SPLIT_HINT = (
    "check the split these labels come from (the validation split when choosing a threshold, "
    "the test split when reporting): use a stratified split or more rows"
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


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics and figures of one model on one split.

    Attributes:
        metrics: metric name to value (the keys of the task's ``*_metrics`` function).
        figures: file name (``"roc.png"``, ...) to figure.
    """

    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)


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


# --------------------------------------------------------------------------------------------
# Threshold choice


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


# --------------------------------------------------------------------------------------------
# Metrics


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
    return arr


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


def ranking_metrics(
    relevance: npt.ArrayLike, scores: npt.ArrayLike, mask: npt.ArrayLike
) -> dict[str, float]:
    """NDCG@10 and MRR of per-query rankings stored as padded ``(Q, L)`` matrices.

    Padding (``mask`` False) is excluded: padded items are ranked below every real item with
    zero gain, which leaves each query's DCG and ideal DCG unchanged. A query whose real items
    all have relevance 0 scores 0 in both metrics (scikit-learn's convention). For MRR an item is
    relevant iff its relevance is > 0, and tied scores are broken by column order.

    Args:
        relevance: graded relevance, non-negative on real items, shape ``(Q, L)`` with ``L >= 2``.
        scores: model scores, higher ranks first, same shape.
        mask: boolean, True for real items; every query needs at least one.

    Returns:
        ``ndcg@10`` (``sklearn.metrics.ndcg_score`` with ``k=10``, mean over queries) and ``mrr``.

    Raises:
        ValueError: on mismatched shapes, a non-boolean mask, an empty query, negative relevance
            or non-finite values on real items.
    """
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
    # Dense ranks over all real scores keep each query's order and ties; padding gets rank 0.
    ranks = np.zeros(sc.shape, dtype=np.float64)
    ranks[m] = np.unique(sc[m], return_inverse=True)[1] + 1.0
    gains = np.where(m, rel, 0.0)
    ndcg = float(ndcg_score(gains, ranks, k=NDCG_K))
    order = np.argsort(-ranks, axis=1, kind="stable")
    relevant_sorted = np.take_along_axis(gains, order, axis=1) > 0
    first = np.argmax(relevant_sorted, axis=1)
    reciprocal = np.where(relevant_sorted.any(axis=1), 1.0 / (first + 1.0), 0.0)
    return {f"ndcg@{NDCG_K}": ndcg, "mrr": float(reciprocal.mean())}


# --------------------------------------------------------------------------------------------
# Plots


def _figure(figsize: tuple[float, float] = FIGSIZE) -> Figure:
    fig = Figure(figsize=figsize, dpi=DPI, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _split_key(key: str) -> tuple[str, str]:
    """``"train/term/focal"`` -> ``("term/focal", "train")``; a key without a stage is its own."""
    stage, sep, quantity = key.partition("/")
    return (quantity, stage) if sep and quantity else (key, key)


def plot_training_curves(history: Mapping[str, Sequence[float]]) -> Figure:
    """Per-epoch metric curves, one subplot per quantity, train and val sharing an axis.

    Keys are ``"<stage>/<quantity>"`` (``"train/loss"``, ``"val/loss"``, ``"train/term/focal"``);
    series with the same quantity are drawn on one axis and labelled by stage. A key without a
    ``/`` gets its own axis. The x axis is the epoch index (from 0); NaN values leave gaps.

    Args:
        history: metric name to its per-epoch values.

    Returns:
        The figure, with one axes per quantity.

    Raises:
        ValueError: if ``history`` is empty or a series is not 1-D numeric.
    """
    if not history:
        raise ValueError("history is empty; pass at least one metric series")
    groups: dict[str, list[tuple[str, FloatArray]]] = {}
    for key, values in history.items():
        series = np.asarray(values, dtype=np.float64)
        if series.ndim != 1:
            raise ValueError(f"history[{key!r}] must be a 1-D sequence; got shape {series.shape}")
        quantity, stage = _split_key(key)
        groups.setdefault(quantity, []).append((stage, series))
    ncols = 1 if len(groups) == 1 else 2
    nrows = math.ceil(len(groups) / ncols)
    width = FIGSIZE[0] if ncols == 1 else 10.0
    fig = _figure((width, max(FIGSIZE[1], 3.0 * nrows)))
    for i, (quantity, members) in enumerate(groups.items()):
        ax: Axes = fig.add_subplot(nrows, ncols, i + 1)
        for stage, series in members:
            ax.plot(
                np.arange(series.shape[0]),
                series,
                marker="." if series.size < 30 else None,
                label=stage,
            )
        ax.set_title(quantity)
        ax.set_xlabel("epoch")
        ax.set_ylabel(quantity)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle("Training curves")
    return fig


def plot_confusion_matrix(
    y_true: npt.ArrayLike, y_pred: npt.ArrayLike, labels: Sequence[str]
) -> Figure:
    """Confusion matrix with counts annotated in each cell.

    Args:
        y_true: true class indices in ``0..len(labels)-1``.
        y_pred: predicted class indices, same length.
        labels: display name of each class, in index order.

    Returns:
        The figure, with one axes (rows: true class, columns: predicted class).

    Raises:
        ValueError: on mismatched lengths, fewer than two labels or out-of-range indices.
    """
    if len(labels) < 2:
        raise ValueError(f"labels must name at least 2 classes; got {list(labels)}")
    n_classes = len(labels)
    y = _class_labels("y_true", y_true, n_classes)
    pred = _class_labels("y_pred", y_pred, n_classes)
    _check_length("y_pred", pred, y.shape[0])
    counts = confusion_matrix(y, pred, labels=list(range(n_classes)))
    fig = _figure()
    ax = fig.add_subplot()
    ax.imshow(counts, cmap="Blues", vmin=0)
    half = counts.max() / 2.0
    for (i, j), count in np.ndenumerate(counts):
        ax.text(
            j,
            i,
            str(count),
            ha="center",
            va="center",
            color="white" if count > half else "black",
            fontsize=8 if n_classes > 6 else 10,
        )
    ticks = np.arange(n_classes)
    ax.set_xticks(ticks, list(labels), rotation=45 if n_classes > 4 else 0)
    ax.set_yticks(ticks, list(labels))
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(f"Confusion matrix (N = {y.shape[0]})")
    return fig


def plot_roc(y_true: npt.ArrayLike, prob: npt.ArrayLike) -> Figure:
    """ROC curve with its AUC in the legend and the chance diagonal.

    Raises:
        ValueError: on invalid inputs or a single class in ``y_true``.
    """
    y, p = _binary_inputs(y_true, prob)
    _require_both_classes(y, "ROC AUC")
    fpr, tpr, _ = roc_curve(y, p)
    auc = roc_auc_score(y, p)
    fig = _figure()
    ax = fig.add_subplot()
    ax.plot(fpr, tpr, label=f"model (AUC = {auc:.3f})")
    ax.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="chance (AUC = 0.5)")
    ax.set(
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.02),
        xlabel="false positive rate",
        ylabel="true positive rate",
        title="ROC curve",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    return fig


def plot_pr(y_true: npt.ArrayLike, prob: npt.ArrayLike) -> Figure:
    """Precision-recall curve with average precision in the legend and the prevalence baseline.

    Raises:
        ValueError: on invalid inputs or a single class in ``y_true``.
    """
    y, p = _binary_inputs(y_true, prob)
    _require_both_classes(y, "PR AUC")
    precision, recall, _ = precision_recall_curve(y, p)
    ap = average_precision_score(y, p)
    prevalence = float(y.mean())
    fig = _figure()
    ax = fig.add_subplot()
    ax.step(recall, precision, where="post", label=f"model (AP = {ap:.3f})")
    ax.axhline(prevalence, linestyle="--", color="grey", label=f"prevalence = {prevalence:.3f}")
    ax.set(
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.02),
        xlabel="recall",
        ylabel="precision",
        title="Precision-recall curve",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right")
    return fig


def plot_calibration(y_true: npt.ArrayLike, prob: npt.ArrayLike, n_bins: int = 10) -> Figure:
    """Reliability diagram on quantile bins, with a histogram of the predictions below it.

    Args:
        y_true: binary labels (0/1).
        prob: predicted probability of the positive class.
        n_bins: number of quantile bins (equal-count; bins that coincide are merged).

    Returns:
        The figure, with two axes: reliability diagram and prediction histogram.

    Raises:
        ValueError: on invalid inputs or ``n_bins < 2``.
    """
    if n_bins < 2:
        raise ValueError(f"n_bins must be >= 2; got {n_bins}")
    y, p = _binary_inputs(y_true, prob)
    observed, predicted = calibration_curve(y, p, n_bins=n_bins, strategy="quantile")
    fig = _figure()
    top, bottom = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    top.plot([0.0, 1.0], [0.0, 1.0], linestyle="--", color="grey", label="perfectly calibrated")
    top.plot(predicted, observed, marker="o", label="model")
    top.set(
        xlim=(0.0, 1.0),
        ylim=(0.0, 1.0),
        ylabel="observed positive fraction",
        title=f"Calibration ({n_bins} quantile bins)",
    )
    top.grid(alpha=0.3)
    top.legend(loc="upper left")
    bottom.hist(p, bins=50, range=(0.0, 1.0), color="grey")
    bottom.set(xlabel="predicted probability", ylabel="rows")
    return fig


def _hist_range(values: FloatArray) -> tuple[float, float]:
    """Histogram range of ``values``, widened when they are (nearly) constant.

    numpy cannot cut a range narrower than a few float spacings into 50 bins.
    """
    lo, hi = float(values.min()), float(values.max())
    min_span = 1e-6 * max(abs(lo), abs(hi), 1.0)
    if hi - lo >= min_span:
        return lo, hi
    mid = 0.5 * (lo + hi)
    return mid - min_span, mid + min_span


def plot_residuals(y_true: npt.ArrayLike, pred: npt.ArrayLike) -> Figure:
    """Residuals (``y_true - pred``) against predictions, with a histogram of residuals.

    The scatter shows at most 5000 points, a fixed-seed random subsample (the same on every
    call); the histogram uses every row.

    Returns:
        The figure, with two axes: scatter and histogram.

    Raises:
        ValueError: on mismatched lengths or non-finite values.
    """
    y, p = _regression_inputs(y_true, pred)
    residual = y - p
    n = y.shape[0]
    shown = np.arange(n)
    if n > MAX_SCATTER_POINTS:
        shown = np.sort(np.random.default_rng(0).choice(n, MAX_SCATTER_POINTS, replace=False))
    fig = _figure()
    scatter, hist = fig.subplots(1, 2, width_ratios=[2, 1])
    scatter.scatter(p[shown], residual[shown], s=6, alpha=0.4, linewidths=0)
    scatter.axhline(0.0, color="grey", linestyle="--")
    scatter.set(
        xlabel="prediction",
        ylabel="residual (true - predicted)",
        title=f"Residuals ({shown.shape[0]} of {n} rows)",
    )
    hist.hist(
        residual, bins=50, range=_hist_range(residual), orientation="horizontal", color="grey"
    )
    hist.set(xlabel="rows", ylabel="residual", title="Distribution")
    fig.suptitle("Residuals vs predictions")
    return fig


# --------------------------------------------------------------------------------------------
# Report


def _reject(task: str, **unused: object) -> None:
    given = [name for name, value in unused.items() if value is not None]
    if given:
        raise ValueError(f"{', '.join(given)} does not apply to task {task!r}; leave it None")


def evaluation_report(
    task: str,
    y_true: npt.ArrayLike,
    output: npt.ArrayLike,
    *,
    threshold: float | None,
    label_names: Sequence[str] | None,
    fn_cost: float | None = None,
    fp_cost: float | None = None,
    quantile: float | None = None,
    history: Mapping[str, Sequence[float]] | None = None,
) -> EvaluationReport:
    """Metrics and the figures that apply to one task's model on one split.

    Figures by task: binary ``roc.png``, ``pr.png``, ``calibration.png``,
    ``confusion_matrix.png``; multiclass ``confusion_matrix.png``; regression ``residuals.png``;
    any task ``training_curves.png`` when ``history`` is given. Ranking models are evaluated
    with :func:`ranking_metrics`.

    Args:
        task: ``"binary"``, ``"multiclass"`` or ``"regression"``.
        y_true: labels or targets, shape ``(N,)``.
        output: binary: positive-class probability ``(N,)``; multiclass: class probabilities
            ``(N, C)``; regression: predictions ``(N,)`` or ``(N, 2)`` gaussian output whose
            column 0 is the mean.
        threshold: binary only; predict positive iff ``prob >= threshold`` (choose it on the
            validation split with :func:`choose_threshold`); None means 0.5.
        label_names: class display names for the confusion matrix (default ``"0"``, ``"1"``, ...).
        fn_cost: binary only; with ``fp_cost`` adds ``expected_cost``.
        fp_cost: binary only.
        quantile: regression only; adds ``pinball``.
        history: per-epoch metric series for ``training_curves.png``.

    Returns:
        The metrics and figures keyed by file name.

    Raises:
        ValueError: on an unknown task, an option that does not apply to the task, or invalid
            inputs.
    """
    figures: dict[str, Figure] = {}
    if task == "binary":
        _reject(task, quantile=quantile)
        t = 0.5 if threshold is None else threshold
        names = ["0", "1"] if label_names is None else list(label_names)
        if len(names) != 2:
            raise ValueError(f"label_names must have 2 entries for a binary task; got {names}")
        metrics = binary_metrics(y_true, output, t, fn_cost=fn_cost, fp_cost=fp_cost)
        prob = np.asarray(output, dtype=np.float64)
        figures["roc.png"] = plot_roc(y_true, prob)
        figures["pr.png"] = plot_pr(y_true, prob)
        figures["calibration.png"] = plot_calibration(y_true, prob)
        pred = (prob >= t).astype(np.int64)
        figures["confusion_matrix.png"] = plot_confusion_matrix(y_true, pred, names)
    elif task == "multiclass":
        _reject(task, threshold=threshold, fn_cost=fn_cost, fp_cost=fp_cost, quantile=quantile)
        metrics = multiclass_metrics(y_true, output)
        prob = np.asarray(output, dtype=np.float64)
        n_classes = prob.shape[1]
        names = [str(c) for c in range(n_classes)] if label_names is None else list(label_names)
        if len(names) != n_classes:
            raise ValueError(
                f"label_names has {len(names)} entries but output has {n_classes} class columns"
            )
        figures["confusion_matrix.png"] = plot_confusion_matrix(y_true, prob.argmax(1), names)
    elif task == "regression":
        _reject(
            task, threshold=threshold, fn_cost=fn_cost, fp_cost=fp_cost, label_names=label_names
        )
        pred = np.asarray(output, dtype=np.float64)
        if pred.ndim == 2 and pred.shape[1] == 2:
            pred = pred[:, 0]
        elif pred.ndim != 1:
            raise ValueError(
                "regression output must be (N,) predictions or (N, 2) gaussian output "
                f"(mean, scale); got shape {pred.shape}"
            )
        metrics = regression_metrics(y_true, pred, quantile=quantile)
        figures["residuals.png"] = plot_residuals(y_true, pred)
    elif task == "ranking":
        raise ValueError(
            "evaluation_report does not handle task 'ranking'; call "
            "ranking_metrics(relevance, scores, mask) with the padded (Q, L) matrices"
        )
    else:
        raise ValueError(f"unknown task {task!r}; known tasks: {', '.join(TASKS)}")
    if history is not None:
        figures["training_curves.png"] = plot_training_curves(history)
    return EvaluationReport(metrics=metrics, figures=figures)
