"""Ranking training throughput (lists/s) on MovieLens: lossflow's path beside a hand-written loop.

Both train the network of ``experiment=movielens_<loss>`` (the same initial weights, dropout 0)
with the same ranking loss (``build_loss``), AdamW, lists per batch and list order on the real
MovieLens training lists as lossflow prepares them (``(Q, L)`` padded lists with a mask):

- ``raw loop``: hand-written PyTorch; resident list tensors, a permutation per epoch, one
  ``index_select`` per tensor per batch, the network on the flattened items, the loss on
  ``(Q, L)`` scores with the mask, ``zero_grad(set_to_none=True)``, no validation.
- ``lossflow``: ``build_system`` + ``TensorBatches`` + ``lossflow.training.fit`` (checkpoints,
  epoch metrics, gradient norms, non-finite guard, early stopping off), validating on one batch of
  validation lists (NDCG, MRR, MAP, pairwise accuracy) each epoch.

The first epoch is warm-up; lists/s counts epochs 2..n. The largest weight difference at the end
checks that both did the same work. The last line is the headline ratio, lossflow / raw loop.

    python benchmarks/ranking_throughput.py --loss listnet --epochs 4 --json out.json
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from lossflow.config.training import TrainingConfig, load_training_config
from lossflow.data.prepare import prepare_data
from lossflow.losses import build_loss
from lossflow.models.build import build_system, split_tensors
from lossflow.training import TensorBatches, fit
from lossflow.usecases.training import split_of
from training_throughput import EpochClock, max_weight_diff

CONFIG_DIR = Path(__file__).resolve().parents[1] / "configs"


def run_raw(
    cfg: TrainingConfig, template: nn.Module, inputs: tuple[Tensor, ...], target: Tensor
) -> tuple[list[float], nn.Module]:
    net = copy.deepcopy(template)
    net.train()
    loss_fn = build_loss(cfg.loss.model_dump())
    opt = torch.optim.AdamW(
        net.parameters(), lr=cfg.optimizer.lr, weight_decay=cfg.optimizer.weight_decay
    )
    lists, bs = target.shape[0], cfg.trainer.batch_size
    times: list[float] = []
    for epoch in range(cfg.trainer.max_epochs):
        start = time.perf_counter()
        gen = torch.Generator().manual_seed(cfg.trainer.seed + epoch)
        order = torch.randperm(lists, generator=gen)
        for lo in range(0, lists, bs):
            idx = order[lo : lo + bs]
            xs = [t.index_select(0, idx) for t in inputs]
            relevance = target.index_select(0, idx)
            q, n = relevance.shape
            scores = net(*(x.reshape(q * n, *x.shape[2:]) for x in xs)).reshape(q, n)
            mask = ~relevance.isnan()
            loss = loss_fn(scores, relevance.where(mask, 0.0), mask)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        times.append(time.perf_counter() - start)
    return times, net


def run_lossflow(
    cfg: TrainingConfig,
    template: nn.Module,
    train: tuple[tuple[Tensor, ...], Tensor],
    val: tuple[tuple[Tensor, ...], Tensor],
    pre: Any,
) -> tuple[list[float], nn.Module]:
    system = build_system(cfg, pre, None)
    system.net.load_state_dict(template.state_dict())
    bs = cfg.trainer.batch_size
    batches = TensorBatches(*train, bs, shuffle=True, seed=cfg.trainer.seed)
    one_batch = TensorBatches(tuple(t[:bs] for t in val[0]), val[1][:bs], bs)
    clock = EpochClock(torch.device("cpu"))
    with tempfile.TemporaryDirectory(prefix="lossflow-bench-") as tmp:
        fit(system, batches, one_batch, cfg.trainer, Path(tmp), callbacks=[clock])
    return clock.epoch_seconds(cfg.trainer.max_epochs), system.net


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--loss", default="listnet", help="listnet, ranknet, listmle or margin")
    parser.add_argument("--epochs", type=int, default=4, help="the first one is warm-up")
    parser.add_argument("--batch-size", type=int, default=32, help="lists per batch")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be >= 2: the first epoch is warm-up and not timed")
    if args.threads:
        torch.set_num_threads(args.threads)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*You are trying to `self.log\\(\\)`.*")
    with tempfile.TemporaryDirectory(prefix="lossflow-rank-") as tmp:
        cfg = load_training_config(
            [
                f"experiment=movielens_{args.loss}",
                f"data_dir={tmp}",
                "model.dropout=0.0",
                "scheduler.name=none",
                "optimizer.weight_decay=0.0",
                "trainer.gradient_clip_val=null",
                "trainer.early_stopping=null",
                f"trainer.max_epochs={args.epochs}",
                f"trainer.batch_size={args.batch_size}",
                "trainer.accelerator=cpu",
            ],
            CONFIG_DIR,
        )
        prepared = prepare_data(cfg, Path(tmp) / "prepared")
        pre = prepared.preprocessor()
        train = split_tensors(cfg, pre, split_of(cfg, prepared, "train"))
        val = split_tensors(cfg, pre, split_of(cfg, prepared, "val"))
        torch.manual_seed(cfg.trainer.seed)
        template = build_system(cfg, pre, None).net
        lists, width = train[1].shape
        print(
            f"ranking throughput: MovieLens, loss {cfg.loss.name}, {lists:,} training lists of up "
            f"to {width} items, {args.batch_size} lists per batch, {args.epochs} epochs (first is "
            f"warm-up), cpu, {torch.get_num_threads()} threads"
        )
        raw_times, raw_net = run_raw(cfg, template, *train)
        ours_times, our_net = run_lossflow(cfg, template, train, val, pre)
    timed = args.epochs - 1
    raw_rate = lists * timed / sum(raw_times[1:])
    ours_rate = lists * timed / sum(ours_times[1:])
    ratio = ours_rate / raw_rate
    diff = max_weight_diff(raw_net, our_net)
    print(f"{'variant':<10} {'lists/s':>10}  epoch seconds")
    for name, rate, times in (("raw loop", raw_rate, raw_times), ("lossflow", ours_rate,
                                                                 ours_times)):  # fmt: skip
        print(f"{name:<10} {rate:>10,.0f}  {', '.join(f'{t:.2f}' for t in times)}")
    print(f"largest weight difference lossflow vs raw loop: {diff:.2e}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps(
                {
                    "loss": cfg.loss.name,
                    "lists": lists,
                    "list_length": width,
                    "batch_size": args.batch_size,
                    "epochs": args.epochs,
                    "threads": torch.get_num_threads(),
                    "raw_lists_per_s": raw_rate,
                    "lossflow_lists_per_s": ours_rate,
                    "raw_epoch_seconds": raw_times,
                    "lossflow_epoch_seconds": ours_times,
                    "max_weight_diff": diff,
                    "ratio": ratio,
                },
                indent=2,
            )
        )
    print(f"lossflow / raw loop lists/s: {ratio:.3f}x")


if __name__ == "__main__":
    main()
