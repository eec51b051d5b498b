"""The deployment files, checked offline: Dockerfile lint (hadolint), the compose file against the
Compose specification's schema, the Kubernetes kustomizations rendered by kubectl and validated
against the Kubernetes schemas, the Grafana dashboard against the service's metric names, and the
lock against pyproject's requirements. The tools are dev dependencies (PyPI wheels)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
COMPOSE = DEPLOY / "compose.yaml"
KUSTOMIZATIONS = [DEPLOY / "k8s" / "base", DEPLOY / "k8s" / "overlays" / "small"]


def _tool(name: str) -> str:
    path = BIN / name
    if not path.is_file():
        pytest.fail(f"{name} is not installed next to {sys.executable}: run `make install`")
    return str(path)


def _run(*command: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command, capture_output=True, text=True, input=stdin, cwd=ROOT, timeout=120, check=False
    )


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load(COMPOSE.read_text())
    return data


# --- Dockerfile ------------------------------------------------------------------------------


def test_dockerfile_is_hadolint_clean() -> None:
    proc = _run(_tool("hadolint"), "--no-color", "Dockerfile")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_dockerfile_has_a_target_per_process_and_runs_them_as_a_numeric_non_root_user() -> None:
    text = (ROOT / "Dockerfile").read_text()
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE))
    assert {"serve", "train", "worker"} <= targets
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim$", text, flags=re.MULTILINE)
    users = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert users
    assert all(re.fullmatch(r"[1-9]\d*:[1-9]\d*", u) for u in users), users
    assert "HEALTHCHECK" in text
    assert "/health" in text
    locked = "-c constraints.txt -r requirements.txt"
    assert text.count(locked) == 2, "both dependency sets install from the lock"
    torch_first = "-c constraints.txt \\\n        \"$(grep -E '^torch==' constraints.txt)\""
    assert text.count(torch_first) == 1, "torch alone, from the lock, first"
    assert text.count("uv pip install --no-deps .") == 2, "the project comes last"


# --- compose ---------------------------------------------------------------------------------


def test_compose_file_follows_the_compose_specification() -> None:
    proc = _run(_tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", str(COMPOSE))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_compose_services_reference_services_images_and_env_files_that_exist(
    tmp_path: Path,
) -> None:
    compose = _compose()
    services: dict[str, Any] = compose["services"]
    targets = set(re.findall(r"^FROM \S+ AS (\S+)$", (ROOT / "Dockerfile").read_text(), re.M))
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, f"{name} depends on unknown service {dependency}"
        build = service.get("build")
        if build is not None:
            assert build["target"] in targets, f"{name} builds unknown target {build['target']}"
            assert (COMPOSE.parent / build["context"] / "Dockerfile").is_file()
        for volume in service.get("volumes", []):
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (COMPOSE.parent / source).exists(), f"{name} mounts missing {source}"
    # make-secrets.sh writes every env file a service reads, and no secret is in the compose file.
    copy = tmp_path / "deploy"
    (copy / "env").mkdir(parents=True)
    shutil.copy2(DEPLOY / "make-secrets.sh", copy / "make-secrets.sh")
    proc = _run("sh", str(copy / "make-secrets.sh"))
    assert proc.returncode == 0, proc.stderr
    for name, service in services.items():
        for env_file in service.get("env_file", []):
            path = copy / env_file
            assert path.is_file(), f"{name} reads {env_file}, which make-secrets.sh does not write"
            assert path.stat().st_mode & 0o077 == 0, f"{env_file} is readable by others"
    assert not re.search(r"(?i)(password|token|secret)\w*\s*[:=]\s*\S", COMPOSE.read_text()), (
        "secrets belong in deploy/env/*.env"
    )
    ignored = _run("git", "check-ignore", "-q", "deploy/env/lossflow.env")
    assert ignored.returncode == 0, "deploy/env/*.env must be ignored by git"


def test_compose_wires_mlflow_prefect_and_the_service_to_their_stores() -> None:
    services = _compose()["services"]
    mlflow = " ".join(services["mlflow"]["command"])
    assert "--backend-store-uri=postgresql+psycopg://mlflow@postgres:5432/mlflow" in mlflow
    assert "--artifacts-destination=s3://lossflow/" in mlflow
    assert "--allowed-hosts=mlflow:*" in mlflow, "MLflow >= 3.5 checks the Host header"
    assert services["mlflow"]["environment"]["MLFLOW_S3_ENDPOINT_URL"] == "http://minio:9000"
    prefect = services["prefect-server"]["environment"]
    assert prefect["PREFECT_API_DATABASE_CONNECTION_URL"].startswith("postgresql+asyncpg://")
    assert "lossflow/lossflow" in services["minio-bucket"]["command"][0]
    serve = services["lossflow"]
    assert any(arg.startswith("log.url=postgresql") for arg in serve["command"])
    assert serve["environment"]["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert serve["read_only"] is True
    worker = services["prefect-worker"]
    assert worker["command"][:2] == ["lossflow", "worker"]
    init = (DEPLOY / "postgres" / "init-databases.sh").read_text()
    for database in ("mlflow", "prefect", "predictions"):
        assert f"CREATE DATABASE {database} " in init
    prometheus = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        target
        for job in prometheus["scrape_configs"]
        for config in job["static_configs"]
        for target in config["targets"]
    }
    assert "lossflow:8000" in targets
    assert "pushgateway:9091" in targets


def test_grafana_dashboard_queries_only_metrics_the_service_exports() -> None:
    from lossflow.serving.metrics import ServiceMetrics

    exposition = ServiceMetrics(lambda: None, lambda: None).render().decode()
    families = re.findall(r"^# TYPE (\S+) (\S+)$", exposition, flags=re.MULTILINE)
    exported: set[str] = set()
    for name, kind in families:
        suffixes = {"histogram": ["_bucket", "_sum", "_count"]}
        exported |= {name + s for s in suffixes.get(kind, [""])}
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "lossflow.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    used = {m for e in exprs for m in re.findall(r"\blossflow_\w+", e)}
    service = {m for m in used if not m.startswith("lossflow_monitoring_")}
    assert service - exported == set(), f"not exported by the service: {service - exported}"
    assert {
        "lossflow_requests_total",
        "lossflow_request_duration_seconds_bucket",
        "lossflow_request_errors_total",
        "lossflow_prediction_log_pending",
    } <= service
    assert any(m.startswith("lossflow_monitoring_drift") for m in used)
    assert any(m.startswith("lossflow_monitoring_performance") for m in used)


# --- Kubernetes ------------------------------------------------------------------------------


def _render(kustomization: Path) -> list[dict[str, Any]]:
    proc = _run(_tool("kubectl"), "kustomize", str(kustomization))
    assert proc.returncode == 0, proc.stderr
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


@pytest.mark.parametrize("kustomization", KUSTOMIZATIONS, ids=lambda p: p.name)
def test_kustomization_renders_and_passes_the_kubernetes_schemas(
    kustomization: Path, tmp_path: Path
) -> None:
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(yaml.safe_dump_all(_render(kustomization)))
    proc = _run(_tool("kubernetes-validate"), "--strict", "--quiet", str(rendered))
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_the_service_deployment_is_probed_bounded_and_unprivileged() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _render(KUSTOMIZATIONS[0])}
    serve = docs[("Deployment", "lossflow-serve")]
    pod = serve["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert {"requests", "limits"} <= set(container["resources"])
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    assert {"/app/data", "/tmp"} <= mounts, "the writable places of a read-only root"
    secrets = {
        e["valueFrom"]["secretKeyRef"]["name"]
        for d in docs.values()
        if d["kind"] == "Deployment"
        for c in d["spec"]["template"]["spec"]["containers"]
        for e in c.get("env", [])
        if "valueFrom" in e
    }
    assert secrets == {"lossflow-secrets"}
    labels = serve["spec"]["template"]["metadata"]["labels"]
    assert docs[("HorizontalPodAutoscaler", "lossflow-serve")]["spec"]["scaleTargetRef"][
        "name"
    ] == ("lossflow-serve")
    pdb = docs[("PodDisruptionBudget", "lossflow-serve")]["spec"]["selector"]["matchLabels"]
    service = docs[("Service", "lossflow-serve")]["spec"]["selector"]
    assert pdb.items() <= labels.items()
    assert service.items() <= labels.items()
    assert ("Deployment", "lossflow-worker") in docs
    assert ("Deployment", "mlflow") in docs


def test_the_small_overlay_scales_down_in_its_namespace() -> None:
    docs = {(d["kind"], d["metadata"]["name"]): d for d in _render(KUSTOMIZATIONS[1])}
    assert {d["metadata"].get("namespace") for d in docs.values()} == {"lossflow-small"}
    assert docs[("Deployment", "lossflow-serve")]["spec"]["replicas"] == 1
    assert docs[("HorizontalPodAutoscaler", "lossflow-serve")]["spec"]["maxReplicas"] == 3


# --- the lock --------------------------------------------------------------------------------


def _name(requirement: str) -> str:
    return re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower().replace("_", "-")


def test_the_images_install_each_extra_with_what_it_includes() -> None:
    sys.path.insert(0, str(DEPLOY))
    try:
        from requirements import requirements  # deploy/requirements.py, the Dockerfile's helper
    finally:
        sys.path.remove(str(DEPLOY))
    serve = {_name(r) for r in requirements("serve")}
    train = {_name(r) for r in requirements("train")}
    assert {"onnxruntime", "fastapi", "psycopg", "pydantic"} <= serve
    assert "torch" not in serve
    assert serve < train, "train includes the serving set"
    assert {"torch", "lightning", "prefect", "boto3"} <= train


def test_the_lock_pins_every_requirement_and_the_cpu_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    wanted = {_name(r) for r in project["dependencies"]}
    for extra in project["optional-dependencies"].values():
        wanted |= {_name(r) for r in extra if not r.startswith("lossflow")}
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    pins = dict(line.lower().split("==", 1) for line in lines if line and not line.startswith("#"))
    pins = {k.replace("_", "-"): v for k, v in pins.items()}
    assert wanted - set(pins) == set(), "run `make lock` after changing dependencies"
    assert pins["torch"].endswith("+cpu"), "the lock must never pull a CUDA build"
