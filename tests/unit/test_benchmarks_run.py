"""The training-throughput benchmark runs end to end at tiny sizes and reports what it claims."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "training_throughput.py"


@pytest.mark.slow
def test_training_throughput_tiny_run(tmp_path: Path) -> None:
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--device", "cpu", "--rows", "512", "--batch-size", "128",
         "--epochs", "2", "--threads", "1", "--profile", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("lossflow / raw loop samples/s: ")

    figures = json.loads(out.read_text())
    results = {r["variant"]: r for r in figures["results"]}
    assert set(results) == {"raw loop", "lossflow", "plain Lightning", "lossflow DDP x2"}
    for r in results.values():
        assert r["samples_per_s"] > 0
        assert len(r["epoch_seconds"]) == 2
    raw, ours = results["raw loop"], results["lossflow"]
    assert figures["ratio"] == ours["ratio_to_raw"]
    assert figures["ratio"] == pytest.approx(ours["samples_per_s"] / raw["samples_per_s"], rel=1e-2)
    assert f"{figures['ratio']:.3f}x" in lines[-1]
    # Same init, data, order, loss and optimizer: in fp32 both end with the same weights.
    assert figures["max_weight_diff_lossflow_vs_raw"] < 1e-5
    assert ours["final_train_loss"] == pytest.approx(raw["final_train_loss"], rel=1e-4)
    # Two processes, each with half of every batch: the same steps, the same weights.
    assert figures["max_weight_diff_ddp_vs_raw"] < 1e-4
    ddp = results["lossflow DDP x2"]
    assert ddp["final_train_loss"] == pytest.approx(raw["final_train_loss"], rel=1e-3)
    assert figures["ratio_ddp"] == ddp["ratio_to_raw"]
    parts = figures["profile"]["parts_cumulative_s"]
    assert parts["fit (total)"] > 0
    assert parts["backward"] > 0


SERVING = ROOT / "benchmarks" / "serving.py"


@pytest.mark.slow
def test_serving_benchmark_quick_run(tmp_path: Path) -> None:
    # Trains its own two-version registry (focal champion, bce challenger), then loads each real
    # server (KServe and MLServer from .venv-peers: `make test` makes them) for a second.
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(SERVING), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=900,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:] + proc.stdout[-2000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("lossflow (a) / the best peer, ")

    figures = json.loads(out.read_text())
    peers = ("mlflow_serve", "litserve_default", "litserve_best", "kserve", "mlserver")
    assert set(figures["servers"]) == {
        "lossflow_ab_log", "lossflow_no_log", "lossflow_shadow", "lossflow_v2", *peers,
    }  # fmt: skip
    assert figures["skipped"] == []
    assert set(figures["in_process"]) == {"predictor_predict", "runner_run"}
    for r in [*figures["servers"].values(), *figures["in_process"].values()]:
        assert r["rps"] > 0
        assert 0 < r["p50_ms"] <= r["p99_ms"]
    for r in figures["servers"].values():
        assert all(one["errors"] == 0 for one in r["rounds"])
    a, b, c, v2 = (
        figures["servers"][k]
        for k in ("lossflow_ab_log", "lossflow_no_log", "mlflow_serve", "lossflow_v2")
    )
    best = max(peers, key=lambda peer: figures["servers"][peer]["rps"])
    assert figures["best_peer"] == best
    assert figures["ratio"] == pytest.approx(a["rps"] / figures["servers"][best]["rps"], rel=1e-3)
    assert figures["ratio_v2"] == pytest.approx(
        v2["rps"] / figures["servers"][best]["rps"], rel=1e-3
    )
    assert figures["ratio_mlflow_serve"] == pytest.approx(a["rps"] / c["rps"], rel=1e-3)
    assert figures["logging_cost"] == pytest.approx(1 - a["rps"] / b["rps"], abs=1e-3)
    for peer in peers:
        want = a["rps"] / figures["servers"][peer]["rps"]
        assert figures["ratios"][peer] == pytest.approx(want, rel=1e-3)
    assert figures["ratios"][best] == figures["ratio"]
    assert f"{figures['ratio']:.3f}x" in lines[-1]
    # Both registered versions answered, and every answer of (a) is in the prediction log.
    assert set(figures["versions"]) == {"champion", "challenger"}
    assert set(figures["checks"]["variants"]) == {"champion", "challenger"}
    assert figures["checks"]["log"]["ok"]
    # The shadow server: every request it answered was scored or dropped (counted) by its shadow.
    shadow, f = figures["shadow"], figures["servers"]["lossflow_shadow"]
    assert shadow["p99_ms_with_shadow"] == f["p99_ms"]
    assert shadow["p99_ratio_with_over_without_shadow"] == pytest.approx(
        f["p99_ms"] / a["p99_ms"], rel=1e-3
    )
    answered = 32 + sum(r["completed_total"] for r in f["rounds"])  # the check, then the load
    assert shadow["shadow_scored"] + shadow["shadow_dropped"] == answered
    assert shadow["shadow_failed"] == 0
    batch1 = figures["batch1"]
    assert batch1["torch_model"].startswith("checkpoint ")
    assert batch1["torch_vs_onnx_max_abs_diff"] < 1e-4
    assert figures["ort_vs_torch_batch1"] == batch1["ratio_torch_over_ort"] > 0


COMPARE = ROOT / "benchmarks" / "compare.py"


@pytest.mark.slow
def test_compare_benchmark_quick_run(tmp_path: Path) -> None:
    # 2 arms x 2 folds on 2k flights rows, one epoch, serial (two thread counts) and in two
    # spawned processes: about half a minute on two cores, mostly process start-up.
    out = tmp_path / "figures.json"
    proc = subprocess.run(
        [sys.executable, str(COMPARE), "--quick", "--workers", "2", "--json", str(out)],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1].startswith("serial / parallel seconds: ")
    figures = json.loads(out.read_text())
    assert figures["units"] == 4
    assert figures["workers"] == 2
    assert figures["ratio"] == pytest.approx(figures["serial_s"] / figures["parallel_s"])
    assert f"{figures['ratio']:.3f}x" in lines[-1]
    fastest_serial = min(figures["serial_s"], figures["serial_one_thread_s"])
    assert figures["parallel_efficiency"] == pytest.approx(
        fastest_serial / (2 * figures["parallel_s"])
    )
    # Every unit is seeded: the same folds give the same scores whatever runs them.
    assert figures["max_score_diff"] == 0.0
