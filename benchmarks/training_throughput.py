"""Training throughput (samples/s) of lossflow's training path beside a raw PyTorch loop.

Three variants train the same MLP (64 -> 512 -> 512 -> 1, ReLU) from the same initial weights
on the same synthetic binary data with the same loss (``build_loss``), AdamW and batch size, in
one run on one device:

- ``raw loop``: hand-written PyTorch; resident tensors, a permutation per epoch, one
  ``index_select`` per tensor per batch, ``zero_grad(set_to_none=True)``, no validation.
- ``lossflow``: ``LossflowSystem`` + ``TensorBatches`` + ``lossflow.training.fit`` (the Trainer
  from ``build_trainer``: checkpoints of best and last, epoch metrics, gradient norms,
  non-finite guard; early stopping off so that every run lasts ``--epochs``). ``build_trainer``
  takes no ``limit_val_batches``, so validation runs on a one-batch validation split, as users
  run it.
- ``plain Lightning``: a minimal LightningModule fed by a default ``DataLoader`` over a
  ``TensorDataset`` (``shuffle=True``, no workers), checkpointing off, no validation.
- ``lossflow DDP xN``: the ``lossflow`` variant with ``trainer.strategy=ddp`` and
  ``devices=N`` (``--ddp``; 0 leaves it out): N spawned processes (gloo on CPU, each with
  ``cores / N`` threads; NCCL on N GPUs), each taking ``1/N`` of every batch, so the steps and
  the weights are those of one process. Process start-up is outside the timed epochs.

The raw loop draws the same permutations as ``TensorBatches``, so in fp32 it ends with the
weights lossflow ends with; the script reports the largest difference as a check that both did
the same work. The first epoch is warm-up; samples/s counts epochs 2..n. The last line is the
headline ratio, lossflow / raw loop.

    python benchmarks/training_throughput.py                       # cuda if available, else cpu
    python benchmarks/training_throughput.py --device cpu --rows 65536 --epochs 3
    python benchmarks/training_throughput.py --precision bf16 --json out.json
    python benchmarks/training_throughput.py --profile             # + cProfile of lossflow's fit
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import itertools
import json
import logging
import pstats
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset

from lossflow.config import OptimizerConfig, SchedulerConfig, TrainerConfig
from lossflow.losses import build_loss
from lossflow.models.system import LossflowSystem
from lossflow.training import TensorBatches, fit

FEATURES = 64
HIDDEN = 512
LR = 1e-3
VARIANTS = ("raw loop", "lossflow", "plain Lightning")
DDP = "lossflow DDP"


@dataclass(frozen=True)
class Setup:
    device: torch.device
    precision: str  # "32" or "bf16"
    rows: int
    batch_size: int
    epochs: int
    loss: dict[str, Any]
    seed: int


@dataclass
class Outcome:
    variant: str
    epoch_seconds: list[float]
    final_loss: float | None
    net: nn.Module
    extra: dict[str, Any] = field(default_factory=dict)


def make_data(rows: int, seed: int) -> tuple[Tensor, Tensor]:
    """Seeded features and a binary target with about a fifth positive."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, FEATURES, generator=gen)
    w = torch.randn(FEATURES, generator=gen)
    score = x @ w / FEATURES**0.5 + 0.5 * torch.randn(rows, generator=gen)
    y = (score > torch.quantile(score, 0.8)).float()
    return x, y


def make_net(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(FEATURES, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, HIDDEN),
        nn.ReLU(),
        nn.Linear(HIDDEN, 1),
    )


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


class EpochClock(Callback):
    """Wall time of each training epoch, validation and checkpointing included."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.starts: list[float] = []
        self.end: float | None = None

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        self.starts.append(time.perf_counter())

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        _sync(self.device)
        self.end = time.perf_counter()

    def epoch_seconds(self, expected: int) -> list[float]:
        if self.end is None or len(self.starts) != expected:
            raise RuntimeError(
                f"trainer ran {len(self.starts)} epochs, expected {expected}; "
                "something stopped training early (a callback or an error)"
            )
        bounds = [*self.starts, self.end]
        return [b - a for a, b in itertools.pairwise(bounds)]


def run_raw(setup: Setup, template: nn.Module, x: Tensor, y: Tensor) -> Outcome:
    device = setup.device
    net = copy.deepcopy(template).to(device)
    net.train()
    loss_fn = build_loss(setup.loss).to(device)
    opt = torch.optim.AdamW(net.parameters(), lr=LR, weight_decay=0.0)
    xd, yd = x.to(device), y.to(device)
    rows, bs = setup.rows, setup.batch_size
    autocast = setup.precision == "bf16"
    times: list[float] = []
    epoch_loss = torch.zeros((), device=device)
    for epoch in range(setup.epochs):
        _sync(device)
        start = time.perf_counter()
        order = torch.randperm(rows, generator=torch.Generator().manual_seed(setup.seed + epoch))
        order = order.to(device)
        epoch_loss = torch.zeros((), device=device)
        for lo in range(0, rows, bs):
            idx = order[lo : lo + bs]
            xb, yb = xd.index_select(0, idx), yd.index_select(0, idx)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=autocast):
                loss = loss_fn(net(xb).squeeze(1), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            epoch_loss += loss.detach() * yb.shape[0]
        _sync(device)
        times.append(time.perf_counter() - start)
    return Outcome("raw loop", times, float(epoch_loss) / rows, net)


def _trainer_precision(setup: Setup) -> Literal["32-true", "bf16-mixed"]:
    return "bf16-mixed" if setup.precision == "bf16" else "32-true"


def run_lossflow(
    setup: Setup,
    template: nn.Module,
    x: Tensor,
    y: Tensor,
    profiler: cProfile.Profile | None,
    processes: int = 1,
) -> Outcome:
    device = setup.device
    net = copy.deepcopy(template)
    system = LossflowSystem(
        net=net,
        loss=build_loss(setup.loss),
        regularizers={},
        task="binary",
        optimizer=OptimizerConfig(name="adamw", lr=LR, weight_decay=0.0),
        scheduler=SchedulerConfig(name="none"),
        max_epochs=setup.epochs,
    )
    # A multi-process fit moves each process's copy of the batches to its own device.
    where = device if processes == 1 else None
    train = TensorBatches((x,), y, setup.batch_size, shuffle=True, seed=setup.seed, device=where)
    val_rows = min(setup.batch_size, setup.rows)
    val = TensorBatches((x[:val_rows],), y[:val_rows], setup.batch_size, device=where)
    cfg = TrainerConfig(
        max_epochs=setup.epochs,
        batch_size=setup.batch_size,
        seed=setup.seed,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        precision=_trainer_precision(setup),
        early_stopping=None,
        devices=processes,
        strategy="ddp" if processes > 1 else "auto",
    )
    clock = EpochClock(device)
    with tempfile.TemporaryDirectory(prefix="lossflow-bench-") as tmp:
        if profiler is not None:
            profiler.enable()
        result = fit(system, train, val, cfg, Path(tmp), callbacks=[clock])
        if profiler is not None:
            profiler.disable()
    losses = result.history.get("train/loss")
    return Outcome(
        "lossflow" if processes == 1 else DDP,
        clock.epoch_seconds(setup.epochs),
        losses[-1] if losses else None,
        net,
    )


class PlainModule(L.LightningModule):
    """What a user writes first: net, loss, AdamW, the loss logged per epoch."""

    def __init__(self, net: nn.Module, loss: nn.Module) -> None:
        super().__init__()
        self.net = net
        self.loss = loss

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> Tensor:
        xb, yb = batch
        loss: Tensor = self.loss(self.net(xb).squeeze(1), yb)
        self.log("train/loss", loss, on_step=False, on_epoch=True, batch_size=yb.shape[0])
        return loss

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.AdamW(self.net.parameters(), lr=LR, weight_decay=0.0)


def run_plain(setup: Setup, template: nn.Module, x: Tensor, y: Tensor) -> Outcome:
    device = setup.device
    net = copy.deepcopy(template)
    module = PlainModule(net, build_loss(setup.loss))
    loader = DataLoader(TensorDataset(x, y), batch_size=setup.batch_size, shuffle=True)
    clock = EpochClock(device)
    trainer = L.Trainer(
        max_epochs=setup.epochs,
        accelerator="gpu" if device.type == "cuda" else "cpu",
        devices=1,
        precision=_trainer_precision(setup),
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[clock],
    )
    torch.manual_seed(setup.seed)
    trainer.fit(module, train_dataloaders=loader)
    last = trainer.callback_metrics.get("train/loss")
    return Outcome(
        "plain Lightning",
        clock.epoch_seconds(setup.epochs),
        float(last) if last is not None else None,
        net,
    )


def max_weight_diff(a: nn.Module, b: nn.Module) -> float:
    return max(
        float((pa.detach().float().cpu() - pb.detach().float().cpu()).abs().max())
        for pa, pb in zip(a.parameters(), b.parameters(), strict=True)
    )


# (label, path suffix, function name); cumulative times may nest, so they are not summed.
PROFILE_PARTS: tuple[tuple[str, str, str], ...] = (
    ("fit (total)", "lossflow/training.py", "fit"),
    ("training_step: forward, loss, log, finite check", "lossflow/models/system.py",
     "training_step"),
    ("  log_dict (all stages and hooks)", "lightning/pytorch/core/module.py", "log_dict"),
    ("  non-finite check", "lossflow/models/system.py", "_check_finite"),
    ("backward", "torch/_tensor.py", "backward"),
    ("grad-norm hook (on_before_optimizer_step)", "lossflow/models/system.py",
     "on_before_optimizer_step"),
    ("AdamW update", "torch/optim/adam.py", "adam"),
    ("zero_grad", "torch/optim/optimizer.py", "zero_grad"),
    ("batches (TensorBatches.__iter__)", "lossflow/training.py", "__iter__"),
    ("validation loop", "lightning/pytorch/loops/evaluation_loop.py", "run"),
    ("checkpoint save", "lightning/pytorch/callbacks/model_checkpoint.py", "_save_checkpoint"),
)  # fmt: skip


def profile_report(profiler: cProfile.Profile, top: int = 15) -> dict[str, Any]:
    """Prints the top entries by own time and the named parts of the fit by cumulative time."""
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[Any, ...]] = stats.stats  # type: ignore[attr-defined]
    parts: dict[str, float] = {}
    for label, suffix, name in PROFILE_PARTS:
        seconds = sum(
            v[3] for (path, _, fn), v in raw.items() if fn == name and path.endswith(suffix)
        )
        parts[label] = seconds
    total = parts["fit (total)"] or 1.0
    print("\ncProfile of lossflow's fit (one extra run, all epochs; profiler overhead included)")
    print(f"{'part':<50} {'cum s':>8} {'share':>7}")
    for label, seconds in parts.items():
        print(f"{label:<50} {seconds:>8.3f} {seconds / total:>6.1%}")
    print(f"\ntop {top} by own time")
    stats.sort_stats("tottime").print_stats(top)
    return {"parts_cumulative_s": {k: round(v, 4) for k, v in parts.items()}}


Runner = Callable[[Setup, nn.Module, Tensor, Tensor], Outcome]


def run(setup: Setup, repeats: int, ddp: int = 0) -> tuple[list[dict[str, Any]], dict[str, float]]:
    x, y = make_data(setup.rows, setup.seed)
    template = make_net(setup.seed)
    runners: dict[str, Runner] = {
        "raw loop": run_raw,
        "lossflow": lambda s, t, xx, yy: run_lossflow(s, t, xx, yy, None),
        "plain Lightning": run_plain,
    }
    variants = list(VARIANTS)
    if ddp > 1:
        runners[DDP] = lambda s, t, xx, yy: run_lossflow(s, t, xx, yy, None, processes=ddp)
        variants.append(DDP)
    timed_rows = setup.rows * (setup.epochs - 1)
    rates: dict[str, list[float]] = {v: [] for v in variants}
    last: dict[str, Outcome] = {}
    for _ in range(repeats):
        for variant in variants:  # interleaved, so drift in machine speed hits all alike
            out = runners[variant](setup, template, x, y)
            rates[variant].append(timed_rows / sum(out.epoch_seconds[1:]))
            last[variant] = out
    raw_rate = statistics.median(rates["raw loop"])
    rows: list[dict[str, Any]] = []
    for variant in variants:
        rate = statistics.median(rates[variant])
        out = last[variant]
        rows.append(
            {
                "variant": f"{DDP} x{ddp}" if variant == DDP else variant,
                "samples_per_s": round(rate, 1),
                "ratio_to_raw": round(rate / raw_rate, 4),
                "epoch_seconds": [round(t, 4) for t in out.epoch_seconds],
                "final_train_loss": out.final_loss,
                "samples_per_s_repeats": [round(r, 1) for r in rates[variant]],
            }
        )
    checks = {
        "max_weight_diff_lossflow_vs_raw": max_weight_diff(
            last["lossflow"].net, last["raw loop"].net
        )
    }
    if DDP in last:
        checks["max_weight_diff_ddp_vs_raw"] = max_weight_diff(last[DDP].net, last["raw loop"].net)
    return rows, checks


def _quiet_lightning() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    for pattern in (
        ".*does not have many workers.*",
        ".*smaller than the logging interval.*",
        ".*GPU available but not used.*",
        ".*Checkpoint directory .* exists and is not empty.*",
    ):
        warnings.filterwarnings("ignore", message=pattern)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default_device = "cuda" if torch.cuda.is_available() else "cpu"
    parser.add_argument("--device", choices=["cpu", "cuda"], default=default_device)
    parser.add_argument("--precision", choices=["32", "bf16"], default="32")
    parser.add_argument("--rows", type=int, default=262_144)
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=3, help="the first one is warm-up")
    parser.add_argument("--loss", default="focal", help="loss name for build_loss")
    parser.add_argument("--repeats", type=int, default=1, help="interleaved runs; median kept")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--profile", action="store_true", help="cProfile one more lossflow fit")
    parser.add_argument(
        "--ddp", type=int, default=2, help="processes of the DDP row (0: no DDP row)"
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch is warm-up and not timed")
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device here; use --device cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    _quiet_lightning()
    setup = Setup(
        device=torch.device(args.device),
        precision=args.precision,
        rows=args.rows,
        batch_size=args.batch_size,
        epochs=args.epochs,
        loss={"name": args.loss},
        seed=args.seed,
    )

    print(
        f"training throughput: MLP {FEATURES}-{HIDDEN}-{HIDDEN}-1, loss {args.loss}, "
        f"{args.rows:,} rows, batch {args.batch_size}, {args.epochs} epochs (first is warm-up), "
        f"precision {args.precision}, {setup.device}, {torch.get_num_threads()} threads"
    )
    if args.ddp == 1 or args.ddp < 0:
        parser.error("--ddp must be 0 (no DDP row) or at least 2 processes")
    if args.ddp and args.device == "cuda" and torch.cuda.device_count() < args.ddp:
        parser.error(f"--ddp {args.ddp} on cuda needs {args.ddp} GPUs; use --ddp 0")
    rows, checks = run(setup, args.repeats, args.ddp)
    print(f"{'variant':<16} {'samples/s':>12} {'vs raw':>8} {'final loss':>11}  epoch seconds")
    for r in rows:
        loss = f"{r['final_train_loss']:.5f}" if r["final_train_loss"] is not None else "-"
        epochs = " ".join(f"{t:.3f}" for t in r["epoch_seconds"])
        print(
            f"{r['variant']:<16} {r['samples_per_s']:>12,.0f} {r['ratio_to_raw']:>7.3f}x "
            f"{loss:>11}  {epochs}"
        )
    diff = checks["max_weight_diff_lossflow_vs_raw"]
    print(f"max |weight difference| lossflow vs raw loop after training: {diff:.3g}")
    if "max_weight_diff_ddp_vs_raw" in checks:
        diff = checks["max_weight_diff_ddp_vs_raw"]
        print(f"max |weight difference| lossflow DDP vs raw loop after training: {diff:.3g}")

    by_variant = {r["variant"]: r for r in rows}
    ratio = by_variant["lossflow"]["ratio_to_raw"]
    summary: dict[str, Any] = {
        "device": str(setup.device),
        "precision": args.precision,
        "rows": args.rows,
        "batch_size": args.batch_size,
        "epochs": args.epochs,
        "timed_epochs": args.epochs - 1,
        "loss": args.loss,
        "repeats": args.repeats,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "lightning": L.__version__,
        "results": rows,
        **checks,
        "ratio_plain_lightning": by_variant["plain Lightning"]["ratio_to_raw"],
        **(
            {"ratio_ddp": by_variant[f"{DDP} x{args.ddp}"]["ratio_to_raw"], "ddp": args.ddp}
            if args.ddp
            else {}
        ),
        "ratio": ratio,
    }
    if args.profile:
        profiler = cProfile.Profile()
        x, y = make_data(setup.rows, setup.seed)
        run_lossflow(setup, make_net(setup.seed), x, y, profiler)
        summary["profile"] = profile_report(profiler)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    print(f"lossflow / raw loop samples/s: {ratio:.3f}x")


if __name__ == "__main__":
    main()
