"""Checks that a frame matches its column schema and task before anything is fitted on it.

``validate_frame`` raises one ``DataValidationError`` naming the column and the problem. It never
drops or repairs rows: bad data is for the data owner to fix, and the message says how.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

if TYPE_CHECKING:
    from lossflow.data.schema import ColumnSchema, SplitConfig
    from lossflow.losses import TaskType

MIN_ROWS_PER_PART = 2
_SHOWN = 5


class DataValidationError(ValueError):
    """The data does not match its schema or task; the message names the column and the fix."""


def _plain(value: object) -> object:
    """A numpy scalar as the Python value it holds, so messages read ``2``, not ``np.int64(2)``."""
    item = getattr(value, "item", None)
    return item() if callable(item) else value


def _rows(index: pd.Index) -> str:
    shown = ", ".join(map(str, index[:_SHOWN]))
    more = f" and {len(index) - _SHOWN} more" if len(index) > _SHOWN else ""
    return f"{len(index)} row(s) (index {shown}{more})"


def is_string_column(series: pd.Series) -> bool:
    """Whether ``series`` holds strings (object/string dtype, or categorical with string levels).

    Missing values are allowed; an all-missing column counts as string-like.
    """
    if isinstance(series.dtype, pd.CategoricalDtype):
        return pd.api.types.infer_dtype(series.cat.categories, skipna=True) in ("string", "empty")
    if pd.api.types.is_string_dtype(series.dtype):
        return pd.api.types.infer_dtype(series, skipna=True) in ("string", "empty")
    return False


def _check_column_set(df: pd.DataFrame, columns: ColumnSchema) -> None:
    expected = columns.all_columns()
    missing = [name for name in expected if name not in df.columns]
    if missing:
        raise DataValidationError(
            f"missing column(s) {', '.join(map(repr, missing))}; the frame has "
            f"{', '.join(map(repr, map(str, df.columns)))}. Fix the column names in data.columns "
            "or in the file"
        )
    wanted = set(expected)
    extra = [str(name) for name in df.columns if name not in wanted]
    if extra:
        raise DataValidationError(
            f"extra column(s) {', '.join(map(repr, extra))} not in the schema; the frame must hold "
            "exactly the schema's columns. Drop them from the file or give each a role in "
            "data.columns"
        )
    if df.columns.duplicated().any():
        dupes = sorted({str(name) for name in df.columns[df.columns.duplicated()]})
        raise DataValidationError(f"column(s) {', '.join(map(repr, dupes))} appear twice")


def _check_features(df: pd.DataFrame, columns: ColumnSchema) -> None:
    for name in columns.numeric:
        series = df[name]
        if not pd.api.types.is_numeric_dtype(series.dtype):
            raise DataValidationError(
                f"numeric column {name!r} has dtype {series.dtype}, not a number type; convert "
                "it to numbers or list it under categorical"
            )
        values = series.to_numpy(dtype=np.float64, na_value=np.nan)
        infinite = np.isinf(values)
        if infinite.any():
            raise DataValidationError(
                f"numeric column {name!r} has +/-inf in {_rows(series.index[infinite])}; replace "
                "them with a finite value or leave them missing (NaN is imputed)"
            )
    for name in columns.categorical:
        series = df[name]
        if not is_string_column(series):
            kind = pd.api.types.infer_dtype(series, skipna=True)
            raise DataValidationError(
                f"categorical column {name!r} holds {kind} values (dtype {series.dtype}), not "
                "strings; cast it to strings or list it under numeric"
            )


def _check_special_columns(df: pd.DataFrame, columns: ColumnSchema, task: TaskType) -> None:
    if task == "ranking" and columns.group is None:
        raise DataValidationError(
            "ranking needs a group column (the query id) but the schema has none; set "
            "data.columns.group"
        )
    if columns.group is not None:
        missing = df[columns.group].isna().to_numpy()
        if missing.any():
            raise DataValidationError(
                f"group column {columns.group!r} is missing in {_rows(df.index[missing])}; every "
                "row needs a group id"
            )
    if columns.time is not None:
        series = df[columns.time]
        if not pd.api.types.is_datetime64_any_dtype(series.dtype):
            raise DataValidationError(
                f"time column {columns.time!r} has dtype {series.dtype}, not a timestamp; "
                "convert it with pandas.to_datetime"
            )
        missing = series.isna().to_numpy()
        if missing.any():
            raise DataValidationError(
                f"time column {columns.time!r} is missing in {_rows(df.index[missing])}; every "
                "row needs a timestamp to be placed in a split"
            )


def _check_target(
    df: pd.DataFrame, columns: ColumnSchema, task: TaskType, split: SplitConfig | None
) -> None:
    name = columns.target
    target = df[name]
    missing = target.isna().to_numpy()
    if missing.any():
        raise DataValidationError(
            f"target column {name!r} is missing in {_rows(df.index[missing])}; every row needs a "
            "label: fix or remove those rows in the source data"
        )
    if task == "multilabel":
        raise DataValidationError(
            f"target column {name!r}: multilabel tasks need one column per label, which the "
            "single-target data schema cannot express; use binary (one label) or multiclass"
        )
    numeric = pd.api.types.is_numeric_dtype(target.dtype)
    if task in ("regression", "binary", "ranking") and not numeric:
        raise DataValidationError(
            f"target column {name!r} has dtype {target.dtype}; a {task} target must be numeric"
        )
    if numeric:
        values = target.to_numpy(dtype=np.float64)
        infinite = np.isinf(values)
        if infinite.any():
            raise DataValidationError(
                f"target column {name!r} has +/-inf in {_rows(df.index[infinite])}; every label "
                "must be finite"
            )
    if task == "binary":
        bad = ~target.isin([0, 1]).to_numpy()
        if bad.any():
            found = sorted({str(v) for v in target[bad].unique()[:_SHOWN]})
            raise DataValidationError(
                f"binary target column {name!r} must hold 0/1 or False/True; found "
                f"{', '.join(found)} in {_rows(df.index[bad])}"
            )
    if task == "multiclass":
        _check_multiclass_labels(target)
    if task in ("binary", "multiclass"):
        _check_classes(target, split)


def _check_multiclass_labels(target: pd.Series) -> None:
    name = target.name
    if pd.api.types.is_bool_dtype(target.dtype) or pd.api.types.is_integer_dtype(target.dtype):
        return
    if pd.api.types.is_float_dtype(target.dtype):
        values = target.to_numpy(dtype=np.float64)
        fractional = values != np.round(values)
        if fractional.any():
            raise DataValidationError(
                f"multiclass target column {name!r} has non-integer values in "
                f"{_rows(target.index[fractional])}; class labels must be integers or strings"
            )
        return
    if not is_string_column(target):
        kind = pd.api.types.infer_dtype(target, skipna=True)
        raise DataValidationError(
            f"multiclass target column {name!r} holds {kind} values; class labels must be all "
            "integers or all strings"
        )


def _check_classes(target: pd.Series, split: SplitConfig | None) -> None:
    name = target.name
    counts = target.value_counts()
    if len(counts) < 2:
        only = _plain(counts.index[0]) if len(counts) else None
        raise DataValidationError(
            f"target column {name!r} has a single class ({only!r}); a classifier needs at least "
            "two classes"
        )
    if split is None or split.kind != "stratified":
        return
    parts = split.n_parts()
    needed = MIN_ROWS_PER_PART * parts
    rare = counts[counts < needed]
    if len(rare):
        label, count = _plain(rare.index[-1]), int(rare.iloc[-1])
        raise DataValidationError(
            f"target column {name!r}: class {label!r} has {count} row(s) but a stratified split "
            f"into {parts} parts needs at least {needed} ({MIN_ROWS_PER_PART} per part); add "
            "rows of that class, merge it into another class, or use a random split"
        )


def validate_frame(
    df: pd.DataFrame,
    columns: ColumnSchema,
    task: TaskType,
    *,
    split: SplitConfig | None = None,
) -> None:
    """Raise ``DataValidationError`` unless ``df`` matches ``columns`` and ``task``.

    Checks, in order: the frame holds exactly the schema's columns; it is not empty; numeric
    features are numeric and finite (NaN is allowed and imputed later); categorical features
    hold strings; ranking has a group column; group ids and timestamps are present; the target
    has no missing or infinite values and suits the task (binary in {0, 1}, at least two
    classes and, for a stratified ``split``, enough rows per class for every part).

    Args:
        df: The frame to check; it is not modified.
        columns: Column roles.
        task: Learning task.
        split: The split that will be applied; only used to check per-class row counts of a
            stratified split.

    Raises:
        DataValidationError: The first problem found, naming the column.
    """
    _check_column_set(df, columns)
    if len(df) == 0:
        raise DataValidationError(
            "the data is empty (0 rows); check the source file or the filters that produced it"
        )
    _check_features(df, columns)
    _check_special_columns(df, columns, task)
    _check_target(df, columns, task, split)
