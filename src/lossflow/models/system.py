"""The one LightningModule: a network, a loss and regularisers injected, one shared step."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import lightning as L
import numpy as np
import torch
from torch import Tensor, nn

from lossflow.config import OptimizerConfig, SchedulerConfig
from lossflow.errors import UserError
from lossflow.losses import TaskType
from lossflow.losses.composite import CompositeLoss
from lossflow.losses.regularizers import WeightPenalty
from lossflow.models.optim import build_optimizer, optimizers_and_schedule

Batch = tuple[tuple[Tensor, ...], Tensor]
EpochMetrics = Callable[[np.ndarray, np.ndarray], Mapping[str, float]]


class RunningMeans:
    """Batch-size-weighted sums of detached scalars, kept on their device until read.

    Logging through ``LightningModule.log`` costs tens of microseconds of Python per value per
    step; summing a handful of device tensors costs almost nothing and never synchronises.
    """

    def __init__(self) -> None:
        self.sums: dict[str, Tensor] = {}
        self.weight = 0.0

    def add(self, values: Mapping[str, Tensor], weight: float) -> None:
        for key, value in values.items():
            v = value.detach().float() * weight
            self.sums[key] = self.sums[key] + v if key in self.sums else v
        self.weight += weight

    def pop(self, sum_across: Callable[[Tensor], Tensor] | None = None) -> dict[str, float]:
        """The means since the last ``pop`` (empty when nothing was added).

        Args:
            sum_across: sums a tensor over the processes of a data-parallel run (each process
                holds its share of the rows); every process must call ``pop`` with the same keys.
        """
        sums, weight = self.sums, self.weight
        self.sums, self.weight = {}, 0.0
        if sum_across is not None and sums:
            keys = list(sums)
            first = sums[keys[0]]
            packed = torch.stack([*(sums[k].reshape(()) for k in keys), first.new_tensor(weight)])
            totals = sum_across(packed)
            sums = dict(zip(keys, totals[:-1], strict=True))
            weight = float(totals[-1])
        return {k: float(v) / weight for k, v in sums.items()} if weight else {}


class NonFiniteLossError(UserError, RuntimeError):
    """Training produced a NaN or infinite loss; the message names the step and the term."""


# (inputs, target) -> (augmented inputs, mixup permutation or None, mixup weight lam): with
# mixup, row i was mixed as lam * x[i] + (1 - lam) * x[perm[i]].
BatchTransform = Callable[
    [tuple[Tensor, ...], Tensor], tuple[tuple[Tensor, ...], Tensor | None, float]
]


class LossflowSystem(L.LightningModule):
    """Trains ``net`` with ``loss`` (+ ``regularizers``) and logs every part of the objective.

    Logged per epoch: ``train/loss`` (the full objective), ``train/data_loss``,
    ``train/term/<name>`` for each composite term, ``train/reg/<name>`` for each penalty,
    ``val/loss``, the task's validation metrics (``val/auc``…) and gradient norms
    (``grad/total``, ``grad/<parameter>``) averaged over the epoch.

    Args:
        net: the network; takes the batch's input tensors positionally.
        loss: a loss module from ``build_loss``; called as ``loss(output, target)``.
        regularizers: name -> weight penalty on ``net``.
        task: decides how the network output is shaped for the loss.
        optimizer: optimizer settings.
        scheduler: learning-rate schedule settings.
        max_epochs: horizon of the cosine schedule.
        epoch_metrics: ``(y_true, prediction) -> metrics`` computed on the validation split.
        predict: maps raw network output to the prediction ``epoch_metrics`` expects.
        batch_transform: training-only augmentation of a batch (noise, mixup, image transforms).
    """

    def __init__(
        self,
        net: nn.Module,
        loss: nn.Module,
        regularizers: Mapping[str, WeightPenalty],
        task: TaskType,
        optimizer: OptimizerConfig,
        scheduler: SchedulerConfig,
        max_epochs: int,
        epoch_metrics: EpochMetrics | None = None,
        predict: Callable[[Tensor], Tensor] | None = None,
        batch_transform: BatchTransform | None = None,
    ) -> None:
        super().__init__()
        self.net = net
        self.loss = loss
        self.regularizers = nn.ModuleDict(dict(regularizers))
        self.task = task
        self.optimizer_cfg = optimizer
        self.scheduler_cfg = scheduler
        self.max_epochs = max_epochs
        self.epoch_metrics = epoch_metrics
        self.predict_fn = predict
        self.batch_transform = batch_transform
        self._val_outputs: list[Tensor] = []
        self._val_targets: list[Tensor] = []
        self._means = {"train": RunningMeans(), "val": RunningMeans()}
        self._grad_names: list[str] | None = None
        self._grad_norms = RunningMeans()

    def forward(self, *inputs: Tensor) -> Tensor:
        if self.task == "ranking" and inputs[0].dim() == 3:
            # Whole lists (Q, L, ...): the network scores every item on its own.
            q, n = inputs[0].shape[:2]
            flat = tuple(t.reshape(q * n, *t.shape[2:]) for t in inputs)
            scores: Tensor = self.net(*flat)
            return scores.reshape(q, n)
        out: Tensor = self.net(*inputs)
        if self.task in ("binary", "regression") and out.dim() == 2 and out.shape[1] == 1:
            return out.squeeze(1)
        return out

    def _data_loss(self, out: Tensor, target: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        if self.task == "ranking":
            # Lists padded with NaN relevance (lossflow.models.build.list_tensors).
            mask = ~target.isnan()
            lists = (out, target.where(mask, 0.0), mask)
            if isinstance(self.loss, CompositeLoss):
                return self.loss.forward_with_terms(*lists)
            listwise: Tensor = self.loss(*lists)
            return listwise, {}
        if isinstance(self.loss, CompositeLoss):
            return self.loss.forward_with_terms(out, target)
        value: Tensor = self.loss(out, target)
        return value, {}

    def model_step(self, batch: Batch, stage: str) -> tuple[Tensor, Tensor]:
        """One forward pass and the full objective; shared by training and validation."""
        inputs, target = batch
        perm: Tensor | None = None
        lam = 1.0
        if stage == "train" and self.batch_transform is not None:
            inputs, perm, lam = self.batch_transform(inputs, target)
        out = self(*inputs)
        data_loss, terms = self._data_loss(out, target)
        if perm is not None:
            other, other_terms = self._data_loss(out, target[perm])
            data_loss = lam * data_loss + (1.0 - lam) * other
            terms = {k: lam * v + (1.0 - lam) * other_terms[k] for k, v in terms.items()}
        penalties, total = self._with_penalties(data_loss)
        if stage == "train":
            self._check_finite(total, data_loss, terms, penalties)
        log = {f"{stage}/loss": total, f"{stage}/data_loss": data_loss}
        log.update({f"{stage}/term/{k}": v for k, v in terms.items()})
        log.update({f"{stage}/reg/{k}": v for k, v in penalties.items()})
        self._means[stage].add(log, float(target.shape[0]))
        return total, out

    def _with_penalties(self, data_loss: Tensor) -> tuple[dict[str, Tensor], Tensor]:
        penalties = {name: reg(self.net) for name, reg in self.regularizers.items()}
        total = data_loss + sum(penalties.values()) if penalties else data_loss
        return penalties, total

    def objective(self, inputs: tuple[Tensor, ...], target: Tensor) -> Tensor:
        """The full training objective (loss + penalties) on a batch, without augmentation or
        logging: what the loss landscape is drawn of."""
        return self._with_penalties(self._data_loss(self(*inputs), target)[0])[1]

    def _check_finite(
        self,
        total: Tensor,
        data_loss: Tensor,
        terms: Mapping[str, Tensor],
        penalties: Mapping[str, Tensor],
    ) -> None:
        if bool(torch.isfinite(total)):
            return
        parts = {"data_loss": data_loss, **{f"term/{k}": v for k, v in terms.items()}}
        parts.update({f"reg/{k}": v for k, v in penalties.items()})
        bad = [f"{k}={float(v.detach())}" for k, v in parts.items() if not bool(torch.isfinite(v))]
        raise NonFiniteLossError(
            f"non-finite training loss at step {self.global_step} (epoch {self.current_epoch}): "
            f"{', '.join(bad) or f'total={float(total.detach())}'}; lower the learning rate, clip "
            "gradients (trainer.gradient_clip_val) or check the loss options"
        )

    def training_step(self, batch: Batch, batch_idx: int) -> Tensor:
        return self.model_step(batch, "train")[0]

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        _, out = self.model_step(batch, "val")
        if self.epoch_metrics is not None:
            pred = self.predict_fn(out) if self.predict_fn is not None else out
            self._val_outputs.append(pred.detach().float().cpu())
            self._val_targets.append(batch[1].detach().cpu())

    def on_validation_epoch_end(self) -> None:
        """Log the validation means and metrics once, where early stopping can monitor them."""
        metrics = self._means["val"].pop()
        if self.epoch_metrics is not None and self._val_outputs:
            y = torch.cat(self._val_targets).numpy()
            pred = torch.cat(self._val_outputs).numpy()
            self._val_outputs.clear()
            self._val_targets.clear()
            metrics.update({f"val/{k}": float(v) for k, v in self.epoch_metrics(y, pred).items()})
        if metrics and not self.trainer.sanity_checking:
            # Every process validates on the whole split, so the values agree; syncing keeps
            # early stopping and checkpointing of all processes on the very same number.
            self.log_dict(metrics, sync_dist=self.trainer.world_size > 1)

    def on_before_optimizer_step(self, optimizer: torch.optim.Optimizer) -> None:
        """Accumulate each parameter's gradient norm (one fused kernel, no sync)."""
        named = [(n, p.grad) for n, p in self.net.named_parameters() if p.grad is not None]
        if not named:
            return
        if self._grad_names is None:
            self._grad_names = [n for n, _ in named]
        norms = torch.stack(torch._foreach_norm([g for _, g in named]))
        total = torch.linalg.vector_norm(norms)
        self._grad_norms.add({"grad/total": total, "grad/layers": norms}, 1.0)

    def pop_epoch_means(self) -> dict[str, float]:
        """Training means of the epoch (objective, terms, penalties, gradient norms), over the
        rows of all processes of a data-parallel run (gradients, hence their norms, are the
        same in every process)."""
        distributed = self._trainer is not None and self.trainer.world_size > 1
        means = self._means["train"].pop(self._sum_across_processes if distributed else None)
        grads = self._grad_norms
        if grads.weight and self._grad_names is not None:
            layers = grads.sums.pop("grad/layers") / grads.weight
            means.update(
                {f"grad/{n}": float(v) for n, v in zip(self._grad_names, layers, strict=True)}
            )
        means.update(grads.pop())
        return means

    def _sum_across_processes(self, value: Tensor) -> Tensor:
        total: Tensor = self.trainer.strategy.reduce(value, reduce_op="sum")
        return total

    def configure_optimizers(self) -> Any:
        extra = [p for p in self.loss.parameters() if p.requires_grad]
        optimizer = build_optimizer(self.optimizer_cfg, self.net, extra)
        return optimizers_and_schedule(optimizer, self.scheduler_cfg, self.max_epochs)
