"""Resolve the served variants: registry aliases (or versions, or local files) to loaded models.

A :class:`Deployment` is an immutable snapshot (variants, router, shadow). The service reads the
current snapshot once per request and replaces it whole on reload or traffic change, so a request
is always answered by one consistent set of models.

Registry models are downloaded once per version into ``<data_dir>/serving-cache/<name>/<version>``
(versions are immutable) and loaded from there; a half-finished download is never used.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lossflow.config.serving import ModelSource, ServingConfig
from lossflow.contract import CHALLENGER, CHAMPION, SHADOW
from lossflow.errors import UserError
from lossflow.losses import TaskType
from lossflow.serving.predictor import OnnxPredictor
from lossflow.serving.router import Router, TrafficSplit
from lossflow.tracking import ModelRegistry, open_registry


class ModelLoadError(UserError, RuntimeError):
    """A configured model could not be resolved or loaded; the message says which and why."""


@dataclass(frozen=True)
class Variant:
    """One loaded model and where it came from."""

    name: str
    predictor: OnnxPredictor
    model_version: str
    source: str

    @property
    def loss_id(self) -> str:
        """The loss decision the model was trained with."""
        return self.predictor.loss_id

    def describe(self) -> dict[str, Any]:
        """What ``/info`` and the logs show about the variant."""
        return {
            "model_version": self.model_version,
            "loss_id": self.loss_id,
            "source": self.source,
        }


@dataclass(frozen=True)
class Deployment:
    """The variants answering traffic, their split and the optional shadow; never mutated."""

    variants: Mapping[str, Variant]
    router: Router
    shadow: Variant | None = None
    features: tuple[str, ...] = field(init=False)
    task: TaskType = field(init=False)

    def __post_init__(self) -> None:
        loaded = [*self.variants.values(), *([self.shadow] if self.shadow else [])]
        if not self.variants:
            raise ModelLoadError("a deployment needs at least one variant")
        first = loaded[0]
        for other in loaded[1:]:
            if other.predictor.feature_columns != first.predictor.feature_columns:
                raise ModelLoadError(
                    f"variant {other.name!r} ({other.source}) takes features "
                    f"{list(other.predictor.feature_columns)} but {first.name!r} ({first.source}) "
                    f"takes {list(first.predictor.feature_columns)}; every variant and the shadow "
                    "must take the same records"
                )
            if other.predictor.task != first.predictor.task:
                raise ModelLoadError(
                    f"variant {other.name!r} is a {other.predictor.task} model but "
                    f"{first.name!r} is {first.predictor.task}; serve models of one task together"
                )
        unknown = set(self.router.split.weights) - set(self.variants)
        if unknown:
            raise ModelLoadError(f"traffic weights name variants that are not loaded: {unknown}")
        unweighted = sorted(set(self.variants) - set(self.router.split.weights))
        if unweighted:
            raise ModelLoadError(f"variants {unweighted} have no traffic weight; give each one")
        object.__setattr__(self, "features", first.predictor.feature_columns)
        object.__setattr__(self, "task", first.predictor.task)

    @property
    def predictor(self) -> OnnxPredictor:
        """A variant's predictor, for what all variants share (task, features, classes)."""
        return next(iter(self.variants.values())).predictor

    @property
    def versions(self) -> dict[str, str]:
        """Model version of every variant and of the shadow."""
        loaded = {name: v.model_version for name, v in self.variants.items()}
        if self.shadow is not None:
            loaded[SHADOW] = self.shadow.model_version
        return loaded

    @property
    def weights(self) -> dict[str, float]:
        """Current traffic weight of every variant."""
        return dict(self.router.split.weights)

    def with_split(self, split: TrafficSplit) -> Deployment:
        """The same models under new weights (or a new experiment name)."""
        return Deployment(self.variants, Router(split), self.shadow)

    def describe(self) -> dict[str, Any]:
        """Variants with versions, loss ids, sources and shares; shadow; task; features."""
        shares = self.router.split.shares
        return {
            "experiment": self.router.split.experiment,
            "task": self.task,
            "features": list(self.features),
            "variants": {
                name: {**v.describe(), "weight": self.weights[name], "share": shares[name]}
                for name, v in self.variants.items()
            },
            "shadow": None if self.shadow is None else self.shadow.describe(),
        }


def file_version(path: Path) -> str:
    """Model version of a local file: ``file-`` and 12 hex digits of its SHA-256."""
    return "file-" + hashlib.sha256(path.read_bytes()).hexdigest()[:12]


class VariantLoader:
    """Builds :class:`Deployment` snapshots from a :class:`ServingConfig`.

    The MLflow client is created on the first registry lookup, so air-gapped services that serve
    local files never touch a tracking store.
    """

    def __init__(self, cfg: ServingConfig) -> None:
        self._cfg = cfg
        self._reader: ModelRegistry | None = None
        self._cache = (cfg.data_dir / "serving-cache").absolute()

    @property
    def model_name(self) -> str:
        """The registered model whose aliases and versions are served."""
        return self._cfg.tracking.registered_model

    def _registry(self) -> ModelRegistry:
        """The registry, read-only: a replica writes nothing to the tracking store (it works
        with read-only credentials, and never creates an experiment or an embedded store)."""
        if self._reader is None:
            self._reader = open_registry(self._cfg.tracking, self._cfg.data_dir)
        return self._reader

    def _registry_version(self, source: ModelSource) -> str:
        if source.version is not None:
            return source.version
        alias = str(source.alias)
        registry = self._registry()
        try:
            version = registry.alias_version(self.model_name, alias)
        except Exception as err:
            raise ModelLoadError(
                f"cannot resolve alias {alias!r} of {self.model_name!r}: {err}"
            ) from err
        if version is None:
            raise ModelLoadError(
                f"registered model {self.model_name!r} has no alias {alias!r}; run "
                "`lossflow train` to register one, or configure variants in configs/serving/"
            )
        return version

    def _download(self, version: str) -> Path:
        target = self._cache / self.model_name / version
        marker = target / ".complete"
        if not marker.is_file():
            self._cache.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".download-", dir=self._cache))
            try:
                root = staging / "model"
                path = self._registry().download_onnx(self.model_name, version, root)
                (root / ".onnx-file").write_text(path.relative_to(root).as_posix())
                (root / ".complete").write_text("")
                shutil.rmtree(target, ignore_errors=True)
                target.parent.mkdir(parents=True, exist_ok=True)
                root.rename(target)
            except ModelLoadError:
                raise
            except Exception as err:
                raise ModelLoadError(
                    f"cannot download {self.model_name!r} version {version}: {err}"
                ) from err
            finally:
                shutil.rmtree(staging, ignore_errors=True)
        return target / (target / ".onnx-file").read_text()

    def _version(self, source: ModelSource) -> str:
        if source.path is not None:
            if not source.path.is_file():
                raise ModelLoadError(f"no ONNX file at {source.path}")
            return file_version(source.path)
        return self._registry_version(source)

    def load(self, name: str, source: ModelSource) -> Variant:
        """Resolve and load one model.

        Raises:
            ModelLoadError: the alias/version/file does not exist or is not a lossflow model.
        """
        try:
            version = self._version(source)
        except ModelLoadError as err:
            raise ModelLoadError(f"variant {name!r}: {err}") from err
        path = source.path if source.path is not None else self._download(version)
        try:
            predictor = OnnxPredictor.from_path(path)
        except (ValueError, OSError) as err:
            raise ModelLoadError(f"variant {name!r} ({source.describe()}): {err}") from err
        return Variant(name, predictor, version, source.describe())

    def _default_sources(self) -> dict[str, ModelSource]:
        sources = {CHAMPION: ModelSource(alias=CHAMPION)}
        champion = self._registry_version(sources[CHAMPION])
        try:
            challenger = self._registry().alias_version(self.model_name, CHALLENGER)
        except Exception as err:
            raise ModelLoadError(
                f"cannot resolve alias {CHALLENGER!r} of {self.model_name!r}: {err}"
            ) from err
        if challenger is not None and challenger != champion:
            sources[CHALLENGER] = ModelSource(alias=CHALLENGER)
        return sources

    def deployment(self, weights: Mapping[str, float] | None = None) -> Deployment:
        """Resolve every configured variant (and the shadow) and load the models.

        Args:
            weights: Weights to keep (after a traffic change) when they name exactly the
                variants being loaded; otherwise the configured (or default) weights apply.

        Raises:
            ModelLoadError: any model cannot be resolved or loaded, or the variants disagree on
                features or task; nothing is half-loaded.
        """
        cfg = self._cfg
        sources = self._sources()
        if cfg.variants:
            configured = {n: v.weight for n, v in cfg.variants.items()}
        else:
            configured = {n: 100.0 / len(sources) for n in sources}
        if weights is not None and set(weights) == set(sources):
            configured = dict(weights)
        variants = {name: self.load(name, source) for name, source in sources.items()}
        shadow = None if cfg.shadow is None else self.load(SHADOW, cfg.shadow)
        return Deployment(variants, Router(TrafficSplit(cfg.experiment, configured)), shadow)

    def _sources(self) -> dict[str, ModelSource]:
        return dict(self._cfg.variants) if self._cfg.variants else self._default_sources()

    def versions(self) -> dict[str, str]:
        """What :meth:`deployment` would load now, without loading: name -> model version.

        Raises:
            ModelLoadError: an alias or file cannot be resolved.
        """
        sources = self._sources()
        if self._cfg.shadow is not None:
            sources[SHADOW] = self._cfg.shadow
        return {name: self._version(source) for name, source in sources.items()}
