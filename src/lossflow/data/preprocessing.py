"""The one preprocessing object shared by training and serving.

``Preprocessor`` is fitted on the training split only. It turns raw rows (a DataFrame, or the
list of dicts a web service receives) into ``EncodedFeatures``: raw numeric values with NaN kept,
and integer codes of the categorical values (0 = unknown or missing, known values from 1).
Imputation and scaling of numerics run inside the network through
``lossflow.models.nets.Standardize`` (built from ``fill``, ``mean`` and ``std``), so they are part
of the exported ONNX graph; the preprocessor itself travels in the model's metadata via
``to_dict``/``from_dict``. This module does not import torch: the service uses it as it is.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Literal, cast, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd

from lossflow.data.validation import DataValidationError, binary_classes
from lossflow.losses import TASK_TYPES, TaskType

if TYPE_CHECKING:
    from lossflow.config.data import ColumnSchema

Impute = Literal["median", "mean", "zero"]
Label = int | str
FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
Records = Sequence[Mapping[str, Any]]

UNKNOWN_CODE: Final = 0
FORMAT_NAME: Final = "lossflow.preprocessor"
FORMAT_VERSION: Final = 2
# Version 1 files (models exported before target statistics) are read too.
_READS: Final = (1, FORMAT_VERSION)
_IMPUTES: Final = get_args(Impute)
_V1_KEYS: Final = frozenset(
    {
        "format",
        "version",
        "task",
        "impute",
        "numeric",
        "categorical",
        "target",
        "group",
        "fill",
        "mean",
        "std",
        "vocabularies",
        "label_names",
    }
)
_DICT_KEYS: Final = _V1_KEYS | {"target_stats"}


@dataclass(frozen=True)
class EncodedFeatures:
    """Model inputs of ``N`` rows.

    Attributes:
        numeric: ``(N, n_numeric)`` float32, raw values with NaN where missing.
        categorical: ``(N, n_categorical)`` int64 codes; 0 is unknown/missing.
    """

    numeric: FloatArray
    categorical: IntArray

    def __post_init__(self) -> None:
        if self.numeric.ndim != 2 or self.categorical.ndim != 2:
            raise ValueError(
                "EncodedFeatures needs 2-D arrays; got numeric shape "
                f"{self.numeric.shape} and categorical shape {self.categorical.shape}"
            )
        if self.numeric.shape[0] != self.categorical.shape[0]:
            raise ValueError(
                f"EncodedFeatures row counts differ: numeric has {self.numeric.shape[0]}, "
                f"categorical has {self.categorical.shape[0]}"
            )

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def take(self, rows: npt.NDArray[np.intp] | Sequence[int]) -> EncodedFeatures:
        """The rows at positions ``rows``, in that order."""
        index = np.asarray(rows, dtype=np.intp)
        return EncodedFeatures(numeric=self.numeric[index], categorical=self.categorical[index])

    def concat(self, other: EncodedFeatures) -> EncodedFeatures:
        """Rows of ``self`` followed by rows of ``other``."""
        return EncodedFeatures(
            numeric=np.concatenate([self.numeric, other.numeric]),
            categorical=np.concatenate([self.categorical, other.categorical]),
        )


def _numeric_column(series: pd.Series, name: str) -> npt.NDArray[np.float64]:
    try:
        values = pd.to_numeric(series, errors="raise")
    except (ValueError, TypeError) as err:
        raise DataValidationError(
            f"numeric column {name!r} has a value that is not a number ({err}); send numbers "
            "or null for missing"
        ) from err
    return np.asarray(values, dtype=np.float64)


def _fill_value(values: npt.NDArray[np.float64], impute: Impute) -> float:
    if impute == "zero":
        return 0.0
    if impute == "mean":
        return float(np.mean(values))
    return float(np.median(values))


def _normalise_labels(target: pd.Series) -> list[Label]:
    if pd.api.types.is_numeric_dtype(target.dtype):
        values = target.to_numpy(dtype=np.float64)
        if np.any(values != np.round(values)):
            raise DataValidationError(
                f"multiclass target column {target.name!r} has non-integer values; class labels "
                "must be integers or strings"
            )
        return [int(v) for v in np.unique(values.astype(np.int64))]
    return sorted({str(v) for v in target.dropna()})


def _label_text(value: Any) -> str:
    """A label as text, numbers without a spurious ``.0`` (``1.0`` and ``1`` are the same class)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        return str(int(value))
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    return str(value)


def _numeric_names(names: Sequence[Label]) -> bool:
    return all(isinstance(n, int | float) and not isinstance(n, bool) for n in names)


def _binary_names(target: pd.Series, positive_class: Any) -> list[Label] | None:
    """``[negative, positive]`` of a binary target, or ``None`` for a 0/1 (False/True) one."""
    negative, positive = binary_classes(target, positive_class)
    plain = {_label_text(negative), _label_text(positive)}
    if (plain <= {"0", "1"} or plain <= {"False", "True"}) and _label_text(positive) in (
        "1",
        "True",
    ):
        return None
    return [
        v if isinstance(v, int | str) and not isinstance(v, bool) else _label_text(v)
        for v in (negative, positive)
    ]


class Preprocessor:
    """Fitted encoding of features and target; build it with ``Preprocessor.fit``.

    Attributes:
        numeric_columns: Numeric feature columns, in model-input order.
        categorical_columns: Categorical feature columns, in model-input order.
        target: Target column.
        group: Ranking group column, if any.
        task: Learning task, which decides the target encoding.
        impute: How numeric fill values were computed.
        fill: Per numeric column, the value replacing NaN.
        mean: Per numeric column, the training mean after imputation.
        std: Per numeric column, the training std after imputation (1.0 where it was 0).
        vocabularies: Per categorical column, sorted known values; value ``i`` has code ``i+1``.
        label_names: Multiclass labels in code order; binary ``(negative, positive)`` when the
            target is not 0/1 (``yes``/``no``, ``good``/``bad``); ``None`` otherwise.
        target_stats: Regression: the training target's ``mean`` and ``std`` (1 where it is
            0), which the output layer applies so the target trains in its own unit.
            ``None`` otherwise.
    """

    def __init__(
        self,
        *,
        numeric_columns: Sequence[str],
        categorical_columns: Sequence[str],
        target: str,
        task: TaskType,
        impute: Impute,
        fill: Sequence[float],
        mean: Sequence[float],
        std: Sequence[float],
        vocabularies: Mapping[str, Sequence[str]],
        label_names: Sequence[Label] | None = None,
        group: str | None = None,
        target_stats: Mapping[str, float] | None = None,
    ) -> None:
        n = len(numeric_columns)
        if not len(fill) == len(mean) == len(std) == n:
            raise ValueError(
                f"Preprocessor: fill, mean and std need one value per numeric column ({n}); got "
                f"{len(fill)}, {len(mean)} and {len(std)}"
            )
        if set(vocabularies) != set(categorical_columns):
            raise ValueError(
                "Preprocessor: vocabularies must have exactly one entry per categorical column; "
                f"columns {sorted(categorical_columns)}, vocabularies {sorted(vocabularies)}"
            )
        if task not in TASK_TYPES:
            raise ValueError(f"Preprocessor: task must be one of {TASK_TYPES}; got {task!r}")
        if impute not in _IMPUTES:
            raise ValueError(f"Preprocessor: impute must be one of {_IMPUTES}; got {impute!r}")
        if any(not (s > 0 and math.isfinite(s)) for s in std):
            raise ValueError("Preprocessor: std must be positive and finite in every column")
        if task == "multiclass" and label_names is None:
            raise ValueError("Preprocessor: a multiclass task needs label_names")
        if task not in ("multiclass", "binary") and label_names is not None:
            raise ValueError("Preprocessor: label_names are for binary and multiclass tasks only")
        if task == "binary" and label_names is not None and len(label_names) != 2:
            raise ValueError("Preprocessor: binary label_names are (negative, positive)")
        if target_stats is not None and (
            set(target_stats) != {"mean", "std"}
            or not all(math.isfinite(v) for v in target_stats.values())
            or not target_stats["std"] > 0
        ):
            raise ValueError(
                "Preprocessor: target_stats holds a finite mean and std (> 0); got "
                f"{dict(target_stats)}"
            )
        self.numeric_columns: tuple[str, ...] = tuple(numeric_columns)
        self.categorical_columns: tuple[str, ...] = tuple(categorical_columns)
        self.target = target
        self.group = group
        self.task: TaskType = task
        self.impute: Impute = impute
        self.fill: tuple[float, ...] = tuple(float(v) for v in fill)
        self.mean: tuple[float, ...] = tuple(float(v) for v in mean)
        self.std: tuple[float, ...] = tuple(float(v) for v in std)
        self.vocabularies: dict[str, tuple[str, ...]] = {
            name: tuple(vocabularies[name]) for name in self.categorical_columns
        }
        self.label_names: tuple[Label, ...] | None = (
            None if label_names is None else tuple(label_names)
        )
        self.target_stats: dict[str, float] | None = (
            None if target_stats is None else {k: float(v) for k, v in target_stats.items()}
        )

    @classmethod
    def fit(
        cls,
        df: pd.DataFrame,
        columns: ColumnSchema,
        impute: Impute = "median",
        *,
        task: TaskType,
        positive_class: Label | bool | float | None = None,
    ) -> Preprocessor:
        """Fit fill values, scaling, vocabularies and the target encoding on ``df``.

        Pass the TRAINING split only: anything fitted here travels with the model.

        Args:
            df: Training rows (validated).
            columns: Column roles.
            impute: Numeric fill value: training ``median``, ``mean`` or ``zero``.
            task: Learning task; decides the target encoding.
            positive_class: Binary: the positive class (``None``: the obvious one of the two
                values, see :func:`lossflow.data.validation.binary_classes`).

        Raises:
            DataValidationError: ``df`` is empty or a column is missing or malformed.
        """
        if len(df) == 0:
            raise DataValidationError("cannot fit the preprocessor on an empty training split")
        missing = [c for c in (*columns.features, columns.target) if c not in df.columns]
        if missing:
            raise DataValidationError(
                f"cannot fit the preprocessor: missing column(s) {', '.join(map(repr, missing))}"
            )
        fill: list[float] = []
        mean: list[float] = []
        std: list[float] = []
        for name in columns.numeric:
            values = _numeric_column(df[name], name)
            present = values[~np.isnan(values)]
            if present.size == 0:
                raise DataValidationError(
                    f"numeric column {name!r} is missing in every training row, so the model "
                    "cannot learn what it means (and would meet it for the first time when "
                    "served); move the split so training sees it, or drop it from data.columns"
                )
            value = _fill_value(present, impute)
            imputed = np.where(np.isnan(values), value, values)
            fill.append(value)
            mean.append(float(np.mean(imputed)))
            constant = float(np.max(imputed)) == float(np.min(imputed))
            std.append(1.0 if constant else float(np.std(imputed)))
        vocabularies = {
            name: sorted({str(v) for v in df[name].dropna()}) for name in columns.categorical
        }
        label_names: list[Label] | None = None
        target_stats: dict[str, float] | None = None
        if task == "multiclass":
            label_names = _normalise_labels(df[columns.target])
        elif task == "binary":
            label_names = _binary_names(df[columns.target], positive_class)
        elif task == "regression":
            values = _numeric_column(df[columns.target], columns.target)
            spread = float(np.std(values))
            target_stats = {
                "mean": float(np.mean(values)),
                "std": spread if spread > 0 else 1.0,
            }
        return cls(
            numeric_columns=columns.numeric,
            categorical_columns=columns.categorical,
            target=columns.target,
            task=task,
            impute=impute,
            fill=fill,
            mean=mean,
            std=std,
            vocabularies=vocabularies,
            label_names=label_names,
            group=columns.group,
            target_stats=target_stats,
        )

    @property
    def feature_columns(self) -> tuple[str, ...]:
        """Numeric then categorical feature columns: the fields a request must send."""
        return (*self.numeric_columns, *self.categorical_columns)

    @property
    def n_numeric(self) -> int:
        """Number of numeric feature columns."""
        return len(self.numeric_columns)

    @property
    def cardinalities(self) -> list[int]:
        """Per categorical column (in order), embedding rows: vocabulary size + 1 for unknown."""
        return [len(self.vocabularies[name]) + 1 for name in self.categorical_columns]

    @property
    def n_classes(self) -> int | None:
        """Number of classes for multiclass, else ``None``."""
        return len(self.label_names or ()) if self.task == "multiclass" else None

    def _frame(self, data: pd.DataFrame | Records) -> pd.DataFrame:
        wanted = list(self.feature_columns)
        if isinstance(data, pd.DataFrame):
            missing = [name for name in wanted if name not in data.columns]
            if missing:
                raise DataValidationError(
                    f"missing feature column(s) {', '.join(map(repr, missing))}; the model needs "
                    f"{', '.join(wanted)}"
                )
            return data
        for row, record in enumerate(data):
            absent = [name for name in wanted if name not in record]
            if absent:
                raise DataValidationError(
                    f"record {row} is missing feature(s) {', '.join(map(repr, absent))}; send "
                    "every feature (null for a missing value)"
                )
        return pd.DataFrame.from_records(list(data), columns=wanted)

    def encode(self, data: pd.DataFrame | Records) -> EncodedFeatures:
        """Encode feature rows; other columns (target, time, ...) are ignored.

        Args:
            data: A DataFrame, or raw records (one mapping of column to value per row).

        Raises:
            DataValidationError: A feature column is missing, a numeric value is not a number
                or is infinite.
        """
        frame = self._frame(data)
        n = len(frame)
        numeric = np.empty((n, self.n_numeric), dtype=np.float32)
        for j, name in enumerate(self.numeric_columns):
            values = _numeric_column(frame[name], name)
            if np.isinf(values).any():
                raise DataValidationError(
                    f"numeric column {name!r} has an infinite value; send a finite number or null"
                )
            numeric[:, j] = values
        categorical = np.empty((n, len(self.categorical_columns)), dtype=np.int64)
        for j, name in enumerate(self.categorical_columns):
            strings = frame[name].astype("string")
            codes = pd.Categorical(strings, categories=list(self.vocabularies[name])).codes
            categorical[:, j] = codes.astype(np.int64) + 1
        return EncodedFeatures(numeric=numeric, categorical=categorical)

    @functools.cached_property
    def _codes(self) -> tuple[dict[str, int], ...]:
        return tuple(
            {value: code + 1 for code, value in enumerate(self.vocabularies[name])}
            for name in self.categorical_columns
        )

    def encode_records(self, records: Records) -> EncodedFeatures:
        """Encode raw records without pandas: the request path of a service.

        Gives exactly what :meth:`encode` gives, for records that a caller has already checked:
        every feature present, numerics as numbers or ``None`` (missing, imputed in the
        network), categoricals as strings or ``None`` (unknown code 0, like unseen values).
        """
        rows = len(records)
        numeric = np.array(
            [
                [math.nan if (v := record[name]) is None else v for name in self.numeric_columns]
                for record in records
            ],
            dtype=np.float64,
        ).reshape(rows, self.n_numeric)
        categorical = np.array(
            [
                [
                    codes.get(record[name], UNKNOWN_CODE)
                    for name, codes in zip(self.categorical_columns, self._codes, strict=True)
                ]
                for record in records
            ],
            dtype=np.int64,
        ).reshape(rows, len(self.categorical_columns))
        return EncodedFeatures(numeric=numeric.astype(np.float32), categorical=categorical)

    def encode_target(self, df: pd.DataFrame) -> npt.NDArray[np.float32] | IntArray:
        """Encode the target: float32 0/1 (binary), int64 class codes (multiclass), float32.

        Raises:
            DataValidationError: The target column is missing or has values the encoding does
                not know (a class unseen in training, a binary value outside {0, 1}).
        """
        if self.target not in df.columns:
            raise DataValidationError(f"missing target column {self.target!r}")
        target = df[self.target]
        if target.isna().any():
            raise DataValidationError(f"target column {self.target!r} has missing values")
        if self.task == "multiclass":
            return self._encode_labels(target)
        if self.task == "binary" and self.label_names is not None:
            return self._encode_binary(target)
        values = _numeric_column(target, self.target)
        if self.task == "binary":
            bad = (values != 0) & (values != 1)
            if bad.any():
                raise DataValidationError(
                    f"binary target column {self.target!r} has values other than 0/1: "
                    f"{sorted(set(values[bad].tolist()))[:5]}"
                )
        return values.astype(np.float32)

    def _encode_binary(self, target: pd.Series) -> npt.NDArray[np.float32]:
        negative, positive = (str(n) for n in cast(tuple[Label, Label], self.label_names))
        text = target.map(_label_text)
        known = text.isin([negative, positive]).to_numpy()
        if not known.all():
            unseen = sorted({str(v) for v in target[~known].unique()[:5]})
            raise DataValidationError(
                f"binary target column {self.target!r} has value(s) {unseen} besides its classes "
                f"{negative!r} (negative) and {positive!r} (positive)"
            )
        positives: npt.NDArray[np.float32] = (text == positive).to_numpy().astype(np.float32)
        return positives

    def positive_of(self, value: Any) -> int | None:
        """A binary label as 0/1: 0/1 and False/True, or the class names (``None``: neither)."""
        zero_one = isinstance(value, bool | np.bool_) or (
            isinstance(value, int | float | np.integer | np.floating) and value in (0, 1)
        )
        if zero_one and (self.label_names is None or not _numeric_names(self.label_names)):
            return int(value)
        if self.label_names is not None:
            names = [str(n) for n in self.label_names]
            text = _label_text(value)
            if text in names:
                return names.index(text)
        return None

    def _encode_labels(self, target: pd.Series) -> IntArray:
        names = cast(tuple[Label, ...], self.label_names)
        if names and isinstance(names[0], int):
            values = target.to_numpy(dtype=np.float64)
            if np.any(values != np.round(values)):
                raise DataValidationError(
                    f"multiclass target column {self.target!r} has non-integer values"
                )
            codes = np.asarray(pd.Index(names).get_indexer(values.astype(np.int64)), dtype=np.int64)
            labels = values.astype(np.int64)
        else:
            labels = target.astype(str).to_numpy()
            codes = np.asarray(pd.Index(names).get_indexer(labels), dtype=np.int64)
        unknown = codes < 0
        if unknown.any():
            raise DataValidationError(
                f"target column {self.target!r} has class(es) "
                f"{sorted({str(v) for v in labels[unknown]})} unseen in training (known: "
                f"{list(names)}); use a stratified split or drop those rows upstream"
            )
        return codes

    def encode_groups(self, df: pd.DataFrame) -> IntArray:
        """Contiguous int64 ids of the ranking group column, in order of first appearance.

        Raises:
            DataValidationError: The preprocessor has no group column, or ``df`` lacks it.
        """
        if self.group is None:
            raise DataValidationError("the preprocessor has no group column (ranking only)")
        if self.group not in df.columns:
            raise DataValidationError(f"missing group column {self.group!r}")
        codes = np.asarray(pd.factorize(df[self.group], use_na_sentinel=True)[0], dtype=np.int64)
        if (codes < 0).any():
            raise DataValidationError(f"group column {self.group!r} has missing values")
        return codes

    def model_inputs(self, encoded: EncodedFeatures) -> dict[str, npt.NDArray[np.generic]]:
        """The network's named inputs for encoded rows: ``numeric`` (float32) and, when the
        model has categorical columns, ``categorical`` (int64). The ONNX graph takes the same."""
        inputs: dict[str, npt.NDArray[np.generic]] = {
            "numeric": encoded.numeric.astype(np.float32, copy=False)
        }
        if self.categorical_columns:
            inputs["categorical"] = encoded.categorical.astype(np.int64, copy=False)
        return inputs

    def to_dict(self) -> dict[str, Any]:
        """JSON-able description; ``Preprocessor.from_dict(p.to_dict())`` is an exact copy."""
        return {
            "format": FORMAT_NAME,
            "version": FORMAT_VERSION,
            "task": self.task,
            "impute": self.impute,
            "numeric": list(self.numeric_columns),
            "categorical": list(self.categorical_columns),
            "target": self.target,
            "group": self.group,
            "fill": list(self.fill),
            "mean": list(self.mean),
            "std": list(self.std),
            "vocabularies": {name: list(v) for name, v in self.vocabularies.items()},
            "label_names": None if self.label_names is None else list(self.label_names),
            "target_stats": self.target_stats,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Rebuild a preprocessor from ``to_dict`` output (e.g. read from ONNX metadata).

        Raises:
            ValueError: ``data`` is not a preprocessor description of a supported version.
        """
        keys = set(data)
        if data.get("format") != FORMAT_NAME or data.get("version") not in _READS:
            raise ValueError(
                f"unsupported preprocessor format {data.get('format')!r} version "
                f"{data.get('version')!r}; this lossflow reads {FORMAT_NAME!r} versions "
                f"{', '.join(map(str, _READS))}"
            )
        expected = _V1_KEYS if data["version"] == 1 else _DICT_KEYS
        if keys != expected:
            raise ValueError(
                "not a lossflow preprocessor description: missing keys "
                f"{sorted(expected - keys)}, unknown keys {sorted(keys - expected)}"
            )
        labels = data["label_names"]
        return cls(
            numeric_columns=list(data["numeric"]),
            categorical_columns=list(data["categorical"]),
            target=str(data["target"]),
            task=data["task"],
            impute=data["impute"],
            fill=[float(v) for v in data["fill"]],
            mean=[float(v) for v in data["mean"]],
            std=[float(v) for v in data["std"]],
            vocabularies={str(k): [str(x) for x in v] for k, v in data["vocabularies"].items()},
            label_names=None if labels is None else list(labels),
            group=data["group"],
            target_stats=data.get("target_stats"),
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Preprocessor):
            return NotImplemented
        return self.to_dict() == other.to_dict()

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        return (
            f"Preprocessor(task={self.task!r}, numeric={len(self.numeric_columns)}, "
            f"categorical={list(self.categorical_columns)}, impute={self.impute!r})"
        )
