"""Trainer construction and the fast in-memory data path.

The data path: a split lives as a few tensors (on the training device when there is one), and
each batch is one ``index_select`` per tensor from a shuffled permutation — no ``Dataset``, no
per-sample ``__getitem__`` and no collation, which is where a default ``DataLoader`` spends most
of its time on small tabular rows.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from torch import Tensor

from lossflow.config import TrainerConfig


class TensorBatches:
    """Mini-batches sliced from in-memory tensors, reshuffled every epoch.

    Args:
        inputs: the network's input tensors, first dimension = rows.
        target: the targets, first dimension = rows.
        batch_size: rows per batch (the last batch may be smaller unless ``drop_last``).
        shuffle: draw a new permutation each epoch from ``seed`` and the epoch number.
        seed: makes the order reproducible across runs and resumes.
        device: move the tensors there once, so batches never cross the bus.
    """

    def __init__(
        self,
        inputs: Sequence[Tensor],
        target: Tensor,
        batch_size: int,
        *,
        shuffle: bool = False,
        seed: int = 0,
        drop_last: bool = False,
        device: torch.device | str | None = None,
    ) -> None:
        rows = target.shape[0]
        for i, t in enumerate(inputs):
            if t.shape[0] != rows:
                raise ValueError(f"input {i} has {t.shape[0]} rows but the target has {rows}")
        if rows == 0:
            raise ValueError("no rows to batch")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1; got {batch_size}")
        self.inputs = tuple(t.to(device) if device is not None else t for t in inputs)
        self.target = target.to(device) if device is not None else target
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.drop_last = drop_last
        self.epoch = 0

    @property
    def rows(self) -> int:
        return int(self.target.shape[0])

    def __len__(self) -> int:
        if self.drop_last:
            return max(self.rows // self.batch_size, 1)
        return math.ceil(self.rows / self.batch_size)

    def __iter__(self) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        device = self.target.device
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed + self.epoch)
            order: Tensor | None = torch.randperm(self.rows, generator=gen).to(device)
        else:
            order = None
        self.epoch += 1
        for b in range(len(self)):
            lo, hi = b * self.batch_size, min((b + 1) * self.batch_size, self.rows)
            if order is None:
                yield tuple(t[lo:hi] for t in self.inputs), self.target[lo:hi]
            else:
                idx = order[lo:hi]
                yield (
                    tuple(t.index_select(0, idx) for t in self.inputs),
                    self.target.index_select(0, idx),
                )


class MetricSink(Protocol):
    """Where epoch metrics go (the MLflow tracker in the pipeline)."""

    def __call__(self, metrics: Mapping[str, float], step: int) -> None: ...


@runtime_checkable
class ReportsEpochMeans(Protocol):
    """A LightningModule that accumulates its training metrics itself (see ``RunningMeans``)."""

    def pop_epoch_means(self) -> dict[str, float]: ...


class EpochMetricsCallback(Callback):
    """Sends every epoch's metrics to a sink and keeps them as history.

    Validation metrics come from ``trainer.callback_metrics`` (logged once per epoch); training
    metrics from the module's own accumulators when it keeps them.
    """

    def __init__(self, sink: MetricSink | None = None) -> None:
        self.sink = sink
        self.history: dict[str, list[float]] = {}

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.sanity_checking:
            return
        metrics = {
            k: float(v)
            for k, v in trainer.callback_metrics.items()
            if isinstance(v, Tensor) and v.numel() == 1
        }
        if isinstance(pl_module, ReportsEpochMeans):
            metrics.update(pl_module.pop_epoch_means())
        metrics["epoch"] = float(trainer.current_epoch)
        for k, v in metrics.items():
            self.history.setdefault(k, []).append(v)
        if self.sink is not None:
            self.sink(metrics, trainer.current_epoch)


@dataclass
class FitResult:
    """What training produced (small, passable between flow tasks)."""

    best_checkpoint: Path | None
    last_checkpoint: Path | None
    epochs: int
    global_step: int
    stopped_early: bool
    best_score: float | None
    history: dict[str, list[float]] = field(default_factory=dict)

    @property
    def checkpoint(self) -> Path:
        """The weights to use: the best checkpoint, else the last one.

        Raises:
            RuntimeError: training wrote no checkpoint.
        """
        checkpoint = self.best_checkpoint or self.last_checkpoint
        if checkpoint is None:
            raise RuntimeError("training wrote no checkpoint")
        return checkpoint


def build_trainer(
    cfg: TrainerConfig,
    checkpoint_dir: Path,
    callbacks: Sequence[Callback] = (),
    *,
    enable_progress_bar: bool = False,
) -> tuple[L.Trainer, ModelCheckpoint, EarlyStopping | None]:
    """A Trainer with checkpointing (best + last), optional early stopping and no logger.

    Metrics go to MLflow through :class:`EpochMetricsCallback`, not a Lightning logger, so only
    ``tracking.py`` talks to MLflow.
    """
    es_cfg = cfg.early_stopping
    # An unresolved early-stopping section (no training config to fill it in) watches val/loss.
    monitor = (es_cfg.monitor if es_cfg is not None else None) or "val/loss"
    mode = (es_cfg.mode if es_cfg is not None else None) or "min"
    checkpoint = ModelCheckpoint(
        dirpath=checkpoint_dir,
        filename="best-{epoch:03d}",
        monitor=monitor,
        mode=mode,
        save_last=True,
        save_top_k=1,
        auto_insert_metric_name=False,
    )
    all_callbacks: list[Callback] = [checkpoint, *callbacks]
    if enable_progress_bar:
        all_callbacks.append(RichProgressBar())
    early: EarlyStopping | None = None
    if es_cfg is not None:
        early = EarlyStopping(
            monitor=monitor,
            mode=mode,
            patience=es_cfg.patience,
            min_delta=es_cfg.min_delta,
            check_finite=True,
        )
        all_callbacks.append(early)
    kwargs: dict[str, Any] = {}
    if cfg.limit_train_batches is not None:
        kwargs["limit_train_batches"] = cfg.limit_train_batches
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=cfg.precision,
        gradient_clip_val=cfg.gradient_clip_val,
        gradient_clip_algorithm=cfg.gradient_clip_algorithm if cfg.gradient_clip_val else None,
        callbacks=all_callbacks,
        logger=False,
        enable_progress_bar=enable_progress_bar,
        enable_model_summary=False,
        log_every_n_steps=cfg.log_every_n_steps,
        deterministic=cfg.deterministic,
        num_sanity_val_steps=0,
        default_root_dir=checkpoint_dir,
        **kwargs,
    )
    return trainer, checkpoint, early


def fit(
    system: L.LightningModule,
    train: TensorBatches,
    val: TensorBatches,
    cfg: TrainerConfig,
    checkpoint_dir: Path,
    *,
    sink: MetricSink | None = None,
    resume: bool = False,
    callbacks: Sequence[Callback] = (),
    enable_progress_bar: bool = False,
) -> FitResult:
    """Train ``system``; with ``resume`` continue from ``checkpoint_dir/last.ckpt`` if present."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    history = EpochMetricsCallback(sink)
    trainer, checkpoint, early = build_trainer(
        cfg, checkpoint_dir, [history, *callbacks], enable_progress_bar=enable_progress_bar
    )
    last = checkpoint_dir / "last.ckpt"
    ckpt_path = str(last) if resume and last.is_file() else None
    if ckpt_path is not None:
        # Resume continues the shuffling sequence where it stopped.
        train.epoch = int(torch.load(last, map_location="cpu", weights_only=False)["epoch"]) + 1
    trainer.fit(system, train_dataloaders=train, val_dataloaders=val, ckpt_path=ckpt_path)
    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else None
    score = checkpoint.best_model_score
    return FitResult(
        best_checkpoint=best,
        last_checkpoint=last if last.is_file() else None,
        epochs=trainer.current_epoch,
        global_step=trainer.global_step,
        stopped_early=bool(early is not None and early.stopped_epoch > 0),
        best_score=float(score) if score is not None else None,
        history=history.history,
    )
