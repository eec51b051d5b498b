"""Telemetry off: the environment every process lossflow starts, and the CLI itself, runs with
(Prefect's analytics, MLflow's and onnxruntime's telemetry, and the ``DO_NOT_TRACK`` convention
that other libraries honour). The Makefile, the images and the Kubernetes config map set the same
variables for processes that lossflow does not start."""

from __future__ import annotations

from typing import Final

TELEMETRY_OFF: Final = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "ORT_DISABLE_TELEMETRY": "1",
}
