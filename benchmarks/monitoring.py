"""Monitoring cost: lossflow's drift judgement read from the prediction log, beside Evidently 0.7's
``DataDriftPreset`` on the same rows in memory.

Setup (not timed): a flights model trained with ``lossflow train`` on January–June (its reference
profile is stored at registration); real production rows (September–December), resampled with
replacement to ``N`` records, scored by the model and written to the prediction log through the
project's own ``BatchWriter`` (SQLite file, and the local PostgreSQL unless ``--no-postgres``).

Timed, each in a fresh process (peak RSS from ``getrusage``, imports included; seconds from
after the imports):

- lossflow: read the window from the log (the database unnests the JSON, pyarrow parses it),
  summarise every feature, drift of every feature and of the scores with the pinned methods,
  the prior estimate, the decision — what the ``monitoring`` flow does per variant, without the
  MLflow run, the Evidently HTML of bounded samples and Prefect's overhead;
- Evidently: ``Report([DataDriftPreset(num_method="wasserstein", cat_method="jensenshannon",
  thresholds 0.1)]).run(current, reference)`` on the same records already in a DataFrame, with
  the reference frame of the training split.

Per column, the drift verdicts of the effect (lossflow's ``effect >= threshold``, Evidently's
``drift_detected``) are compared. The last line is the headline ratio at 1M rows (SQLite):
Evidently seconds / lossflow seconds.

    python benchmarks/monitoring.py                        # 100k, 1M, 3M rows (Evidently to 1M)
    python benchmarks/monitoring.py --quick --json out.json
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from lossflow.cli.common import ENVIRONMENT

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
BIN = Path(sys.executable).parent
PG_URL = os.environ.get("LOSSFLOW_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


class BenchmarkError(RuntimeError):
    """The benchmark cannot run; the message says what to do."""


def _env() -> dict[str, str]:
    return {**os.environ, **ENVIRONMENT}


def train(data_dir: Path, subsample: int | None, log: Path) -> None:
    """Register a focal flights model (champion) with its reference profile."""
    command = [str(BIN / "lossflow"), "train", "--config-dir", str(CONFIG_DIR),
               f"data_dir={data_dir}", "trainer.max_epochs=1"]  # fmt: skip
    if subsample is not None:
        command.append(f"data.subsample={subsample}")
    print(f"training: {' '.join(command[1:])}", flush=True)
    with log.open("ab") as out:
        if subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=_env()) != 0:
            raise BenchmarkError(f"`lossflow train` failed; see {log}")


def _registered(data_dir: Path) -> tuple[str, str, Path]:
    from lossflow.config import load_serving_config
    from lossflow.tracking import ModelRegistry, default_tracking_uri

    cfg = load_serving_config([f"data_dir={data_dir}"], CONFIG_DIR)
    tracker = ModelRegistry(default_tracking_uri(data_dir))
    name = cfg.tracking.registered_model
    version = tracker.alias_version(name, "champion")
    if version is None:
        raise BenchmarkError(f"no champion in {data_dir}")
    onnx = tracker.download_onnx(name, version, data_dir / "bench-model")
    return name, version, onnx


def production_rows(data_dir: Path) -> pd.DataFrame:
    (path,) = sorted(data_dir.glob("runs/*/prepared/production.parquet"))
    return pd.read_parquet(path)


def write_log(url: str, schema: str | None, rows: int, data_dir: Path, seed: int = 0) -> None:
    """``rows`` resampled production records, scored by the champion, through ``BatchWriter``."""
    from lossflow.predlog import BatchWriter, PredictionLog, PredictionRecord
    from lossflow.replay.rows import records_of
    from lossflow.serving.predictor import OnnxPredictor

    _, version, onnx = _registered(data_dir)
    predictor = OnnxPredictor.from_path(onnx)
    frame = production_rows(data_dir)
    records = records_of(frame, predictor.feature_columns)
    outputs = [{"probability": p.probability, "label": p.label} for p in predictor.predict(records)]
    picks = np.random.default_rng(seed).integers(0, len(records), size=rows)
    log = PredictionLog(url, schema)
    log.create_schema()
    step = timedelta(seconds=3600 / max(rows, 1))  # the rows spread over one hour
    with BatchWriter(log, max_batch=2000, max_delay_s=0.0, max_queue=rows + 1) as writer:
        for i, k in enumerate(picks.tolist()):
            writer.submit(
                PredictionRecord(f"r{i}", f"u{k}", T0 + i * step, "loss-ab", "champion",
                                 version, predictor.loss_id, [records[k]], [outputs[k]], 1.0)
            )  # fmt: skip
        writer.flush()
    log.dispose()


def current_frame(data_dir: Path, rows: int, seed: int = 0) -> pd.DataFrame:
    """The same resampled production records as a DataFrame (Evidently's input)."""
    frame = production_rows(data_dir)
    picks = np.random.default_rng(seed).integers(0, len(frame), size=rows)
    return frame.iloc[picks].reset_index(drop=True)


def reference_frame(data_dir: Path, subsample: int | None) -> pd.DataFrame:
    """The training split's raw rows (what the profile summarises)."""
    from lossflow.config.training import load_training_config
    from lossflow.data.sources import load_frame, resolve_columns
    from lossflow.data.splits import split_frame

    overrides = [f"data_dir={data_dir}"] + (
        [] if subsample is None else [f"data.subsample={subsample}"]
    )
    cfg = load_training_config(overrides, CONFIG_DIR)
    columns = resolve_columns(cfg.data)
    return split_frame(load_frame(cfg.data), cfg.data, columns).train


# --- children ----------------------------------------------------------------------------------


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_lossflow(data_dir: Path, url: str, schema: str | None) -> dict[str, Any]:
    from lossflow.config.monitoring import load_monitoring_config
    from lossflow.usecases import monitoring as steps

    overrides = [f"data_dir={data_dir}", f"log.url={url}", "report.evidently=false"]
    if schema is not None:
        overrides.append(f"log.db_schema={schema}")
    cfg = load_monitoring_config(overrides, CONFIG_DIR)
    window = steps.Window(T0, T0 + timedelta(hours=2))
    started = time.perf_counter()
    (target,) = steps.plan(cfg, window)
    profile = steps.reference(cfg, target)
    summary = steps.read(cfg, profile, target, window)
    judgement = steps.judge(cfg, target, window, profile, summary, None)
    seconds = time.perf_counter() - started
    assert judgement.analysis is not None
    drift = judgement.analysis.drift
    return {
        "seconds": seconds,
        "peak_mb": _peak_mb(),
        "rows": summary.rows,
        "drifted": {c.column: bool(c.effect >= c.threshold) for c in drift.columns},
        "decision": judgement.decision.status,
    }


def child_evidently(
    reference: Path, current: Path, columns: dict[str, list[str]]
) -> dict[str, Any]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset

    ref = pd.read_parquet(reference)
    cur = pd.read_parquet(current)
    names = [*columns["numeric"], *columns["categorical"]]
    definition = DataDefinition(
        numerical_columns=columns["numeric"], categorical_columns=columns["categorical"]
    )
    started = time.perf_counter()
    snapshot = Report(
        [DataDriftPreset(columns=names, num_method="wasserstein", num_threshold=0.1,
                         cat_method="jensenshannon", cat_threshold=0.1)]
    ).run(
        Dataset.from_pandas(cur[names], data_definition=definition),
        Dataset.from_pandas(ref[names], data_definition=definition),
    )  # fmt: skip
    result = snapshot.dict()
    seconds = time.perf_counter() - started
    drifted = {}
    for metric in result["metrics"]:
        config = metric["config"]
        if config.get("type", "").endswith("ValueDrift"):
            drifted[config["column"]] = bool(float(metric["value"]) >= 0.1)
    return {"seconds": seconds, "peak_mb": _peak_mb(), "rows": len(cur), "drifted": drifted}


def _child(kind: str, *args: str) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", kind, *args]
    proc = subprocess.run(command, capture_output=True, text=True, env=_env(), check=False)
    if proc.returncode != 0:
        raise BenchmarkError(f"{kind} measurement failed:\n{proc.stderr[-3000:]}")
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


# --- the run -----------------------------------------------------------------------------------


def run(sizes: list[int], evidently_max: int, postgres: bool, subsample: int | None,
        work: Path) -> dict[str, Any]:  # fmt: skip
    data_dir = work / "data"
    train(data_dir, subsample, work / "train.log")
    from lossflow.data.sources import FLIGHTS_CATEGORICAL, FLIGHTS_NUMERIC

    columns = {"numeric": list(FLIGHTS_NUMERIC), "categorical": list(FLIGHTS_CATEGORICAL)}
    reference = work / "reference.parquet"
    reference_frame(data_dir, subsample).to_parquet(reference)
    results: list[dict[str, Any]] = []
    backends = [("sqlite", None)] + ([("postgresql", PG_URL)] if postgres else [])
    for rows in sizes:
        for backend, base_url in backends:
            if backend == "postgresql" and rows > max(s for s in sizes if s <= 1_000_000):
                continue  # PostgreSQL up to 1M rows
            schema = None
            if backend == "sqlite":
                url = f"sqlite:///{work / f'log-{rows}.db'}"
            else:
                url, schema = str(base_url), f"lossflow_bench_{rows}"
                _drop_schema(url, schema)
            print(f"writing {rows:,} records to the {backend} log", flush=True)
            written = time.perf_counter()
            write_log(url, schema, rows, data_dir)
            write_s = time.perf_counter() - written
            print(f"  written in {write_s:.1f} s; measuring lossflow", flush=True)
            ours = _child("lossflow", str(data_dir), url, schema or "")
            entry: dict[str, Any] = {
                "rows": rows, "backend": backend, "write_s": write_s, "lossflow": ours,
            }  # fmt: skip
            if backend == "sqlite" and rows <= evidently_max:
                current = work / f"current-{rows}.parquet"
                current_frame(data_dir, rows).to_parquet(current)
                print(f"  measuring Evidently on {rows:,} rows", flush=True)
                theirs = _child("evidently", str(reference), str(current), json.dumps(columns))
                agree = sum(ours["drifted"][c] == theirs["drifted"].get(c) for c in ours["drifted"])
                entry["evidently"] = theirs
                entry["agreement"] = f"{agree}/{len(ours['drifted'])}"
            results.append(entry)
            if backend == "postgresql":
                _drop_schema(url, schema)
            else:
                Path(url.removeprefix("sqlite:///")).unlink(missing_ok=True)
    return {"results": results}


def _drop_schema(url: str, schema: str | None) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
    engine.dispose()


def report(figures: dict[str, Any], headline_rows: int) -> dict[str, Any]:
    print()
    print("rows        backend      lossflow s  peak MB   Evidently s  peak MB   agree   ratio")
    ratio = None
    per_million: dict[str, float] = {}
    for r in figures["results"]:
        ours, theirs = r["lossflow"], r.get("evidently")
        x = theirs["seconds"] / ours["seconds"] if theirs else None
        if r["backend"] == "sqlite" and r["rows"] == headline_rows and x is not None:
            ratio = x
        if r["backend"] == "sqlite":
            per_million[str(r["rows"])] = ours["seconds"] / r["rows"] * 1e6
        print(
            f"{r['rows']:>10,}  {r['backend']:<11} {ours['seconds']:>10.2f} {ours['peak_mb']:>8.0f}"
            f"   {theirs['seconds'] if theirs else float('nan'):>11.2f}"
            f" {theirs['peak_mb'] if theirs else float('nan'):>8.0f}"
            f"   {r.get('agreement', '-'):>5}   {'-' if x is None else f'{x:.1f}x'}"
        )
    print("lossflow seconds per million rows (SQLite): "
          + ", ".join(f"{int(k):,} rows: {v:.2f}" for k, v in per_million.items()))  # fmt: skip
    if ratio is None:
        raise BenchmarkError(f"no Evidently measurement at {headline_rows:,} rows")
    print(f"Evidently / lossflow seconds at {headline_rows:,} rows: {ratio:.1f}x")
    return {**figures, "ratio": ratio, "seconds_per_million_rows": per_million}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="100000,1000000,3000000")
    parser.add_argument("--evidently-max", type=int, default=1_000_000)
    parser.add_argument("--no-postgres", action="store_true")
    parser.add_argument("--subsample", type=int, default=None, help="training rows per split")
    parser.add_argument("--quick", action="store_true", help="20k and 50k rows, small model")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--keep", action="store_true")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args, rest = parser.parse_known_args()
    if args.child == "lossflow":
        print(json.dumps(child_lossflow(Path(rest[0]), rest[1], rest[2] or None)))
        return
    if args.child == "evidently":
        print(json.dumps(child_evidently(Path(rest[0]), Path(rest[1]), json.loads(rest[2]))))
        return
    sizes = [20_000, 50_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    subsample = 5000 if args.quick else args.subsample
    headline = 50_000 if args.quick else 1_000_000
    work = Path(tempfile.mkdtemp(prefix="lossflow-bench-monitoring-"))
    try:
        figures = run(sizes, args.evidently_max, not args.no_postgres, subsample, work)
        out = report(figures, headline)
    except BenchmarkError as err:
        print(f"benchmark failed: {err}\nfiles kept in {work}", file=sys.stderr)
        raise SystemExit(1) from None
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(out, indent=2))
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
