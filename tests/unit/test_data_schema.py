"""The ``data:`` config models reject bad combinations with errors naming the field."""

from __future__ import annotations

from datetime import date
from typing import Any

import pytest
from pydantic import ValidationError

from lossflow.config.data import AugmentConfig, ColumnSchema, DataConfig, SplitConfig

TIME_SPLIT = {"kind": "time", "train_end": "2013-07-01", "val_end": "2013-09-01",
              "test_end": "2013-11-01"}  # fmt: skip
COLUMNS = {"numeric": ["x"], "categorical": ["c"], "target": "y"}


def test_time_split_parses_dates_and_exposes_boundaries() -> None:
    split = SplitConfig.model_validate(TIME_SPLIT)
    assert split.boundaries() == (date(2013, 7, 1), date(2013, 9, 1), date(2013, 11, 1))
    assert split.n_parts() == 3
    with pytest.raises(ValueError, match="no fractions"):
        split.fractions()


def test_fraction_split_fills_defaults() -> None:
    split = SplitConfig(kind="stratified")
    assert split.fractions() == (0.15, 0.15, 0.0)
    assert split.n_parts() == 3
    assert SplitConfig(kind="random", production_fraction=0.2).n_parts() == 4


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({**TIME_SPLIT, "val_end": "2013-06-01"}, "boundaries must increase"),
        ({**TIME_SPLIT, "test_end": "2013-09-01"}, "boundaries must increase"),
        ({"kind": "time", "train_end": "2013-07-01"}, "val_end, test_end"),
        ({**TIME_SPLIT, "val_fraction": 0.1}, "val_fraction only apply to stratified"),
        ({"kind": "random", "train_end": "2013-07-01"}, "train_end only apply to time"),
        ({"kind": "random", "val_fraction": 0.5, "test_fraction": 0.5}, "must be below 1"),
        ({"kind": "random", "val_fraction": 1.5}, "val_fraction"),
        ({"kind": "random", "shuffle": True}, "shuffle"),
    ],
)
def test_split_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        SplitConfig.model_validate(fields)


def test_column_schema_rejects_a_column_with_two_roles() -> None:
    with pytest.raises(ValidationError, match="'x' listed more than once"):
        ColumnSchema(numeric=["x"], categorical=[], target="x")


def test_column_schema_needs_a_feature() -> None:
    with pytest.raises(ValidationError, match="no feature columns"):
        ColumnSchema(numeric=[], categorical=[], target="y")


def test_builtin_defaults_pick_the_task() -> None:
    assert DataConfig(source="flights", split=TIME_SPLIT).task == "binary"
    assert DataConfig(source="digits", split={"kind": "stratified"}).task == "multiclass"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"source": "flights", "task": "multiclass", "split": TIME_SPLIT}, "binary or regression"),
        ({"source": "digits", "task": "binary", "split": {"kind": "stratified"}}, "multiclass"),
        ({"source": "flights", "columns": COLUMNS, "split": TIME_SPLIT}, "data.columns"),
        ({"source": "flights", "path": "x.csv", "split": TIME_SPLIT}, "data.path"),
        ({"source": "csv", "task": "binary", "columns": COLUMNS, "split": {"kind": "random"}},
         "data.path"),
        ({"source": "csv", "task": "binary", "path": "x.csv", "split": {"kind": "random"}},
         "data.columns"),
        ({"source": "csv", "path": "x.csv", "columns": COLUMNS, "split": {"kind": "random"}},
         "task"),
        ({"source": "digits", "split": TIME_SPLIT}, "digits has no time column"),
        ({"source": "csv", "task": "binary", "path": "x.csv", "columns": COLUMNS,
          "split": TIME_SPLIT}, "data.columns.time"),
        ({"source": "flights", "task": "regression", "split": {"kind": "stratified"}},
         "stratification needs class labels"),
        ({"source": "csv", "task": "ranking", "path": "x.csv", "columns": COLUMNS,
          "split": {"kind": "random"}}, "data.columns.group"),
        ({"source": "flights", "split": TIME_SPLIT, "augment": {"image": {}}},
         "image augmentation needs image data"),
        ({"source": "flights", "task": "regression", "split": TIME_SPLIT,
          "augment": {"oversample": "smote"}}, "oversampling needs class labels"),
        ({"source": "flights", "split": TIME_SPLIT, "subsample": 0}, "subsample"),
        ({"source": "flights", "split": TIME_SPLIT, "shuffle": True}, "shuffle"),
    ],
)  # fmt: skip
def test_data_config_errors(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        DataConfig.model_validate(fields)


def test_augment_config_validates_ranges() -> None:
    with pytest.raises(ValidationError, match="noise_std"):
        AugmentConfig(noise_std=-0.1)
    with pytest.raises(ValidationError, match="oversample_ratio"):
        AugmentConfig(oversample_ratio=1.5)
    with pytest.raises(ValidationError, match="scale must satisfy"):
        AugmentConfig.model_validate({"image": {"scale": (1.2, 0.8)}})
    with pytest.raises(ValidationError, match="rotate"):
        AugmentConfig.model_validate({"image": {"rotate": 10}})


def test_to_params_is_flat_and_complete() -> None:
    cfg = DataConfig.model_validate(
        {
            "source": "digits",
            "split": {"kind": "stratified", "production_fraction": 0.1},
            "subsample": 100,
            "augment": {"noise_std": 0.1, "image": {"rotation_degrees": 15, "hflip": True}},
        }
    )
    params = cfg.to_params()
    assert all(isinstance(v, str | int | float | bool) for v in params.values())
    assert params["data.source"] == "digits"
    assert params["data.task"] == "multiclass"
    assert params["data.subsample"] == 100
    assert params["data.split.production_fraction"] == 0.1
    assert params["data.augment.noise_std"] == 0.1
    assert params["data.augment.image.rotation_degrees"] == 15.0
    assert params["data.augment.image.scale"] == "0.9,1.1"
    assert params["data.augment.image.hflip"] is True
    no_image = AugmentConfig().to_params(prefix="aug")
    assert no_image["aug.image"] == "none"
    assert set(no_image) == {"aug.noise_std", "aug.mixup_alpha", "aug.oversample",
                             "aug.oversample_ratio", "aug.image"}  # fmt: skip
