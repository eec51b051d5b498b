"""Diagnostic plots of one model on one split.

Plots are ``matplotlib.figure.Figure`` objects drawn on an Agg canvas; pyplot's global state is
never touched, so figures are garbage-collected like any other object and are safe in threads.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import numpy.typing as npt
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import (
    average_precision_score,
    confusion_matrix,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from lossflow.evaluation.metrics import (
    FloatArray,
    _binary_inputs,
    _check_length,
    _class_labels,
    _regression_inputs,
    _require_both_classes,
)

FIGSIZE: tuple[float, float] = (6.0, 4.5)
DPI = 100
MAX_SCATTER_POINTS = 5000


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
