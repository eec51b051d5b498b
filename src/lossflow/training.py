"""Trainer construction, the fast in-memory data path and data-parallel training (DDP).

The data path: a split lives as a few tensors (on the training device when there is one), and
each batch is one ``index_select`` per tensor from a shuffled permutation — no ``Dataset``, no
per-sample ``__getitem__`` and no collation, which is where a default ``DataLoader`` spends most
of its time on small tabular rows.

Data-parallel training (``trainer.strategy: ddp`` with ``devices`` > 1 or ``num_nodes`` > 1):
:func:`fit` starts one process per device (``spawn``), so only the fit runs there and the
caller (a flow task) stays one process. ``trainer.batch_size`` stays the number of rows per
optimizer step: every process takes its ``1/world`` share of each batch of the same
permutation (:meth:`TensorBatches.shard`), so all processes run the same number of steps and,
gradients being averaged, the run follows the single-process trajectory. Every process
validates on the whole validation split, so early stopping decides alike everywhere; only
global rank 0 sends metrics to the sink (MLflow) and writes checkpoints, and the caller gets
rank 0's result and weights back.
"""

from __future__ import annotations

import copy
import ipaddress
import logging
import math
import os
import pickle
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, Protocol, runtime_checkable

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping, ModelCheckpoint, RichProgressBar
from torch import Tensor
from torch.multiprocessing.spawn import ProcessRaisedException, start_processes

from lossflow.config import TrainerConfig
from lossflow.errors import UserError

# What a node of a multi-node run must be told (Lightning's and torch's conventions).
CLUSTER_ENV: Final = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK")
# The loggers Lightning's rank-zero messages go through ("GPU available: ...", its tips).
_LIGHTNING_INFO_LOGGERS: Final = (
    "lightning.pytorch.utilities.rank_zero",
    "lightning.fabric.utilities.rank_zero",
)


class DistributedSetupError(UserError, RuntimeError):
    """A multi-process run cannot start: the message names the setting or variable to fix."""


class DistributedWorkerError(RuntimeError):
    """A training process of a multi-process run failed with an error that could not be sent
    back as itself; the message carries its traceback."""


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
        self.rank = 0
        self.world = 1

    @property
    def rows(self) -> int:
        return int(self.target.shape[0])

    def shard(self, rank: int, world: int) -> None:
        """Yield only process ``rank``'s share of each batch from now on.

        Every one of the ``world`` processes draws the same permutation and walks the same
        batches; of each batch it takes the rows ``rank, rank + world, ...``. A batch whose size
        is not a multiple of ``world`` is padded with the epoch's first rows, so every process
        gets batches of equal size and the same number of them (as ``DistributedSampler``
        pads). With gradients averaged across processes, a step sees the rows a single process
        would have seen in that batch.

        Raises:
            ValueError: ``rank`` is not in ``0 .. world - 1``.
        """
        if world < 1 or not 0 <= rank < world:
            raise ValueError(f"rank must be in 0..{world - 1}; got rank={rank}, world={world}")
        self.rank, self.world = rank, world

    def to(self, device: torch.device | str) -> TensorBatches:
        """Move the tensors to ``device`` (in place) and return ``self``."""
        self.inputs = tuple(t.to(device) for t in self.inputs)
        self.target = self.target.to(device)
        return self

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
        if self.world > 1:
            yield from self._shards(order)
            return
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

    def _shards(self, order: Tensor | None) -> Iterator[tuple[tuple[Tensor, ...], Tensor]]:
        device = self.target.device
        if order is None:
            order = torch.arange(self.rows, device=device)
        for b in range(len(self)):
            idx = order[b * self.batch_size : min((b + 1) * self.batch_size, self.rows)]
            short = -idx.numel() % self.world
            if short:
                idx = torch.cat([idx, order[:short].repeat(math.ceil(short / self.rows))[:short]])
            idx = idx[self.rank :: self.world]
            inputs = tuple(t.index_select(0, idx) for t in self.inputs)
            yield inputs, self.target.index_select(0, idx)


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
        if self.sink is not None and trainer.is_global_zero:
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


class _NoAdvertisement(logging.Filter):
    """Drops Lightning's tips to install its hosted services: every Trainer without a
    ``LitLogger`` logs "try installing [litlogger](...)" (and one without a registry
    checkpoint "[litmodels](...)"); lossflow's runs go to MLflow, so they only advertise."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return "[litlogger](" not in message and "[litmodels](" not in message


def _drop_lightning_advertisements() -> None:
    """Put the filter on Lightning's rank-zero loggers, once per process (no Trainer argument
    turns the tips off)."""
    for name in _LIGHTNING_INFO_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, _NoAdvertisement) for f in logger.filters):
            logger.addFilter(_NoAdvertisement())


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
    _drop_lightning_advertisements()
    trainer = L.Trainer(
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
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


def processes_of(cfg: TrainerConfig) -> int:
    """How many training processes ``cfg`` runs in all (``devices * num_nodes`` with DDP)."""
    return cfg.devices * cfg.num_nodes if cfg.strategy == "ddp" else 1


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
    """Train ``system``; with ``resume`` continue from ``checkpoint_dir/last.ckpt`` if present.

    With ``cfg.strategy == "ddp"`` and more than one process, the fit runs in ``cfg.devices``
    spawned processes on this node (see the module docstring); ``system``, the batches, the
    sink and the callbacks are pickled to them, ``system`` gets rank 0's trained weights back
    and each of ``callbacks`` rank 0's state. A ``UserError`` raised in a training process is
    raised here as itself.

    Raises:
        DistributedSetupError: a multi-node run without ``MASTER_ADDR``, ``MASTER_PORT`` and
            ``NODE_RANK`` in the environment.
    """
    if processes_of(cfg) > 1:
        return _fit_processes(
            _Job(system, train, val, cfg, checkpoint_dir, sink, resume, tuple(callbacks),
                 enable_progress_bar, _cluster(cfg), Path()),
        )  # fmt: skip
    return _fit_here(
        system,
        train,
        val,
        cfg,
        checkpoint_dir,
        sink=sink,
        resume=resume,
        callbacks=callbacks,
        enable_progress_bar=enable_progress_bar,
    )


def _fit_here(
    system: L.LightningModule,
    train: TensorBatches,
    val: TensorBatches,
    cfg: TrainerConfig,
    checkpoint_dir: Path,
    *,
    sink: MetricSink | None,
    resume: bool,
    callbacks: Sequence[Callback],
    enable_progress_bar: bool,
) -> FitResult:
    """The fit in this process (the whole run, or one rank of a multi-process run)."""
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


# --- data-parallel processes -----------------------------------------------------------------


@dataclass(frozen=True)
class _Cluster:
    """Where the processes of a run meet: rendezvous address and this node's place."""

    master_addr: str
    master_port: int
    node_rank: int


def _free_loopback_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _cluster(cfg: TrainerConfig) -> _Cluster:
    """One node: rendezvous on a free loopback port; several: what the environment says."""
    if cfg.num_nodes == 1:
        return _Cluster("127.0.0.1", _free_loopback_port(), 0)
    missing = [key for key in CLUSTER_ENV if not os.environ.get(key)]
    if missing:
        raise DistributedSetupError(
            f"trainer.num_nodes={cfg.num_nodes}: set {', '.join(missing)} on every node (the "
            "address and port of node 0, and this node's rank 0..num_nodes-1), as torchrun, "
            "SLURM or a Kubernetes job would"
        )
    node_rank = int(os.environ["NODE_RANK"])
    if not 0 <= node_rank < cfg.num_nodes:
        raise DistributedSetupError(
            f"NODE_RANK={node_rank} but trainer.num_nodes={cfg.num_nodes}: use "
            f"0..{cfg.num_nodes - 1}"
        )
    return _Cluster(os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), node_rank)


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class _Job:
    """Everything a training process needs; pickled to it."""

    system: L.LightningModule
    train: TensorBatches
    val: TensorBatches
    cfg: TrainerConfig
    checkpoint_dir: Path
    sink: MetricSink | None
    resume: bool
    callbacks: tuple[Callback, ...]
    enable_progress_bar: bool
    cluster: _Cluster
    exchange: Path  # where ranks leave their result or error for the caller


@dataclass(frozen=True)
class _Outcome:
    result: FitResult
    state_dict: dict[str, Tensor]
    callbacks: tuple[Callback, ...]


_RESULT_FILE: Final = "rank0.pickle"


def _error_file(rank: int) -> str:
    return f"error-{rank}.pickle"


def _fit_processes(job: _Job) -> FitResult:
    """Spawn ``devices`` training processes on this node, wait for all, return rank 0's fit."""
    with tempfile.TemporaryDirectory(prefix="lossflow-ddp-") as tmp:
        job = replace(job, exchange=Path(tmp))
        context = start_processes(  # type: ignore[no-untyped-call]
            _train_process, args=(job,), nprocs=job.cfg.devices, join=False, start_method="spawn"
        )
        try:
            while not context.join():
                pass
        except ProcessRaisedException as exc:
            rank = job.cluster.node_rank * job.cfg.devices + exc.error_index
            error = job.exchange / _error_file(rank)
            if error.is_file():
                raise pickle.loads(error.read_bytes()) from None
            raise DistributedWorkerError(str(exc)) from None
        result = job.exchange / _RESULT_FILE
        if not result.is_file():  # node_rank > 0: rank 0, its result and checkpoints are on node 0
            return FitResult(None, None, 0, 0, False, None)
        outcome: _Outcome = pickle.loads(result.read_bytes())
    job.system.load_state_dict(outcome.state_dict)
    for mine, theirs in zip(job.callbacks, outcome.callbacks, strict=True):
        mine.__dict__.update(theirs.__dict__)
    return outcome.result


def _train_process(local_rank: int, job: _Job) -> None:
    """One rank of a multi-process fit (the target of ``torch.multiprocessing``)."""
    cfg = job.cfg
    cluster = job.cluster
    world = processes_of(cfg)
    rank = cluster.node_rank * cfg.devices + local_rank
    os.environ.update(
        MASTER_ADDR=cluster.master_addr,
        MASTER_PORT=str(cluster.master_port),
        NODE_RANK=str(cluster.node_rank),
        LOCAL_RANK=str(local_rank),
        WORLD_SIZE=str(world),
        RANK=str(rank),
    )
    if _is_loopback(cluster.master_addr):
        # gloo otherwise binds the address the host name resolves to; one node stays on loopback.
        os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    train, val = job.train, job.val
    if cfg.accelerator == "gpu":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        train.to(device)
        val.to(device)
    else:
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // cfg.devices))
    train.shard(rank, world)
    # Tensors arrive in shared memory: each process trains its own copy of the weights (the
    # data stays shared, read only).
    system = copy.deepcopy(job.system)
    try:
        result = _fit_here(
            system,
            train,
            val,
            cfg,
            job.checkpoint_dir,
            sink=job.sink,
            resume=job.resume,
            callbacks=job.callbacks,
            enable_progress_bar=job.enable_progress_bar and rank == 0,
        )
    except BaseException as err:
        try:
            payload = pickle.dumps(err)
        except Exception:  # an error that cannot travel: the caller gets its traceback text
            payload = None
        if payload is not None:
            (job.exchange / _error_file(rank)).write_bytes(payload)
        raise
    if rank == 0:
        state = {k: v.detach().cpu() for k, v in system.state_dict().items()}
        outcome = _Outcome(result, state, job.callbacks)
        (job.exchange / _RESULT_FILE).write_bytes(pickle.dumps(outcome))
