"""Statistical validity of lossflow's A/B decision under continuous monitoring, beside a naive
fixed-horizon t-test checked at every look.

Setup (real outcomes): a flights model is trained with lossflow's own training steps and scores
the production rows (September–December); each row's log loss is one real per-prediction
outcome. A simulated unit makes ``1 + Poisson(1)`` requests, each a log loss resampled from those
rows, and its outcome is their mean (the per-unit outcome the analysis compares). Units arrive
in batches (``--batch`` per look, each routed to an arm with probability 1/2, so arm sizes vary
as under real routing), and after every batch — ``--looks`` times — both procedures look:

- **lossflow**: :func:`lossflow.ab.decision.decide` with the default policy (alpha 0.05, the
  anytime-valid test, SRM gate, futility margin), ``min_units`` = one batch, no guardrails; a
  false positive is a look that declares a difference (promote, or reject as worse);
- **naive**: Welch's t-test, ``p < 0.05`` at any look.

Then: **A/A** (no difference) false-positive rates; **power** and **expected units per arm at the
stop** with the challenger's per-unit outcomes scaled down by 2%, 4% and 8% (a better loss); the
**SRM** gate's detection rate for units split 49/51 under 50/50 weights (``--srm-batch`` units per
look), and its false alarms at 50/50, beside a chi-squared test checked at every look.

The headline ``ratio`` is lossflow's A/A false-positive rate / alpha (goal <= 1.0).

    python benchmarks/ab_validity.py                          # 1,000 simulations per setting
    python benchmarks/ab_validity.py --sims 200 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
ALPHA = 0.05
EFFECTS = (0.02, 0.04, 0.08)
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def production_log_losses(subsample: int, epochs: int) -> np.ndarray:
    """Per-prediction log losses of a freshly trained flights model on the production rows."""
    from lossflow.config.training import load_training_config
    from lossflow.data.prepare import prepare_data
    from lossflow.losses import loss_id
    from lossflow.models.build import resolved_loss_spec
    from lossflow.replay.rows import records_of
    from lossflow.serving.predictor import OnnxPredictor
    from lossflow.usecases import training as steps

    with tempfile.TemporaryDirectory(prefix="lossflow-ab-validity-") as tmp:
        root = Path(tmp)
        cfg = load_training_config(
            [f"data_dir={root}", "loss=bce", f"data.subsample={subsample}",
             f"trainer.max_epochs={epochs}"],
            CONFIG_DIR,
        )  # fmt: skip
        prepared = prepare_data(cfg, root / "prepared")
        trained = steps.train_model(cfg, prepared, root / "checkpoints")
        evaluation = steps.evaluate_model(cfg, prepared, trained)
        lid = loss_id(resolved_loss_spec(cfg, prepared.class_counts), cfg.regularizers)
        exported = steps.export_model(cfg, prepared, trained, evaluation, lid, root / "model")
        predictor = OnnxPredictor.from_path(exported.onnx_path)
        rows = prepared.raw("production")
        target = prepared.preprocessor().target
        rows = rows[rows[target].notna()]
        records = records_of(rows, predictor.feature_columns)
        p = np.array([x.probability for x in predictor.predict(records)], dtype=np.float64)
        y = rows[target].astype(float).to_numpy()
    p = np.clip(p, 1e-15, 1 - 1e-15)
    losses: np.ndarray = -(y * np.log(p) + (1 - y) * np.log(1 - p))
    return losses


def _units(pool: np.ndarray, n: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    requests = 1 + rng.poisson(1.0, n)
    draws = pool[rng.integers(0, pool.size, requests.sum())] * scale
    owner = np.repeat(np.arange(n), requests)
    means: np.ndarray = np.bincount(owner, weights=draws, minlength=n) / requests
    return means


def _arm(name: str, outcome: np.ndarray, units: int | None = None) -> Any:
    from lossflow.ab.metrics import VariantMetrics

    empty = np.zeros(0)
    return VariantMetrics(
        variant=name, units=outcome.size if units is None else units, requests=outcome.size,
        failed=0, labelled_units=outcome.size, coverage=1.0, outcome=outcome,
        latency_ms=empty, error_rate=empty, positive_rate=empty, calibration=empty,
        p99_latency_ms=float("nan"), first=T0, last=T0 + timedelta(days=2),
    )  # fmt: skip


def simulate(task: tuple[np.ndarray, float, int, int, int]) -> dict[str, Any]:
    """One experiment: per look, lossflow's verdict and the naive test's."""
    from scipy import stats

    from lossflow.ab.decision import Policy, decide

    pool, effect, looks, batch, seed = task
    rng = np.random.default_rng(seed)
    policy = Policy(metric="log_loss", min_units=batch // 2, min_duration_s=0.0,
                    latency_margin_ms=None, error_rate_margin=None, positive_rate_margin=None,
                    calibration_margin=None)  # fmt: skip
    control, treatment = [], []
    stopped: dict[str, Any] = {"verdict": "continue", "look": looks, "n": None}
    naive_hit, naive_n = False, None
    for look in range(1, looks + 1):
        to_treatment = rng.binomial(batch, 0.5)
        control.append(_units(pool, batch - to_treatment, rng))
        treatment.append(_units(pool, to_treatment, rng, 1.0 - effect))
        c, t = np.concatenate(control), np.concatenate(treatment)
        if not naive_hit and stats.ttest_ind(c, t, equal_var=False).pvalue < ALPHA:
            naive_hit, naive_n = True, (c.size + t.size) / 2
        if stopped["verdict"] == "continue":
            arms = {"champion": _arm("champion", c), "challenger": _arm("challenger", t)}
            d = decide(arms, "champion", ["challenger"], {"champion": 50, "challenger": 50}, policy)
            if d.verdict in ("promote", "reject", "invalid"):
                worse = d.verdict == "reject" and d.comparisons[0].worse
                verdict = "worse" if worse else d.verdict
                if d.verdict == "reject" and not worse:
                    verdict = "futile"
                stopped = {"verdict": verdict, "look": look, "n": (c.size + t.size) / 2}
    final_n = (sum(x.size for x in control) + sum(x.size for x in treatment)) / 2
    return {
        "verdict": stopped["verdict"],
        "n": stopped["n"] if stopped["n"] is not None else final_n,
        "naive": naive_hit,
        "naive_n": naive_n if naive_n is not None else final_n,
    }


def simulate_srm(task: tuple[float, int, int, int]) -> dict[str, bool]:
    """Units split ``share``/``1 - share`` checked at every look against 50/50 weights."""
    from scipy import stats

    from lossflow.stats.srm import sequential_srm_test

    share, looks, batch, seed = task
    rng = np.random.default_rng(seed)
    counts = np.zeros(2, dtype=np.int64)
    ours = naive = False
    for _ in range(looks):
        second = rng.binomial(batch, share)
        counts += (batch - second, second)
        ours = ours or sequential_srm_test(counts, [50, 50]) < 0.001
        naive = naive or stats.chisquare(counts).pvalue < 0.001
    return {"lossflow": ours, "naive": naive}


def _rate(values: list[bool]) -> float:
    return float(np.mean(values)) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sims", type=int, default=1000, help="experiments per setting")
    parser.add_argument("--looks", type=int, default=50)
    parser.add_argument("--batch", type=int, default=400, help="units per look (both arms)")
    parser.add_argument("--srm-batch", type=int, default=4000, help="units per look, SRM sims")
    parser.add_argument("--subsample", type=int, default=20000, help="training rows per split")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()

    started = time.perf_counter()
    pool = production_log_losses(args.subsample, args.epochs)
    trained_s = time.perf_counter() - started
    print(f"outcomes: {pool.size} production log losses, mean {pool.mean():.4f}, "
          f"sd {pool.std():.4f} (model trained in {trained_s:.0f} s)")  # fmt: skip
    out: dict[str, Any] = {
        "alpha": ALPHA, "sims": args.sims, "looks": args.looks, "batch": args.batch,
        "outcome_pool": {"size": int(pool.size), "mean": float(pool.mean()),
                         "sd": float(pool.std())},
    }  # fmt: skip
    with ProcessPoolExecutor(args.workers) as ex:
        settings = {0.0: "A/A", **{e: f"{e:.0%} better" for e in EFFECTS}}
        results: dict[float, list[dict[str, Any]]] = {}
        for k, effect in enumerate(settings):
            tasks = [(pool, effect, args.looks, args.batch, 1_000_000 * k + i)
                     for i in range(args.sims)]  # fmt: skip
            results[effect] = list(ex.map(simulate, tasks, chunksize=max(1, args.sims // 50)))
        srm_tasks = {
            share: [(share, args.looks, args.srm_batch, 7_000_000 + 1000 * j + i)
                    for i in range(args.sims)]
            for j, share in enumerate((0.5, 0.51))
        }  # fmt: skip
        srm = {s: list(ex.map(simulate_srm, t, chunksize=max(1, args.sims // 50)))
               for s, t in srm_tasks.items()}  # fmt: skip

    aa = results[0.0]
    fpr = _rate([r["verdict"] in ("promote", "worse") for r in aa])
    false_promotions = _rate([r["verdict"] == "promote" for r in aa])
    naive_fpr = _rate([r["naive"] for r in aa])
    fixed_n = args.looks * args.batch / 2
    power, expected_n, naive_power = {}, {}, {}
    for effect in EFFECTS:
        rs = results[effect]
        power[f"{effect:.2f}"] = _rate([r["verdict"] == "promote" for r in rs])
        expected_n[f"{effect:.2f}"] = float(np.mean([r["n"] for r in rs]))
        naive_power[f"{effect:.2f}"] = _rate([r["naive"] for r in rs])
    out |= {
        "fpr": fpr,
        "false_promotions": false_promotions,
        "aa_futile": _rate([r["verdict"] == "futile" for r in aa]),
        "aa_invalid": _rate([r["verdict"] == "invalid" for r in aa]),
        "naive_fpr": naive_fpr,
        "power": power,
        "naive_power": naive_power,
        "expected_n": expected_n,
        "fixed_horizon_n": fixed_n,
        "srm_detection_49_51": _rate([r["lossflow"] for r in srm[0.51]]),
        "srm_false_alarm_50_50": _rate([r["lossflow"] for r in srm[0.5]]),
        "srm_naive_false_alarm_50_50": _rate([r["naive"] for r in srm[0.5]]),
        "srm_naive_detection_49_51": _rate([r["naive"] for r in srm[0.51]]),
        "srm_units": args.looks * args.srm_batch,
        "seconds": time.perf_counter() - started,
    }
    out["ratio"] = fpr / ALPHA

    print(f"\n{args.sims} experiments per setting, {args.looks} looks of {args.batch} units")
    print(f"{'':34}{'lossflow':>12}{'naive t-test':>14}")
    print(f"{'A/A false positives (any look)':34}{fpr:>12.1%}{naive_fpr:>14.1%}")
    print(f"{'  of which false promotions':34}{false_promotions:>12.1%}")
    for effect in EFFECTS:
        key = f"{effect:.2f}"
        print(f"{f'power, challenger {effect:.0%} better':34}{power[key]:>12.1%}"
              f"{naive_power[key]:>14.1%}")  # fmt: skip
        print(f"{'  units per arm at the stop':34}{expected_n[key]:>12.0f}{fixed_n:>14.0f}")
    print(f"{'SRM 49/51 detected (alpha 0.001)':34}{out['srm_detection_49_51']:>12.1%}"
          f"{out['srm_naive_detection_49_51']:>14.1%}")  # fmt: skip
    print(f"{'SRM false alarms at 50/50':34}{out['srm_false_alarm_50_50']:>12.1%}"
          f"{out['srm_naive_false_alarm_50_50']:>14.1%}")  # fmt: skip
    print(
        f"false-positive rate / alpha: {out['ratio']:.2f} (goal <= 1.0); "
        f"naive: {naive_fpr / ALPHA:.2f}"
    )
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    sys.exit(main())
