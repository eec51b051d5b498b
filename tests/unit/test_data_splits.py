"""Time, stratified and random (group-aware) splits, the subsample, and empty-part errors."""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from lossflow.config.data import ColumnSchema, DataConfig
from lossflow.data.sources import load_frame, resolve_columns
from lossflow.data.splits import SplitError, split_frame

TIME_SPLIT = {"kind": "time", "train_end": "2013-07-01", "val_end": "2013-09-01",
              "test_end": "2013-11-01"}  # fmt: skip
COLUMNS = ColumnSchema(numeric=["x"], categorical=[], target="y", time="t")


def _time_frame() -> pd.DataFrame:
    times = pd.date_range("2013-01-01", "2013-12-31 23:00", freq="7h")
    rng = np.random.default_rng(1)
    order = rng.permutation(len(times))  # shuffled input: the split must sort by time
    return pd.DataFrame(
        {"x": rng.normal(size=len(times)), "y": np.arange(len(times)) % 2, "t": times[order]}
    )


def _config(split: dict[str, Any], **extra: Any) -> DataConfig:
    return DataConfig.model_validate(
        {"source": "csv", "task": "binary", "path": "unused.csv",
         "columns": COLUMNS.model_dump(), "split": split, **extra}
    )  # fmt: skip


def test_time_split_respects_boundaries_on_flights() -> None:
    cfg = DataConfig.model_validate({"source": "flights", "split": TIME_SPLIT})
    columns = resolve_columns(cfg)
    frame = load_frame(cfg)
    splits = split_frame(frame, cfg, columns)
    t = "scheduled_departure"
    assert splits.train[t].max() < pd.Timestamp("2013-07-01")
    assert splits.val[t].min() >= pd.Timestamp("2013-07-01")
    assert splits.val[t].max() < pd.Timestamp("2013-09-01")
    assert splits.test[t].min() >= pd.Timestamp("2013-09-01")
    assert splits.test[t].max() < pd.Timestamp("2013-11-01")
    assert splits.production[t].min() >= pd.Timestamp("2013-11-01")
    assert sum(splits.sizes().values()) == len(frame)
    assert splits.train[t].is_monotonic_increasing
    assert list(splits.train.index) == list(range(len(splits.train)))


def test_time_split_sorts_and_keeps_every_row() -> None:
    frame = _time_frame()
    splits = split_frame(frame, _config(TIME_SPLIT), COLUMNS)
    combined = pd.concat(list(splits.parts().values()))
    assert combined["t"].is_monotonic_increasing
    assert sorted(combined["x"]) == sorted(frame["x"])


@pytest.mark.parametrize(
    ("split", "message"),
    [
        ({**TIME_SPLIT, "train_end": "2012-01-01", "val_end": "2012-06-01",
          "test_end": "2013-01-01"}, "split.train_end=2012-01-01: no rows before it"),
        ({**TIME_SPLIT, "val_end": "2013-08-01"},
         r"split.val_end=2013-08-01: no rows in \[train_end, val_end\)"),
        ({**TIME_SPLIT, "train_end": "2013-06-01", "val_end": "2013-07-01"},
         r"split.test_end=2013-11-01: no rows in \[val_end, test_end\)"),
    ],
)  # fmt: skip
def test_empty_time_part_names_the_boundary(split: dict[str, Any], message: str) -> None:
    frame = _time_frame()
    frame = frame.loc[(frame["t"] < "2013-07-01") | (frame["t"] >= "2013-11-01")]
    with pytest.raises(SplitError, match=message):
        split_frame(frame, _config(split), COLUMNS)


def test_stratified_split_keeps_class_proportions_and_is_seeded() -> None:
    rng = np.random.default_rng(2)
    n = 2000
    frame = pd.DataFrame({"x": rng.normal(size=n), "y": (rng.random(n) < 0.1).astype(int)})
    columns = ColumnSchema(numeric=["x"], categorical=[], target="y")
    split = {"kind": "stratified", "val_fraction": 0.2, "test_fraction": 0.1,
             "production_fraction": 0.1}  # fmt: skip
    cfg = _config(split).model_copy(update={"columns": columns})
    splits = split_frame(frame, cfg, columns)
    assert splits.sizes() == {"train": 1200, "val": 400, "test": 200, "production": 200}
    overall = frame["y"].mean()
    for part in splits.parts().values():
        assert part["y"].mean() == pytest.approx(overall, abs=0.005)
    assert sorted(pd.concat(list(splits.parts().values()))["x"]) == sorted(frame["x"])
    again = split_frame(frame, cfg, columns)
    pd.testing.assert_frame_equal(again.val, splits.val)
    other = split_frame(frame, cfg.model_copy(update={"seed": 1}), columns)
    assert not other.val["x"].equals(splits.val["x"])


def test_random_split_with_groups_keeps_each_group_in_one_part() -> None:
    rng = np.random.default_rng(3)
    groups = np.repeat(np.arange(100), rng.integers(2, 8, 100))
    frame = pd.DataFrame({"x": rng.normal(size=len(groups)), "y": rng.random(len(groups)),
                          "q": groups.astype(str)})  # fmt: skip
    columns = ColumnSchema(numeric=["x"], categorical=[], target="y", group="q")
    cfg = DataConfig.model_validate(
        {"source": "csv", "task": "ranking", "path": "unused.csv",
         "columns": columns.model_dump(), "split": {"kind": "random"}}
    )  # fmt: skip
    splits = split_frame(frame, cfg, columns)
    seen = [set(part["q"]) for part in splits.parts().values()]
    for i, first in enumerate(seen):
        for second in seen[i + 1 :]:
            assert not first & second
    assert [len(s) for s in seen] == [70, 15, 15, 0]
    assert sum(splits.sizes().values()) == len(frame)


def test_subsample_takes_at_most_n_rows_per_part_reproducibly() -> None:
    frame = _time_frame()
    cfg = _config(TIME_SPLIT, subsample=50)
    splits = split_frame(frame, cfg, COLUMNS)
    full = split_frame(frame, _config(TIME_SPLIT), COLUMNS)
    for name, part in splits.parts().items():
        assert len(part) == min(50, len(full.parts()[name]))
        assert set(part["x"]) <= set(full.parts()[name]["x"])
        assert part["t"].is_monotonic_increasing
    again = split_frame(frame, cfg, COLUMNS)
    pd.testing.assert_frame_equal(again.train, splits.train)


def test_stratified_subsample_keeps_every_class() -> None:
    cfg = DataConfig.model_validate({"source": "digits", "split": {"kind": "stratified"},
                                     "subsample": 40})  # fmt: skip
    columns = resolve_columns(cfg)
    splits = split_frame(load_frame(cfg), cfg, columns)
    assert splits.sizes() == {"train": 40, "val": 40, "test": 40, "production": 0}
    assert splits.train["digit"].nunique() == 10


def test_fraction_too_small_names_the_fraction() -> None:
    frame = _time_frame().iloc[:20]
    columns = ColumnSchema(numeric=["x"], categorical=[], target="y")
    cfg = _config({"kind": "stratified", "val_fraction": 0.05}).model_copy(
        update={"columns": columns}
    )
    with pytest.raises(SplitError, match=r"split.val_fraction=0.05 of 20 rows gives 1 rows"):
        split_frame(frame.drop(columns="t"), cfg, columns)
