"""Where the MLflow store is and the client bound to it, shared by runs and the model registry.

Every call goes through an :class:`mlflow.MlflowClient` bound to one tracking URI (and the same
registry URI), never through MLflow's fluent, process-global state, so several stores can be
open in one process. The embedded default store is ``sqlite:///<data_dir>/mlflow.db`` with
artifacts under ``<data_dir>/mlartifacts/<experiment>``; in production the tracking URI points at
an MLflow server, which then chooses the artifact location.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Final
from urllib.parse import unquote, urlparse

import mlflow
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)

TRACKING_URI_ENV: Final[str] = "MLFLOW_TRACKING_URI"
DB_FILE: Final[str] = "mlflow.db"
ARTIFACTS_DIR: Final[str] = "mlartifacts"
TRUNCATION_MARKER: Final[str] = "...[truncated]"
TRAINING_VIEW: Final[str] = "workflowType=machine_learning"
"""The query that opens an experiment in the MLflow UI's model-training view."""

NOT_FOUND: Final[str] = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
ALREADY_EXISTS: Final[str] = ErrorCode.Name(RESOURCE_ALREADY_EXISTS)


def default_tracking_uri(data_dir: Path) -> str:
    """The embedded store: ``sqlite:///<absolute data_dir>/mlflow.db``.

    Example:
        >>> default_tracking_uri(Path("/srv/lossflow"))
        'sqlite:////srv/lossflow/mlflow.db'
    """
    return f"sqlite:///{(data_dir.expanduser().resolve() / DB_FILE).as_posix()}"


def resolve_tracking_uri(configured: str | None, data_dir: Path) -> str:
    """Pick the tracking URI: ``$MLFLOW_TRACKING_URI``, else ``configured``, else the default.

    Args:
        configured: The URI from config, or None/empty when not configured.
        data_dir: Project data directory holding the embedded store.
    """
    from_env = os.environ.get(TRACKING_URI_ENV, "").strip()
    if from_env:
        return from_env
    if configured and configured.strip():
        return configured.strip()
    return default_tracking_uri(data_dir)


def sqlite_database(tracking_uri: str) -> Path | None:
    """The database file of a ``sqlite:///`` store, None for other URIs (and in-memory ones)."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = unquote(tracking_uri[len(prefix) :].partition("?")[0])
    if database in ("", ":memory:"):
        return None
    return Path(database).resolve()


def is_server(tracking_uri: str) -> bool:
    """Whether the URI is an MLflow server (which chooses the artifact location itself)."""
    return urlparse(tracking_uri).scheme in ("http", "https")


def truncate(value: str, limit: int) -> str:
    """``value`` cut to ``limit`` characters, ending with ``...[truncated]`` when cut."""
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    """``items`` in consecutive slices of at most ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


class Store:
    """One MLflow store: its URI and a client bound to it, made on first use.

    The client is lazy because making one opens the store, and opening an embedded store that
    does not exist yet creates it (its directory, its database, MLflow's tables): only a writer
    may do that.
    """

    def __init__(self, tracking_uri: str) -> None:
        self.tracking_uri = tracking_uri
        self._database = sqlite_database(tracking_uri)
        self._client: mlflow.MlflowClient | None = None

    @property
    def client(self) -> mlflow.MlflowClient:
        """The MLflow client of the store (tracking and registry at the same URI)."""
        if self._client is None:
            self._client = mlflow.MlflowClient(
                tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri
            )
        return self._client

    def _absent(self) -> bool:
        """An embedded store whose database file does not exist (yet)."""
        return self._database is not None and not self._database.is_file()

    def _make_embedded_dir(self) -> None:
        """Create the embedded store's directory (a writer's first step)."""
        if self._database is not None:
            self._database.parent.mkdir(parents=True, exist_ok=True)


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line that browses ``tracking_uri``.

    Raises:
        ValueError: If ``tracking_uri`` is an MLflow server, which serves its own UI.
        FileNotFoundError: If no ``mlflow`` executable sits next to the Python interpreter.
    """
    if is_server(tracking_uri):
        raise ValueError(
            f"{tracking_uri} is an MLflow server, which already serves the UI; open it in a browser"
        )
    executable = Path(sys.executable).parent / "mlflow"
    if not executable.is_file():
        raise FileNotFoundError(
            f"no mlflow executable at {executable}; install lossflow into this environment"
        )
    command = [str(executable), "ui", "--backend-store-uri", tracking_uri]
    database = sqlite_database(tracking_uri)
    if database is not None:
        command += ["--default-artifact-root", (database.parent / ARTIFACTS_DIR).as_uri()]
    return [*command, "--host", host, "--port", str(port)]


def experiment_page(ui_url: str, experiment_id: str) -> str:
    """The address of an experiment in the MLflow UI at ``ui_url``, opening on its runs.

    MLflow 3's UI (3.17) shows an experiment either as a GenAI application (an overview of
    traces and token usage, evaluation runs) or as model training (runs, charts, models). It
    picks by its workflow type: the ``workflowType`` query parameter, else the choice last made
    in that browser (GenAI at first); it does not read the experiment's ``mlflow.experimentKind``
    for that. The parameter opens the page on the runs whatever the browser chose before.

    Example:
        >>> experiment_page("http://127.0.0.1:5000", "3")
        'http://127.0.0.1:5000/#/experiments/3?workflowType=machine_learning'
    """
    return f"{ui_url.rstrip('/')}/#/experiments/{experiment_id}?{TRAINING_VIEW}"
