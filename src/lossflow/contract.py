"""The contracts between training, the registry and serving.

- :class:`ModelMetadata`: what an exported ONNX file carries in its ``metadata_props`` so that a
  service needs nothing else to score raw records. The training flow writes it with
  :meth:`ModelMetadata.to_props`, the service (and monitoring, and retraining) read it with
  :meth:`ModelMetadata.from_props`. The layout is versioned (``lossflow.format``); keys this
  version does not know are ignored, so a newer writer's additions do not break an older reader.
- The registry aliases every process agrees on: :data:`CHAMPION` serves by default,
  :data:`CHALLENGER` is the candidate under test, :data:`PREVIOUS` keeps the champion a
  promotion replaced (for rollback).

Example:
    >>> meta = ModelMetadata(
    ...     loss_id="bce-0123456789ab", loss_spec={"name": "bce"}, task="regression",
    ...     output="identity", preprocessor={"task": "regression"}, threshold=None,
    ...     label_names=None, dataset_fingerprint="f" * 16, lossflow_version="0.1.0")
    >>> ModelMetadata.from_props(meta.to_props(), "model.onnx") == meta
    True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Final, get_args

from lossflow.errors import UserError
from lossflow.losses import TaskType

CHAMPION: Final = "champion"
CHALLENGER: Final = "challenger"
PREVIOUS: Final = "previous"
ALIASES: Final[tuple[str, ...]] = (CHAMPION, CHALLENGER, PREVIOUS)
SHADOW: Final = "shadow"
"""The variant name under which the service logs its shadow model's answers."""

FORMAT_KEY: Final = "lossflow.format"
FORMAT_VERSION: Final = 1
PREFIX: Final = "lossflow."
# Keys written as JSON (the others are plain strings).
_JSON_FIELDS: Final = frozenset(
    {"loss_spec", "preprocessor", "threshold", "label_names", "baseline"}
)
# Keys a file must have to be served; the others have defaults (older files lack them).
_REQUIRED: Final = ("loss_id", "task", "preprocessor", "threshold", "label_names")


class MetadataError(UserError, ValueError):
    """An ONNX file's ``lossflow.*`` metadata is missing a key or holds an invalid value."""


@dataclass(frozen=True)
class ModelMetadata:
    """What an exported lossflow model says about itself.

    Attributes:
        loss_id: The loss decision the model was trained with (``lossflow.losses.loss_id``).
        loss_spec: That loss spec with every default filled in (and the training split's class
            counts where the loss uses them), as JSON data.
        task: The learning task.
        output: The output transform inside the graph (``sigmoid``, ``softmax``, ``identity``,
            ``exp``, ``first``).
        preprocessor: The fitted preprocessing (``Preprocessor.to_dict()``).
        threshold: Binary decision threshold chosen on validation; ``None`` for other tasks.
        label_names: Multiclass class names in output order; binary ``[negative, positive]``
            when the target is not 0/1; ``None`` otherwise.
        dataset_fingerprint: Content hash of the data the model was trained on.
        lossflow_version: The lossflow release that exported the model.
        baseline: The trivial predictor of its training labels it must beat
            (:class:`lossflow.evaluation.baseline.Baseline` as JSON; ``None``: exported before
            lossflow recorded it, or a ranking model, whose baseline is popularity).
    """

    loss_id: str
    loss_spec: dict[str, Any]
    task: TaskType
    output: str
    preprocessor: dict[str, Any]
    threshold: float | None
    label_names: list[str] | None
    dataset_fingerprint: str
    lossflow_version: str
    baseline: dict[str, Any] | None = None

    def to_props(self) -> dict[str, str]:
        """The ``metadata_props`` of the ONNX file: ``lossflow.<field>`` -> string."""
        props = {FORMAT_KEY: str(FORMAT_VERSION)}
        for f in fields(self):
            value = getattr(self, f.name)
            props[PREFIX + f.name] = json.dumps(value) if f.name in _JSON_FIELDS else str(value)
        return props

    @classmethod
    def from_props(cls, props: Mapping[str, str], source: Path | str) -> ModelMetadata:
        """Read the metadata of the model at ``source`` (named in every error).

        Raises:
            MetadataError: a required key is missing, a value is malformed, or the file was
                written in a newer format than this lossflow reads.
        """
        version = props.get(FORMAT_KEY, "1")
        if not version.isdigit() or int(version) > FORMAT_VERSION:
            raise MetadataError(
                f"{source}: metadata format {version!r} is newer than this lossflow reads "
                f"(up to {FORMAT_VERSION}); upgrade lossflow to serve it"
            )
        for name in _REQUIRED:
            if PREFIX + name not in props:
                raise MetadataError(
                    f"{source} is not a lossflow model: its metadata has no {PREFIX + name!r}; "
                    "serve a model exported by the lossflow training flow"
                )
        values: dict[str, Any] = {}
        for f in fields(cls):
            raw = props.get(PREFIX + f.name)
            if raw is None:
                values[f.name] = {"loss_spec": {}, "baseline": None}.get(f.name, "")
            elif f.name in _JSON_FIELDS:
                try:
                    values[f.name] = json.loads(raw)
                except json.JSONDecodeError as err:
                    raise MetadataError(
                        f"{source}: metadata {PREFIX + f.name!r} is not valid JSON ({err}); "
                        "re-export the model with lossflow"
                    ) from err
            else:
                values[f.name] = raw
        return cls(**values)._checked(source)

    def _checked(self, source: Path | str) -> ModelMetadata:
        if self.task not in get_args(TaskType):
            raise MetadataError(f"{source}: unknown task {self.task!r} in 'lossflow.task'")
        if not isinstance(self.preprocessor, dict):
            raise MetadataError(f"{source}: 'lossflow.preprocessor' must be a JSON object")
        if self.preprocessor.get("task", self.task) != self.task:
            raise MetadataError(
                f"{source}: metadata task {self.task!r} differs from the preprocessor's "
                f"{self.preprocessor.get('task')!r}; the file is inconsistent, re-export it"
            )
        threshold = self.threshold
        if threshold is not None and (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not math.isfinite(threshold)
        ):
            raise MetadataError(f"{source}: 'lossflow.threshold' must be a finite number or null")
        if self.task == "binary" and threshold is None:
            raise MetadataError(
                f"{source}: a binary model needs a finite 'lossflow.threshold'; got null. "
                "Re-export it from a run that evaluated a threshold"
            )
        names = self.label_names
        if names is not None and (
            not isinstance(names, list) or not all(isinstance(n, str) for n in names)
        ):
            raise MetadataError(f"{source}: 'lossflow.label_names' must be a list of strings")
        return self if threshold is None else replace(self, threshold=float(threshold))
