"""MLflow adapter, the only package that imports ``mlflow``, in two concerns:

- **runs** (:mod:`lossflow.tracking.runs`): one experiment's runs, their params, metrics, tags,
  artifacts, figures and child runs, and an ONNX file logged as a run's model;
- **the model registry** (:mod:`lossflow.tracking.model_registry`): registered models, versions,
  aliases, version tags and the artifacts a version needs. :class:`ModelRegistry` only reads
  (what the service and every reader use: it works with read-only credentials);
  :class:`WritableModelRegistry` also registers versions and moves aliases and tags.

Each is opened one way, from the project's tracking settings: :func:`open_runs` and
:func:`open_registry`, which resolve the store's URI (:func:`resolve_tracking_uri`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal, get_args, overload

from lossflow.config.common import Process, TrackingConfig
from lossflow.tracking.model_registry import (
    ModelRegistry,
    RegistrationError,
    RegistryError,
    WritableModelRegistry,
)
from lossflow.tracking.runs import (
    ERROR_TAG,
    EXPERIMENT_KIND_TAG,
    PARENT_RUN_TAG,
    TRAINING_KIND,
    LoggedModel,
    Runs,
    RunSummary,
    flatten,
    git_commit,
    mark_experiments,
)
from lossflow.tracking.store import (
    TRACKING_URI_ENV,
    default_tracking_uri,
    experiment_page,
    resolve_tracking_uri,
    ui_command,
)

RunsOf = Literal["training"] | Process
"""Whose runs: training's (``tracking.experiment``) or another process's
(``tracking.experiments``, default ``<model>-<process>``)."""

__all__ = [
    "ERROR_TAG",
    "EXPERIMENT_KIND_TAG",
    "PARENT_RUN_TAG",
    "TRACKING_URI_ENV",
    "TRAINING_KIND",
    "LoggedModel",
    "ModelRegistry",
    "RegistrationError",
    "RegistryError",
    "RunSummary",
    "Runs",
    "RunsOf",
    "WritableModelRegistry",
    "default_tracking_uri",
    "experiment_page",
    "flatten",
    "git_commit",
    "open_registry",
    "open_runs",
    "project_experiments",
    "resolve_tracking_uri",
    "ui_command",
]


def open_runs(tracking: TrackingConfig, data_dir: Path, process: RunsOf) -> Runs:
    """The runs of ``process``'s experiment (created when missing, with the embedded store).

    Args:
        tracking: The project's tracking settings.
        data_dir: The project data directory (the embedded store's place).
        process: Whose experiment.

    Raises:
        ValueError: the experiment exists but is deleted.
    """
    uri = resolve_tracking_uri(tracking.tracking_uri, data_dir)
    experiment = tracking.experiment if process == "training" else tracking.experiment_of(process)
    return Runs(uri, experiment)


def project_experiments(tracking: TrackingConfig, data_dir: Path) -> dict[str, str]:
    """The project's experiments that exist (name -> id): training's, then each process's,
    each given lossflow's kind if it has none (:func:`lossflow.tracking.runs.mark_kind`).
    Nothing is created: not an experiment, nor an embedded store.

    Args:
        tracking: The project's tracking settings.
        data_dir: The project data directory (the embedded store's place).
    """
    uri = resolve_tracking_uri(tracking.tracking_uri, data_dir)
    names = [tracking.experiment, *(tracking.experiment_of(p) for p in get_args(Process))]
    return mark_experiments(uri, names)


@overload
def open_registry(
    tracking: TrackingConfig, data_dir: Path, *, writable: Literal[False] = False
) -> ModelRegistry: ...


@overload
def open_registry(
    tracking: TrackingConfig, data_dir: Path, *, writable: Literal[True]
) -> WritableModelRegistry: ...


def open_registry(
    tracking: TrackingConfig, data_dir: Path, *, writable: bool = False
) -> ModelRegistry | WritableModelRegistry:
    """The project's model registry: read-only (the default), or ``writable`` for registration
    and promotion.

    Args:
        tracking: The project's tracking settings.
        data_dir: The project data directory (the embedded store's place).
        writable: Whether versions, aliases and tags will be written.
    """
    uri = resolve_tracking_uri(tracking.tracking_uri, data_dir)
    return WritableModelRegistry(uri) if writable else ModelRegistry(uri)
