"""Where reference profiles live: an artifact of the model version's run, cached on disk.

``ReferenceStore.get(version)`` looks in ``<data_dir>/reference-cache/<model>/<version>/``, then
downloads the run's ``reference/profile.json`` artifact, and for a version registered before
profiles existed builds it from the run's prepared data (``<data_dir>/runs/<run>/prepared``) and
the registered ONNX file, logs it to the run and tags the version, so it is built once.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from lossflow.data.prepare import PreparedData
from lossflow.monitoring.performance import Costs
from lossflow.monitoring.profile import ARTIFACT, TAG, ProfileError, ReferenceProfile, build_profile
from lossflow.tracking import Runs, WritableModelRegistry

CACHE_DIR = "reference-cache"


class ReferenceStore:
    """Reference profiles of one registered model.

    Args:
        registry: the model registry (a profile built on demand tags its version).
        runs: where a profile built on demand is logged (to the version's own run).
        model_name: the registered model.
        data_dir: the project data directory (cache, runs' prepared data).
        costs: the binary cost matrix, for the expected cost of a profile built on demand.
    """

    def __init__(
        self,
        registry: WritableModelRegistry,
        runs: Runs,
        model_name: str,
        data_dir: Path,
        costs: Costs | None = None,
    ) -> None:
        self.registry = registry
        self.runs = runs
        self.model_name = model_name
        self.data_dir = data_dir
        self.costs = costs

    def _cached(self, version: str) -> Path:
        return self.data_dir / CACHE_DIR / self.model_name / version / "profile.json"

    def get(self, version: str) -> ReferenceProfile:
        """The reference profile of ``version``.

        Raises:
            ProfileError: the version has no profile and none can be built (a local file, a run
                whose prepared data is gone).
            lossflow.tracking.RegistryError: the version does not exist.
        """
        cached = self._cached(version)
        if cached.is_file():
            return ReferenceProfile.load(cached)
        if version.startswith("file-"):
            raise ProfileError(
                f"model version {version} is a local ONNX file, not a registry version: it has "
                "no training run to profile; serve it from the registry to monitor it"
            )
        run_id = self.registry.run_of_version(self.model_name, version)  # RegistryError: gone
        with tempfile.TemporaryDirectory(prefix="lossflow-profile-") as tmp:
            downloaded = self.registry.download_run_artifact(run_id, ARTIFACT, Path(tmp))
            if downloaded is not None:
                profile = ReferenceProfile.load(downloaded)
            else:
                profile = self._build(version, run_id, Path(tmp))
                local = profile.save(Path(tmp) / "built" / "profile.json")
                self.runs.log_artifact(run_id, local, Path(ARTIFACT).parent.as_posix())
                self.registry.set_version_tags(self.model_name, version, {TAG: ARTIFACT})
        profile.save(cached)
        return profile

    def _build(self, version: str, run_id: str, tmp: Path) -> ReferenceProfile:
        prepared_dir = self.data_dir / "runs" / run_id / "prepared"
        prepared = PreparedData(prepared_dir, "", {}, None)
        onnx = self.registry.download_onnx(self.model_name, version, tmp / "model")
        try:
            return build_profile(
                prepared,
                onnx,
                model_name=self.model_name,
                model_version=version,
                run_id=run_id,
                costs=self.costs,
            )
        finally:
            shutil.rmtree(tmp / "model", ignore_errors=True)
