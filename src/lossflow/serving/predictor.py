"""Score raw records with an exported lossflow ONNX model.

``OnnxPredictor`` reads everything it needs from the model file's ``lossflow.*`` metadata
(:class:`lossflow.contract.ModelMetadata`): the task, the decision threshold, the class names and
the fitted ``Preprocessor``. Requests are
validated record by record (``RecordError`` names the record and field) and encoded straight
into numpy arrays from the preprocessor's vocabularies; the encoding is the one of
``Preprocessor.encode`` (numeric values as float32 with NaN for null, categorical codes with 0
for unknown or null), without building a DataFrame per request.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, cast

import numpy as np

from lossflow.contract import ModelMetadata
from lossflow.data.preprocessing import EncodedFeatures, Preprocessor
from lossflow.losses import TaskType
from lossflow.onnx_runner import OnnxRunner

SERVED_TASKS: Final[tuple[TaskType, ...]] = ("binary", "multiclass", "regression", "ranking")
_SHOWN_CHARS: Final = 60
_FLOAT32_MAX: Final = float(np.finfo(np.float32).max)


class RecordError(ValueError):
    """One request record is not a valid input for the model.

    Attributes:
        record: Position of the offending record in the request (0-based); ``None`` when the
            problem is the list of records itself (empty, not a list).
        field: The offending field; empty when the problem is the record (or request) itself.
        problem: What is wrong and what to send instead.
    """

    def __init__(self, record: int | None, field: str, problem: str) -> None:
        self.record = record
        self.field = field
        self.problem = problem
        if record is None:
            where = "records"
        else:
            where = f"record {record}, field {field!r}" if field else f"record {record}"
        super().__init__(f"{where}: {problem}")


@dataclass(frozen=True)
class Prediction:
    """The model's answer for one record; fields that do not apply to the task are ``None``.

    Attributes:
        probability: Binary: probability of the positive class.
        probabilities: Multiclass: class probabilities in ``label_names`` order.
        label: Binary: 1 iff ``probability >= threshold`` else 0; multiclass: the most probable
            class name.
        value: Regression (and ranking): the predicted value or score.
        class_name: Binary with named classes (``yes``/``no``): the class ``label`` stands for.
    """

    probability: float | None = None
    probabilities: list[float] | None = None
    label: str | int | None = None
    value: float | None = None
    class_name: str | None = None


def logged_output(
    prediction: Prediction, label_names: tuple[str | int, ...] | None
) -> dict[str, Any]:
    """One record's answer as ``/predict`` returns it and the log stores it (fields that apply)."""
    if prediction.probabilities is not None:
        names = label_names or ()
        return {
            "probabilities": {
                str(n): p for n, p in zip(names, prediction.probabilities, strict=True)
            },
            "label": prediction.label,
        }
    if prediction.probability is not None:
        out: dict[str, Any] = {"probability": prediction.probability, "label": prediction.label}
        if prediction.class_name is not None:
            out["class"] = prediction.class_name
        return out
    return {"value": prediction.value}


def shown(value: Any) -> str:
    """``repr(value)``, cut to 60 characters for an error message."""
    text = repr(value)
    return text if len(text) <= _SHOWN_CHARS else text[: _SHOWN_CHARS - 3] + "..."


def _is_number(value: Any) -> bool:
    if isinstance(value, bool | np.bool_):
        return False
    return isinstance(value, int | float | np.integer | np.floating)


class OnnxPredictor:
    """An exported lossflow model with its preprocessing, ready to score raw records.

    Build it with ``OnnxPredictor.from_path``.

    Args:
        runner: The onnxruntime session of the model.
        metadata: What the model file says about itself (checked by ``from_props``).

    Raises:
        ValueError: The task is not served, or the preprocessing description is invalid.
    """

    def __init__(self, runner: OnnxRunner, metadata: ModelMetadata) -> None:
        task = metadata.task
        if task not in SERVED_TASKS:
            raise ValueError(
                f"{runner.path}: task {task!r} cannot be served; served tasks are {SERVED_TASKS}"
            )
        try:
            preprocessor = Preprocessor.from_dict(metadata.preprocessor)
        except (ValueError, TypeError, KeyError) as err:
            raise ValueError(
                f"{runner.path}: invalid 'lossflow.preprocessor' metadata: {err}"
            ) from err
        self._runner = runner
        self._metadata = metadata
        self._pre = preprocessor
        self._threshold = metadata.threshold if task == "binary" else None
        self._features = preprocessor.feature_columns
        self._feature_set = frozenset(self._features)
        self._numeric = frozenset(preprocessor.numeric_columns)
        self._numeric_order = preprocessor.numeric_columns
        self._categorical_order = preprocessor.categorical_columns

    @classmethod
    def from_path(cls, path: Path, intra_op_threads: int = 1) -> OnnxPredictor:
        """Load the ONNX model at ``path`` and the preprocessing carried in its metadata.

        Args:
            path: An ``.onnx`` file exported by lossflow.
            intra_op_threads: onnxruntime threads per operator (1 suits one-record requests).

        Raises:
            FileNotFoundError: ``path`` does not exist.
            ValueError: The file lacks a ``lossflow.*`` metadata key or holds an invalid one
                (``lossflow.contract.MetadataError``).
        """
        runner = OnnxRunner(path, intra_op_threads=intra_op_threads)
        return cls(runner, ModelMetadata.from_props(runner.metadata, path))

    @property
    def metadata(self) -> ModelMetadata:
        """What the model file says about itself (loss, task, preprocessing, lineage)."""
        return self._metadata

    @property
    def loss_id(self) -> str:
        """The loss decision the model was trained with."""
        return self._metadata.loss_id

    @property
    def task(self) -> TaskType:
        """The learning task."""
        return self._pre.task

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """The fields every record must send (numeric, then categorical)."""
        return self._features

    @property
    def numeric_features(self) -> frozenset[str]:
        """The fields that take numbers (the others take strings)."""
        return self._numeric

    @property
    def threshold(self) -> float | None:
        """Binary decision threshold: predict positive iff probability >= threshold."""
        return self._threshold

    @property
    def label_names(self) -> tuple[str | int, ...] | None:
        """Multiclass class names in output order; binary ``(negative, positive)`` when the
        classes have names; else ``None``."""
        return self._pre.label_names

    def binary_label(self, value: Any) -> int | None:
        """A binary label as 0/1: 0/1, False/True or a class name (``None``: none of them)."""
        return self._pre.positive_of(value)

    @property
    def preprocessor(self) -> Preprocessor:
        """The preprocessing fitted with the model."""
        return self._pre

    @property
    def path(self) -> Path:
        """The ONNX file."""
        return self._runner.path

    def validate(self, records: Sequence[Mapping[str, Any]]) -> None:
        """Check that ``records`` is a non-empty list of valid feature records.

        Null is a missing value (numeric: imputed in the model; categorical: unknown bucket);
        an unseen category is accepted and goes to the unknown bucket.

        Raises:
            RecordError: The first problem found: an empty or non-list request, a record that is
                not a mapping, a missing or extra field, a numeric value that is not a finite
                int/float within float32 range (bools, NaN and numeric strings are rejected), a
                categorical value that is not a string.
        """
        if isinstance(records, str | bytes | Mapping) or not isinstance(records, Sequence):
            raise RecordError(
                None, "", f"records must be a list of objects; got {type(records).__name__}"
            )
        if len(records) == 0:
            raise RecordError(None, "", "no records were sent; send a list of at least one record")
        for index, record in enumerate(records):
            self._validate_record(index, record)

    def _validate_record(self, index: int, record: Any) -> None:
        # Fast path: a dict with exactly the features, plain finite in-range numbers (NaN and inf
        # fail the range comparison) and strings; anything else takes the path that explains.
        if type(record) is dict and record.keys() == self._feature_set:
            for name in self._numeric_order:
                value = record[name]
                kind = type(value)
                if not (
                    value is None
                    or ((kind is float or kind is int) and -_FLOAT32_MAX <= value <= _FLOAT32_MAX)
                ):
                    self._check_number(index, name, value)
            for name in self._categorical_order:
                value = record[name]
                if not (value is None or type(value) is str):
                    self._check_category(index, name, value)
            return
        if not isinstance(record, Mapping):
            raise RecordError(
                index, "", f"not an object of feature values (got {type(record).__name__})"
            )
        for name in self._features:
            if name not in record:
                raise RecordError(index, name, "missing; send every feature (null if unknown)")
        if len(record) != len(self._features):
            extra = sorted(str(key) for key in record if key not in self._feature_set)
            raise RecordError(
                index, extra[0], f"unknown field; the model takes {', '.join(self._features)}"
            )
        for name in self._features:
            value = record[name]
            if value is None:
                continue
            if name in self._numeric:
                self._check_number(index, name, value)
            else:
                self._check_category(index, name, value)

    @staticmethod
    def _check_category(index: int, name: str, value: Any) -> None:
        if not isinstance(value, str):
            raise RecordError(
                index, name, f"categorical value must be a string or null (got {shown(value)})"
            )

    @staticmethod
    def _check_number(index: int, name: str, value: Any) -> None:
        if not _is_number(value):
            raise RecordError(index, name, f"not a number (got {shown(value)})")
        try:
            number = float(value)
        except OverflowError as err:
            raise RecordError(index, name, "number too large for float64") from err
        if math.isnan(number):
            raise RecordError(index, name, "NaN is not allowed; send null for a missing value")
        if math.isinf(number):
            raise RecordError(index, name, "infinite; send a finite number or null")
        if abs(number) > _FLOAT32_MAX:
            raise RecordError(
                index, name, f"{number:g} is outside the model's float32 range (|x| <= 3.4e38)"
            )

    def encode(self, records: Sequence[Mapping[str, Any]]) -> EncodedFeatures:
        """Validate ``records`` and encode them as ``Preprocessor.encode`` does.

        Raises:
            RecordError: See ``validate``.
        """
        self.validate(records)
        return self._pre.encode_records(records)

    def predict(self, records: Sequence[Mapping[str, Any]]) -> list[Prediction]:
        """Validate, encode and score ``records``; one ``Prediction`` per record, in order.

        Raises:
            RecordError: See ``validate``.
            RuntimeError: The model's output does not have the shape its task implies.
        """
        encoded = self.encode(records)
        output = self._runner.run(self._pre.model_inputs(encoded))
        return self._predictions(output, len(records))

    def _predictions(self, output: np.ndarray, rows: int) -> list[Prediction]:
        task = self._pre.task
        if task == "multiclass":
            names = self._pre.label_names or ()
            if output.shape != (rows, len(names)):
                raise RuntimeError(
                    f"{self.path}: multiclass output has shape {output.shape}, expected "
                    f"({rows}, {len(names)}); the file does not match its metadata"
                )
            best = output.argmax(axis=1).tolist()
            return [
                Prediction(probabilities=row, label=names[k])
                for row, k in zip(output.astype(np.float64).tolist(), best, strict=True)
            ]
        if output.shape != (rows,):
            raise RuntimeError(
                f"{self.path}: {task} output has shape {output.shape}, expected ({rows},); "
                "the file does not match its metadata"
            )
        values = output.astype(np.float64).tolist()
        if task == "binary":
            threshold = cast(float, self._threshold)
            classes = [str(n) for n in self._pre.label_names or ()]
            return [
                Prediction(
                    probability=p,
                    label=int(p >= threshold),
                    class_name=classes[int(p >= threshold)] if classes else None,
                )
                for p in values
            ]
        return [Prediction(value=v) for v in values]
