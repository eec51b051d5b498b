"""Wall time of the offline comparison's arm x fold trainings: serial beside parallel processes.

The same plan (by default the four arms of ``configs/compare/default.yaml`` -- focal, bce,
logit_adjusted, class_balanced -- on a 50k-row flights subsample, 5 folds) is cut into the
same folds once; then every arm x fold unit runs (a) one after the other in this process with
torch's default threads (every core: what ``workers=1`` gives), (b) one after the other with one
torch thread, and (c) in ``--workers`` spawned processes sharing the cores (what ``lossflow
compare`` does by default), each unit exactly as the flow runs it (training, threshold, scores,
held-out months, importances and the landscape where the flow computes them). All runs are timed
in one invocation; their fold scores are compared as a check that they did the same work. The
headline ``ratio`` is (a) / (c); the parallel efficiency is the faster serial run / ((c) x
workers), so it does not count the gain of fewer threads per process as a parallel gain. The
last line prints the ratio.

    python benchmarks/compare.py                      # 4 arms x 5 folds, 50k rows, 2 workers
    python benchmarks/compare.py --quick              # 2 arms x 2 folds, 2k rows, 1 epoch
    python benchmarks/compare.py --rows 20000 --workers 2 --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import torch

from lossflow.comparison.cv import FoldSet, UnitResult, prepare_folds, run_units, units_for
from lossflow.comparison.parallel import threads_per_worker
from lossflow.comparison.plan import ComparisonPlan
from lossflow.config.compare import load_compare_config
from lossflow.usecases.compare import plan_comparison

ROOT = Path(__file__).resolve().parents[1]


def _plan(args: argparse.Namespace, data_dir: Path) -> ComparisonPlan:
    overrides = [
        f"data_dir={data_dir}",
        f"data.subsample={args.rows}",
        f"trainer.max_epochs={args.epochs}",
        f"cv.folds={args.folds}",
        f"loss={args.losses}",
        *args.set,
    ]
    settings = load_compare_config(overrides, ROOT / "configs")
    return plan_comparison(settings, ROOT / "configs")


def _timed(
    plan: ComparisonPlan, folds: FoldSet, directory: Path, workers: int, threads: int | None = None
) -> tuple[float, list[UnitResult]]:
    units = units_for(plan, folds, directory)
    default = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        results = run_units(units, workers)
        return time.perf_counter() - start, results
    finally:
        torch.set_num_threads(default)


def _scores(results: list[UnitResult], metric: str) -> dict[tuple[str, str], float]:
    return {(r.arm, r.fold): (r.metrics or {}).get(metric, float("nan")) for r in results}


def main() -> None:
    # lightning 2.6 on torch 2.13 warns about its own use of a deprecated torch API.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=50_000, help="flights rows cross-validated")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=5, help="trainer.max_epochs of each unit")
    parser.add_argument(
        "--losses", default="focal,bce,logit_adjusted,class_balanced", help="arms (loss files)"
    )
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    parser.add_argument(
        "--set", action="append", default=[], metavar="KEY=VALUE", help="a compare override"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="2 arms x 2 folds, 2k rows, 1 epoch, no importances or landscapes",
    )
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.rows, args.folds, args.epochs, args.losses = 2000, 2, 1, "focal,bce"
        args.set += ["importance.enabled=false", "landscape.enabled=false"]

    work = Path(tempfile.mkdtemp(prefix="lossflow-bench-compare-"))
    try:
        plan = _plan(args, work / "data")
        folds = prepare_folds(
            plan.reference, plan.settings.cv, plan.cv_kind, plan.slices, work / "folds"
        )
        units = len(units_for(plan, folds, work / "probe"))
        print(
            f"{len(plan.runnable)} arms x {len(folds.folds)} {folds.kind} folds = {units} units "
            f"on {folds.pool_rows} flights rows, {args.epochs} epochs max"
        )
        serial_s, serial = _timed(plan, folds, work / "serial", 1)
        print(f"(a) serial, 1 process x {torch.get_num_threads()} torch threads: {serial_s:.1f} s")
        single_s, single = _timed(plan, folds, work / "single", 1, threads=1)
        print(f"(b) serial, 1 process x 1 torch thread:   {single_s:.1f} s")
        parallel_s, parallel = _timed(plan, folds, work / "parallel", args.workers)
        threads = threads_per_worker(args.workers)
        label = f"(c) parallel, {args.workers} processes x {threads} torch thread(s)"
        print(f"{label}: {parallel_s:.1f} s")
    finally:
        shutil.rmtree(work, ignore_errors=True)

    failed = [f"{r.arm}/{r.fold}: {r.error}" for r in [*serial, *single, *parallel] if not r.ok]
    if failed:
        raise SystemExit("units failed: " + "; ".join(failed))
    a, b = _scores(serial, plan.metric), _scores(parallel, plan.metric)
    c = _scores(single, plan.metric)
    ratio = serial_s / parallel_s
    efficiency = min(serial_s, single_s) / (parallel_s * args.workers)
    figures = {
        "units": units,
        "arms": [arm.name for arm in plan.runnable],
        "folds": len(folds.folds),
        "rows": folds.pool_rows,
        "epochs": args.epochs,
        "workers": args.workers,
        "cpu_count": os.cpu_count(),
        "serial_s": serial_s,
        "serial_one_thread_s": single_s,
        "parallel_s": parallel_s,
        "threads_per_worker": threads_per_worker(args.workers),
        "unit_busy_s": {
            "serial": sum(r.total_s for r in serial),
            "serial_one_thread": sum(r.total_s for r in single),
            "parallel": sum(r.total_s for r in parallel),
        },
        "max_score_diff": max(max(abs(a[k] - b[k]), abs(a[k] - c[k])) for k in a),
        "metric": plan.metric,
        "ratio": ratio,
        "ratio_to_one_thread_serial": single_s / parallel_s,
        "parallel_efficiency": efficiency,
    }
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2))
    print(
        f"largest difference of a fold's {plan.metric} between the runs: "
        f"{figures['max_score_diff']:.2e}"
    )
    print(
        f"serial / parallel seconds: {ratio:.3f}x ({args.workers} workers; parallel efficiency "
        f"{efficiency:.0%} against the faster serial run)"
    )


if __name__ == "__main__":
    main()
