"""Requests/s and latency of lossflow's service beside serving peers and in-process ORT.

One run, the same registered ONNX model, one-record requests, ``--clients`` concurrent
keep-alive connections on loopback, one server at a time:

- (a) ``lossflow serve`` as deployed: A/B split between ``champion`` and ``challenger`` (when the
  registry has both) and every answer written to the prediction log (SQLite in the data dir);
  also measured over the Open Inference Protocol (V2): the same server, the same records sent to
  ``POST /v2/models/<model>/infer`` as a shape-[1] tensor per raw feature column (numeric FP32,
  categorical BYTES, null for missing) with the unit id in ``parameters``; those answers are
  logged too. ``--skip-peers lossflow_v2`` leaves this row out (a lossflow without that route);
- (b) the same service with ``log.enabled=false``;
- (c) ``mlflow models serve -m models:/<model>@champion --env-manager local``, the server a user
  would otherwise pick, fed the model's encoded inputs (it has no preprocessing);
- (e) LitServe (``benchmarks/litserve_peer.py``), the server a Lightning user would pick, serving
  the champion through lossflow's own ``OnnxPredictor`` (same body, validation, encoding and
  session, so the difference is the serving layer), in its default configuration and in its
  best one here (dynamic batching up to 16 requests or 2 ms, the ZeroMQ queue, one inference
  worker for two cores). BentoML is not measured: it does not install beside the project's pins
  (it downgrades opentelemetry and cattrs);
- (f) ``lossflow serve`` as (a) plus a shadow (the champion once more, scored and logged, never
  returned), with its own prediction log; with ``--before-src DIR`` also the same server run
  from another lossflow source tree (``DIR/src``, e.g. a worktree of an earlier commit), so that
  a change to the shadow path is measured before and after in one run. After each round the
  benchmark waits until the shadow has scored or dropped every request (``/metrics``) and
  reports both counts;
- (g) KServe's Python ``ModelServer`` (``benchmarks/peers/kserve_peer.py``) and (h) MLServer
  (``benchmarks/peers/mlserver_peer.py``), the servers a Kubernetes user would pick, fed the same
  V2 bodies as (a) over V2. Neither ships an ONNX runtime of its own (KServe sends ONNX to
  Triton; MLServer's runtimes are sklearn, xgboost, mlflow, ...), so each serves the champion
  through a minimal custom model (a ``kserve.Model``; an ``MLModel`` that MLServer loads from
  the settings files the script writes) that turns the tensors into one record and scores it
  with lossflow's ``OnnxPredictor`` (imported from ``src``: validation, the encoding the model
  file carries, onnxruntime on one thread), so per request they do what lossflow does. Both
  speak REST only, on loopback, on uvicorn with uvloop and httptools and without per-request log
  lines, as lossflow (KServe has no option for its host or its access log: the peer sets them on
  its uvicorn config); MLServer scores in its server process (``parallel_workers: 0``: 2 to 4
  times the req/s of its default, one inference worker process fed over IPC, at 16 clients on
  this machine) and puts gRPC and metrics on free ports (it always starts both). Neither
  installs beside the project's lock (both need protobuf<7; no kserve resolves, only mlserver
  1.2.1), so each runs from its own venv, ``make peers`` (``.venv-peers/kserve``,
  ``.venv-peers/mlserver``, pinned in ``benchmarks/peers/*.txt``, the lock's onnxruntime);
  without them the benchmark stops and says so, unless ``--skip-peers kserve,mlserver``;
- (d) in process, one call at a time: ``OnnxPredictor.predict([record])`` (validation, encoding
  and onnxruntime, what the service does per request) and ``OnnxRunner.run`` on encoded inputs.

Requests cycle over ``--records`` rows of the production split (flights after the test period)
with a different unit id each, so (a) really splits traffic. Before timing, every benchmark
request is sent once to each server and checked: HTTP 200 and the same probabilities as the
model scored in process. After each round of (a), and before the next server is measured, the
benchmark waits until the prediction log holds every request (a) answered (the wait is reported).

The servers start once and stay up; ``--repeats`` rounds then load them one at a time, in turn,
so that noise from other work on the machine hits all of them alike (medians are reported). The
CPU seconds each server's processes spent per answered request are reported beside req/s.

The load comes from ``benchmarks/loadgen.py`` in its own process (asyncio on raw sockets); on a
small machine it shares the cores with the server, as a real client on the same host would.

Also measured: batch-1 latency of onnxruntime (``OnnxRunner.run``) against the same network in
torch eager (rebuilt from the run's checkpoint and config, checked equal to the ONNX output),
both on one thread. The last line is the headline ratio, (a) / the best peer in requests/s (the
peer with the most req/s among (c), (e), (g) and (h)); the JSON also has (a) / each peer under
``ratios`` (and ``p99_ratios``), (a) over V2 / each peer under ``ratios_v2`` and / the best
under ``ratio_v2``, and the former headline, (a) / (c), as ``ratio_mlflow_serve``.

    python benchmarks/serving.py                          # trains a small registry first
    python benchmarks/serving.py --data-dir /tmp/lf       # copies an existing data dir
    python benchmarks/serving.py --quick --json out.json
    python benchmarks/serving.py --before-src /tmp/before --json out.json  # (f) before and after
    python benchmarks/serving.py --quick --skip-peers lossflow_v2,kserve   # rows left out
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import math
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pandas as pd

from lossflow.cli.common import ENVIRONMENT
from lossflow.processes import spawn, stop_group

ROOT = Path(__file__).resolve().parents[1]
CONFIG_DIR = ROOT / "configs"
LOADGEN = Path(__file__).with_name("loadgen.py")
LITSERVE = Path(__file__).with_name("litserve_peer.py")
# Peers that do not install beside the project's lock: each runs from its own venv
# (`make peers`) with its script here; lossflow's predictor comes from src/ (PYTHONPATH).
PEERS_VENV = ROOT / ".venv-peers"
PEER_SCRIPTS = {
    "kserve": Path(__file__).parent / "peers" / "kserve_peer.py",
    "mlserver": Path(__file__).parent / "peers" / "mlserver_peer.py",
}
# Each peer in its best configuration here: MLServer scoring in its server process answered 2 to
# 4 times the req/s of its default, one inference worker process (IPC per request), at 16 clients.
PEER_OPTIONS = {"kserve": [], "mlserver": ["--parallel-workers", "0"]}
BIN = Path(sys.executable).parent
# What the copy of a data dir leaves out: files a service writes there.
SERVICE_OUTPUTS = ("predictions.db*", "serving-cache", "unlogged-*.jsonl")
PROBABILITY_ATOL = 1e-6
READY_TIMEOUT_S = 180.0
STOP_TIMEOUT_S = 60.0


class BenchmarkError(RuntimeError):
    """The benchmark cannot run or a check before timing failed; the message says what to do."""


@dataclass(frozen=True)
class Settings:
    clients: int
    duration: float
    warmup: float
    records: int
    inprocess_duration: float
    repeats: int
    batch1_calls: int
    batch1_rounds: int
    subsample: int
    before_src: Path | None = None
    skip: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Models:
    """The registered model as the servers see it, and the files beside it."""

    data_dir: Path
    tracking_uri: str
    name: str
    versions: dict[str, str]  # alias -> version (champion, and challenger when it differs)
    paths: dict[str, Path]  # version -> downloaded .onnx
    champion_run: str


@dataclass(frozen=True)
class Workload:
    records: list[dict[str, Any]]
    lossflow_bodies: list[bytes]
    mlflow_bodies: list[bytes]
    v2_bodies: list[bytes]  # Open Inference Protocol V2: one tensor per raw feature column
    inputs: list[dict[str, np.ndarray]]  # each record encoded for the champion


# --- data dir and registry -------------------------------------------------------------------


def _env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **ENVIRONMENT, **extra}
    env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
    return env


def _script(name: str) -> Path:
    path = BIN / name
    if not path.is_file():
        raise BenchmarkError(
            f"no {name!r} console script next to {sys.executable}; run the benchmark with the "
            "project's virtual environment (make install)"
        )
    return path


def copy_data_dir(source: Path, target: Path) -> Path:
    """Copy ``source`` without what a service writes there; the benchmark never touches it."""
    if not (source / "mlflow.db").is_file():
        raise BenchmarkError(
            f"{source} has no mlflow.db: pass the data_dir of a project that ran `lossflow train`"
        )
    shutil.copytree(source, target, ignore=shutil.ignore_patterns(*SERVICE_OUTPUTS))
    return target


def train_registry(data_dir: Path, subsample: int, log: Path) -> None:
    """Register a focal model (champion) and a bce model (challenger) with ``lossflow train``."""
    lossflow = _script("lossflow")
    for loss in ("focal", "bce"):
        command = [
            str(lossflow), "train", "--config-dir", str(CONFIG_DIR), f"data_dir={data_dir}",
            f"data.subsample={subsample}", "trainer.max_epochs=1", f"loss={loss}",
        ]  # fmt: skip
        print(f"training the {loss} model: {' '.join(command[1:])}", flush=True)
        with log.open("ab") as out:
            code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT, env=_env())
        if code != 0:
            raise BenchmarkError(f"`lossflow train loss={loss}` failed ({code}); see {log}")


def resolve_models(data_dir: Path, work: Path) -> Models:
    """Champion (and challenger) of the registered model, downloaded to ``work``."""
    from lossflow.config import load_serving_config
    from lossflow.tracking import ModelRegistry, default_tracking_uri

    cfg = load_serving_config([f"data_dir={data_dir}"], CONFIG_DIR)
    uri = default_tracking_uri(data_dir)
    tracker = ModelRegistry(uri)
    name = cfg.tracking.registered_model
    champion = tracker.alias_version(name, "champion")
    if champion is None:
        raise BenchmarkError(f"{uri} has no {name!r}@champion; run `lossflow train` first")
    versions = {"champion": champion}
    challenger = tracker.alias_version(name, "challenger")
    if challenger is not None and challenger != champion:
        versions["challenger"] = challenger
    paths = {
        v: tracker.download_onnx(name, v, work / "models" / f"v{v}") for v in versions.values()
    }
    return Models(data_dir, uri, name, versions, paths, tracker.run_of_version(name, champion))


def _plain(array: np.ndarray) -> list[Any]:
    """Rows as JSON lists; NaN (a missing numeric) becomes null."""
    return [
        [None if isinstance(v, float) and math.isnan(v) else v for v in row]
        for row in array.tolist()
    ]


def v2_body(unit_id: str, record: Mapping[str, Any], numeric: frozenset[str]) -> bytes:
    """One record as an Open Inference Protocol (V2) infer request: a shape-[1] tensor per raw
    feature column (numeric FP32, categorical BYTES, null for a missing value), the unit id as
    a request parameter (lossflow's A/B split reads it; the peers ignore it)."""
    inputs = [
        {
            "name": name,
            "shape": [1],
            "datatype": "FP32" if name in numeric else "BYTES",
            "data": [value],
        }
        for name, value in record.items()
    ]
    return orjson.dumps({"parameters": {"unit_id": unit_id}, "inputs": inputs})


def make_workload(models: Models, count: int) -> Workload:
    """``count`` production records, their /predict and V2 bodies and their encoded mlflow
    bodies."""
    from lossflow.replay.rows import records_of
    from lossflow.serving.predictor import OnnxPredictor

    parquet = models.data_dir / "runs" / models.champion_run / "prepared" / "production.parquet"
    if not parquet.is_file():
        raise BenchmarkError(
            f"no production split at {parquet}: the champion was not trained by `lossflow train` "
            "in this data dir; run the benchmark without --data-dir to build one"
        )
    predictor = OnnxPredictor.from_path(models.paths[models.versions["champion"]])
    frame = pd.read_parquet(parquet)
    columns = list(predictor.feature_columns)
    records = records_of(frame.head(count), columns)
    if len(records) < count:
        raise BenchmarkError(
            f"{parquet} has {len(records)} rows; ask for at most that many records"
        )
    numeric = frozenset(predictor.preprocessor.numeric_columns)
    lossflow_bodies: list[bytes] = []
    mlflow_bodies: list[bytes] = []
    v2_bodies: list[bytes] = []
    inputs: list[dict[str, np.ndarray]] = []
    for i, record in enumerate(records):
        unit = f"user-{i:06d}"
        lossflow_bodies.append(orjson.dumps({"unit_id": unit, "records": [record]}))
        v2_bodies.append(v2_body(unit, record, numeric))
        encoded = predictor.preprocessor.model_inputs(predictor.encode([record]))
        inputs.append(encoded)
        mlflow_bodies.append(orjson.dumps({"inputs": {k: _plain(v) for k, v in encoded.items()}}))
    return Workload(records, lossflow_bodies, mlflow_bodies, v2_bodies, inputs)


# --- servers ---------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _request(
    conn: http.client.HTTPConnection, method: str, path: str, body: bytes | None = None
) -> tuple[int, bytes]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    conn.request(method, path, body=body, headers=headers)
    response = conn.getresponse()
    return response.status, response.read()


@contextlib.contextmanager
def running(
    label: str, command: Sequence[str], env: Mapping[str, str], port: int, ready: str, log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Start ``command`` in its own process group, wait until ``GET ready`` answers 200, and
    stop the group (SIGTERM, then SIGKILL) on leaving."""
    with log.open("wb") as out:
        proc = spawn(command, stdout=out, env=env, cwd=log.parent)
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                raise BenchmarkError(
                    f"{label} exited ({proc.returncode}) before it was ready; its output:\n"
                    + log.read_text(errors="replace")[-3000:]
                )
            with contextlib.suppress(OSError, http.client.HTTPException):
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                try:
                    if _request(conn, "GET", ready)[0] == 200:
                        break
                finally:
                    conn.close()
            if time.monotonic() > deadline:
                raise BenchmarkError(f"{label} not ready after {READY_TIMEOUT_S:.0f} s; see {log}")
            time.sleep(0.25)
        yield proc
    finally:
        stop_group(proc, STOP_TIMEOUT_S)


def _answers(
    label: str, port: int, path: str, work: Workload, bodies: Sequence[bytes]
) -> Iterator[tuple[int, dict[str, Any], Any]]:
    """Send every body once on one keep-alive connection; yield (index, record, parsed answer)
    and fail on any status but 200."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for i, (record, body) in enumerate(zip(work.records, bodies, strict=True)):
            status, raw = _request(conn, "POST", path, body)
            if status != 200:
                raise BenchmarkError(f"{label} answered {status} to record {i}: {raw[:500]!r}")
            yield i, record, orjson.loads(raw)
    finally:
        conn.close()


def _check(label: str, i: int, got: Mapping[str, Any], expected: Any) -> None:
    if (
        abs(got["probability"] - expected.probability) > PROBABILITY_ATOL
        or got["label"] != expected.label
    ):
        raise BenchmarkError(
            f"record {i}: {label} answered {got}, the same model in process {expected}"
        )


def verify_lossflow(
    port: int, work: Workload, scorers: Mapping[str, Callable[..., Any]]
) -> Counter[str]:
    """Send every body once; each answer must be 200 and equal the in-process prediction of the
    model version that answered. Returns how many requests each variant answered."""
    variants: Counter[str] = Counter()
    for i, record, answer in _answers("lossflow", port, "/predict", work, work.lossflow_bodies):
        version = answer["model_version"]
        if version not in scorers:
            raise BenchmarkError(f"lossflow answered with unknown model version {version!r}")
        (expected,) = scorers[version]([record])
        (got,) = answer["predictions"]
        _check(f"lossflow ({answer['variant']} v{version})", i, got, expected)
        variants[answer["variant"]] += 1
    return variants


def verify_peer(label: str, port: int, work: Workload, scorer: Callable[..., Any]) -> None:
    """Send every /predict body once to a peer serving the champion through lossflow's
    predictor; each answer must be 200 with the champion's probability and label."""
    for i, record, answer in _answers(label, port, "/predict", work, work.lossflow_bodies):
        (got,) = answer["predictions"]
        (expected,) = scorer([record])
        _check(label, i, got, expected)


def _v2_prediction(label: str, i: int, answer: Mapping[str, Any]) -> dict[str, Any]:
    """The ``probability`` (and ``label`` when answered) of a one-record V2 infer answer."""
    outputs = {output["name"]: output for output in answer.get("outputs", ())}
    if "probability" not in outputs:
        raise BenchmarkError(f"record {i}: {label} answered no probability output: {answer}")
    got = {"probability": float(outputs["probability"]["data"][0])}
    if "label" in outputs:
        got["label"] = outputs["label"]["data"][0]
    return got


def verify_v2(
    label: str,
    port: int,
    path: str,
    work: Workload,
    champion: Callable[..., Any],
    versions: Mapping[str, Callable[..., Any]] | None = None,
) -> Counter[str]:
    """Send every V2 body once to ``path``; each answer must be 200 with the probability (and
    label, when answered) of the champion, or with ``versions`` (lossflow) of the model version
    that answered (``model_version``). Returns how many requests each variant answered
    (lossflow's ``parameters.variant``; none for a peer)."""
    variants: Counter[str] = Counter()
    for i, record, answer in _answers(label, port, path, work, work.v2_bodies):
        scorer = champion
        if versions is not None:
            version = answer.get("model_version")
            if version not in versions:
                raise BenchmarkError(f"{label} answered with unknown model version {version!r}")
            scorer = versions[version]
        (expected,) = scorer([record])
        got = _v2_prediction(label, i, answer)
        if (
            abs(got["probability"] - expected.probability) > PROBABILITY_ATOL
            or got.get("label", expected.label) != expected.label
        ):
            raise BenchmarkError(
                f"record {i}: {label} answered {got}, the same model in process {expected}"
            )
        variant = (answer.get("parameters") or {}).get("variant")
        if variant is not None:
            variants[variant] += 1
    return variants


def verify_mlflow(port: int, work: Workload, scorer: Callable[..., Any]) -> None:
    """Send every encoded body once; each answer must be 200 with the champion's probability."""
    for i, record, answer in _answers("mlflow", port, "/invocations", work, work.mlflow_bodies):
        predictions = answer["predictions"]
        if isinstance(predictions, dict):  # named outputs: {"output": [...]}
            (predictions,) = predictions.values()
        got = float(np.asarray(predictions, dtype=np.float64).reshape(-1)[0])
        (expected,) = scorer([record])
        if abs(got - expected.probability) > PROBABILITY_ATOL:
            raise BenchmarkError(
                f"record {i}: mlflow answered {got}, the champion in process {expected.probability}"
            )


def load(
    port: int, path: str, bodies: Sequence[bytes], settings: Settings, work: Path
) -> dict[str, Any]:
    """Run ``loadgen.py`` in its own process against one server; fail on any error."""
    bodies_file = work / f"bodies-{port}.jsonl"
    bodies_file.write_bytes(b"\n".join(bodies) + b"\n")
    command = [
        sys.executable, str(LOADGEN), "--port", str(port), "--path", path,
        "--bodies", str(bodies_file), "--clients", str(settings.clients),
        "--warmup", str(settings.warmup), "--duration", str(settings.duration),
    ]  # fmt: skip
    proc = subprocess.run(
        command, capture_output=True, text=True, env=_env(), check=False,
        timeout=settings.warmup + settings.duration + 120,
    )  # fmt: skip
    if proc.returncode != 0 or not proc.stdout.strip():
        raise BenchmarkError(
            f"the load run against port {port} failed ({proc.returncode}): "
            f"{proc.stderr.strip()[-2000:]} {proc.stdout.strip()[-1000:]}"
        )
    figures: dict[str, Any] = json.loads(proc.stdout)
    if figures["requests"] == 0:
        raise BenchmarkError(f"no request completed in the timed window against port {port}")
    return figures


def process_group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of the live processes in group ``pgid`` (NaN without /proc)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return math.nan
    ticks = 0
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            fields = stat.read_text().rpartition(")")[2].split()
            if int(fields[2]) == pgid:
                ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def logged_rows(data_dir: Path) -> int:
    """Rows in the SQLite prediction log of ``data_dir``."""
    path = data_dir / "predictions.db"
    if not path.is_file():
        return 0
    with contextlib.closing(sqlite3.connect(path)) as db:
        (count,) = db.execute("SELECT COUNT(*) FROM predictions").fetchone()
    return int(count)


# --- in process ------------------------------------------------------------------------------


def time_calls(call: Callable[[Any], Any], items: Sequence[Any], seconds: float) -> dict[str, Any]:
    """Call ``call`` on ``items`` in turn for ``seconds`` (after a short warm-up), one at a time;
    calls/s and latency percentiles as the servers report them."""
    for item in items[:200]:
        call(item)
    latencies: list[int] = []
    n = len(items)
    clock = time.perf_counter_ns
    start = clock()
    end = start + int(seconds * 1e9)
    i = 0
    now = start
    while now < end:
        item = items[i % n]
        i += 1
        t0 = clock()
        call(item)
        now = clock()
        latencies.append(now - t0)
    elapsed = (now - start) / 1e9
    latencies.sort()
    count = len(latencies)

    def pct(q: float) -> float:
        return round(latencies[max(0, math.ceil(count * q / 100) - 1)] / 1e6, 4)

    return {
        "requests": count,
        "rps": round(count / elapsed, 1),
        "p50_ms": pct(50),
        "p99_ms": pct(99),
        "mean_ms": round(sum(latencies) / count / 1e6, 4),
        "duration_s": round(elapsed, 3),
    }


def batch1(models: Models, work: Workload, settings: Settings, tmp: Path) -> dict[str, Any]:
    """Microseconds per row at batch 1: onnxruntime (lossflow's runner and a bare session) and
    torch eager on the same network and the same encoded row, all on one thread."""
    import onnxruntime as ort
    import torch

    from lossflow.onnx_runner import OnnxRunner

    path = models.paths[models.versions["champion"]]
    runner = OnnxRunner(path, intra_op_threads=1)
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    output_names = [session.get_outputs()[0].name]
    feeds = work.inputs[0]
    model, source = _torch_model(models, tmp)
    tensors = tuple(torch.from_numpy(a) for a in feeds.values())
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.inference_mode():
            reference = runner.run(feeds)
            diff = float(np.abs(model(*tensors).float().numpy() - reference).max())
            if source.startswith("checkpoint") and diff > 1e-4:
                source = f"{source}; WARNING: differs from the ONNX output by {diff:.2g}"
            timings: dict[str, list[float]] = {"ort_runner": [], "ort_session": [], "torch": []}
            calls: dict[str, Callable[[], Any]] = {
                "ort_runner": lambda: runner.run(feeds),
                "ort_session": lambda: session.run(output_names, feeds),
                "torch": lambda: model(*tensors),
            }
            for fn in calls.values():  # warm-up
                for _ in range(min(200, settings.batch1_calls)):
                    fn()
            for _ in range(settings.batch1_rounds):  # interleaved: noise hits all alike
                for key, fn in calls.items():
                    start = time.perf_counter_ns()
                    for _ in range(settings.batch1_calls):
                        fn()
                    per_row = (time.perf_counter_ns() - start) / settings.batch1_calls / 1e3
                    timings[key].append(per_row)
    finally:
        torch.set_num_threads(threads)
    us = {key: statistics.median(values) for key, values in timings.items()}
    return {
        "ort_runner_us_per_row": round(us["ort_runner"], 2),
        "ort_session_us_per_row": round(us["ort_session"], 2),
        "torch_eager_us_per_row": round(us["torch"], 2),
        "ratio_torch_over_ort": round(us["torch"] / us["ort_runner"], 3),
        "threads": 1,
        "calls_per_round": settings.batch1_calls,
        "rounds": settings.batch1_rounds,
        "torch_model": source,
        "torch_vs_onnx_max_abs_diff": diff,
    }


def _torch_model(models: Models, tmp: Path) -> tuple[Any, str]:
    """The champion's network in torch eager: from its run's checkpoint when the run's config and
    checkpoint are at hand, else the same architecture untrained (same cost per call)."""
    import mlflow

    from lossflow.config.training import TrainingConfig
    from lossflow.models.build import build_inference_model, load_trained_model
    from lossflow.serving.predictor import OnnxPredictor

    pre = OnnxPredictor.from_path(models.paths[models.versions["champion"]]).preprocessor
    client = mlflow.MlflowClient(models.tracking_uri)
    local = Path(client.download_artifacts(models.champion_run, "config.json", str(tmp)))
    cfg = TrainingConfig.model_validate(json.loads(local.read_text()))
    checkpoints = models.data_dir / "runs" / models.champion_run / "checkpoints"
    best = sorted(checkpoints.glob("best-*.ckpt"))
    checkpoint = best[0] if len(best) == 1 else checkpoints / "last.ckpt"
    if checkpoint.is_file():
        rel = checkpoint.relative_to(models.data_dir)
        return load_trained_model(cfg, pre, checkpoint), f"checkpoint {rel}"
    model = build_inference_model(cfg, pre).eval()
    return model, f"untrained, same architecture (no checkpoint at {checkpoints})"


# --- the run ---------------------------------------------------------------------------------


SERVERS = {
    "lossflow_ab_log": "(a) lossflow serve, A/B + prediction log",
    "lossflow_v2": "(a) the same server, V2 /infer requests",
    "lossflow_no_log": "(b) lossflow serve, log.enabled=false",
    "mlflow_serve": "(c) mlflow models serve (champion)",
    "litserve_default": "(e) LitServe, defaults (champion)",
    "litserve_best": "(e) LitServe, batching + fast queue",
    "lossflow_shadow": "(f) lossflow serve, A/B + log + shadow",
    "kserve": "(g) KServe ModelServer (champion, own venv)",
    "mlserver": "(h) MLServer, in-process (champion, own venv)",
}
SHADOW_BEFORE = "lossflow_shadow_before"
SHADOW_BEFORE_LABEL = "(f) the same, from --before-src"
SHADOWED = ("lossflow_shadow", SHADOW_BEFORE)
PEERS = ("mlflow_serve", "litserve_default", "litserve_best", "kserve", "mlserver")
# Rows --skip-peers may leave out: the peers from their own venvs, and the V2 row (a lossflow
# without the V2 route).
SKIPPABLE = ("kserve", "mlserver", "lossflow_v2")
# Rows answered by another row's server: the V2 row is (a)'s server, its log included.
SAME_SERVER = {"lossflow_v2": "lossflow_ab_log"}
LOGGED = ("lossflow_ab_log", "lossflow_v2")
IN_PROCESS = {
    "predictor_predict": "(d) in process: OnnxPredictor.predict([record])",
    "runner_run": "(d) in process: OnnxRunner.run(encoded)",
}


def _server_commands(
    models: Models, port: dict[str, int], tmp: Path
) -> dict[str, tuple[list[str], str]]:
    lossflow = str(_script("lossflow"))
    base = [lossflow, "serve", "--config-dir", str(CONFIG_DIR), f"data_dir={models.data_dir}"]
    shadowed = {}
    for key in SHADOWED:
        if key in port:
            log = f"log.url=sqlite:///{tmp / f'{key}.db'}"
            shadow = [f"port={port[key]}", "shadow={alias: champion}", log]
            shadowed[key] = ([*base, *shadow], "/ready")
    mlflow = [
        str(_script("mlflow")), "models", "serve", "-m", f"models:/{models.name}@champion",
        "--env-manager", "local", "--port", str(port["mlflow_serve"]), "--host", "127.0.0.1",
    ]  # fmt: skip
    champion = str(models.paths[models.versions["champion"]])
    litserve = [sys.executable, str(LITSERVE), "--model", champion, "--port"]
    ready_v2 = f"/v2/models/{models.name}/ready"
    own_venv = {
        key: (
            [str(peer_python(key)), str(PEER_SCRIPTS[key]), "--onnx", champion, "--name",
             models.name, "--port", str(port[key]), *PEER_OPTIONS[key]],
            ready_v2,
        )
        for key in PEER_SCRIPTS
        if key in port
    }  # fmt: skip
    return {
        "lossflow_ab_log": ([*base, f"port={port['lossflow_ab_log']}"], "/ready"),
        "lossflow_no_log": (
            [*base, f"port={port['lossflow_no_log']}", "log.enabled=false"],
            "/ready",
        ),
        "mlflow_serve": (mlflow, "/ping"),
        "litserve_default": ([*litserve, str(port["litserve_default"])], "/health"),
        "litserve_best": ([*litserve, str(port["litserve_best"]), "--best"], "/health"),
        **shadowed,
        **own_venv,
    }


def peer_python(key: str) -> Path:
    """The python of the venv ``make peers`` made for peer ``key``."""
    return PEERS_VENV / key / "bin" / "python"


def missing_peer_venvs(keys: Sequence[str]) -> list[str]:
    """The peers among ``keys`` whose venv ``make peers`` has not (fully) made."""
    return [key for key in keys if not (PEERS_VENV / key / ".installed").is_file()]


def peer_env(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` for a peer in its own venv: no trace of the project's venv, lossflow from src/
    (the same tree the project's venv has installed in editable mode)."""
    peer = {k: v for k, v in env.items() if k not in ("VIRTUAL_ENV", "PYTHONHOME")}
    peer["PYTHONPATH"] = str(ROOT / "src")
    return peer


def wait_logged(data_dir: Path, expected: int, timeout: float = 120.0) -> float:
    """Seconds until the prediction log holds ``expected`` rows (the writer's lag after a load).

    Raises:
        BenchmarkError: The rows are not there within ``timeout``.
    """
    start = time.monotonic()
    while (rows := logged_rows(data_dir)) < expected:
        if time.monotonic() - start > timeout:
            raise BenchmarkError(
                f"the prediction log holds {rows} of {expected} answered requests "
                f"{timeout:.0f} s after the load ended"
            )
        time.sleep(0.05)
    return time.monotonic() - start


def shadow_counts(port: int) -> dict[str, float]:
    """Requests the shadow of the server on ``port`` scored, failed and dropped so far."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        status, raw = _request(conn, "GET", "/metrics")
    finally:
        conn.close()
    if status != 200:
        raise BenchmarkError(f"GET /metrics on port {port} answered {status}")
    samples = {
        "scored": 'lossflow_records_scored_total{variant="shadow"}',
        "failed": 'lossflow_request_errors_total{reason="shadow_failed",variant="shadow"}',
        "dropped": 'lossflow_request_errors_total{reason="shadow_dropped",variant="shadow"}',
    }
    counts = dict.fromkeys(samples, 0.0)
    for line in raw.decode().splitlines():
        name, _, value = line.rpartition(" ")
        for key, sample in samples.items():
            if name == sample:
                counts[key] = float(value)
    return counts


def wait_shadow(port: int, answered: int, timeout: float = 120.0) -> dict[str, float]:
    """The shadow's counts once it has scored, failed or dropped each of ``answered`` one-record
    requests, with the seconds that took (its lag after a load).

    Raises:
        BenchmarkError: Some requests are unaccounted for after ``timeout``.
    """
    start = time.monotonic()
    while True:
        counts = shadow_counts(port)
        if sum(counts.values()) >= answered:
            return {**counts, "catch_up_s": round(time.monotonic() - start, 3)}
        if time.monotonic() - start > timeout:
            raise BenchmarkError(
                f"the shadow on port {port} accounts for {sum(counts.values()):.0f} of {answered} "
                f"requests {timeout:.0f} s after the load ended: {counts}"
            )
        time.sleep(0.05)


def _median_figures(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    keys = ("rps", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "server_cpu_us_per_request")
    merged: dict[str, Any] = {
        k: round(statistics.median(r[k] for r in rounds), 4) for k in keys if k in rounds[0]
    }
    merged["requests"] = sum(r["requests"] for r in rounds)
    merged["rounds"] = rounds
    return merged


def run(settings: Settings, data_dir: Path | None, tmp: Path) -> dict[str, Any]:
    from lossflow.onnx_runner import OnnxRunner
    from lossflow.serving.predictor import OnnxPredictor

    work_dir = tmp / "data"
    if data_dir is None:
        work_dir.mkdir()
        train_registry(work_dir, settings.subsample, tmp / "train.log")
    else:
        copy_data_dir(data_dir, work_dir)
    models = resolve_models(work_dir, tmp)
    work = make_workload(models, settings.records)
    predictors = {v: OnnxPredictor.from_path(p) for v, p in models.paths.items()}
    champion = predictors[models.versions["champion"]]
    env = _env(MLFLOW_TRACKING_URI=models.tracking_uri)
    env.pop("LOSSFLOW_ADMIN_TOKEN", None)
    servers_run = {k: v for k, v in SERVERS.items() if k not in settings.skip}
    envs = dict.fromkeys(servers_run, env)
    for key in PEER_SCRIPTS:
        envs[key] = peer_env(env)
    if settings.before_src is not None:
        servers_run[SHADOW_BEFORE] = SHADOW_BEFORE_LABEL
        envs[SHADOW_BEFORE] = {**env, "PYTHONPATH": str(settings.before_src / "src")}
    ports = {key: free_port() for key in servers_run if key not in SAME_SERVER}
    commands = _server_commands(models, ports, tmp)
    ports.update({key: ports[of] for key, of in SAME_SERVER.items() if key in servers_run})
    infer_v2 = f"/v2/models/{models.name}/infer"
    bodies = {
        "lossflow_ab_log": ("/predict", work.lossflow_bodies),
        "lossflow_v2": (infer_v2, work.v2_bodies),
        "lossflow_no_log": ("/predict", work.lossflow_bodies),
        "mlflow_serve": ("/invocations", work.mlflow_bodies),
        "litserve_default": ("/predict", work.lossflow_bodies),
        "litserve_best": ("/predict", work.lossflow_bodies),
        **dict.fromkeys(SHADOWED, ("/predict", work.lossflow_bodies)),
        **dict.fromkeys(PEER_SCRIPTS, (infer_v2, work.v2_bodies)),
    }
    rounds: dict[str, list[dict[str, Any]]] = {key: [] for key in servers_run}
    checks: dict[str, Any] = {}
    with contextlib.ExitStack() as stack:
        procs: dict[str, subprocess.Popen[bytes]] = {}
        for key, (command, ready) in commands.items():
            print(f"{servers_run[key]}: starting on port {ports[key]}", flush=True)
            procs[key] = stack.enter_context(
                running(key, command, envs[key], ports[key], ready, tmp / f"{key}.log")
            )
        procs.update({key: procs[of] for key, of in SAME_SERVER.items() if key in servers_run})
        print("checking every benchmark request against the models in process", flush=True)
        scorers = {v: p.predict for v, p in predictors.items()}
        variants = verify_lossflow(ports["lossflow_ab_log"], work, scorers)
        answered = len(work.records)  # the check above, on (a)
        if "lossflow_v2" in servers_run:
            label = "lossflow over V2 (--skip-peers lossflow_v2 where it has no V2 route)"
            port = ports["lossflow_v2"]
            v2_variants = verify_v2(label, port, infer_v2, work, champion.predict, scorers)
            checks["variants_v2"] = dict(v2_variants)
            answered += len(work.records)
        verify_lossflow(ports["lossflow_no_log"], work, scorers)
        shadow_answered = {}
        for key in SHADOWED:
            if key in ports:
                verify_lossflow(ports[key], work, scorers)
                shadow_answered[key] = len(work.records)
        verify_mlflow(ports["mlflow_serve"], work, champion.predict)
        for key in ("litserve_default", "litserve_best"):
            verify_peer(SERVERS[key], ports[key], work, champion.predict)
        for key in PEER_SCRIPTS:
            if key in servers_run:
                verify_v2(SERVERS[key], ports[key], infer_v2, work, champion.predict)
        checks["variants"] = dict(variants)
        wait_logged(work_dir, answered)
        for index in range(settings.repeats):  # one server at a time, interleaved rounds
            for key in servers_run:
                print(f"round {index + 1}/{settings.repeats}: {servers_run[key]}", flush=True)
                path, payload = bodies[key]
                cpu_before = process_group_cpu_s(procs[key].pid)
                figures = load(ports[key], path, payload, settings, tmp)
                cpu = process_group_cpu_s(procs[key].pid) - cpu_before
                if key in LOGGED:
                    answered += figures["completed_total"]
                    figures["log_catch_up_s"] = round(wait_logged(work_dir, answered), 3)
                    cpu = process_group_cpu_s(procs[key].pid) - cpu_before
                if key in shadow_answered:
                    shadow_answered[key] += figures["completed_total"]
                    figures["shadow"] = wait_shadow(ports[key], shadow_answered[key])
                    cpu = process_group_cpu_s(procs[key].pid) - cpu_before
                if not math.isnan(cpu):
                    figures["server_cpu_s"] = round(cpu, 3)
                    figures["server_cpu_us_per_request"] = round(
                        cpu / figures["completed_total"] * 1e6, 1
                    )
                rounds[key].append(figures)
    logged = logged_rows(work_dir)
    checks["log"] = {"answered": answered, "logged": logged, "ok": logged == answered}

    print("(d) in process: timing", flush=True)
    runner = OnnxRunner(champion.path, intra_op_threads=1)  # as OnnxPredictor.from_path
    single = [[r] for r in work.records]
    in_process = {
        "predictor_predict": time_calls(champion.predict, single, settings.inprocess_duration),
        "runner_run": time_calls(runner.run, work.inputs, settings.inprocess_duration),
    }
    batch = batch1(models, work, settings, tmp)

    servers = {key: _median_figures(rounds[key]) for key in servers_run}
    a, b, c = (servers[k] for k in ("lossflow_ab_log", "lossflow_no_log", "mlflow_serve"))
    peers = [peer for peer in PEERS if peer in servers]
    best = max(peers, key=lambda peer: servers[peer]["rps"])
    v2 = servers.get("lossflow_v2")
    return {
        "model": models.name,
        "versions": models.versions,
        "loss_ids": {v: p.loss_id for v, p in predictors.items()},
        "clients": settings.clients,
        "warmup_s": settings.warmup,
        "duration_s": settings.duration,
        "repeats": settings.repeats,
        "records": settings.records,
        "cpus": os.cpu_count(),
        "client_event_loop": rounds["lossflow_ab_log"][0]["event_loop"],
        "servers": servers,
        "in_process": in_process,
        "batch1": batch,
        "checks": checks,
        "logging_cost": round(1 - a["rps"] / b["rps"], 4),
        "p99_ratio": round(a["p99_ms"] / c["p99_ms"], 4),
        "ort_vs_torch_batch1": batch["ratio_torch_over_ort"],
        "shadow": shadow_summary(servers),
        "ratios": {peer: round(a["rps"] / servers[peer]["rps"], 4) for peer in peers},
        "p99_ratios": {peer: round(a["p99_ms"] / servers[peer]["p99_ms"], 4) for peer in peers},
        **(
            {}
            if v2 is None
            else {
                "ratios_v2": {peer: round(v2["rps"] / servers[peer]["rps"], 4) for peer in peers},
                "ratio_v2": round(v2["rps"] / servers[best]["rps"], 4),
            }
        ),
        "skipped": sorted(settings.skip),
        "best_peer": best,
        "ratio_mlflow_serve": round(a["rps"] / c["rps"], 4),
        "ratio": round(a["rps"] / servers[best]["rps"], 4),
    }


def shadow_summary(servers: Mapping[str, Any]) -> dict[str, Any]:
    """(f) against (a) in the same run: what a shadow costs the answers' p99 and req/s; with
    ``--before-src``, (f) against the same server from the other tree."""
    a, f = servers["lossflow_ab_log"], servers["lossflow_shadow"]
    last = f["rounds"][-1]["shadow"]
    summary: dict[str, Any] = {
        "p99_ms_without_shadow": a["p99_ms"],
        "p99_ms_with_shadow": f["p99_ms"],
        "p99_ratio_with_over_without_shadow": round(f["p99_ms"] / a["p99_ms"], 4),
        "rps_ratio_with_over_without_shadow": round(f["rps"] / a["rps"], 4),
        "shadow_scored": last["scored"],
        "shadow_dropped": last["dropped"],
        "shadow_failed": last["failed"],
    }
    before = servers.get(SHADOW_BEFORE)
    if before is not None:
        summary["p99_ms_with_shadow_before"] = before["p99_ms"]
        summary["p99_ratio_after_over_before"] = round(f["p99_ms"] / before["p99_ms"], 4)
        summary["rps_ratio_after_over_before"] = round(f["rps"] / before["rps"], 4)
        previous = before["rounds"][-1]["shadow"]
        summary["shadow_scored_before"] = previous["scored"]
        summary["shadow_dropped_before"] = previous["dropped"]
    return summary


def report(summary: dict[str, Any]) -> None:
    versions = ", ".join(f"{alias} v{v}" for alias, v in summary["versions"].items())
    print(
        f"\nserving {summary['model']} ({versions}): 1-record requests over "
        f"{summary['records']} production records, {summary['clients']} keep-alive clients, "
        f"{summary['warmup_s']:g} s warm-up + {summary['duration_s']:g} s per server and round, "
        f"{summary['repeats']} interleaved round(s) (median shown), {summary['cpus']} CPUs shared "
        "with the client"
    )
    if summary["skipped"]:
        print(f"left out (--skip-peers): {', '.join(SERVERS[k] for k in summary['skipped'])}")
    print(f"{'setup':<50} {'req/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'server CPU us/req':>18}")
    labels = {**SERVERS, SHADOW_BEFORE: SHADOW_BEFORE_LABEL}
    rows = [*((labels[k], v) for k, v in summary["servers"].items())]
    rows += [(IN_PROCESS[k], v) for k, v in summary["in_process"].items()]
    for label, r in rows:
        cpu = r.get("server_cpu_us_per_request")
        cpu_text = "-" if cpu is None else f"{cpu:,.0f}"
        print(
            f"{label:<50} {r['rps']:>9,.0f} {r['p50_ms']:>8.3f} {r['p99_ms']:>8.3f} {cpu_text:>18}"
        )
    b1 = summary["batch1"]
    print(
        f"batch 1, one thread: onnxruntime {b1['ort_runner_us_per_row']:.1f} us/row "
        f"(OnnxRunner.run; bare session {b1['ort_session_us_per_row']:.1f}), torch eager "
        f"{b1['torch_eager_us_per_row']:.1f} us/row ({b1['torch_model']}): "
        f"torch / onnxruntime = {b1['ratio_torch_over_ort']:.2f}x"
    )
    log = summary["checks"]["log"]
    state = "ok" if log["ok"] else "MISMATCH"
    catch_up = max(r["log_catch_up_s"] for r in summary["servers"]["lossflow_ab_log"]["rounds"])
    split = f"{summary['checks']['variants']}"
    if "variants_v2" in summary["checks"]:
        split += f" (/predict), {summary['checks']['variants_v2']} (V2)"
    print(
        f"prediction log of (a): {log['logged']} rows for {log['answered']} answers ({state}), "
        f"at most {catch_up:.2f} s behind after a round; A/B split of the check requests: {split}"
    )
    print(f"logging cost, 1 - (a)/(b) req/s: {summary['logging_cost']:.1%}")
    print(f"p99 (a) / (c): {summary['p99_ratio']:.3f}")
    shadow = summary["shadow"]
    print(
        f"shadow: p99 (f) / (a) {shadow['p99_ratio_with_over_without_shadow']:.3f}, "
        f"req/s (f) / (a) {shadow['rps_ratio_with_over_without_shadow']:.3f}; requests the "
        "shadow scored "
        f"{shadow['shadow_scored']:,.0f}, dropped {shadow['shadow_dropped']:,.0f}, failed "
        f"{shadow['shadow_failed']:,.0f}"
    )
    if "p99_ratio_after_over_before" in shadow:
        print(
            f"shadow, this tree / --before-src: p99 {shadow['p99_ms_with_shadow']:.3f} ms / "
            f"{shadow['p99_ms_with_shadow_before']:.3f} ms = "
            f"{shadow['p99_ratio_after_over_before']:.3f}, req/s "
            f"{shadow['rps_ratio_after_over_before']:.3f}x (before: the shadow scored "
            f"{shadow['shadow_scored_before']:,.0f}, dropped "
            f"{shadow['shadow_dropped_before']:,.0f})"
        )
    for peer, ratio in summary["ratios"].items():
        print(
            f"lossflow (a) / {SERVERS[peer]}: req/s {ratio:.3f}x, "
            f"p99 {summary['p99_ratios'][peer]:.3f}"
        )
    best = SERVERS[summary["best_peer"]]
    if "ratio_v2" in summary:
        print(f"lossflow (a) over V2 / the best peer, {best}, req/s: {summary['ratio_v2']:.3f}x")
    print(f"lossflow (a) / the best peer, {best}, req/s: {summary['ratio']:.3f}x")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", type=Path, help="existing data dir to copy (not modified)")
    parser.add_argument("--clients", type=int, default=16, help="concurrent keep-alive clients")
    parser.add_argument("--duration", type=float, default=10.0, help="timed seconds per server")
    parser.add_argument("--warmup", type=float, default=2.0, help="untimed seconds per server")
    parser.add_argument(
        "--repeats", type=int, default=3, help="interleaved rounds over the servers; median kept"
    )
    parser.add_argument("--records", type=int, default=256, help="distinct production records")
    parser.add_argument("--inprocess-duration", type=float, default=3.0, help="seconds per (d)")
    parser.add_argument("--batch1-calls", type=int, default=2000, help="calls per timing round")
    parser.add_argument("--batch1-rounds", type=int, default=7, help="interleaved rounds")
    parser.add_argument(
        "--subsample", type=int, default=20_000, help="flights rows when training a registry"
    )
    parser.add_argument(
        "--quick", action="store_true",
        help="1 s per server, 0.5 s warm-up, 4 clients, 32 records, 2,000 training rows",
    )  # fmt: skip
    parser.add_argument(
        "--before-src", type=Path,
        help="a lossflow source tree (e.g. a worktree of an earlier commit): also run (f) from it",
    )  # fmt: skip
    parser.add_argument(
        "--skip-peers", default="", metavar="ROW,...",
        help=f"leave these rows out: {', '.join(SKIPPABLE)} (lossflow_v2: a lossflow without "
        "the V2 route)",
    )  # fmt: skip
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    parser.add_argument("--json", type=Path, help="write the figures here")
    args = parser.parse_args()
    if args.quick:
        args.duration, args.warmup, args.clients, args.records = 1.0, 0.5, 4, 32
        args.inprocess_duration, args.batch1_calls, args.batch1_rounds = 0.5, 200, 3
        args.repeats = 1
        args.subsample = min(args.subsample, 2000)
    if min(args.clients, args.records, args.repeats, args.batch1_calls, args.batch1_rounds) < 1:
        parser.error("--clients, --records, --repeats and --batch1-* must be >= 1")
    if args.duration <= 0 or args.warmup < 0 or args.inprocess_duration <= 0:
        parser.error("need --duration > 0, --warmup >= 0 and --inprocess-duration > 0")
    if args.data_dir is not None and not args.data_dir.is_dir():
        parser.error(f"--data-dir {args.data_dir} is not a directory")
    if args.before_src is not None and not (args.before_src / "src" / "lossflow").is_dir():
        parser.error(f"--before-src {args.before_src} has no src/lossflow")
    skip = frozenset(filter(None, (key.strip() for key in args.skip_peers.split(","))))
    if unknown := sorted(skip - set(SKIPPABLE)):
        parser.error(f"--skip-peers: unknown {', '.join(unknown)}; known: {', '.join(SKIPPABLE)}")
    if missing := missing_peer_venvs([key for key in PEER_SCRIPTS if key not in skip]):
        venvs = ", ".join(str((PEERS_VENV / key).relative_to(ROOT)) for key in missing)
        print(
            f"benchmark failed: no venv for the {' and '.join(missing)} peer ({venvs}): run "
            f"`make peers` in {ROOT}, or leave them out with --skip-peers {','.join(missing)}",
            file=sys.stderr,
        )
        sys.exit(2)
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    settings = Settings(
        clients=args.clients,
        duration=args.duration,
        warmup=args.warmup,
        records=args.records,
        inprocess_duration=args.inprocess_duration,
        repeats=args.repeats,
        batch1_calls=args.batch1_calls,
        batch1_rounds=args.batch1_rounds,
        subsample=args.subsample,
        before_src=None if args.before_src is None else args.before_src.resolve(),
        skip=skip,
    )
    tmp = Path(tempfile.mkdtemp(prefix="lossflow-bench-serving-"))
    summary: dict[str, Any] | None = None
    try:
        summary = run(settings, args.data_dir.resolve() if args.data_dir else None, tmp)
    except BenchmarkError as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
    finally:
        if summary is None or args.keep:
            print(f"logs and data kept in {tmp}", file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if summary is None:
        sys.exit(1)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(summary, indent=2))
    report(summary)


if __name__ == "__main__":
    main()
