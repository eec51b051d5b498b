"""Fold scores: which metrics a task reports, which way each is better, the threshold of a
fold, and how fast a run converged."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np

from lossflow.config.training import TrainingConfig, quantile_of
from lossflow.evaluation.metrics import task_metrics
from lossflow.evaluation.threshold import choose_threshold

Direction = Literal["min", "max"]

# Fold metrics by name and which way is better (positive_rate is reported, never compared).
METRIC_DIRECTIONS: dict[str, Direction] = {
    "roc_auc": "max",
    "pr_auc": "max",
    "log_loss": "min",
    "brier": "min",
    "f1": "max",
    "precision": "max",
    "recall": "max",
    "accuracy": "max",
    "expected_cost": "min",
    "macro_f1": "max",
    "rmse": "min",
    "mae": "min",
    "r2": "max",
    "pinball": "min",
}
TASK_METRICS: dict[str, tuple[str, ...]] = {
    "binary": ("roc_auc", "pr_auc", "log_loss", "brier", "f1", "precision", "recall", "accuracy"),
    "multiclass": ("accuracy", "macro_f1", "log_loss"),
    "regression": ("rmse", "mae", "r2"),
}
PRIMARY: dict[str, str] = {"binary": "roc_auc", "multiclass": "accuracy", "regression": "rmse"}
CONVERGENCE_FRACTION = 0.95


def costs_of(cfg: TrainingConfig) -> tuple[float | None, float | None]:
    """``(fn_cost, fp_cost)`` of the evaluation section (both None unless both are set)."""
    ev = cfg.evaluation
    if ev.fn_cost is None or ev.fp_cost is None:
        return None, None
    return ev.fn_cost, ev.fp_cost


def metric_names(cfg: TrainingConfig) -> tuple[str, ...]:
    """The fold metrics a run of ``cfg`` reports (``expected_cost`` with costs, ``pinball``
    with a quantile loss)."""
    names = TASK_METRICS[cfg.data.task]
    if cfg.data.task == "binary" and costs_of(cfg)[0] is not None:
        names = (*names, "expected_cost")
    if cfg.data.task == "regression" and quantile_of(cfg.loss) is not None:
        names = (*names, "pinball")
    return names


def default_metric(cfg: TrainingConfig) -> str:
    """The task's primary fold metric (``pinball`` for a quantile loss)."""
    if cfg.data.task == "regression" and quantile_of(cfg.loss) is not None:
        return "pinball"
    return PRIMARY[cfg.data.task]


def direction(metric: str) -> Direction:
    """``max`` when higher values of ``metric`` are better, else ``min``.

    Raises:
        KeyError: not a fold metric.
    """
    return METRIC_DIRECTIONS[metric]


def fold_threshold(cfg: TrainingConfig, y_val: np.ndarray, val_output: np.ndarray) -> float | None:
    """The binary threshold chosen on the fold's validation rows, as the training flow chooses
    it (F1- or cost-optimal); None for other tasks."""
    if cfg.data.task != "binary":
        return None
    ev = cfg.evaluation
    if ev.threshold == "cost":
        return choose_threshold(y_val, val_output, fn_cost=ev.fn_cost, fp_cost=ev.fp_cost).threshold
    return choose_threshold(y_val, val_output).threshold


def score(
    cfg: TrainingConfig, y: np.ndarray, output: np.ndarray, threshold: float | None
) -> dict[str, float]:
    """Every fold metric of ``output`` against ``y`` (see :func:`metric_names`).

    Raises:
        ValueError: the metrics are undefined on these rows (e.g. a single class for AUC).
    """
    fn_cost, fp_cost = costs_of(cfg)
    metrics = task_metrics(
        cfg.data.task,
        y,
        output,
        threshold=threshold,
        fn_cost=fn_cost,
        fp_cost=fp_cost,
        quantile=quantile_of(cfg.loss) if cfg.data.task == "regression" else None,
    )
    return {k: float(v) for k, v in metrics.items()}


def epochs_to_fraction(
    series: Sequence[float], better: Direction, fraction: float = CONVERGENCE_FRACTION
) -> int | None:
    """Epochs a run needed to come within ``1 - fraction`` (5 %) of its best value.

    For a metric better when higher that is the first epoch with ``v >= best - 0.05 |best|``
    (95 % of the best for a positive metric); when lower, ``v <= best + 0.05 |best|``. Epochs
    count from 1; None when the series has no finite value.

    Example:
        >>> epochs_to_fraction([0.60, 0.70, 0.74, 0.75], "max")
        3
        >>> epochs_to_fraction([0.9, 0.5, 0.41, 0.40], "min")
        3
    """
    finite = [v for v in series if math.isfinite(v)]
    if not finite:
        return None
    best = max(finite) if better == "max" else min(finite)
    tolerance = (1.0 - fraction) * abs(best)
    close = [
        epoch
        for epoch, value in enumerate(series, start=1)
        if math.isfinite(value)
        and (value >= best - tolerance if better == "max" else value <= best + tolerance)
    ]
    return close[0]  # the best epoch itself is always close
