"""The MLflow model registry: registered models, versions, their aliases and tags, and the
artifacts a version needs (its ONNX file, its run's files).

:class:`ModelRegistry` only reads: it creates no experiment, no registered model and no
directory, so a serving replica works with read-only credentials, and an embedded store that
does not exist yet reads as an empty registry (it is not created). :class:`WritableModelRegistry`
adds what registration and promotion write: new versions, aliases, version tags.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from pathlib import Path
from typing import Final

from mlflow.artifacts import download_artifacts
from mlflow.entities.model_registry import ModelVersion, RegisteredModel
from mlflow.exceptions import MlflowException
from mlflow.models import Model
from mlflow.utils.validation import MAX_TAG_VAL_LENGTH

from lossflow.contract import CHALLENGER, CHAMPION
from lossflow.errors import UserError
from lossflow.tracking.runs import LoggedModel
from lossflow.tracking.store import ALREADY_EXISTS, NOT_FOUND, Store, truncate

REGISTRATION_TIMEOUT_S: Final[float] = 300.0

_VERSION_READY: Final[str] = "READY"
_VERSION_FAILED: Final[str] = "FAILED_REGISTRATION"


class RegistryError(UserError, LookupError):
    """A registered model, version or alias the caller asked for is not in the registry."""


class RegistrationError(RuntimeError):
    """A new model version did not become READY."""


class ModelRegistry(Store):
    """Read-only access to the model registry of one MLflow store.

    Open it with :func:`lossflow.tracking.open_registry`.
    """

    def _model(self, name: str) -> RegisteredModel | None:
        if self._absent():
            return None
        try:
            return self.client.get_registered_model(name)
        except MlflowException as exc:
            if exc.error_code == NOT_FOUND:
                return None
            raise

    def _version(self, name: str, version: str) -> ModelVersion:
        missing = RegistryError(
            f"registered model {name!r} has no version {version}; it may have been "
            "deleted: check `lossflow ui` or the MLflow server"
        )
        if self._absent():
            raise missing
        try:
            return self.client.get_model_version(name, version)
        except MlflowException as exc:
            if exc.error_code == NOT_FOUND:
                raise missing from None
            raise

    def aliases(self, name: str) -> dict[str, str]:
        """Every alias of registered model ``name`` and the version it points at."""
        model = self._model(name)
        return {} if model is None else {str(k): str(v) for k, v in model.aliases.items()}

    def alias_version(self, name: str, alias: str) -> str | None:
        """The version ``alias`` points at; None when the alias or the model does not exist."""
        return self.aliases(name).get(alias)

    def challenger_under_test(self, name: str) -> str | None:
        """The ``challenger`` version of ``name`` when it differs from the ``champion`` (an A/B
        test is deciding it); ``None`` otherwise."""
        aliases = self.aliases(name)
        challenger = aliases.get(CHALLENGER)
        if challenger is None or challenger == aliases.get(CHAMPION):
            return None
        return challenger

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        """The tags of a model version.

        Raises:
            RegistryError: the version does not exist.
        """
        found = self._version(name, version)
        return {str(k): str(v) for k, v in (found.tags or {}).items()}

    def run_of_version(self, name: str, version: str) -> str:
        """The id of the run that produced ``version`` of ``name``.

        Raises:
            RegistryError: If the version does not exist or has no source run.
        """
        run_id = self._version(name, version).run_id
        if not run_id:
            raise RegistryError(f"{name} version {version} was not registered from a run")
        return str(run_id)

    def download_onnx(self, name: str, alias_or_version: str, dst_dir: Path) -> Path:
        """Download a registered ONNX model and return the path of its ``.onnx`` file.

        Args:
            name: Registered model name.
            alias_or_version: An alias (``champion``) or a version number (``"3"``).
            dst_dir: Local directory to download into; created when missing.

        Raises:
            RegistryError: If the alias or the version does not exist.
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
        self._version(name, version)
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

    def download_run_artifact(self, run_id: str, artifact: str, dst_dir: Path) -> Path | None:
        """Download one artifact file of a version's run (:meth:`run_of_version`); ``None``
        when the run has no such artifact."""
        if self._absent():
            return None
        parent = Path(artifact).parent.as_posix()
        listed = self.client.list_artifacts(run_id, None if parent == "." else parent)
        if not any(item.path == artifact for item in listed):
            return None
        dst_dir = dst_dir.absolute()
        dst_dir.mkdir(parents=True, exist_ok=True)
        return Path(self.client.download_artifacts(run_id, artifact, str(dst_dir)))


class WritableModelRegistry(ModelRegistry):
    """The model registry with what registration and promotion write (the embedded store is
    created when missing).

    Open it with :func:`lossflow.tracking.open_registry` (``writable=True``).
    """

    def __init__(self, tracking_uri: str) -> None:
        super().__init__(tracking_uri)
        self._make_embedded_dir()

    def register(self, name: str, model: LoggedModel) -> str:
        """Register a new version of ``name`` (created when missing) from a model logged with
        :meth:`lossflow.tracking.runs.Runs.log_onnx_model`; await it READY and return it.

        Raises:
            RegistrationError: If the version fails or is not READY within 300 s.
        """
        try:
            self.client.create_registered_model(name)
        except MlflowException as exc:
            if exc.error_code != ALREADY_EXISTS:
                raise
        # The source is the artifact location, not ``models:/<id>``: MLflow resolves the latter
        # through the process-global tracking URI, which may point at another store.
        version = self.client.create_model_version(
            name,
            source=model.artifact_location,
            run_id=model.run_id,
            model_id=model.model_id,
            await_creation_for=0,
        )
        return self._await_ready(name, str(version.version))

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

    def set_version_tags(self, name: str, version: str, tags: Mapping[str, object]) -> None:
        """Set tags on a model version (values stringified and cut at MLflow's limit)."""
        for key, value in tags.items():
            self.client.set_model_version_tag(
                name, version, key, truncate(str(value), MAX_TAG_VAL_LENGTH)
            )
