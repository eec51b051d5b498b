"""Forward+backward time of every lossflow loss beside its reference, eager and compiled.

Each loss runs on a realistic batch (about 1M elements; 16,384 lists of 64 items for ranking)
beside its reference: the straightforward PyTorch a user would otherwise write for the same loss
(the torch built-in where one computes it; else the formula in plain differentiable ops, e.g.
torchvision's ``sigmoid_focal_loss`` for focal, ``log(1 - softmax)`` weighted by the cost
matrix's rows for a cost matrix, the stable ``d + softplus(-2d) - log 2`` for log-cosh, the
padded ``(Q, L)`` formulation of allRank for the ranking losses, and the sum of its terms' own
references for a composite). Every reference computes the same value and gradient as ours,
which the run checks before timing. Ours and the reference are timed interleaved in one run, so
machine noise hits both alike, and each figure is the fastest of ``--repeats`` runs: on a shared
machine other work only ever adds time (a two-thread op waits for a descheduled thread), so the
fastest run is the stable measure of the loss itself. The table ends with the worst ratios (ours /
reference).

    python benchmarks/losses.py                 # eager and torch.compile, CPU
    python benchmarks/losses.py --quick         # eager only, 256k elements
    python benchmarks/losses.py --only ranking --no-compile --json out.json
    python benchmarks/losses.py --device cuda --json out.json
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from lossflow.losses import build_loss

LossFn = Callable[..., Tensor]


@dataclass(frozen=True)
class Bench:
    name: str
    spec: dict[str, Any]
    make: Callable[[int, torch.device], tuple[Tensor, ...]]
    reference_name: str
    reference: LossFn  # computes exactly our loss: value and gradient checked before timing


def _regression(n: int, device: torch.device) -> tuple[Tensor, ...]:
    return torch.randn(n, device=device), torch.randn(n, device=device)


def _counts(n: int, device: torch.device) -> tuple[Tensor, ...]:
    return torch.randn(n, device=device) * 0.5, torch.poisson(torch.full((n,), 2.0, device=device))


def _gaussian(n: int, device: torch.device) -> tuple[Tensor, ...]:
    return torch.randn(n // 2, 2, device=device), torch.randn(n // 2, device=device)


def _binary(n: int, device: torch.device) -> tuple[Tensor, ...]:
    return torch.randn(n, device=device), (torch.rand(n, device=device) < 0.2).float()


CLASSES = 10


def _multiclass(n: int, device: torch.device) -> tuple[Tensor, ...]:
    rows = n // CLASSES
    return torch.randn(rows, CLASSES, device=device), torch.randint(
        0, CLASSES, (rows,), device=device
    )


def _distribution(n: int, device: torch.device) -> tuple[Tensor, ...]:
    rows = n // CLASSES
    return torch.randn(rows, CLASSES, device=device), torch.softmax(
        torch.randn(rows, CLASSES, device=device), dim=1
    )


LIST_LENGTH = 64


def _lists(n: int, device: torch.device) -> tuple[Tensor, ...]:
    queries = max(n // LIST_LENGTH, 1)
    scores = torch.randn(queries, LIST_LENGTH, device=device)
    relevance = torch.randint(0, 5, (queries, LIST_LENGTH), device=device).float()
    lengths = torch.randint(LIST_LENGTH // 2, LIST_LENGTH + 1, (queries, 1), device=device)
    mask = torch.arange(LIST_LENGTH, device=device)[None, :] < lengths
    return scores, relevance, mask


# --- what a user would write for each ranking loss (allRank's padded formulation) -----------


def _pair_mask(relevance: Tensor, mask: Tensor) -> Tensor:
    return (relevance[:, :, None] > relevance[:, None, :]) & mask[:, :, None] & mask[:, None, :]


def _per_query_pair_mean(per_pair: Tensor, pairs: Tensor) -> Tensor:
    n_pairs = pairs.sum((1, 2))
    per_query = (per_pair * pairs).sum((1, 2)) / n_pairs.clamp_min(1)
    return per_query.sum() / (n_pairs > 0).sum().clamp_min(1)


def ranknet_reference(scores: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
    """RankNet: BCE-with-logits on every pair's score gap, mean per query, then over queries."""
    pairs = _pair_mask(relevance, mask)
    gaps = scores[:, :, None] - scores[:, None, :]
    per_pair = F.binary_cross_entropy_with_logits(gaps, torch.ones_like(gaps), reduction="none")
    return _per_query_pair_mean(per_pair, pairs)


def margin_reference(scores: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
    """Pairwise hinge ``max(0, 1 - (s_i - s_j))`` on every pair, mean per query, then over
    queries."""
    pairs = _pair_mask(relevance, mask)
    gaps = scores[:, :, None] - scores[:, None, :]
    return _per_query_pair_mean(F.relu(1.0 - gaps), pairs)


def listnet_reference(scores: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
    """ListNet: softmax cross-entropy over the real items (padding at ``-inf``)."""
    target = torch.softmax(relevance.masked_fill(~mask, float("-inf")), dim=1)
    log_p = torch.log_softmax(scores.masked_fill(~mask, float("-inf")), dim=1)
    return -(target * log_p.masked_fill(~mask, 0.0)).sum(1).mean()


def listmle_reference(scores: Tensor, relevance: Tensor, mask: Tensor) -> Tensor:
    """ListMLE: sort by relevance (stable, padding last), then ``log`` (+ 1e-10, as allRank,
    so padding's empty tail stays finite) of the reversed ``cumsum`` of ``exp`` of the
    max-shifted scores minus the score, summed per list."""
    key = relevance.masked_fill(~mask, -1.0)
    order = key.sort(dim=1, descending=True, stable=True).indices
    ranked = scores.gather(1, order)
    real = mask.gather(1, order)
    ranked = ranked.masked_fill(~real, float("-inf"))
    top = ranked.amax(1, keepdim=True)
    shifted = ranked - top
    tail = shifted.exp().flip(1).cumsum(1).flip(1)
    per_item = (torch.log(tail + 1e-10) - shifted).masked_fill(~real, 0.0)
    return per_item.sum(1).mean()


# --- what a user would write for the other losses ------------------------------------------

LOG2 = math.log(2.0)
FOCAL_ALPHA, FOCAL_GAMMA = 0.25, 2.0
CLASS_COUNTS = [8000, 2000]
BETA = 0.999
PRIOR_COUNTS = list(range(1, CLASSES + 1))
FN_COST, FP_COST = 5.0, 1.0
COST_MATRIX = [
    [0.0 if i == j else 1.0 + abs(i - j) for j in range(CLASSES)] for i in range(CLASSES)
]


def log_cosh_reference(x: Tensor, y: Tensor) -> Tensor:
    """log cosh(d) in its stable form ``d + softplus(-2d) - log 2``."""
    d = x - y
    return (d + F.softplus(-2.0 * d) - LOG2).mean()


def quantile_reference(x: Tensor, y: Tensor, q: float = 0.9) -> Tensor:
    """Pinball loss ``max(q r, (q - 1) r)`` with ``r = y - x``."""
    r = y - x
    return torch.maximum(q * r, (q - 1.0) * r).mean()


def asymmetric_reference(x: Tensor, y: Tensor, under: float = 3.0, over: float = 1.0) -> Tensor:
    """Squared error weighted by the cost of its side."""
    d = x - y
    return (torch.where(d < 0, under, over) * d.square()).mean()


def gaussian_nll_reference(x: Tensor, y: Tensor) -> Tensor:
    """torch's Gaussian NLL on the mean and the exponential of the log-variance."""
    return F.gaussian_nll_loss(x[:, 0], y, x[:, 1].exp())


def focal_reference(x: Tensor, y: Tensor, alpha: float | None = FOCAL_ALPHA) -> Tensor:
    """``torchvision.ops.sigmoid_focal_loss`` (its code, mean reduction; ``alpha=None`` for
    none)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** FOCAL_GAMMA)
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss.mean()


def multiclass_focal_reference(x: Tensor, y: Tensor) -> Tensor:
    """``-(1 - p_y)^gamma log p_y`` from ``log_softmax``, mean over rows."""
    log_p = F.log_softmax(x, 1).gather(1, y[:, None]).squeeze(1)
    return (-((1 - log_p.exp()) ** FOCAL_GAMMA) * log_p).mean()


def _class_balanced_weights() -> tuple[float, float]:
    raw = [(1.0 - BETA) / (1.0 - BETA**n) for n in CLASS_COUNTS]
    w0, w1 = (w * len(raw) / sum(raw) for w in raw)
    return w0, w1


def class_balanced_reference(x: Tensor, y: Tensor) -> Tensor:
    """Cui et al.'s weights ``(1 - beta) / (1 - beta^n)`` (summing to C) times unweighted
    focal."""
    w0, w1 = _class_balanced_weights()
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    return ((w1 * y + w0 * (1 - y)) * ce * ((1 - p_t) ** FOCAL_GAMMA)).mean()


def logit_adjusted_reference(x: Tensor, y: Tensor) -> Tensor:
    """Cross-entropy of the logits shifted by the log class priors (tau = 1)."""
    log_prior = torch.tensor(PRIOR_COUNTS, dtype=x.dtype, device=x.device)
    log_prior = (log_prior / log_prior.sum()).log()
    return F.cross_entropy(x + log_prior, y)


def cost_sensitive_binary_reference(x: Tensor, y: Tensor) -> Tensor:
    """BCE with the false-negative cost as the positive weight, times the false-positive cost."""
    pos_weight = torch.tensor(FN_COST / FP_COST, device=x.device)
    return FP_COST * F.binary_cross_entropy_with_logits(x, y, pos_weight=pos_weight)


def cost_matrix_reference(x: Tensor, y: Tensor) -> Tensor:
    """The cost matrix's row of the true class weighting ``-log(1 - p)``, from ``log_softmax``."""
    costs = torch.tensor(COST_MATRIX, dtype=x.dtype, device=x.device)
    log_not_p = torch.log(-torch.expm1(F.log_softmax(x, 1)))
    return -(costs[y] * log_not_p).sum(1).mean()


def composite_reference(x: Tensor, y: Tensor) -> Tensor:
    """The sum of its terms' own references: BCE and torchvision's focal."""
    return F.binary_cross_entropy_with_logits(x, y) + focal_reference(x, y)


def benches() -> list[Bench]:
    bce = F.binary_cross_entropy_with_logits
    return [
        Bench("mse", {"name": "mse"}, _regression, "F.mse_loss", F.mse_loss),
        Bench("rmse", {"name": "rmse"}, _regression, "sqrt(F.mse_loss)",
              lambda x, y: torch.sqrt(F.mse_loss(x, y))),
        Bench("mae", {"name": "mae"}, _regression, "F.l1_loss", F.l1_loss),
        Bench("huber", {"name": "huber", "delta": 1.0}, _regression, "F.huber_loss",
              F.huber_loss),
        Bench("log_cosh", {"name": "log_cosh"}, _regression, "d + softplus(-2d) - log 2",
              log_cosh_reference),
        Bench("quantile", {"name": "quantile", "quantile": 0.9}, _regression,
              "max(q r, (q - 1) r)", quantile_reference),
        Bench("poisson_nll", {"name": "poisson_nll"}, _counts, "F.poisson_nll_loss",
              F.poisson_nll_loss),
        Bench("gaussian_nll", {"name": "gaussian_nll"}, _gaussian, "F.gaussian_nll_loss",
              gaussian_nll_reference),
        Bench("asymmetric", {"name": "asymmetric", "under_cost": 3.0, "over_cost": 1.0},
              _regression, "where(d < 0, 3, 1) * d^2", asymmetric_reference),
        Bench("bce", {"name": "bce", "pos_weight": 4.0}, _binary, "F.bce_with_logits",
              lambda x, y: bce(x, y, pos_weight=torch.tensor(4.0, device=x.device))),
        Bench("ce", {"name": "ce", "label_smoothing": 0.1}, _multiclass, "F.cross_entropy",
              lambda x, y: F.cross_entropy(x, y, label_smoothing=0.1)),
        Bench("focal (binary)", {"name": "focal"}, _binary, "torchvision sigmoid_focal_loss",
              focal_reference),
        Bench("focal (multiclass)", {"name": "focal", "alpha": None}, _multiclass,
              "(1 - p_y)^2 log_softmax", multiclass_focal_reference),
        Bench("class_balanced", {"name": "class_balanced", "class_counts": CLASS_COUNTS},
              _binary, "class weights x focal", class_balanced_reference),
        Bench("logit_adjusted", {"name": "logit_adjusted", "class_counts": PRIOR_COUNTS},
              _multiclass, "F.cross_entropy(x + log prior)", logit_adjusted_reference),
        Bench("cost_sensitive (binary)",
              {"name": "cost_sensitive", "fn_cost": FN_COST, "fp_cost": FP_COST}, _binary,
              "F.bce_with_logits(pos_weight)", cost_sensitive_binary_reference),
        Bench("cost_sensitive (matrix)", {"name": "cost_sensitive", "cost_matrix": COST_MATRIX},
              _multiclass, "C[y] * log(1 - softmax)", cost_matrix_reference),
        Bench("kl_div", {"name": "kl_div"}, _distribution, "F.kl_div(batchmean)",
              lambda x, t: F.kl_div(F.log_softmax(x, 1), t, reduction="batchmean")),
        Bench("margin_ranking", {"name": "margin_ranking"}, _lists,
              "hinge on (Q, L, L) pairs", margin_reference),
        Bench("ranknet", {"name": "ranknet"}, _lists, "F.bce_with_logits on (Q, L, L)",
              ranknet_reference),
        Bench("listnet", {"name": "listnet"}, _lists, "masked softmax CE", listnet_reference),
        Bench("listmle", {"name": "listmle"}, _lists, "sort + flipped cumsum",
              listmle_reference),
        Bench("composite (bce+focal)",
              {"name": "composite", "terms": {"bce": {"loss": {"name": "bce"}},
                                              "focal": {"loss": {"name": "focal"}}}},
              _binary, "bce + torchvision focal", composite_reference),
    ]  # fmt: skip


def _step(fn: LossFn, pred: Tensor, rest: tuple[Tensor, ...]) -> None:
    pred.grad = None
    fn(pred, *rest).backward()


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


MIN_REPEATS = 5
SECONDS_PER_PAIR = 30.0  # after MIN_REPEATS, the slow ranking references stop here


def time_pair(
    ours: LossFn, ref: LossFn, args: tuple[Tensor, ...], repeats: int, device: torch.device
) -> tuple[float, float]:
    """Fastest seconds per forward+backward of ours and the reference, timed interleaved
    (``repeats`` times, or fewer, but at least ``MIN_REPEATS``, once ``SECONDS_PER_PAIR`` have
    passed)."""
    pred = args[0].detach().clone().requires_grad_(True)
    rest = args[1:]
    for fn in (ours, ref, ours, ref):  # warm-up (and compilation)
        _step(fn, pred, rest)
    _sync(device)
    times: dict[int, list[float]] = {0: [], 1: []}
    began = time.perf_counter()
    for i in range(repeats):
        if i >= MIN_REPEATS and time.perf_counter() - began > SECONDS_PER_PAIR:
            break
        for k, fn in enumerate((ours, ref)):
            _sync(device)
            start = time.perf_counter()
            _step(fn, pred, rest)
            _sync(device)
            times[k].append(time.perf_counter() - start)
    return min(times[0]), min(times[1])


RANKING = ("margin_ranking", "ranknet", "listnet", "listmle")


def check_same_value(bench: Bench, args: tuple[Tensor, ...], device: torch.device) -> float:
    """The largest difference of value and gradient between ours and the reference.

    Raises:
        AssertionError: they differ beyond float32 round-off.
    """
    ours = build_loss(bench.spec).to(device)
    values, grads = [], []
    for fn in (ours, bench.reference):
        pred = args[0].detach().clone().requires_grad_(True)
        value = fn(pred, *args[1:])
        value.backward()
        values.append(value.detach())
        grads.append(pred.grad if pred.grad is not None else torch.zeros_like(pred))
    torch.testing.assert_close(values[0], values[1], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-3, atol=1e-7)
    return float(max((values[0] - values[1]).abs().max(), (grads[0] - grads[1]).abs().max()))


def run(
    size: int, repeats: int, compiled: bool, device: torch.device, only: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    modes = [("eager", False), ("compiled", True)] if compiled else [("eager", False)]
    for bench in benches():
        if only and bench.name not in only:
            continue
        torch.manual_seed(0)
        args = bench.make(size, device)
        row: dict[str, Any] = {"loss": bench.name, "reference": bench.reference_name}
        row["max_abs_diff"] = check_same_value(bench, args, device)
        for mode, use_compile in modes:
            ours: LossFn = build_loss(bench.spec).to(device)
            ref: LossFn = bench.reference
            if use_compile:
                torch._dynamo.reset()
                ours, ref = torch.compile(ours), torch.compile(ref)
            t_ours, t_ref = time_pair(ours, ref, args, repeats, device)
            row[f"{mode}_ms"] = round(t_ours * 1e3, 3)
            row[f"{mode}_reference_ms"] = round(t_ref * 1e3, 3)
            row[f"{mode}_ratio"] = round(t_ours / t_ref, 3)
        rows.append(row)
        print(_format_row(row, modes), flush=True)
    return rows


def _format_row(row: dict[str, Any], modes: list[tuple[str, bool]]) -> str:
    parts = [f"{row['loss']:<24} {row['reference']:<30}"]
    for mode, _ in modes:
        parts.append(
            f"{row[f'{mode}_ms']:>9.2f} {row[f'{mode}_reference_ms']:>9.2f} "
            f"{row[f'{mode}_ratio']:>6.2f}x"
        )
    return " ".join(parts)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 20, help="elements per batch")
    parser.add_argument("--repeats", type=int, default=25)
    parser.add_argument("--no-compile", action="store_true", help="eager mode only")
    parser.add_argument("--quick", action="store_true", help="256k elements, eager, 7 repeats")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    parser.add_argument("--json", type=Path, help="write the figures here")
    parser.add_argument(
        "--only", default="", help="comma-separated loss names, or 'ranking' for the four"
    )
    args = parser.parse_args()
    only = RANKING if args.only == "ranking" else tuple(filter(None, args.only.split(",")))
    unknown = sorted(set(only) - {bench.name for bench in benches()})
    if unknown:
        names = ", ".join(repr(bench.name) for bench in benches())
        parser.error(f"--only: no loss named {', '.join(map(repr, unknown))}; the losses: {names}")
    if args.quick:
        args.size, args.repeats, args.no_compile = 1 << 18, 7, True
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    compiled = not args.no_compile

    modes = ["eager", "compiled"] if compiled else ["eager"]
    header = f"{'loss':<24} {'reference':<30}"
    for mode in modes:
        header += f" {mode + ' ms':>9} {'ref ms':>9} {'ratio':>7}"
    print(f"forward+backward, {args.size:,} elements, {device}, {torch.get_num_threads()} threads")
    print(header)
    rows = run(args.size, args.repeats, compiled, device, only)

    summary: dict[str, Any] = {
        "device": str(device),
        "size": args.size,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "results": rows,
        "ratios": {row["loss"]: {mode: row[f"{mode}_ratio"] for mode in modes} for row in rows},
    }
    worst: dict[str, dict[str, Any]] = {}
    for mode in modes:
        row = max(rows, key=lambda r: r[f"{mode}_ratio"])
        worst[mode] = row
        summary[f"worst_{mode}_loss"] = row["loss"]
        summary[f"ratio_{mode}"] = row[f"{mode}_ratio"]
    summary["ratio"] = max(summary[f"ratio_{mode}"] for mode in modes)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    for mode in modes:
        print(f"worst {mode} ratio: {worst[mode][f'{mode}_ratio']:.2f}x ({worst[mode]['loss']})")
    print(f"worst ratio: {summary['ratio']:.2f}x")


if __name__ == "__main__":
    main()
