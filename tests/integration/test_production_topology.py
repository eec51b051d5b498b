"""The production topology, for real, as processes on loopback: MLflow server on PostgreSQL
with its artifacts proxied to an S3 endpoint (moto's server), Prefect server on PostgreSQL with
a process worker (`lossflow worker`, as the compose stack and the Kubernetes worker run it), and
`lossflow serve` logging to PostgreSQL. The training flow runs as a deployment through the
worker, registers on the MLflow server, and the service serves that version and logs every
answer to PostgreSQL: the same code as the embedded default, pointed at servers.

The one stand-in: the S3 endpoint is moto's server (no MinIO is installable here); MLflow talks to
it with boto3 as it would to MinIO or AWS.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest

from lossflow.flows.server import free_port
from lossflow.onnx_runner import OnnxRunner
from lossflow.predlog import PredictionLog
from lossflow.replay.rows import records_of
from lossflow.serving.predictor import OnnxPredictor
from lossflow.telemetry import TELEMETRY_OFF
from lossflow.tracking import ModelRegistry, Runs, WritableModelRegistry

from .servers import BIN, Server, pg_url, postgres_databases, running

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
MODEL = "lossflow-flights"
EXPERIMENT = "lossflow-flights"
WORK_POOL = "lossflow-topology"
BUCKET = "lossflow"
FLOW_RUN_TIMEOUT_S = 900.0
FINAL_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
# The S3 stand-in's credentials (moto accepts any); set, so boto3 never looks elsewhere.
S3_ENV = {
    "AWS_ACCESS_KEY_ID": "topology-test",
    "AWS_SECRET_ACCESS_KEY": "topology-test",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@dataclass(frozen=True)
class Topology:
    """The running servers and where their state lives."""

    mlflow_url: str
    prefect_api: str
    s3_url: str
    databases: dict[str, str]
    worker_data: Path
    env: dict[str, str]
    flow_run: dict[str, Any]
    tmp: Path
    worker: Server

    @property
    def predlog_url(self) -> str:
        return pg_url(self.databases["predlog"])


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env.update(
        TELEMETRY_OFF,
        # The MLflow server's background job runners (GenAI evaluation) are not used here.
        MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false",
        PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    env.update(extra)
    return env


def _create_bucket(s3_url: str) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=s3_url, **_boto_kwargs())
    client.create_bucket(Bucket=BUCKET)


def _boto_kwargs() -> dict[str, str]:
    return {
        "aws_access_key_id": S3_ENV["AWS_ACCESS_KEY_ID"],
        "aws_secret_access_key": S3_ENV["AWS_SECRET_ACCESS_KEY"],
        "region_name": S3_ENV["AWS_DEFAULT_REGION"],
    }


def _run_deployment(
    prefect_api: str, name: str, worker: Server, parameters: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Create a flow run of deployment ``name`` over the REST API and wait for a final state."""
    with httpx.Client(base_url=prefect_api, timeout=30) as api:
        deployment = api.get(f"/deployments/name/{name}").raise_for_status().json()
        body = {} if parameters is None else {"parameters": parameters}
        run = api.post(f"/deployments/{deployment['id']}/create_flow_run", json=body)
        flow_run_id = run.raise_for_status().json()["id"]
        state: dict[str, Any] = {}

        def final() -> bool:
            nonlocal state
            state = api.get(f"/flow_runs/{flow_run_id}").raise_for_status().json()
            return bool(state["state"] and state["state"]["type"] in FINAL_STATES)

        worker.wait_until(final, FLOW_RUN_TIMEOUT_S, "a finished flow run")
        return state


@pytest.fixture(scope="session")
def topology(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Topology]:
    tmp = tmp_path_factory.mktemp("topology")
    with postgres_databases("mlflow", "prefect", "predlog") as databases:
        s3_port, mlflow_port, prefect_port = free_port(), free_port(), free_port()
        s3_url = f"http://127.0.0.1:{s3_port}"
        mlflow_url = f"http://127.0.0.1:{mlflow_port}"
        prefect_api = f"http://127.0.0.1:{prefect_port}/api"
        with running(
            "moto S3 server",
            [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(s3_port)],
            _env(**S3_ENV),
            tmp / "s3.log",
            ready_url=f"{s3_url}/moto-api/",
        ) as _s3, running(
            "mlflow server",
            [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(mlflow_port),
             "--workers", "1", "--backend-store-uri", pg_url(databases["mlflow"]),
             "--artifacts-destination", f"s3://{BUCKET}/mlartifacts", "--serve-artifacts",
             "--allowed-hosts", f"127.0.0.1:{mlflow_port},localhost:{mlflow_port}"],
            _env(MLFLOW_S3_ENDPOINT_URL=s3_url, **S3_ENV),
            tmp / "mlflow.log",
        ) as mlflow_server, running(
            "prefect server",
            [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port",
             str(prefect_port), "--no-ui"],
            _env(
                PREFECT_HOME=str(tmp / "prefect-server"),
                PREFECT_API_DATABASE_CONNECTION_URL=pg_url(databases["prefect"], "asyncpg"),
            ),
            tmp / "prefect-server.log",
            ready_url=f"{prefect_api}/health",
        ):  # fmt: skip
            _create_bucket(s3_url)
            mlflow_server.wait_http(f"{mlflow_url}/health")
            worker_data = tmp / "worker-data"
            client_env = _env(
                PREFECT_API_URL=prefect_api,
                MLFLOW_TRACKING_URI=mlflow_url,
                PREFECT_HOME=str(tmp / "prefect-client"),
            )
            # data_dir for every flow; the small training for the training flow only
            overrides = [f"data_dir={worker_data}", "--set", "training:data.subsample=3000",
                         "--set", "training:trainer.max_epochs=1",
                         "--set", "training:trainer.batch_size=512"]  # fmt: skip
            # As the compose stack and the Kubernetes worker start it: register, then work.
            with running(
                "lossflow worker",
                [str(BIN / "lossflow"), "worker", "--work-pool", WORK_POOL, "--config-dir",
                 str(CONFIG_DIR), *overrides],
                client_env,
                tmp / "worker.log",
                cwd=ROOT,
            ) as worker:  # fmt: skip
                worker.wait_until(
                    lambda: "Worker" in worker.output() and "started" in worker.output(),
                    180,
                    "a started worker",
                )
                flow_run = _run_deployment(prefect_api, "training/lossflow-flights", worker)
                yield Topology(
                    mlflow_url=mlflow_url,
                    prefect_api=prefect_api,
                    s3_url=s3_url,
                    databases=databases,
                    worker_data=worker_data,
                    env=client_env,
                    flow_run=flow_run,
                    tmp=tmp,
                    worker=worker,
                )


def test_training_runs_as_a_deployment_through_the_worker_and_registers_on_the_server(
    topology: Topology,
) -> None:
    state = topology.flow_run["state"]
    assert state["type"] == "COMPLETED", (
        f"{state}\n{(topology.tmp / 'worker.log').read_text(errors='replace')[-6000:]}"
    )
    registry = ModelRegistry(topology.mlflow_url)
    assert registry.alias_version(MODEL, "champion") == "1"
    run_id = registry.run_of_version(MODEL, "1")
    tracker = Runs(topology.mlflow_url, EXPERIMENT)
    assert tracker.get_run_status(run_id) == "FINISHED"
    assert "test/roc_auc" in tracker.get_run_metrics(run_id)
    # The artifacts went through the server's proxy into the S3 bucket.
    import boto3

    s3 = boto3.client("s3", endpoint_url=topology.s3_url, **_boto_kwargs())
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET).get("Contents", [])]
    assert any(k.endswith("model.onnx") for k in keys), keys
    assert any(k.endswith("config.json") for k in keys), keys
    with httpx.Client(base_url=topology.prefect_api, timeout=30) as api:
        pools = api.post("/work_pools/filter", json={}).raise_for_status().json()
    assert {"name": WORK_POOL, "type": "process"}.items() <= next(
        p for p in pools if p["name"] == WORK_POOL
    ).items()


def _production_records(topology: Topology, count: int) -> list[dict[str, Any]]:
    (parquet,) = topology.worker_data.glob("runs/*/prepared/production.parquet")
    model = next(topology.worker_data.glob("runs/*/model/model.onnx"))
    features = OnnxPredictor.from_path(model).feature_columns
    return records_of(pd.read_parquet(parquet).head(count), features)


def test_the_service_serves_the_registered_model_and_logs_to_postgresql(
    topology: Topology, tmp_path: Path
) -> None:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    started = datetime.now(UTC) - timedelta(seconds=1)
    records = _production_records(topology, 20)
    with running(
        "lossflow serve",
        [str(BIN / "lossflow"), "serve", "--config-dir", str(CONFIG_DIR),
         f"data_dir={tmp_path / 'serve-data'}", f"port={port}",
         f"log.url={topology.predlog_url}"],
        topology.env,
        tmp_path / "serve.log",
        ready_url=f"{url}/ready",
    ):  # fmt: skip
        info = httpx.get(f"{url}/info", timeout=10).raise_for_status().json()
        assert info["variants"]["champion"]["model_version"] == "1"
        answered = []
        with httpx.Client(base_url=url, timeout=30) as client:
            for i, record in enumerate(records):
                response = client.post("/predict", json={"unit_id": f"u-{i}", "records": [record]})
                assert response.status_code == 200, response.text
                answered.append(response.json())
    # SIGTERM drained the writer: every answer is in the PostgreSQL log.
    log = PredictionLog(topology.predlog_url)
    try:
        frame = log.read(started, datetime.now(UTC) + timedelta(seconds=1))
    finally:
        log.dispose()
    assert set(frame["request_id"]) == {a["request_id"] for a in answered}
    assert set(frame["model_version"]) == {"1"}
    assert set(frame["variant"]) == {"champion"}
    # The monitoring deployment runs through the same worker and judges this window of the log,
    # against the reference profile the training deployment stored on the MLflow server.
    judged = _run_deployment(
        topology.prefect_api, "monitoring/lossflow-flights", topology.worker,
        {"since": "1h", "overrides": [
            f"data_dir={topology.worker_data}", f"log.url={topology.predlog_url}",
            "decision.min_rows=10", "performance.min_labels=10", "report.sample_rows=100"]},
    )  # fmt: skip
    assert judged["state"]["type"] == "COMPLETED", (topology.tmp / "worker.log").read_text(
        errors="replace"
    )[-6000:]
    [monitored] = Runs(topology.mlflow_url, "lossflow-monitoring").runs_with_tags(
        {"lossflow.model": MODEL}
    )
    assert monitored.tags["lossflow.model_version"] == "1"
    assert monitored.tags["lossflow.variant"] == "champion"
    assert monitored.metrics["rows"] == len(records)


def test_mlflow_server_with_proxied_local_artifacts_round_trips_a_model(
    topology: Topology, tmp_path: Path
) -> None:
    """The other production artifact mode: `--artifacts-destination <dir>` (no S3)."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with postgres_databases("mlflow") as databases, running(
        "mlflow server (local artifacts)",
        [str(BIN / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(port), "--workers",
         "1", "--backend-store-uri", pg_url(databases["mlflow"]), "--artifacts-destination",
         str(tmp_path / "artifacts"), "--serve-artifacts"],
        _env(),
        tmp_path / "mlflow.log",
        ready_url=f"{url}/health",
    ):  # fmt: skip
        source = ModelRegistry(topology.mlflow_url)
        onnx = source.download_onnx(MODEL, "champion", tmp_path / "from-s3")
        tracker, registry = Runs(url, "round-trip"), WritableModelRegistry(url)
        predictor = OnnxPredictor.from_path(onnx)
        records = _production_records(topology, 3)
        example = predictor.preprocessor.model_inputs(predictor.encode(records))
        output = OnnxRunner(onnx).run(example)
        with tracker.start_run("copy", {}) as run_id:
            version = registry.register(
                MODEL, tracker.log_onnx_model(run_id, onnx, example, output)
            )
        back = registry.download_onnx(MODEL, version, tmp_path / "back")
        assert back.read_bytes() == onnx.read_bytes()
        assert any((tmp_path / "artifacts").rglob("model.onnx"))
