"""The shared preprocessor: fitted on train only, exact JSON round trip, ``Standardize``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from lossflow.config.data import ColumnSchema, DataConfig
from lossflow.data.preprocessing import Preprocessor
from lossflow.data.sources import load_frame, resolve_columns
from lossflow.data.splits import split_frame
from lossflow.data.validation import DataValidationError
from lossflow.models.nets import Standardize

COLUMNS = ColumnSchema(numeric=["a", "b"], categorical=["city", "tier"], target="y")


def _train() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "a": [1.0, 2.0, np.nan, 4.0, 10.0],
            "b": [5.0, 5.0, 5.0, 5.0, 5.0],
            "city": ["Oslo", "Lima", "Oslo", None, "Pune"],
            "tier": ["gold", "gold", "basic", "basic", "gold"],
            "y": [0, 1, 0, 1, 1],
        }
    )


def test_fit_statistics_come_from_the_training_rows() -> None:
    pre = Preprocessor.fit(_train(), COLUMNS, "median", task="binary")
    assert pre.fill == (3.0, 5.0)  # median of 1, 2, 4, 10
    imputed = np.array([1.0, 2.0, 3.0, 4.0, 10.0])
    assert pre.mean[0] == pytest.approx(imputed.mean())
    assert pre.std[0] == pytest.approx(imputed.std())
    assert pre.std[1] == 1.0  # constant column: std 0 -> 1
    assert pre.vocabularies == {"city": ("Lima", "Oslo", "Pune"), "tier": ("basic", "gold")}
    assert pre.cardinalities == [4, 3]
    assert Preprocessor.fit(_train(), COLUMNS, "mean", task="binary").fill[0] == 4.25
    assert Preprocessor.fit(_train(), COLUMNS, "zero", task="binary").fill[0] == 0.0


def test_a_numeric_column_missing_in_every_training_row_is_refused() -> None:
    train = _train()
    train["a"] = np.nan  # e.g. a sensor that only exists after the training period
    with pytest.raises(DataValidationError, match="'a' is missing in every training row"):
        Preprocessor.fit(train, COLUMNS, task="binary")


def test_encode_keeps_raw_numerics_and_reserves_code_zero_for_unknown() -> None:
    pre = Preprocessor.fit(_train(), COLUMNS, task="binary")
    val = pd.DataFrame({"a": [np.nan, 7.5], "b": [1.0, 2.0], "city": ["Rome", "Pune"],
                        "tier": [None, "basic"], "y": [1, 0]})  # fmt: skip
    encoded = pre.encode(val)
    assert encoded.numeric.dtype == np.float32
    assert encoded.categorical.dtype == np.int64
    assert np.isnan(encoded.numeric[0, 0])  # not imputed here: Standardize does it
    np.testing.assert_array_equal(encoded.numeric[1], [7.5, 2.0])
    # "Rome" occurs only outside training: unknown, code 0; None is unknown too
    np.testing.assert_array_equal(encoded.categorical, [[0, 0], [3, 1]])


def test_fitted_on_train_only_on_real_flights() -> None:
    cfg = DataConfig.model_validate(
        {"source": "flights", "split": {"kind": "time", "train_end": "2013-02-01",
                                        "val_end": "2013-12-01", "test_end": "2013-12-15"}}
    )  # fmt: skip
    columns = resolve_columns(cfg)
    splits = split_frame(load_frame(cfg), cfg, columns)
    pre = Preprocessor.fit(splits.train, columns, task=cfg.task)
    only_val = set(splits.val["dest"]) - set(splits.train["dest"])
    assert only_val  # some destinations are first served after January
    assert not only_val & set(pre.vocabularies["dest"])
    codes = pre.encode(splits.val).categorical[:, columns.categorical.index("dest")]
    unseen = splits.val["dest"].isin(only_val).to_numpy()
    assert (codes[unseen] == 0).all()
    assert (codes[~unseen] > 0).all()
    assert pre.fill[columns.numeric.index("temp")] == splits.train["temp"].median()


def test_encode_accepts_raw_records_like_a_web_request() -> None:
    pre = Preprocessor.fit(_train(), COLUMNS, task="binary")
    records = [{"a": 2, "b": None, "city": "Oslo", "tier": "gold"},
               {"a": "3.5", "b": 1, "city": None, "tier": "vip", "extra": 1}]  # fmt: skip
    encoded = pre.encode(records)
    frame = pd.DataFrame({"a": [2.0, 3.5], "b": [np.nan, 1.0], "city": ["Oslo", None],
                          "tier": ["gold", "vip"]})  # fmt: skip
    reference = pre.encode(frame)
    np.testing.assert_array_equal(encoded.numeric, reference.numeric)
    np.testing.assert_array_equal(encoded.categorical, reference.categorical)
    np.testing.assert_array_equal(encoded.categorical, [[2, 2], [0, 0]])


def test_encode_errors_name_the_column() -> None:
    pre = Preprocessor.fit(_train(), COLUMNS, task="binary")
    with pytest.raises(DataValidationError, match=r"record 1 is missing feature\(s\) 'tier'"):
        pre.encode([{"a": 1, "b": 1, "city": "Oslo", "tier": "gold"},
                    {"a": 1, "b": 1, "city": "Oslo"}])  # fmt: skip
    with pytest.raises(DataValidationError, match=r"missing feature column\(s\) 'b'"):
        pre.encode(_train().drop(columns="b"))
    with pytest.raises(DataValidationError, match="numeric column 'a' has a value that is not"):
        pre.encode([{"a": "many", "b": 1, "city": "Oslo", "tier": "gold"}])
    with pytest.raises(DataValidationError, match="numeric column 'b' has an infinite value"):
        pre.encode([{"a": 1, "b": float("inf"), "city": "Oslo", "tier": "gold"}])


def test_target_encoding_per_task() -> None:
    train = _train()
    binary = Preprocessor.fit(train, COLUMNS, task="binary").encode_target(train)
    assert binary.dtype == np.float32
    np.testing.assert_array_equal(binary, [0, 1, 0, 1, 1])
    regression = Preprocessor.fit(train, COLUMNS, task="regression").encode_target(train)
    assert regression.dtype == np.float32
    labelled = train.assign(y=["cat", "dog", "ant", "dog", "cat"])
    multi = Preprocessor.fit(labelled, COLUMNS, task="multiclass")
    assert multi.label_names == ("ant", "cat", "dog")
    assert multi.n_classes == 3
    codes = multi.encode_target(labelled)
    assert codes.dtype == np.int64
    np.testing.assert_array_equal(codes, [1, 2, 0, 2, 1])
    with pytest.raises(DataValidationError, match=r"class\(es\) \['emu'\] unseen in training"):
        multi.encode_target(labelled.assign(y="emu"))
    integers = Preprocessor.fit(train.assign(y=[3, 7, 3, 5, 7]), COLUMNS, task="multiclass")
    assert integers.label_names == (3, 5, 7)
    np.testing.assert_array_equal(integers.encode_target(train.assign(y=[7, 3, 5, 5, 3])),
                                  [2, 0, 1, 1, 0])  # fmt: skip


def test_to_dict_from_dict_is_an_exact_json_round_trip() -> None:
    rng = np.random.default_rng(0)
    train = _train().assign(a=rng.normal(size=5) / 3.0, y=[3, 1, 2, 1, 3])
    pre = Preprocessor.fit(train, COLUMNS, task="multiclass")
    text = json.dumps(pre.to_dict())
    back = Preprocessor.from_dict(json.loads(text))
    assert back == pre
    assert back.to_dict() == pre.to_dict()
    assert back.mean == pre.mean  # bit-exact floats
    assert back.label_names == (1, 2, 3)
    frame = train.assign(city=["Oslo", "Rome", None, "Lima", "Pune"])
    np.testing.assert_array_equal(back.encode(frame).categorical, pre.encode(frame).categorical)
    np.testing.assert_array_equal(back.encode_target(train), pre.encode_target(train))


def test_from_dict_rejects_foreign_or_incomplete_descriptions() -> None:
    good = Preprocessor.fit(_train(), COLUMNS, task="binary").to_dict()
    with pytest.raises(ValueError, match=r"missing keys \['std'\]"):
        Preprocessor.from_dict({k: v for k, v in good.items() if k != "std"})
    with pytest.raises(ValueError, match="unsupported preprocessor format"):
        Preprocessor.from_dict({**good, "version": 99})


def test_standardize_imputes_nan_then_scales() -> None:
    pre = Preprocessor.fit(_train(), COLUMNS, task="binary")
    module = Standardize.of(pre)
    assert isinstance(module, Standardize)
    x = torch.tensor([[np.nan, 5.0], [10.0, 7.0]], dtype=torch.float32)
    out = module(x)
    mean, std = pre.mean[0], pre.std[0]
    expected = torch.tensor([[(3.0 - mean) / std, 0.0], [(10.0 - mean) / std, 2.0]])
    torch.testing.assert_close(out, expected)
    assert torch.isfinite(out).all()
    standardised = module(torch.from_numpy(pre.encode(_train()).numeric))
    torch.testing.assert_close(standardised[:, 0].mean(), torch.tensor(0.0), atol=1e-6, rtol=0)
    torch.testing.assert_close(
        standardised[:, 0].std(unbiased=False), torch.tensor(1.0), atol=1e-6, rtol=0
    )
    assert {name for name, _ in module.named_buffers()} == {"fill", "mean", "std"}


def test_standardize_rejects_bad_statistics() -> None:
    with pytest.raises(ValueError, match="std > 0"):
        Standardize(torch.zeros(2), torch.zeros(2), torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="same 1-D shape"):
        Standardize(torch.zeros(2), torch.zeros(3), torch.ones(2))


def test_fit_rejects_empty_training_split() -> None:
    with pytest.raises(DataValidationError, match="empty training split"):
        Preprocessor.fit(_train().iloc[:0], COLUMNS, task="binary")


def test_group_ids_are_contiguous() -> None:
    columns = ColumnSchema(numeric=["a"], categorical=[], target="y", group="q")
    frame = pd.DataFrame({"a": [1.0, 2.0, 3.0, 4.0], "y": [0.0, 1.0, 2.0, 0.0],
                          "q": ["u", "v", "u", "w"]})  # fmt: skip
    pre = Preprocessor.fit(frame, columns, task="ranking")
    np.testing.assert_array_equal(pre.encode_groups(frame), [0, 1, 0, 2])
    no_group = Preprocessor.fit(frame.drop(columns="q"), COLUMNS.model_copy(
        update={"numeric": ["a"], "categorical": []}), task="regression")  # fmt: skip
    with pytest.raises(DataValidationError, match="no group column"):
        no_group.encode_groups(frame)
