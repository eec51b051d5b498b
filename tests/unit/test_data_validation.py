"""``validate_frame`` raises one clear error naming the column for each kind of bad data."""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from lossflow.config.data import ColumnSchema, SplitConfig
from lossflow.data.validation import (
    DataValidationError,
    binary_classes,
    check_split_classes,
    validate_frame,
)
from lossflow.losses import TaskType

COLUMNS = ColumnSchema(numeric=["age", "income"], categorical=["city"], target="label",
                       time="ts")  # fmt: skip
STRATIFIED = SplitConfig(kind="stratified")


def _frame(n: int = 24) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    return pd.DataFrame(
        {
            "age": rng.integers(18, 90, n),
            "income": rng.normal(50.0, 10.0, n),
            "city": rng.choice(["Oslo", "Lima", "Pune"], n),
            "label": np.arange(n) % 2,
            "ts": pd.date_range("2024-01-01", periods=n, freq="D"),
        }
    )


def test_a_valid_frame_passes_for_each_task() -> None:
    validate_frame(_frame(), COLUMNS, "binary", split=STRATIFIED)
    validate_frame(_frame(), COLUMNS, "regression")
    validate_frame(_frame(), COLUMNS, "multiclass")
    with_nan = _frame()
    with_nan.loc[3, "income"] = np.nan
    with_nan.loc[4, "city"] = None
    validate_frame(with_nan, COLUMNS, "binary")  # missing features are imputed later
    boolean = _frame()
    boolean["label"] = boolean["label"].astype(bool)
    validate_frame(boolean, COLUMNS, "binary")


def _drop_income(df: pd.DataFrame) -> None:
    df.drop(columns=["income", "ts"], inplace=True)


def _add_extra(df: pd.DataFrame) -> None:
    df["row_id"] = range(len(df))


def _text_in_numeric(df: pd.DataFrame) -> None:
    df["income"] = df["income"].astype(str)


def _int_categorical(df: pd.DataFrame) -> None:
    df["city"] = np.arange(len(df))


def _nan_target(df: pd.DataFrame) -> None:
    df["label"] = df["label"].astype(float)
    df.loc[5, "label"] = np.nan


def _inf_target(df: pd.DataFrame) -> None:
    df["label"] = df["label"].astype(float)
    df.loc[6, "label"] = np.inf


def _inf_feature(df: pd.DataFrame) -> None:
    df.loc[7, "income"] = -np.inf


def _single_class(df: pd.DataFrame) -> None:
    df["label"] = 1


def _not_binary(df: pd.DataFrame) -> None:
    df.loc[2, "label"] = 2


def _string_binary(df: pd.DataFrame) -> None:
    df["label"] = np.where(df["label"] == 1, "good", "bad")


def _missing_time(df: pd.DataFrame) -> None:
    df.loc[1, "ts"] = pd.NaT


def _string_time(df: pd.DataFrame) -> None:
    df["ts"] = df["ts"].astype(str)


def _all_missing_numeric(df: pd.DataFrame) -> None:
    df["income"] = np.nan


def _all_missing_categorical(df: pd.DataFrame) -> None:
    df["city"] = None


def _beyond_float32(df: pd.DataFrame) -> None:
    df.loc[9, "income"] = 1e39


def _leaked_label(df: pd.DataFrame) -> None:
    df["age"] = df["label"]


def _constant_target(df: pd.DataFrame) -> None:
    df["label"] = 3.5


CASES: list[tuple[str, Callable[[pd.DataFrame], None], TaskType, str]] = [
    ("all-missing numeric", _all_missing_numeric, "binary", "'income' is missing in every row"),
    ("all-missing categorical", _all_missing_categorical, "binary", "'city' is missing in every"),
    ("beyond float32", _beyond_float32, "binary", r"'income' has values beyond float32.*index 9"),
    ("feature equals target", _leaked_label, "binary", "'age' equals the target 'label'.*leaks"),
    ("constant regression target", _constant_target, "regression", "'label' is constant"),
    ("missing columns", _drop_income, "binary", r"missing column\(s\) 'income', 'ts'"),
    ("extra column", _add_extra, "binary", r"extra column\(s\) 'row_id'"),
    ("numeric not numeric", _text_in_numeric, "binary", "numeric column 'income'.*not a number"),
    ("categorical not strings", _int_categorical, "binary", "categorical column 'city'.*integer"),
    ("NaN target", _nan_target, "regression", r"target column 'label' is missing in 1 row.*5"),
    ("inf target", _inf_target, "regression", r"target column 'label' has \+/-inf.*6"),
    ("inf feature", _inf_feature, "regression", r"numeric column 'income' has \+/-inf.*7"),
    ("single class", _single_class, "binary", "target column 'label' has a single class"),
    ("single class multiclass", _single_class, "multiclass", "'label' has a single class"),
    ("binary with 3 values", _not_binary, "binary", "binary target column 'label' has 3 values"),
    ("binary pair", _string_binary, "binary", "is not obvious: set data.positive_class"),
    ("ranking without group", lambda df: None, "ranking", "ranking needs a group column"),
    ("missing time", _missing_time, "binary", "time column 'ts' is missing in 1 row"),
    ("time not timestamps", _string_time, "binary", "time column 'ts'.*not a timestamp"),
    ("multilabel", lambda df: None, "multilabel", "target column 'label': multilabel"),
]


@pytest.mark.parametrize(
    ("mutate", "task", "message"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_each_problem_raises_naming_the_column(
    mutate: Callable[[pd.DataFrame], None], task: TaskType, message: str
) -> None:
    frame = _frame()
    mutate(frame)
    with pytest.raises(DataValidationError, match=message):
        validate_frame(frame, COLUMNS, task)


def test_empty_data_is_rejected() -> None:
    with pytest.raises(DataValidationError, match="empty"):
        validate_frame(_frame().iloc[:0], COLUMNS, "binary")


def test_rare_class_for_stratified_split_names_class_and_count() -> None:
    frame = _frame()
    frame["label"] = 0
    frame.loc[:15, "label"] = 1
    frame.loc[0:2, "label"] = 2  # class 2 has 3 rows; 3 parts need 2 each
    with pytest.raises(DataValidationError, match=r"class 2 has 3 row.*at least 6"):
        validate_frame(frame, COLUMNS, "multiclass", split=STRATIFIED)
    validate_frame(frame, COLUMNS, "multiclass", split=SplitConfig(kind="random"))
    with_production = SplitConfig(kind="stratified", production_fraction=0.1)
    frame.loc[0:5, "label"] = 2  # 6 rows: enough for 3 parts, not for 4
    validate_frame(frame, COLUMNS, "multiclass", split=STRATIFIED)
    with pytest.raises(DataValidationError, match=r"class 2 has 6 row.*at least 8"):
        validate_frame(frame, COLUMNS, "multiclass", split=with_production)


def test_multiclass_rejects_fractional_labels() -> None:
    frame = _frame()
    frame["label"] = frame["label"] + 0.5
    with pytest.raises(DataValidationError, match="'label' has non-integer values"):
        validate_frame(frame, COLUMNS, "multiclass")


def test_group_column_must_be_complete() -> None:
    columns = ColumnSchema(numeric=["age"], categorical=[], target="label", group="query")
    frame = pd.DataFrame({"age": [1.0, 2.0, 3.0, 4.0], "label": [0.0, 1.0, 2.0, 1.0],
                          "query": ["a", None, "b", "b"]})  # fmt: skip
    with pytest.raises(DataValidationError, match="group column 'query' is missing"):
        validate_frame(frame, columns, "ranking")
    frame.loc[1, "query"] = "a"
    validate_frame(frame, columns, "ranking")


def test_what_training_can_still_use_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    n = 2000
    frame = _frame(n)
    frame["age"] = 40  # constant
    frame["city"] = [f"c{i}" for i in range(n)]  # an identifier
    frame.loc[0, "label"] = 2  # a class of 1 row in 2000 (multiclass)
    with caplog.at_level(logging.WARNING, logger="lossflow.data.validation"):
        validate_frame(frame, COLUMNS, "multiclass")
    text = caplog.text
    assert "'age' holds one value (40) in every row" in text
    assert "'city' has 2000 distinct values in 2000 rows: it looks like an identifier" in text
    assert "class 2 of target 'label' is 0.05%" in text


@pytest.mark.parametrize(
    ("part", "task", "purpose"),
    [
        ("train", "multiclass", "training"),
        ("val", "binary", "the threshold choice"),
        ("test", "binary", "ROC-AUC"),
    ],
)
def test_a_split_part_with_one_class_is_refused(part: str, task: TaskType, purpose: str) -> None:
    parts = {name: _frame(8) for name in ("train", "val", "test")}
    parts[part]["label"] = 0
    with pytest.raises(
        DataValidationError, match=rf"the {part} split holds only class 0.*{purpose}"
    ):
        check_split_classes(parts, "label", task, "move data.split.train_end")
    check_split_classes(parts, "label", "regression", "")  # regression needs no classes


def test_validation_does_not_modify_the_frame() -> None:
    frame = _frame()
    frame.loc[3, "income"] = np.nan
    before = frame.copy()
    validate_frame(frame, COLUMNS, "binary")
    pd.testing.assert_frame_equal(frame, before)


@pytest.mark.parametrize(
    ("values", "given", "expected"),
    [
        ([0, 1], None, (0, 1)),
        ([1.0, 0.0], None, (0.0, 1.0)),
        ([False, True], None, (False, True)),
        (["no", "yes"], None, ("no", "yes")),
        (["YES", "NO"], None, ("NO", "YES")),
        (["f", "t"], None, ("f", "t")),
        (["good", "bad"], "bad", ("good", "bad")),
        ([1, 2], "2", (1, 2)),
        ([0, 1], 0, (1, 0)),
    ],
)
def test_binary_classes_take_the_obvious_positive_or_the_named_one(
    values: list[object], given: object, expected: tuple[object, object]
) -> None:
    series = pd.Series(values * 3, name="label")
    assert binary_classes(series, given) == expected  # type: ignore[arg-type]


def test_binary_classes_refuse_a_positive_class_that_is_not_a_value() -> None:
    with pytest.raises(DataValidationError, match=r"'maybe' is not a value .*'no', 'yes'"):
        binary_classes(pd.Series(["no", "yes"], name="label"), "maybe")


def test_a_count_loss_refuses_a_negative_target_where_the_data_is_validated() -> None:
    # poisson_nll does not check its target on each call (that would sync a GPU every step).
    frame = _frame()
    frame["label"] = frame["label"].astype(float) * 3.0
    validate_frame(frame, COLUMNS, "regression", nonnegative_for="poisson_nll")
    frame.loc[4, "label"] = -1.0
    validate_frame(frame, COLUMNS, "regression")  # any sign for other losses
    with pytest.raises(DataValidationError, match=r"'label' is negative in 1 row.*'poisson_nll'"):
        validate_frame(frame, COLUMNS, "regression", nonnegative_for="poisson_nll")
