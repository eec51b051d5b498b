"""The evaluation report of one model on one split: the task's metrics and the plots that apply."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from matplotlib.figure import Figure

from lossflow.evaluation.metrics import point_predictions, task_metrics
from lossflow.evaluation.plots import (
    plot_calibration,
    plot_confusion_matrix,
    plot_pr,
    plot_residuals,
    plot_roc,
    plot_training_curves,
)

TASKS: tuple[str, ...] = ("binary", "multiclass", "regression")


@dataclass(frozen=True)
class EvaluationReport:
    """Metrics and figures of one model on one split.

    Attributes:
        metrics: metric name to value (the keys of the task's ``*_metrics`` function).
        figures: file name (``"roc.png"``, ...) to figure.
    """

    metrics: dict[str, float]
    figures: dict[str, Figure] = field(default_factory=dict)


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
        metrics = task_metrics(task, y_true, output, threshold=t, fn_cost=fn_cost, fp_cost=fp_cost)
        prob = np.asarray(output, dtype=np.float64)
        figures["roc.png"] = plot_roc(y_true, prob)
        figures["pr.png"] = plot_pr(y_true, prob)
        figures["calibration.png"] = plot_calibration(y_true, prob)
        pred = (prob >= t).astype(np.int64)
        figures["confusion_matrix.png"] = plot_confusion_matrix(y_true, pred, names)
    elif task == "multiclass":
        _reject(task, threshold=threshold, fn_cost=fn_cost, fp_cost=fp_cost, quantile=quantile)
        metrics = task_metrics(task, y_true, output)
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
        point = point_predictions(output)
        metrics = task_metrics(task, y_true, point, quantile=quantile)
        figures["residuals.png"] = plot_residuals(y_true, point)
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
