"""The trivial baseline a model must beat, and whether it does.

Every evaluation puts the model beside the predictor that knows only the training labels:

- **classification**: the training prior (every record gets the training class shares as its
  probabilities), judged by log loss, the proper score the losses here optimise;
- **regression**: a constant from the training target, judged by the metric the loss aims at:
  the mean by RMSE (squared-error-like losses), the median by MAE (``mae``, ``huber``,
  ``log_cosh``: losses that are linear in large errors), the ``q``-quantile by the pinball loss
  (``quantile``);
- **ranking**: the items' mean training relevance (popularity), by NDCG at the largest cut-off
  (computed by the ranking report; see :func:`lossflow.usecases.training.ranking_report`).

A model that does not beat its baseline is flagged wherever it is evaluated (``lossflow
train``, ``lossflow compare``, the retrain's pre-screen, the A/B status) and is never registered
as a challenger without saying so. No matplotlib or torch here: the A/B analysis imports it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    from lossflow.config.training import TrainingConfig
    from lossflow.data.prepare import PreparedData

Better = Literal["min", "max"]
# The registered version's tag holding its baseline as JSON (read by the A/B analysis).
BASELINE_JSON_TAG = "lossflow.baseline_json"
# The run's metric: 1 when the model beats its baseline on the test split, else 0.
BEATS_METRIC: Final = "test/beats_baseline"
# Regression losses whose large errors count linearly: the median is their constant optimum.
LINEAR_TAIL_LOSSES = frozenset({"mae", "huber", "log_cosh"})
_EPS = 1e-15


@dataclass(frozen=True)
class Baseline:
    """The constant predictor of one model's training labels (JSON-able, in model metadata).

    Attributes:
        kind: ``prior`` (class shares), ``mean``, ``median`` or ``quantile``.
        value: the class shares in class order, or the constant.
        metric: the metric the model is judged by against it (``log_loss``, ``rmse``, ``mae``,
            ``pinball``).
        quantile: the level of a ``quantile`` baseline.
    """

    kind: Literal["prior", "mean", "median", "quantile"]
    value: list[float] | float
    metric: str
    quantile: float | None = None

    def describe(self) -> str:
        """``the training prior [0.75, 0.25]``, ``the training mean 104.3``..."""
        if isinstance(self.value, list):
            return "the training prior [" + ", ".join(f"{v:.3g}" for v in self.value) + "]"
        name = f"{self.quantile:g}-quantile" if self.kind == "quantile" else self.kind
        return f"the training {name} {self.value:.4g}"

    def to_json(self) -> dict[str, Any]:
        """JSON-able form (:meth:`from_json` reads it)."""
        return {"kind": self.kind, "value": self.value, "metric": self.metric,
                "quantile": self.quantile}  # fmt: skip

    @classmethod
    def from_json(cls, data: Mapping[str, Any] | None) -> Baseline | None:
        """The baseline written by :meth:`to_json` (``None`` for models exported before)."""
        if not data:
            return None
        value = data["value"]
        return cls(
            data["kind"],
            [float(v) for v in value] if isinstance(value, list) else float(value),
            str(data["metric"]),
            None if data.get("quantile") is None else float(data["quantile"]),
        )

    def output(self, class_names: Sequence[str] | None = None) -> dict[str, Any]:
        """The baseline's answer to every record, as the service logs an answer (so any
        per-record metric of the A/B analysis applies to it): a binary probability, the class
        probabilities (keyed by ``class_names``), or a value."""
        if not isinstance(self.value, list):
            return {"value": self.value}
        if len(self.value) == 2:  # binary: the positive class's probability
            return {"probability": self.value[1], "label": int(self.value[1] >= 0.5)}
        names = list(class_names or (str(k) for k in range(len(self.value))))
        best = int(np.argmax(self.value))
        return {"probabilities": dict(zip(names, self.value, strict=True)), "label": names[best]}

    def record_loss(self, label: float | int) -> float:
        """The baseline's loss on one record's label by its metric (squared error for RMSE:
        the mean of these is the MSE)."""
        if isinstance(self.value, list):
            return -float(np.log(max(self.value[int(label)], _EPS)))
        error = float(label) - self.value
        if self.metric == "rmse":
            return error * error
        if self.metric == "pinball":
            q = 0.5 if self.quantile is None else self.quantile
            return max(q * error, (q - 1.0) * error)
        return abs(error)


def regression_metric(loss_names: set[str], quantile: float | None) -> str:
    """The metric a regression model is judged by against its baseline (see the module)."""
    if quantile is not None:
        return "pinball"
    if loss_names and loss_names <= LINEAR_TAIL_LOSSES:
        return "mae"
    return "rmse"


def fit_baseline(
    task: str,
    train_target: npt.ArrayLike,
    *,
    n_classes: int | None = None,
    loss_names: Sequence[str] = (),
    quantile: float | None = None,
) -> Baseline | None:
    """The baseline of a model trained on ``train_target`` (``None`` for ranking, whose
    baseline is popularity).

    Args:
        task: the learning task.
        train_target: the training split's encoded targets (class indices, 0/1, values).
        n_classes: classes of a multiclass task.
        loss_names: the (leaf) losses the model was trained with.
        quantile: the level of a quantile loss.
    """
    y = np.asarray(train_target, dtype=np.float64).reshape(-1)
    if task in ("binary", "multiclass"):
        k = 2 if task == "binary" else int(n_classes or (int(y.max()) + 1))
        counts = np.bincount(y.astype(np.int64), minlength=k).astype(np.float64)
        return Baseline("prior", (counts / counts.sum()).tolist(), "log_loss")
    if task != "regression":
        return None
    metric = regression_metric(set(loss_names), quantile)
    if metric == "pinball":
        q = float(quantile if quantile is not None else 0.5)
        return Baseline("quantile", float(np.quantile(y, q)), metric, q)
    if metric == "mae":
        return Baseline("median", float(np.median(y)), metric)
    return Baseline("mean", float(np.mean(y)), metric)


def model_baseline(cfg: TrainingConfig, prepared: PreparedData) -> Baseline | None:
    """The baseline of the model ``cfg`` trains on ``prepared`` (its training split's labels,
    judged by the metric its losses aim at)."""
    from lossflow.config.training import quantile_of
    from lossflow.losses.composite import leaf_losses

    _, train_y = prepared.arrays("train", original=True)
    return fit_baseline(
        cfg.data.task,
        train_y,
        n_classes=prepared.preprocessor().n_classes,
        loss_names=sorted(leaf_losses(cfg.loss)),
        quantile=quantile_of(cfg.loss),
    )


def beats(metrics: Mapping[str, float]) -> bool:
    """Whether a run's metrics say the model beat its baseline (``True`` when none applies)."""
    return bool(metrics.get(BEATS_METRIC, 1.0))


def baseline_value(baseline: Baseline, target: npt.ArrayLike) -> float:
    """The baseline's metric on ``target`` (encoded labels or values)."""
    losses = np.array([baseline.record_loss(v) for v in np.asarray(target).reshape(-1).tolist()])
    mean = float(losses.mean()) if losses.size else float("nan")
    return float(np.sqrt(mean)) if baseline.metric == "rmse" else mean


@dataclass(frozen=True)
class Verdict:
    """The model beside its baseline on one metric."""

    metric: str
    model: float
    baseline: float
    better: Better
    described: str

    @property
    def beats(self) -> bool:
        """Whether the model is strictly better than the baseline."""
        return self.model < self.baseline if self.better == "min" else self.model > self.baseline

    def line(self) -> str:
        """``log_loss 0.412 beats 0.499 of the training prior [0.75, 0.25]`` (or does NOT)."""
        verb = "beats" if self.beats else "does NOT beat"
        return f"{self.metric} {self.model:.4g} {verb} {self.baseline:.4g} of {self.described}"


def verdict(
    baseline: Baseline, model_metrics: Mapping[str, float], target: npt.ArrayLike
) -> Verdict:
    """The model's metric (``model_metrics[baseline.metric]``) beside the baseline's on the same
    labels.

    Raises:
        KeyError: the model's metrics lack the baseline's metric.
    """
    return Verdict(
        baseline.metric,
        float(model_metrics[baseline.metric]),
        baseline_value(baseline, target),
        "min",
        baseline.describe(),
    )
