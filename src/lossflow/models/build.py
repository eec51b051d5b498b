"""Building, training and loading models from a training config and its fitted preprocessing.

The training flow, cross-validation, hyper-parameter search and retraining all build models
here: nothing in this module knows about flows, runs or the prepared directory. Arrays in,
checkpoints and predictions out.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from lossflow.config.training import DEFAULT_RANKING_K, TrainingConfig, quantile_of
from lossflow.data.augment import BatchAugment, ImageAugment
from lossflow.data.lists import gather, padded_index
from lossflow.data.preprocessing import EncodedFeatures, Preprocessor
from lossflow.data.sources import DIGITS_SIDE
from lossflow.evaluation.metrics import (
    binary_metrics,
    multiclass_metrics,
    ranking_metrics,
    regression_metrics,
)
from lossflow.losses import LossSpecBase
from lossflow.models import InferenceModel, OutputSpec, build_network, output_spec
from lossflow.models.nets import Standardize, TargetScale
from lossflow.models.system import BatchTransform, EpochMetrics, LossflowSystem
from lossflow.training import FitResult, MetricSink, TensorBatches, fit, processes_of

PREDICT_BATCH = 65_536
VAL_BATCH_MIN = 8192


def resolved_loss_spec(cfg: TrainingConfig, class_counts: Sequence[int] | None) -> LossSpecBase:
    """The configured loss with the training split's class counts filled in where it uses them."""
    if class_counts is None:
        return cfg.loss
    return cfg.loss.with_class_counts(list(class_counts))


def output_of(cfg: TrainingConfig, pre: Preprocessor) -> OutputSpec:
    """The network's output width and transform for ``cfg``'s loss and task."""
    return output_spec(cfg.loss, cfg.data.task, len(pre.label_names or ()))


def build_inference_model(cfg: TrainingConfig, pre: Preprocessor) -> InferenceModel:
    """The configured network (untrained) with its output transform; a regression network ends
    in the training target's scale (:class:`~lossflow.models.nets.TargetScale`) unless
    ``model.scale_target`` is off."""
    out = output_of(cfg, pre)
    net = build_network(
        cfg.model,
        Standardize.of(pre),
        pre.n_numeric,
        pre.cardinalities,
        out.dim,
        image_side=DIGITS_SIDE if cfg.model.kind == "cnn" else None,
    )
    stats = pre.target_stats
    wanted = cfg.data.task == "regression" and cfg.model.scale_target and stats is not None
    if wanted and stats is not None and (out.transform != "exp" or stats["mean"] > 0):
        net = TargetScale(net, out.transform, stats["mean"], stats["std"])
    return InferenceModel(net, out.transform)


def input_tensors(pre: Preprocessor, encoded: EncodedFeatures) -> tuple[Tensor, ...]:
    """The network's input tensors (zero-copy views of the arrays)."""
    return tuple(torch.from_numpy(a) for a in pre.model_inputs(encoded).values())


def target_tensor(target: np.ndarray) -> Tensor:
    """Targets as the losses take them: int64 class indices or float32 values."""
    tensor = torch.from_numpy(target)
    return tensor.long() if tensor.dtype in (torch.int32, torch.int64) else tensor.float()


class ImageBatchTransform:
    """Image augmentation of the pixel columns of a batch (picklable, for DDP processes)."""

    def __init__(self, image: ImageAugment) -> None:
        self.image = image

    def __call__(
        self, inputs: tuple[Tensor, ...], target: Tensor
    ) -> tuple[tuple[Tensor, ...], Tensor | None, float]:
        pixels = inputs[0].reshape(-1, 1, DIGITS_SIDE, DIGITS_SIDE)
        return (self.image(pixels).reshape(inputs[0].shape), *inputs[1:]), None, 1.0


class TabularBatchTransform:
    """Noise and mixup on standardised features, mapped back to the raw input space."""

    def __init__(self, batch: BatchAugment, standardize: Standardize) -> None:
        self.batch = batch
        self.standardize = standardize

    def __call__(
        self, inputs: tuple[Tensor, ...], target: Tensor
    ) -> tuple[tuple[Tensor, ...], Tensor | None, float]:
        numeric = inputs[0]
        categorical = inputs[1] if len(inputs) > 1 else numeric.new_zeros((len(numeric), 0))
        standardize = self.standardize.to(numeric.device)  # no-op once on the batches' device
        z = standardize(numeric)
        out = self.batch(z, categorical, target)
        raw = out.numeric * standardize.std + standardize.mean
        return (raw, *inputs[1:]), out.perm, out.lam


def batch_transform(cfg: TrainingConfig, pre: Preprocessor) -> BatchTransform | None:
    """Training-only augmentation, in the network's raw input space.

    Tabular noise and mixup are defined on standardised features: rows are imputed and
    standardised with the model's own preprocessing layer, augmented, and mapped back, so the
    network sees raw-space inputs as at serving time.
    """
    aug = cfg.data.augment
    if aug.image is not None:
        return ImageBatchTransform(ImageAugment(aug.image))
    batch = BatchAugment.from_config(aug)
    if not batch.active:
        return None
    return TabularBatchTransform(batch, Standardize.of(pre))


@dataclass(frozen=True)
class TaskMetrics:
    """The validation metrics of a task (``VALIDATION_METRICS``), from predictions."""

    task: str
    quantile: float | None
    ranking_k: tuple[int, ...] = DEFAULT_RANKING_K
    relevant_at: float | None = None

    def __call__(self, y: np.ndarray, pred: np.ndarray) -> Mapping[str, float]:
        if self.task == "ranking":
            # (Q, L) lists; padding holds NaN relevance (see list_tensors).
            mask = ~np.isnan(y)
            return ranking_metrics(
                np.where(mask, y, 0.0), pred, mask, self.ranking_k, self.relevant_at
            )
        if self.task == "binary":
            m = binary_metrics(y, pred, 0.5)
            return {"auc": m["roc_auc"], "pr_auc": m["pr_auc"], "log_loss": m["log_loss"]}
        if self.task == "multiclass":
            return multiclass_metrics(y, pred)
        return regression_metrics(y, pred, quantile=self.quantile)


def epoch_metrics(cfg: TrainingConfig) -> EpochMetrics:
    """The validation metrics of ``cfg``'s task (``VALIDATION_METRICS``), from predictions."""
    return TaskMetrics(
        cfg.data.task,
        quantile_of(cfg.loss),
        tuple(cfg.evaluation.ranking_k),
        cfg.evaluation.relevant_at,
    )


def build_system(
    cfg: TrainingConfig, pre: Preprocessor, class_counts: Sequence[int] | None
) -> LossflowSystem:
    """The LightningModule for ``cfg``: network, resolved loss and regularisers injected."""
    model = build_inference_model(cfg, pre)
    regs = {f"{i}_{r.name}": r.build() for i, r in enumerate(cfg.regularizers)}
    return LossflowSystem(
        net=model.net,
        loss=resolved_loss_spec(cfg, class_counts).build(),
        regularizers=regs,
        task=cfg.data.task,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        max_epochs=cfg.trainer.max_epochs,
        epoch_metrics=epoch_metrics(cfg),
        predict=InferenceModel(nn.Identity(), model.output),
        batch_transform=batch_transform(cfg, pre),
    )


@dataclass(frozen=True)
class Split:
    """Encoded features and targets of one split (and, for ranking, each row's list id)."""

    features: EncodedFeatures
    target: np.ndarray
    lists: np.ndarray | None = None


def list_tensors(pre: Preprocessor, split: Split) -> tuple[tuple[Tensor, ...], Tensor]:
    """A ranking split as whole lists: inputs ``(Q, L, ...)`` and relevance ``(Q, L)``.

    Padding has zero inputs and NaN relevance: the mask of a batch is ``~relevance.isnan()``.

    Raises:
        ValueError: the split has no list ids.
    """
    if split.lists is None:
        raise ValueError("a ranking split needs the list id of each row (Split.lists)")
    index, _ = padded_index(split.lists)
    inputs = tuple(
        torch.from_numpy(gather(a, index, 0)) for a in pre.model_inputs(split.features).values()
    )
    target = torch.from_numpy(gather(split.target.astype(np.float32), index, np.nan))
    return inputs, target


def split_tensors(
    cfg: TrainingConfig, pre: Preprocessor, split: Split
) -> tuple[tuple[Tensor, ...], Tensor]:
    """The training tensors of a split: rows, or whole lists for a ranking task."""
    if cfg.data.task == "ranking":
        return list_tensors(pre, split)
    return input_tensors(pre, split.features), target_tensor(split.target)


@dataclass(frozen=True)
class FiniteMetrics:
    """Passes on only the finite values (a sink for MLflow, which refuses NaN and inf)."""

    sink: MetricSink

    def __call__(self, metrics: Mapping[str, float], step: int) -> None:
        self.sink({k: v for k, v in metrics.items() if math.isfinite(v)}, step)


def fit_model(
    cfg: TrainingConfig,
    pre: Preprocessor,
    train: Split,
    val: Split,
    class_counts: Sequence[int] | None,
    checkpoint_dir: Path,
    *,
    sink: MetricSink | None = None,
    resume: bool = False,
    progress_bar: bool = False,
) -> FitResult:
    """Fit the configured model on ``train``, validating (and early-stopping) on ``val``.

    Non-finite epoch metrics never reach ``sink`` (they stay in the history).

    Raises:
        lossflow.models.system.NonFiniteLossError: the training loss became NaN or infinite.
        RuntimeError: training wrote no checkpoint.
    """
    # A multi-process run moves each process's copy to its own device (lossflow.training).
    on_gpu = cfg.trainer.accelerator == "gpu" and processes_of(cfg.trainer) == 1
    device = "cuda" if on_gpu and torch.cuda.is_available() else None
    batches = TensorBatches(
        *split_tensors(cfg, pre, train),
        cfg.trainer.batch_size,
        shuffle=True,
        seed=cfg.trainer.seed,
        device=device,
    )
    val_batches = TensorBatches(
        *split_tensors(cfg, pre, val),
        max(cfg.trainer.batch_size, VAL_BATCH_MIN),
        device=device,
    )
    # The initial weights come from the seed too, not from whatever drew random numbers in this
    # process before (another fold, another trial): a run is the same wherever it runs.
    torch.manual_seed(cfg.trainer.seed)
    result = fit(
        build_system(cfg, pre, class_counts),
        batches,
        val_batches,
        cfg.trainer.model_copy(update={"early_stopping": cfg.early_stopping()}),
        checkpoint_dir,
        sink=None if sink is None else FiniteMetrics(sink),
        resume=resume,
        enable_progress_bar=progress_bar,
    )
    if (result.best_checkpoint or result.last_checkpoint) is None:
        raise RuntimeError(f"training wrote no checkpoint under {checkpoint_dir}")
    return result


def load_trained_model(cfg: TrainingConfig, pre: Preprocessor, checkpoint: Path) -> InferenceModel:
    """The inference model with the weights of a training checkpoint."""
    model = build_inference_model(cfg, pre)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    model.net.load_state_dict(net_state)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Batched torch predictions of an inference model on named numpy inputs."""
    model.eval()
    rows = len(next(iter(inputs.values())))
    outs = []
    for lo in range(0, rows, PREDICT_BATCH):
        batch = [torch.from_numpy(a[lo : lo + PREDICT_BATCH]) for a in inputs.values()]
        outs.append(model(*batch).float().numpy())
    return np.concatenate(outs)
