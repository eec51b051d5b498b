"""Model quality on delayed labels, with bootstrap intervals, and estimated before labels arrive.

**Measured**: the task's metrics on the labelled rows of a window — the same functions as
offline evaluation (``lossflow.evaluation.metrics``) give the point estimates; percentile
bootstrap intervals come from ``resamples`` multinomial reweightings of the rows, all computed
at once on the rows sorted by score. When more than ``max_rows`` rows are labelled the intervals
are computed on a seeded subsample of ``max_rows`` rows (wider than needed, never narrower).
Fewer than ``min_labels`` labelled rows give no measured number ("insufficient labels").

**Estimated** (confidence-based performance estimation, as NannyML's CBPE): for a binary model,
each row's probability ``p`` stands for its unknown label (``p`` of a positive, ``1 - p`` of a
negative), so the expected confusion counts at every threshold, hence ROC-AUC, accuracy,
precision, recall, the log loss and the Brier score, follow from the scores alone. It assumes
the probabilities are calibrated on the window's data: true under covariate shift when the model
was calibrated, false under label-prior shift (then measured and estimated numbers part ways,
which is itself a signal).

**Decay**: a metric decays when the reference's test value lies outside the window's interval,
on the worse side, by more than ``tolerance``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from lossflow.evaluation.metrics import (
    binary_metrics,
    expected_calibration_error,
    multiclass_metrics,
    regression_metrics,
)

FloatArray = npt.NDArray[np.float64]
Direction = Literal["max", "min"]

DIRECTIONS: dict[str, Direction] = {
    "roc_auc": "max",
    "pr_auc": "max",
    "accuracy": "max",
    "macro_f1": "max",
    "f1": "max",
    "precision": "max",
    "recall": "max",
    "log_loss": "min",
    "brier": "min",
    "ece": "min",
    "expected_cost": "min",
    "rmse": "min",
    "mae": "min",
    "pinball": "min",
    "ndcg_10": "max",
}
_EPS = 1e-15


@dataclass(frozen=True)
class MetricEstimate:
    """A metric with its percentile bootstrap interval.

    Attributes:
        name: metric name (``roc_auc``, ``log_loss``...).
        value: point estimate on all rows.
        low: lower end of the interval.
        high: upper end of the interval.
        rows: rows it was computed on.
    """

    name: str
    value: float
    low: float
    high: float
    rows: int

    @property
    def direction(self) -> Direction:
        """``max`` when higher is better."""
        return DIRECTIONS.get(self.name, "min")

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "value": self.value,
            "low": self.low,
            "high": self.high,
            "rows": self.rows,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> MetricEstimate:
        """Inverse of :meth:`to_json`."""
        return cls(
            str(data["name"]),
            float(data["value"]),
            float(data["low"]),
            float(data["high"]),
            int(data["rows"]),
        )


@dataclass(frozen=True)
class Costs:
    """The cost matrix of a binary decision (the ``cost_sensitive`` loss's and the threshold's)."""

    fn_cost: float
    fp_cost: float


# --- point estimates: the offline evaluation's functions --------------------------------------


def point_metrics(
    task: str,
    labels: np.ndarray,
    outputs: np.ndarray,
    threshold: float | None,
    *,
    costs: Costs | None = None,
    quantile: float | None = None,
) -> dict[str, float]:
    """The task's metrics on labelled rows (binary: probability of the positive class;
    multiclass: class probabilities; regression: predictions)."""
    if task == "binary":
        t = 0.5 if threshold is None else threshold
        m = binary_metrics(
            labels,
            outputs,
            t,
            fn_cost=None if costs is None else costs.fn_cost,
            fp_cost=None if costs is None else costs.fp_cost,
        )
        m["ece"] = expected_calibration_error(labels, outputs)
        return m
    if task == "multiclass":
        return multiclass_metrics(labels, outputs)
    return regression_metrics(labels, outputs, quantile=quantile)


# --- bootstrap: every resample at once -----------------------------------------------------


def _weights(n: int, resamples: int, rng: np.random.Generator) -> FloatArray:
    """``(resamples, n)`` multinomial counts: how often each row is drawn in each resample."""
    return rng.multinomial(n, np.full(n, 1.0 / n), size=resamples).astype(np.float64)


def _weighted_auc(sorted_scores: FloatArray, y: FloatArray, w: FloatArray) -> FloatArray:
    """ROC-AUC of every row of weights ``w`` (rows sorted by score; ties count one half)."""
    groups = np.flatnonzero(np.diff(sorted_scores, prepend=np.nan))  # first row of each tie
    pos = np.add.reduceat(w * y, groups, axis=1)
    neg = np.add.reduceat(w * (1 - y), groups, axis=1)
    below = np.cumsum(neg, axis=1) - neg
    wins = (pos * (below + 0.5 * neg)).sum(axis=1)
    total = pos.sum(axis=1) * neg.sum(axis=1)
    return np.where(total > 0, wins / np.maximum(total, _EPS), np.nan)


def _weighted_average_precision(
    sorted_scores: FloatArray, y: FloatArray, w: FloatArray
) -> FloatArray:
    """Average precision (scikit-learn's step-wise sum) of every row of weights ``w``."""
    groups = np.flatnonzero(np.diff(sorted_scores, prepend=np.nan))
    pos = np.add.reduceat(w * y, groups, axis=1)[:, ::-1]  # highest scores first
    count = np.add.reduceat(w, groups, axis=1)[:, ::-1]
    tp = np.cumsum(pos, axis=1)
    predicted = np.cumsum(count, axis=1)
    total = tp[:, -1:]
    precision = tp / np.maximum(predicted, _EPS)
    recall_step = pos / np.maximum(total, _EPS)
    ap: FloatArray = (precision * recall_step).sum(axis=1)
    return ap


def _ece(p: FloatArray, y: FloatArray, w: FloatArray, bins: int = 10) -> FloatArray:
    index = np.minimum((p * bins).astype(np.int64), bins - 1)
    total = w.sum(axis=1)
    ece = np.zeros(w.shape[0])
    for b in range(bins):
        mask = index == b
        wb = w[:, mask]
        nb = wb.sum(axis=1)
        gap = np.abs((wb * p[mask]).sum(axis=1) - (wb * y[mask]).sum(axis=1))
        ece += np.where(nb > 0, gap, 0.0)
    normed: FloatArray = ece / np.maximum(total, _EPS)
    return normed


def _binary_resamples(
    y: FloatArray,
    p: FloatArray,
    w: FloatArray,
    threshold: float,
    costs: Costs | None,
) -> dict[str, FloatArray]:
    order = np.argsort(p, kind="stable")
    ps, ys, ws = p[order], y[order], w[:, order]
    total = ws.sum(axis=1)
    clipped = np.clip(ps, _EPS, 1 - _EPS)
    loss = -(ys * np.log(clipped) + (1 - ys) * np.log1p(-clipped))
    predicted = (ps >= threshold).astype(np.float64)
    out = {
        "roc_auc": _weighted_auc(ps, ys, ws),
        "pr_auc": _weighted_average_precision(ps, ys, ws),
        "log_loss": (ws * loss).sum(axis=1) / total,
        "brier": (ws * (ps - ys) ** 2).sum(axis=1) / total,
        "accuracy": (ws * (predicted == ys)).sum(axis=1) / total,
        "positive_rate": (ws * predicted).sum(axis=1) / total,
        "ece": _ece(ps, ys, ws),
    }
    if costs is not None:
        fn = (ws * ((predicted == 0) & (ys == 1))).sum(axis=1)
        fp = (ws * ((predicted == 1) & (ys == 0))).sum(axis=1)
        out["expected_cost"] = (costs.fn_cost * fn + costs.fp_cost * fp) / total
    return out


def _multiclass_resamples(y: np.ndarray, p: FloatArray, w: FloatArray) -> dict[str, FloatArray]:
    total = w.sum(axis=1)
    picked = np.clip(p[np.arange(len(y)), y], _EPS, 1.0)
    predicted = p.argmax(axis=1)
    correct = (predicted == y).astype(np.float64)
    f1s = []
    for k in range(p.shape[1]):
        tp = (w * ((predicted == k) & (y == k))).sum(axis=1)
        fp = (w * ((predicted == k) & (y != k))).sum(axis=1)
        fn = (w * ((predicted != k) & (y == k))).sum(axis=1)
        present = (tp + fp + fn) > 0
        f1s.append(np.where(present, 2 * tp / np.maximum(2 * tp + fp + fn, _EPS), np.nan))
    return {
        "accuracy": (w * correct).sum(axis=1) / total,
        "log_loss": (w * -np.log(picked)).sum(axis=1) / total,
        "macro_f1": np.nanmean(np.vstack(f1s), axis=0),
    }


def _regression_resamples(
    y: FloatArray, pred: FloatArray, w: FloatArray, quantile: float | None
) -> dict[str, FloatArray]:
    total = w.sum(axis=1)
    err = y - pred
    out = {
        "rmse": np.sqrt((w * err**2).sum(axis=1) / total),
        "mae": (w * np.abs(err)).sum(axis=1) / total,
    }
    if quantile is not None:
        loss = np.maximum(quantile * err, (quantile - 1) * err)
        out["pinball"] = (w * loss).sum(axis=1) / total
    return out


def measured_metrics(
    task: str,
    labels: np.ndarray,
    outputs: np.ndarray,
    threshold: float | None,
    *,
    costs: Costs | None = None,
    quantile: float | None = None,
    resamples: int = 200,
    confidence: float = 0.95,
    max_rows: int = 20_000,
    seed: int = 0,
) -> dict[str, MetricEstimate]:
    """The task's metrics on labelled rows, each with its percentile bootstrap interval.

    Raises:
        ValueError: the labels or outputs are invalid for the task (see the metric functions).
    """
    points = point_metrics(task, labels, outputs, threshold, costs=costs, quantile=quantile)
    rng = np.random.default_rng(seed)
    n = len(labels)
    rows = np.arange(n)
    if n > max_rows:
        rows = np.sort(rng.choice(n, size=max_rows, replace=False))
    w = _weights(len(rows), resamples, rng)
    y, out = np.asarray(labels)[rows], np.asarray(outputs)[rows]
    if task == "binary":
        t = 0.5 if threshold is None else threshold
        draws = _binary_resamples(y.astype(np.float64), out.astype(np.float64), w, t, costs)
    elif task == "multiclass":
        draws = _multiclass_resamples(y.astype(np.int64), out.astype(np.float64), w)
    else:
        draws = _regression_resamples(y.astype(np.float64), out.astype(np.float64), w, quantile)
    tail = (1 - confidence) / 2 * 100
    estimates = {}
    for name, value in points.items():
        if name not in draws:
            continue
        low, high = np.nanpercentile(draws[name], [tail, 100 - tail])
        estimates[name] = MetricEstimate(name, float(value), float(low), float(high), n)
    return estimates


LIST_K = 10  # NDCG@10 of each list: the A/B analysis's ranking metric too


def measured_list_metrics(
    per_list: npt.NDArray[np.float64],
    name: str,
    *,
    resamples: int = 200,
    confidence: float = 0.95,
    seed: int = 0,
) -> dict[str, MetricEstimate]:
    """A ranking model's quality: the mean of a per-list metric (NDCG@k) with its percentile
    bootstrap interval over lists (lists, not items, are the independent draws)."""
    if per_list.size == 0:
        return {}
    rng = np.random.default_rng(seed)
    w = _weights(len(per_list), resamples, rng)
    draws = (w @ per_list) / w.sum(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(draws, [tail, 100 - tail])
    value = float(per_list.mean())
    return {name: MetricEstimate(name, value, float(low), float(high), int(per_list.size))}


# --- estimated before labels (CBPE) ------------------------------------------------------------


def estimated_binary_metrics(
    values: FloatArray, counts: FloatArray, threshold: float
) -> dict[str, float]:
    """Expected metrics of a calibrated binary model from its score distribution alone.

    Args:
        values: sorted distinct probabilities of the window.
        counts: rows per probability.
        threshold: the model's decision threshold.

    Returns:
        ``roc_auc``, ``accuracy``, ``precision``, ``recall``, ``f1``, ``log_loss``, ``brier``
        and ``positive_rate``: what they would measure if each label were drawn with its score
        as the probability (ROC-AUC as the expected share of correctly ordered pairs).
    """
    p, c = np.asarray(values, np.float64), np.asarray(counts, np.float64)
    pos, neg = c * p, c * (1 - p)
    below = np.cumsum(neg) - neg
    auc = float((pos * (below + 0.5 * neg)).sum() / max(pos.sum() * neg.sum(), _EPS))
    predicted = p >= threshold
    tp, fp = pos[predicted].sum(), neg[predicted].sum()
    fn, tn = pos[~predicted].sum(), neg[~predicted].sum()
    total = c.sum()
    clipped = np.clip(p, _EPS, 1 - _EPS)
    entropy = -(p * np.log(clipped) + (1 - p) * np.log1p(-clipped))
    precision = tp / max(tp + fp, _EPS)
    recall = tp / max(tp + fn, _EPS)
    return {
        "roc_auc": auc,
        "accuracy": float((tp + tn) / total),
        "precision": float(precision),
        "recall": float(recall),
        "f1": float(2 * precision * recall / max(precision + recall, _EPS)),
        "log_loss": float((c * entropy).sum() / total),
        "brier": float((c * p * (1 - p)).sum() / total),
        "positive_rate": float(c[predicted].sum() / total),
    }


# --- decay -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decay:
    """How a metric of the window compares with the reference's test value.

    Attributes:
        metric: the metric.
        reference: the reference's test value.
        window: the window's estimate with its interval.
        gap: how far the reference lies beyond the interval on the worse side (0 inside it).
        decayed: ``gap > tolerance``.
    """

    metric: str
    reference: float
    window: MetricEstimate
    gap: float
    decayed: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "metric": self.metric,
            "reference": self.reference,
            "window": self.window.to_json(),
            "gap": self.gap,
            "decayed": self.decayed,
        }


def decay(
    window: Mapping[str, MetricEstimate], reference: Mapping[str, float], tolerance: float
) -> list[Decay]:
    """Per metric measured in both, whether the window is worse than the reference beyond its
    interval by more than ``tolerance``."""
    out = []
    for name, estimate in window.items():
        if name not in reference or name not in DIRECTIONS:
            continue
        ref = reference[name]
        gap = ref - estimate.high if estimate.direction == "max" else estimate.low - ref
        gap = max(gap, 0.0)
        out.append(Decay(name, ref, estimate, gap, gap > tolerance))
    return out


@dataclass(frozen=True)
class PerformanceReport:
    """Quality of one model version over one window.

    Attributes:
        rows: rows served in the window.
        labelled: rows with a label.
        coverage: ``labelled / rows``.
        label_delay_s: median and 90th percentile of the time from answer to label.
        measured: metrics on labelled rows (empty when there are too few).
        insufficient: why nothing was measured (``None`` when it was).
        estimated: metrics estimated from the scores alone (binary), before labels.
        decay: per metric, the comparison with the reference's test value.
    """

    rows: int
    labelled: int
    coverage: float
    label_delay_s: dict[str, float]
    measured: dict[str, MetricEstimate]
    insufficient: str | None
    estimated: dict[str, float]
    decay: list[Decay] = field(default_factory=list)

    @property
    def decayed(self) -> list[str]:
        """The metrics that decayed."""
        return [d.metric for d in self.decay if d.decayed]

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "rows": self.rows,
            "labelled": self.labelled,
            "coverage": self.coverage,
            "label_delay_s": dict(self.label_delay_s),
            "measured": {k: v.to_json() for k, v in self.measured.items()},
            "insufficient": self.insufficient,
            "estimated": dict(self.estimated),
            "estimated_assumes": "calibrated probabilities on the window's data",
            "decay": [d.to_json() for d in self.decay],
            "decayed": self.decayed,
        }
