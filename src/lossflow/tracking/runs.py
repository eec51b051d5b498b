"""Runs of one MLflow experiment: params, metrics, tags, artifacts, figures, child runs, and an
ONNX file logged as a run's model (which :mod:`lossflow.tracking.model_registry` registers)."""

from __future__ import annotations

import math
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import mlflow.onnx
import numpy as np
from mlflow.entities import (
    Experiment,
    LoggedModelOutput,
    LoggedModelStatus,
    Metric,
    Param,
    RunStatus,
    RunTag,
)
from mlflow.exceptions import MlflowException
from mlflow.models import Model, infer_signature
from mlflow.utils.validation import (
    MAX_METRICS_PER_BATCH,
    MAX_PARAM_VAL_LENGTH,
    MAX_PARAMS_TAGS_PER_BATCH,
    MAX_TAG_VAL_LENGTH,
)

from lossflow.tracking.store import (
    ALREADY_EXISTS,
    ARTIFACTS_DIR,
    Store,
    chunks,
    is_server,
    sqlite_database,
    truncate,
)

if TYPE_CHECKING:
    from matplotlib.figure import Figure

ERROR_TAG: Final[str] = "lossflow.error"
PARENT_RUN_TAG: Final[str] = "mlflow.parentRunId"
MODEL_ARTIFACT_NAME: Final[str] = "model"
EXPERIMENT_KIND_TAG: Final[str] = "mlflow.experimentKind"
"""The experiment tag in which MLflow records what an experiment is for."""
TRAINING_KIND: Final[str] = "custom_model_development"
"""The kind of every lossflow experiment: models trained, their runs and metrics (the UI's
"Machine learning"), not a GenAI application's traces (``genai_development``)."""


@dataclass(frozen=True)
class RunSummary:
    """What a search returns of a run."""

    run_id: str
    start_ms: int
    tags: dict[str, str]
    metrics: dict[str, float]


@dataclass(frozen=True)
class LoggedModel:
    """An ONNX model logged to a run, ready to be registered as a version."""

    model_id: str
    artifact_location: str
    run_id: str


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


def mark_kind(client: mlflow.MlflowClient, experiment: Experiment) -> None:
    """Record :data:`TRAINING_KIND` on ``experiment`` unless it has a kind (a kind chosen by
    hand stays); ``experiment`` as read from the store, with its tags."""
    if EXPERIMENT_KIND_TAG not in experiment.tags:
        client.set_experiment_tag(experiment.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)


def mark_experiments(tracking_uri: str, names: Sequence[str]) -> dict[str, str]:
    """The active experiments among ``names`` (name -> id, in the order given), each marked
    with :func:`mark_kind`; none is created, nor is an embedded store that does not exist."""
    database = sqlite_database(tracking_uri)
    if database is not None and not database.is_file():
        return {}
    client = Store(tracking_uri).client
    found: dict[str, str] = {}
    for name in dict.fromkeys(names):
        experiment = client.get_experiment_by_name(name)
        if experiment is not None and experiment.lifecycle_stage == "active":
            mark_kind(client, experiment)
            found[name] = str(experiment.experiment_id)
    return found


class Runs(Store):
    """The runs of one experiment in one MLflow store (which is created when missing).

    Open it with :func:`lossflow.tracking.open_runs`.

    Args:
        tracking_uri: MLflow tracking URI.
        experiment: Experiment name; created when missing, its artifacts under
            ``<db dir>/mlartifacts/<experiment>`` for a ``sqlite:///`` store, where the server
            chooses for an ``http(s)`` server, the store's default otherwise. An existing
            experiment keeps the artifact location it was created with. Either way it is of
            lossflow's kind (:func:`mark_kind`).

    Raises:
        ValueError: If the experiment exists but is deleted.
    """

    def __init__(self, tracking_uri: str, experiment: str) -> None:
        super().__init__(tracking_uri)
        self._make_embedded_dir()
        location = None
        if self._database is not None and not is_server(tracking_uri):
            location = (self._database.parent / ARTIFACTS_DIR / experiment).as_uri()
        self.experiment_id = self._get_or_create_experiment(experiment, location)
        self.experiment = experiment

    def _get_or_create_experiment(self, name: str, location: str | None) -> str:
        existing = self.client.get_experiment_by_name(name)
        if existing is None:
            try:
                return self.client.create_experiment(
                    name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: TRAINING_KIND}
                )
            except MlflowException as exc:
                if exc.error_code != ALREADY_EXISTS:
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
        mark_kind(self.client, existing)
        return str(existing.experiment_id)

    def _create_run(self, run_name: str, tags: Mapping[str, str], parent_run_id: str | None) -> str:
        all_tags = dict(tags) if parent_run_id is None else {**tags, PARENT_RUN_TAG: parent_run_id}
        run = self.client.create_run(
            self.experiment_id,
            run_name=run_name,
            tags={key: truncate(str(v), MAX_TAG_VAL_LENGTH) for key, v in all_tags.items()},
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
                run_id, ERROR_TAG, truncate(f"{type(exc).__name__}: {exc}", MAX_TAG_VAL_LENGTH)
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
            self.client.set_tag(run_id, ERROR_TAG, truncate(error, MAX_TAG_VAL_LENGTH))
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
        for chunk in chunks(entries, MAX_METRICS_PER_BATCH):
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

    def log_params(self, run_id: str, params: Mapping[str, object]) -> None:
        """Log params as strings, in batches of at most 100.

        Values longer than MLflow's limit are cut and end with ``...[truncated]``. Nested
        configs should be passed through :func:`flatten` first.
        """
        entries = [
            Param(str(key), truncate(str(value), MAX_PARAM_VAL_LENGTH))
            for key, value in params.items()
        ]
        for chunk in chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
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
        for chunk in chunks(entries, MAX_METRICS_PER_BATCH):
            self.client.log_batch(run_id, metrics=list(chunk))

    def set_tags(self, run_id: str, tags: Mapping[str, object]) -> None:
        """Set run tags; values are stringified and cut at MLflow's limit."""
        entries = [
            RunTag(str(key), truncate(str(value), MAX_TAG_VAL_LENGTH))
            for key, value in tags.items()
        ]
        for chunk in chunks(entries, MAX_PARAMS_TAGS_PER_BATCH):
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
    ) -> LoggedModel:
        """Log an ONNX file as the MLflow model of ``run_id`` (register it with
        :meth:`lossflow.tracking.model_registry.WritableModelRegistry.register`).

        The file is stored byte for byte (its ``metadata_props`` included) with a signature
        inferred from the examples.

        Args:
            run_id: The run that produced the model.
            onnx_path: The exported ``.onnx`` file.
            input_example: Graph input name -> a few example rows.
            output_example: The model's output on ``input_example``.

        Raises:
            FileNotFoundError: If ``onnx_path`` does not exist.
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
        return LoggedModel(str(logged.model_id), str(logged.artifact_location), run_id)

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
