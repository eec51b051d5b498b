"""``validate_frame`` raises one clear error naming the column for each kind of bad data."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import pytest

from lossflow.data import ColumnSchema, DataValidationError, SplitConfig, validate_frame
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
    df["label"] = np.where(df["label"] == 1, "yes", "no")


def _missing_time(df: pd.DataFrame) -> None:
    df.loc[1, "ts"] = pd.NaT


def _string_time(df: pd.DataFrame) -> None:
    df["ts"] = df["ts"].astype(str)


CASES: list[tuple[str, Callable[[pd.DataFrame], None], TaskType, str]] = [
    ("missing columns", _drop_income, "binary", r"missing column\(s\) 'income', 'ts'"),
    ("extra column", _add_extra, "binary", r"extra column\(s\) 'row_id'"),
    ("numeric not numeric", _text_in_numeric, "binary", "numeric column 'income'.*not a number"),
    ("categorical not strings", _int_categorical, "binary", "categorical column 'city'.*integer"),
    ("NaN target", _nan_target, "regression", r"target column 'label' is missing in 1 row.*5"),
    ("inf target", _inf_target, "regression", r"target column 'label' has \+/-inf.*6"),
    ("inf feature", _inf_feature, "regression", r"numeric column 'income' has \+/-inf.*7"),
    ("single class", _single_class, "binary", "target column 'label' has a single class"),
    ("single class multiclass", _single_class, "multiclass", "'label' has a single class"),
    ("binary not 0/1", _not_binary, "binary", "binary target column 'label'.*found 2"),
    ("binary strings", _string_binary, "binary", "target column 'label'.*must be numeric"),
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
    frame = pd.DataFrame({"age": [1.0, 2.0, 3.0], "label": [0.0, 1.0, 2.0],
                          "query": ["a", None, "b"]})  # fmt: skip
    with pytest.raises(DataValidationError, match="group column 'query' is missing"):
        validate_frame(frame, columns, "ranking")
    frame.loc[1, "query"] = "a"
    validate_frame(frame, columns, "ranking")


def test_validation_does_not_modify_the_frame() -> None:
    frame = _frame()
    frame.loc[3, "income"] = np.nan
    before = frame.copy()
    validate_frame(frame, COLUMNS, "binary")
    pd.testing.assert_frame_equal(frame, before)
