"""Checks that a frame matches its column schema and task before anything is fitted on it.

``validate_frame`` raises one ``DataValidationError`` naming the column and the problem. It never
drops or repairs rows: bad data is for the data owner to fix, and the message says how.

Beyond the schema, data that parses but cannot be learned from is refused: a feature missing in
every row, a number beyond float32 (the network's precision), a feature equal to the target (a
leak), a constant regression target. Where training still makes sense it is warned about
(``logging`` of this module, which the training flow shows): a constant feature, an identifier
-like categorical column, a class rarer than 1 in 1000. :func:`check_split_classes` refuses
split parts whose classes make the threshold choice or the test metrics undefined.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, cast

import numpy as np
import pandas as pd

from lossflow.errors import UserError

if TYPE_CHECKING:
    from lossflow.config.data import ColumnSchema, SplitConfig
    from lossflow.losses import TaskType

MIN_ROWS_PER_PART = 2
_SHOWN = 5
FLOAT32_MAX = float(np.finfo(np.float32).max)
# A categorical column with more distinct values than this share of the rows (and at least
# ID_LIKE_MIN_ROWS rows) looks like an identifier.
ID_LIKE_SHARE = 0.5
ID_LIKE_MIN_ROWS = 1000
RARE_CLASS_SHARE = 0.001

logger = logging.getLogger(__name__)


class DataValidationError(UserError, ValueError):
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
        huge = np.abs(values) > FLOAT32_MAX
        if huge.any():
            raise DataValidationError(
                f"numeric column {name!r} has values beyond float32 (|x| > 3.4e38) in "
                f"{_rows(series.index[huge])}, which the network cannot represent; rescale the "
                "column (e.g. log) or clip it"
            )
        if np.isnan(values).all():
            raise DataValidationError(
                f"numeric column {name!r} is missing in every row; there is nothing to learn from "
                "it: drop it from data.columns.numeric or fill it in the source data"
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


# Pairs of binary labels whose positive one is obvious (compared in lower case).
OBVIOUS_POSITIVE: dict[frozenset[str], str] = {
    frozenset({"0", "1"}): "1",
    frozenset({"false", "true"}): "true",
    frozenset({"no", "yes"}): "yes",
    frozenset({"n", "y"}): "y",
    frozenset({"f", "t"}): "t",
    frozenset({"negative", "positive"}): "positive",
    frozenset({"neg", "pos"}): "pos",
}
Label = str | int | float | bool


def binary_classes(target: pd.Series, positive_class: Label | None = None) -> tuple[Label, Label]:
    """``(negative, positive)`` of a binary target's two values (missing values aside).

    The positive class is ``positive_class`` when given (matched to the column's values as
    written, or as text for a numeric column), else the obvious one of 0/1, False/True, no/yes
    (any case) and the like; any other pair needs ``positive_class``.

    Raises:
        DataValidationError: not two values, ``positive_class`` not among them, or no obvious
            positive class (the message says how to name it).
    """
    name = target.name
    values = [cast(Label, _plain(v)) for v in pd.unique(target.dropna())]
    if pd.api.types.is_bool_dtype(target.dtype):
        values = [bool(v) for v in values]
    if len(values) > 2:
        shown = ", ".join(sorted(map(str, values))[:_SHOWN])
        raise DataValidationError(
            f"binary target column {name!r} has {len(values)} values ({shown}...); a binary "
            "target has two: use task multiclass, or map the values to two classes"
        )
    if positive_class is not None:
        match = [v for v in values if v == positive_class or str(v) == str(positive_class)]
        if not match:
            raise DataValidationError(
                f"data.positive_class: {positive_class!r} is not a value of the binary target "
                f"column {name!r} (values: {', '.join(map(repr, values))})"
            )
        positive = match[0]
    else:
        numbers = all(isinstance(v, int | float) and not isinstance(v, bool) for v in values)
        texts = {("1" if v == 1 else "0" if v == 0 else str(v)) if numbers else str(v).lower(): v
                 for v in values}  # fmt: skip
        obvious = OBVIOUS_POSITIVE.get(frozenset(texts))
        if len(values) == 2 and obvious is None:
            raise DataValidationError(
                f"binary target column {name!r} has the values {values[0]!r} and {values[1]!r}, "
                "and which one is positive (the class whose probability the model gives) is not "
                f"obvious: set data.positive_class (e.g. data.positive_class={values[0]})"
            )
        if obvious is None:  # a single value: the class check below refuses it
            return values[0], values[0]
        positive = texts.get(obvious, values[0])
    others = [v for v in values if v != positive]
    return (others[0] if others else positive), positive


def _check_target(
    df: pd.DataFrame,
    columns: ColumnSchema,
    task: TaskType,
    split: SplitConfig | None,
    positive_class: Label | None = None,
    nonnegative_for: str | None = None,
) -> None:
    name = columns.target
    target = df[name]
    missing = target.isna().to_numpy()
    if missing.any():
        raise DataValidationError(
            f"target column {name!r} is missing in {_rows(df.index[missing])}; every row needs a "
            "label: fix or remove those rows in the source data, or set "
            "data.missing_target=drop to leave them out (counted in the run)"
        )
    if task == "multilabel":
        raise DataValidationError(
            f"target column {name!r}: multilabel tasks need one column per label, which the "
            "single-target data schema cannot express; use binary (one label) or multiclass"
        )
    numeric = pd.api.types.is_numeric_dtype(target.dtype)
    if task in ("regression", "ranking") and not numeric:
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
        negative = values < 0
        if nonnegative_for is not None and negative.any():
            raise DataValidationError(
                f"target column {name!r} is negative in {_rows(df.index[negative])}; loss "
                f"'{nonnegative_for}' models counts, which are >= 0: fix the target or choose "
                "another loss"
            )
    if task == "binary":
        binary_classes(target, positive_class)
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


def _check_learnable(df: pd.DataFrame, columns: ColumnSchema, task: TaskType) -> None:
    """Refuse leaks and constant regression targets; warn about features that cannot help."""
    target = df[columns.target]
    for name in columns.features:
        series = df[name]
        present = series.dropna()
        if len(present) == 0:
            raise DataValidationError(
                f"feature column {name!r} is missing in every row; there is nothing to learn "
                "from it: drop it from data.columns or fill it in the source data"
            )
        if present.nunique() == 1:
            logger.warning(
                "feature column %r holds one value (%r) in every row: it carries no information "
                "and the model cannot use it; drop it from data.columns",
                name,
                _plain(present.iloc[0]),
            )
        if series.isna().any():
            continue
        numeric = name in columns.numeric and pd.api.types.is_numeric_dtype(target.dtype)
        if numeric and np.array_equal(series.to_numpy(np.float64), target.to_numpy(np.float64)):
            raise DataValidationError(
                f"feature column {name!r} equals the target {columns.target!r} in every row: "
                "it leaks the label into the inputs; drop it from data.columns"
            )
    for name in columns.categorical:
        distinct = df[name].nunique(dropna=True)
        if len(df) >= ID_LIKE_MIN_ROWS and distinct > ID_LIKE_SHARE * len(df):
            logger.warning(
                "categorical column %r has %d distinct values in %d rows: it looks like an "
                "identifier, which a model memorises and cannot apply to new rows (they go to "
                "the unknown bucket); drop it or replace it by what it stands for",
                name,
                distinct,
                len(df),
            )
    if task == "regression":
        values = target.to_numpy(dtype=np.float64)
        if np.all(values == values[0]):
            raise DataValidationError(
                f"regression target column {columns.target!r} is constant ({_plain(values[0])!r} "
                "in every row); there is nothing to predict"
            )
    if task in ("binary", "multiclass"):
        shares = target.value_counts(normalize=True)
        for label, share in shares[shares < RARE_CLASS_SHARE].items():
            logger.warning(
                "class %r of target %r is %.3g%% of the rows: metrics on it will be noisy; a "
                "class-weighted loss (focal, class_balanced) or oversampling may help",
                _plain(label),
                columns.target,
                100 * share,
            )


def _check_ranking(df: pd.DataFrame, columns: ColumnSchema) -> None:
    """Relevance is graded (finite, >= 0) and every group is a list with something to rank."""
    group = columns.group
    if group is None:  # _check_special_columns refused it already
        return
    relevance = df[columns.target].to_numpy(dtype=np.float64)
    negative = relevance < 0
    if negative.any():
        raise DataValidationError(
            f"relevance column {columns.target!r} is negative in {_rows(df.index[negative])}; "
            "ranking needs graded relevance >= 0 (0 = not relevant): shift or clip the values"
        )
    stats = pd.DataFrame({"g": df[group].to_numpy(), "r": relevance}).groupby("g", sort=False)
    sizes = stats["r"].size()
    single = sizes.index[sizes.to_numpy() < 2]
    if len(single):
        shown = ", ".join(map(repr, map(_plain, single[:_SHOWN])))
        raise DataValidationError(
            f"group column {group!r}: {len(single)} group(s) have a single item ({shown}"
            f"{' ...' if len(single) > _SHOWN else ''}); a list of one has nothing to rank: "
            "drop those groups or merge them into their queries"
        )
    empty = stats["r"].max().to_numpy() <= 0
    if empty.any():
        names = sizes.index[empty]
        shown = ", ".join(map(repr, map(_plain, names[:_SHOWN])))
        raise DataValidationError(
            f"group column {group!r}: {len(names)} group(s) have no relevant item (relevance "
            f"{columns.target!r} is 0 for every item: {shown}"
            f"{' ...' if len(names) > _SHOWN else ''}); they teach no ranking: drop them or "
            "label their relevant items"
        )


def check_groups_within_parts(parts: dict[str, pd.DataFrame], group: str) -> None:
    """Refuse a split by group that put one group into two parts (its rows would leak).

    Raises:
        DataValidationError: naming the group and the parts.
    """
    seen: dict[object, str] = {}
    for part, frame in parts.items():
        for name in pd.unique(frame[group]):
            if name in seen:
                raise DataValidationError(
                    f"group {_plain(name)!r} of column {group!r} is in both the {seen[name]} and "
                    f"the {part} split; a split by group must keep each group in one part: use "
                    "data.split.kind: random (which moves whole groups) or a time split"
                )
            seen[name] = part


def check_split_classes(
    parts: dict[str, pd.DataFrame], target: str, task: TaskType, split_hint: str
) -> None:
    """Refuse split parts whose classes leave training, the threshold or the metrics undefined.

    The training part needs at least two classes; for a binary task the validation part (the
    threshold is chosen on it) and the test part (ROC-AUC) need both classes too.

    Args:
        parts: ``train``, ``val`` and ``test`` frames.
        target: The target column.
        task: Learning task; only classification is checked.
        split_hint: What to change, for the message (e.g. the split's boundaries).

    Raises:
        DataValidationError: naming the part and the class it holds.
    """
    if task not in ("binary", "multiclass"):
        return
    needed = {"train": "training"}
    if task == "binary":
        needed.update({"val": "the threshold choice", "test": "ROC-AUC and the test metrics"})
    for part, purpose in needed.items():
        classes = parts[part][target].unique()
        if len(classes) < 2:
            only = _plain(classes[0]) if len(classes) else None
            raise DataValidationError(
                f"the {part} split holds only class {only!r} of {target!r} "
                f"({len(parts[part])} rows), which leaves {purpose} undefined; {split_hint}"
            )


def validate_frame(
    df: pd.DataFrame,
    columns: ColumnSchema,
    task: TaskType,
    *,
    split: SplitConfig | None = None,
    positive_class: Label | None = None,
    nonnegative_for: str | None = None,
) -> None:
    """Raise ``DataValidationError`` unless ``df`` matches ``columns`` and ``task``.

    Checks, in order: the frame holds exactly the schema's columns; it is not empty; numeric
    features are numeric, finite and within float32 (NaN is allowed and imputed later) and
    present in some row; categorical features hold strings; ranking has a group column; group
    ids and timestamps are present; the target has no missing or infinite values and suits the
    task (binary: two values, one of them the positive class; at least two classes and, for a
    stratified ``split``, enough rows per class for every part; ranking relevance >= 0, every
    group with two items or more and a relevant one; >= 0 for a count loss); no feature equals
    the target; a regression target varies.
    Constant features, identifier-like categorical columns and very rare classes are warned
    about.

    Args:
        df: The frame to check; it is not modified.
        columns: Column roles.
        task: Learning task.
        split: The split that will be applied; only used to check per-class row counts of a
            stratified split.
        positive_class: Binary: the positive class (``None``: the obvious one, see
            :func:`binary_classes`).
        nonnegative_for: The loss that needs a target >= 0 (``poisson_nll``: counts), named in
            the error; ``None``: any sign. Losses do not check their targets' values on each
            call (that would synchronise a GPU every step): the data is checked here, once.

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
    _check_target(df, columns, task, split, positive_class, nonnegative_for)
    if task == "ranking":
        _check_ranking(df, columns)
    _check_learnable(df, columns, task)
