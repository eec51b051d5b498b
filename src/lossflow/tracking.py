"""MLflow adapter: runs, params, metrics, artifacts, the ONNX model registry and its aliases.

This is the only module that imports ``mlflow``. Every call goes through an
:class:`mlflow.MlflowClient` bound to one tracking URI (and the same registry URI), never
through MLflow's fluent, process-global state, so several :class:`Tracker` objects pointing at
different stores can live in one process.

The embedded default store is ``sqlite:///<data_dir>/mlflow.db`` with artifacts under
``<data_dir>/mlartifacts/<experiment>``; in production the tracking URI points at an MLflow
server, which then chooses the artifact location.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import unquote, urlparse

import mlflow
import mlflow.onnx
import numpy as np
from mlflow.artifacts import download_artifacts
from mlflow.entities import (
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.protos.databricks_pb2 import (
    RESOURCE_ALREADY_EXISTS,
    RESOURCE_DOES_NOT_EXIST,
    ErrorCode,
)
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from lossflow.contract import CHALLENGER, CHAMPION
from lossflow.errors import UserError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

TRACKING_URI_ENV: Final[str] = "MLFLOW_TRACKING_URI"
DB_FILE: Final[str] = "mlflow.db"
ARTIFACTS_DIR: Final[str] = "mlartifacts"
ERROR_TAG: Final[str] = "lossflow.error"
PARENT_RUN_TAG: Final[str] = "mlflow.parentRunId"
TRUNCATION_MARKER: Final[str] = "...[truncated]"
MODEL_ARTIFACT_NAME: Final[str] = "model"
REGISTRATION_TIMEOUT_S: Final[float] = 300.0

_NOT_FOUND: Final[str] = ErrorCode.Name(RESOURCE_DOES_NOT_EXIST)
_ALREADY_EXISTS: Final[str] = ErrorCode.Name(RESOURCE_ALREADY_EXISTS)
_VERSION_READY: Final[str] = "READY"
_VERSION_FAILED: Final[str] = "FAILED_REGISTRATION"


@dataclass(frozen=True)
class RunSummary:
    """What a search returns of a run."""

    run_id: str
    start_ms: int
    tags: dict[str, str]
    metrics: dict[str, float]


class RegistryError(UserError, LookupError):
    """A registered model, version or alias the caller asked for is not in the registry."""


class RegistrationError(RuntimeError):
    """A new model version did not become READY."""


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


def flatten(d: Mapping[Any, Any], prefix: str = "") -> dict[str, object]:
    """Flatten nested mappings and sequences into dotted keys.

    Lists and tuples are indexed (``a.0``, ``a.1``); empty containers are kept as values so that
    they still show up.

    Example:
        >>> flatten({"loss": {"name": "focal", "terms": [{"w": 0.5}]}, "lr": 0.1})
        {'loss.name': 'focal', 'loss.terms.0.w': 0.5, 'lr': 0.1}
    """
    flat: dict[str, object] = {}
    for key, value in d.items():
        name = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping) and value:
            flat.update(flatten(value, name))
        elif isinstance(value, list | tuple) and value:
            flat.update(flatten(dict(enumerate(value)), name))
        else:
            flat[name] = value
    return flat


def _truncate(value: str, limit: int) -> str:
    if len(value) <= limit:
        return value
    return value[: limit - len(TRUNCATION_MARKER)] + TRUNCATION_MARKER


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _sqlite_data_dir(tracking_uri: str) -> Path | None:
    """The directory of a ``sqlite:///`` store's database file, None for other URIs."""
    prefix = "sqlite:///"
    if not tracking_uri.startswith(prefix):
        return None
    database = unquote(tracking_uri[len(prefix) :].partition("?")[0])
    if database in ("", ":memory:"):
        return None
    return Path(database).resolve().parent


def _is_server(tracking_uri: str) -> bool:
    return urlparse(tracking_uri).scheme in ("http", "https")


class Tracker:
    """One experiment in one MLflow tracking store and its model registry.

    Args:
        tracking_uri: MLflow tracking (and registry) URI.
        experiment: Experiment name; created when missing.
        artifact_root: Directory under which ``<experiment>/`` holds the artifacts of a new
            experiment. None: ``<db dir>/mlartifacts`` for a ``sqlite:///`` store, the server's
            choice for an ``http(s)`` server, the store's default otherwise. An existing
            experiment keeps the artifact location it was created with.

    Raises:
        ValueError: If the experiment exists but is deleted.
    """

    def __init__(self, tracking_uri: str, experiment: str, artifact_root: Path | None) -> None:
        self.tracking_uri = tracking_uri
        data_dir = _sqlite_data_dir(tracking_uri)
        if data_dir is not None:
            data_dir.mkdir(parents=True, exist_ok=True)
        if artifact_root is None and data_dir is not None:
            artifact_root = data_dir / ARTIFACTS_DIR
        self.client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
        location = None
        if artifact_root is not None and not _is_server(tracking_uri):
            location = (artifact_root.expanduser().resolve() / experiment).as_uri()
        self.experiment_id = self._get_or_create_experiment(experiment, location)
        self.experiment = experiment

    def _get_or_create_experiment(self, name: str, location: str | None) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is None:
            try:
                return self.client.create_experiment(name, artifact_location=location)
            except MlflowException as exc:
                if exc.error_code != _ALREADY_EXISTS:
                    raise
                existing = self.client.get_experiment_by_name(name)
                if existing is None:
                    raise
        if existing.lifecycle_stage != "active":
            raise ValueError(
                f"experiment {name!r} in {self.tracking_uri} is deleted; restore it with "
                f"`mlflow experiments restore --experiment-id {existing.experiment_id}` "
                "or use another experiment name"
            )
        return str(existing.experiment_id)

    def _create_run(self, run_name: str, tags: Mapping[str, str], parent_run_id: str | None) -> str:
        all_tags = dict(tags) if parent_run_id is None else {**tags, PARENT_RUN_TAG: parent_run_id}
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={key: _truncate(str(v), MAX_TAG_VAL_LENGTH) for key, v in all_tags.items()},
        )
        return str(run.info.run_id)

    @contextmanager
    def start_run(
        self, run_name: str, tags: Mapping[str, str], parent_run_id: str | None = None
    ) -> Iterator[str]:
        """Open a run and yield its id; end it FINISHED, or FAILED if the block raises.

        On an exception the ``lossflow.error`` tag holds ``"<type>: <message>"`` and the
        exception propagates; a ``KeyboardInterrupt`` (or other non-``Exception``) ends the run
        KILLED. With ``parent_run_id`` the run is nested under that run (MLflow's
        ``mlflow.parentRunId`` tag), as the UI shows it.
        """
        run_id = self._create_run(run_name, tags, parent_run_id)
        try:
            yield run_id
        except BaseException as exc:
            status = RunStatus.FAILED if isinstance(exc, Exception) else RunStatus.KILLED
            self.client.set_tag(
                run_id, ERROR_TAG, _truncate(f"{type(exc).__name__}: {exc}", MAX_TAG_VAL_LENGTH)
            )
            self.client.set_terminated(run_id, status=RunStatus.to_string(status))
            raise
        self.client.set_terminated(run_id, status=RunStatus.to_string(RunStatus.FINISHED))

    def log_child_run(
        self,
        parent_run_id: str,
        run_name: str,
        *,
        tags: Mapping[str, str],
        params: Mapping[str, object],
        metrics: Mapping[str, float],
        history: Mapping[str, Sequence[float]] | None = None,
        error: str | None = None,
    ) -> str:
        """Record a finished run nested under ``parent_run_id`` in one go; return its id.

        ``history`` is logged step by step (step = position in the series); its NaN and
        infinite values are left out, as during training (they stay in the run's own history
        file). With ``error`` the run ends FAILED and carries it as the ``lossflow.error`` tag.
        """
        run_id = self._create_run(run_name, tags, parent_run_id)
        self.log_params(run_id, params)
        self.log_metrics(run_id, metrics, None)
        if history:
            self.log_metric_history(run_id, history)
        if error is not None:
            self.client.set_tag(run_id, ERROR_TAG, _truncate(error, MAX_TAG_VAL_LENGTH))
        status = RunStatus.FAILED if error is not None else RunStatus.FINISHED
        self.client.set_terminated(run_id, status=RunStatus.to_string(status))
        return run_id

    def log_metric_history(self, run_id: str, history: Mapping[str, Sequence[float]]) -> None:
        """Log each series of ``history`` at steps 0, 1, ... (NaN/inf values left out)."""
        timestamp = int(time.time() * 1000)
        entries = [
            Metric(key, float(value), timestamp, step)
            for key, series in history.items()
            for step, value in enumerate(series)
            if math.isfinite(float(value))
        ]
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=list(chunk))

    def child_runs(self, parent_run_id: str) -> list[str]:
        """The ids of the runs nested under ``parent_run_id``, oldest first."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{PARENT_RUN_TAG}` = '{parent_run_id}'",
            order_by=["attributes.start_time ASC"],
            max_results=50_000,
        )
        return [str(run.info.run_id) for run in runs]

    flatten = staticmethod(flatten)

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        """Log params as strings, in batches of at most 100.

        Values longer than MLflow's limit are cut and end with ``...[truncated]``. Nested
        configs should be passed through :func:`flatten` first.
        """
        entries = [
            Param(str(key), _truncate(str(value), MAX_PARAM_VAL_LENGTH))
            for key, value in params.items()
        ]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, params=list(chunk))

    def log_metrics(
        self, run_id: str, metrics: Mapping[str, float], step: int | None = None
    ) -> None:
        """Log metric values at ``step`` (0 when None), in batches.

        Raises:
            ValueError: If a value is NaN or infinite (nothing is logged then).
            TypeError: If a value is not a number.
        """
        values: dict[str, float] = {}
        for key, value in metrics.items():
            try:
                values[key] = float(value)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"metric {key!r} must be a number; got {value!r}") from exc
        bad = {key: value for key, value in values.items() if not math.isfinite(value)}
        if bad:
            raise ValueError(
                f"metrics must be finite; got {bad} — a non-finite metric means the run "
                "diverged or a metric is undefined on this data, so fix it instead of logging it"
            )
        timestamp = int(time.time() * 1000)
        entries = [Metric(key, value, timestamp, step or 0) for key, value in values.items()]
        for chunk in _chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=list(chunk))

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        """Set run tags; values are stringified and cut at MLflow's limit."""
        entries = [
            RunTag(str(key), _truncate(str(value), MAX_TAG_VAL_LENGTH))
            for key, value in tags.items()
        ]
        for chunk in _chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
            self.client.log_batch(run_id, tags=list(chunk))

    def log_dict(self, run_id: str, data: Mapping[str, Any], artifact_file: str) -> None:
        """Store ``data`` as JSON or YAML (by the extension of ``artifact_file``)."""
        self.client.log_dict(run_id, dict(data), artifact_file)

    def log_text(self, run_id: str, text: str, artifact_file: str) -> None:
        """Store ``text`` as the run artifact ``artifact_file``."""
        self.client.log_text(run_id, text, artifact_file)

    def log_artifact(self, run_id: str, path: Path, artifact_path: str | None = None) -> None:
        """Upload a file or directory under the run's ``artifact_path`` directory.

        Raises:
            FileNotFoundError: If ``path`` does not exist.
        """
        if not path.exists():
            raise FileNotFoundError(f"cannot log artifact {path}: it does not exist")
        self.client.log_artifact(run_id, str(path), artifact_path)

    def log_figure(self, run_id: str, figure: Figure, artifact_file: str) -> None:
        """Save a matplotlib figure as PNG and store it as ``artifact_file`` (ending ``.png``).

        Raises:
            ValueError: If ``artifact_file`` does not end with ``.png``.
        """
        relative = Path(artifact_file)
        if relative.suffix.lower() != ".png":
            raise ValueError(f"artifact_file must end with .png; got {artifact_file!r}")
        directory = relative.parent.as_posix()
        with tempfile.TemporaryDirectory(prefix="lossflow-figure-") as tmp:
            local = Path(tmp) / relative.name
            figure.savefig(local, format="png")
            self.client.log_artifact(run_id, str(local), None if directory == "." else directory)

    def log_onnx_model(
        self,
        run_id: str,
        onnx_path: Path,
        input_example: Mapping[str, np.ndarray],
        output_example: np.ndarray,
        registered_model_name: str,
    ) -> str:
        """Log an ONNX file as an MLflow model of ``run_id`` and register a new version of it.

        The file is stored byte for byte (its ``metadata_props`` included) with a signature
        inferred from the examples; the version is created from the logged model's artifact
        location and awaited until READY.

        Args:
            run_id: The run that produced the model.
            onnx_path: The exported ``.onnx`` file.
            input_example: Graph input name -> a few example rows.
            output_example: The model's output on ``input_example``.
            registered_model_name: Registry name; created when missing.

        Returns:
            The new model version, e.g. ``"3"``.

        Raises:
            FileNotFoundError: If ``onnx_path`` does not exist.
            RegistrationError: If the version fails or is not READY within 300 s.
        """
        if not onnx_path.is_file():
            raise FileNotFoundError(f"ONNX model not found at {onnx_path}; export it first")
        examples = {name: np.asarray(array) for name, array in input_example.items()}
        signature = infer_signature(examples, np.asarray(output_example))
        run = self.client.get_run(run_id)
        logged = self.client.create_logged_model(
            experiment_id=run.info.experiment_id,
            name=MODEL_ARTIFACT_NAME,
            source_run_id=run_id,
            model_type="onnx",
        )
        try:
            with tempfile.TemporaryDirectory(prefix="lossflow-model-") as tmp:
                local = Path(tmp) / MODEL_ARTIFACT_NAME
                description = Model(
                    artifact_path=logged.artifact_location,
                    model_uuid=logged.model_id,
                    run_id=run_id,
                    model_id=logged.model_id,
                )
                mlflow.onnx.save_model(
                    onnx_path.read_bytes(),
                    str(local),
                    mlflow_model=description,
                    signature=signature,
                    input_example=examples,
                    pip_requirements=mlflow.onnx.get_default_pip_requirements(),
                    save_as_external_data=False,
                )
                self.client.log_model_artifacts(logged.model_id, str(local))
            self.client.log_outputs(run_id, [LoggedModelOutput(logged.model_id, step=0)])
        except BaseException:
            self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.FAILED)
            raise
        self.client.finalize_logged_model(logged.model_id, LoggedModelStatus.READY)
        self._ensure_registered_model(registered_model_name)
        # The source is the artifact location, not ``models:/<id>``: MLflow resolves the latter
        # through the process-global tracking URI, which may point at another store.
        version = self.client.create_model_version(
            registered_model_name,
            source=logged.artifact_location,
            run_id=run_id,
            model_id=logged.model_id,
            await_creation_for=0,
        )
        return self._await_ready(registered_model_name, str(version.version))

    def _ensure_registered_model(self, name: str) -> None:
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != _ALREADY_EXISTS:
                raise

    def _await_ready(self, name: str, version: str) -> str:
        deadline = time.monotonic() + REGISTRATION_TIMEOUT_S
        delay = 0.05
        while True:
            current = self.client.get_model_version(name, version)
            if current.status == _VERSION_READY:
                return version
            if current.status == _VERSION_FAILED:
                raise RegistrationError(
                    f"registering {name} version {version} failed: {current.status_message}"
                )
            if time.monotonic() > deadline:
                raise RegistrationError(
                    f"{name} version {version} is still {current.status} after "
                    f"{REGISTRATION_TIMEOUT_S:.0f} s; check the registry server"
                )
            time.sleep(delay)
            delay = min(delay * 2, 2.0)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        """Point ``alias`` (e.g. ``champion``) of registered model ``name`` at ``version``."""
        self.client.set_registered_model_alias(name, alias, version)

    def delete_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` of registered model ``name`` (nothing when it does not exist)."""
        if self.alias_version(name, alias) is not None:
            self.client.delete_registered_model_alias(name, alias)

    def aliases(self, name: str) -> dict[str, str]:
        """Every alias of registered model ``name`` and the version it points at."""
        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == _NOT_FOUND:
                return {}
            raise
        return {str(k): str(v) for k, v in model.aliases.items()}

    def challenger_under_test(self, name: str) -> str | None:
        """The ``challenger`` version of ``name`` when it differs from the ``champion`` (an A/B
        test is deciding it); ``None`` otherwise."""
        aliases = self.aliases(name)
        challenger = aliases.get(CHALLENGER)
        if challenger is None or challenger == aliases.get(CHAMPION):
            return None
        return challenger

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at; None when the alias or the model does not exist."""
        try:
            model = self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == _NOT_FOUND:
                return None
            raise
        version = model.aliases.get(alias)
        return None if version is None else str(version)

    def download_onnx(self, name: str, alias_or_version: str, dst_dir: Path) -> Path:
        """Download a registered ONNX model and return the path of its ``.onnx`` file.

        Args:
            name: Registered model name.
            alias_or_version: An alias (``champion``) or a version number (``"3"``).
            dst_dir: Local directory to download into; created when missing.

        Raises:
            RegistryError: If the alias does not exist.
            ValueError: If the version is not an MLflow ONNX model.
        """
        version = alias_or_version
        if not alias_or_version.isdigit():
            resolved = self.alias_version(name, alias_or_version)
            if resolved is None:
                raise RegistryError(
                    f"registered model {name!r} has no alias {alias_or_version!r}; "
                    "register a version and set the alias first"
                )
            version = resolved
        uri = self.client.get_model_version_download_uri(name, version)
        dst_dir = dst_dir.absolute()  # MLflow refuses a relative destination (data_dir=data)
        dst_dir.mkdir(parents=True, exist_ok=True)
        local = Path(
            download_artifacts(
                artifact_uri=uri, dst_path=str(dst_dir), tracking_uri=self.tracking_uri
            )
        )
        flavor = Model.load(str(local)).flavors.get("onnx")
        if flavor is None:
            raise ValueError(f"{name} version {version} at {uri} is not an ONNX model")
        return local / str(flavor["data"])

    def run_of_version(self, name: str, version: str) -> str:
        """The id of the run that produced ``version`` of ``name``.

        Raises:
            RegistryError: If the version has no source run.
        """
        run_id = self.client.get_model_version(name, version).run_id
        if not run_id:
            raise RegistryError(f"{name} version {version} was not registered from a run")
        return str(run_id)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags of a model version.

        Raises:
            RegistryError: the version does not exist.
        """
        try:
            found = self.client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code == _NOT_FOUND:
                raise RegistryError(
                    f"registered model {name!r} has no version {version}; it may have been "
                    "deleted: check `lossflow ui` or the MLflow server"
                ) from None
            raise
        return {str(k): str(v) for k, v in (found.tags or {}).items()}

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, object]) -> None:
        """Set tags on a model version (values stringified and cut at MLflow's limit)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(
                name, version, key, _truncate(str(value), MAX_TAG_VAL_LENGTH)
            )

    def download_run_artifact(self, run_id: str, artifact: str, dst_dir: Path) -> Path | None:
        """Download one artifact file of a run; ``None`` when the run has no such artifact."""
        parent = Path(artifact).parent.as_posix()
        listed = self.client.list_artifacts(run_id, None if parent == "." else parent)
        if not any(item.path == artifact for item in listed):
            return None
        dst_dir = dst_dir.absolute()
        dst_dir.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, artifact, str(dst_dir)))

    def runs_with_tags(self, tags: Mapping[str, str], max_results: int = 1000) -> list[RunSummary]:
        """Runs of this experiment whose tags equal ``tags``, newest first."""
        clauses = [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=" and ".join(clauses),
            order_by=["attributes.start_time DESC"],
            max_results=max_results,
        )
        return [
            RunSummary(
                run_id=str(r.info.run_id),
                start_ms=int(r.info.start_time),
                tags={str(k): str(v) for k, v in r.data.tags.items()},
                metrics={str(k): float(v) for k, v in r.data.metrics.items()},
            )
            for r in runs
        ]

    def get_run_metrics(self, run_id: str) -> dict[str, float]:
        """Latest value of each metric of the run."""
        return {key: float(v) for key, v in self.client.get_run(run_id).data.metrics.items()}

    def get_run_status(self, run_id: str) -> str:
        """``RUNNING``, ``FINISHED``, ``FAILED``, ``KILLED`` or ``SCHEDULED``."""
        return str(self.client.get_run(run_id).info.status)


def git_commit(cwd: Path | None = None) -> str | None:
    """``HEAD``'s commit hash with ``-dirty`` when tracked files have uncommitted changes.

    Returns:
        None outside a git work tree, in a repository without commits, or without git.
    """
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, check=False
        )
    except FileNotFoundError:
        return None
    if head.returncode != 0:
        return None
    status = subprocess.run(
        ["git", "status", "--porcelain", "--untracked-files=no"],
        cwd=cwd,
        capture_output=True,
        text=True,
        check=True,
    )
    commit = head.stdout.strip()
    return f"{commit}-dirty" if status.stdout.strip() else commit


def ui_command(tracking_uri: str, host: str = "127.0.0.1", port: int = 5000) -> list[str]:
    """The ``mlflow ui`` command line that browses ``tracking_uri``.

    Raises:
        ValueError: If ``tracking_uri`` is an MLflow server, which serves its own UI.
        FileNotFoundError: If no ``mlflow`` executable sits next to the Python interpreter.
    """
    if _is_server(tracking_uri):
        raise ValueError(
            f"{tracking_uri} is an MLflow server, which already serves the UI; open it in a browser"
        )
    executable = Path(sys.executable).parent / "mlflow"
    if not executable.is_file():
        raise FileNotFoundError(
            f"no mlflow executable at {executable}; install lossflow into this environment"
        )
    command = [str(executable), "ui", "--backend-store-uri", tracking_uri]
    data_dir = _sqlite_data_dir(tracking_uri)
    if data_dir is not None:
        command += ["--default-artifact-root", (data_dir / ARTIFACTS_DIR).as_uri()]
    return [*command, "--host", host, "--port", str(port)]
