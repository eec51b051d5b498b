"""The rows a replay sends: production rows in time order, as the JSON records a service takes."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd

from lossflow.data.sources import flights_columns
from lossflow.replay.errors import TrafficError

PRODUCTION_GLOB: Final = "runs/*/prepared/production.parquet"
ROW_INDEX: Final = "row"

JsonScalar = bool | int | float | str | None


def find_production_data(data_dir: Path) -> Path:
    """The newest (by modification time) ``<data_dir>/runs/*/prepared/production.parquet``.

    Raises:
        FileNotFoundError: no training run under ``data_dir`` has written production rows.
    """
    candidates = sorted(data_dir.glob(PRODUCTION_GLOB), key=lambda p: p.stat().st_mtime)
    if not candidates:
        raise FileNotFoundError(
            f"no production rows under {data_dir / PRODUCTION_GLOB}; run `lossflow train` first "
            "(it keeps the later months apart as production rows) or pass --data PATH"
        )
    return candidates[-1]


def default_time_column(frame: pd.DataFrame, path: Path | None = None) -> str | None:
    """The time column of rows read from ``path``: the one the training run's prepared data
    names beside it (``prepared.json``), else the flights one when ``frame`` has it."""
    meta = None if path is None else path.parent / "prepared.json"
    if meta is not None and meta.is_file():
        named = json.loads(meta.read_text()).get("time")
        if named is not None and named in frame.columns:
            return str(named)
    name = flights_columns("binary").time
    return name if name is not None and name in frame.columns else None


def production_rows(
    path: Path,
    *,
    months: Sequence[int] | None = None,
    time_column: str | None = None,
    limit: int | None = None,
) -> pd.DataFrame:
    """Raw rows to replay, ordered by time.

    Args:
        path: a ``.parquet`` or ``.csv`` file of raw rows (features and, for feedback, target).
        months: keep only rows whose time falls in these months (1-12); ``None`` keeps all.
        time_column: the timestamp column; ``None``: the one the training run's prepared data
            names beside ``path``, else the flights one when present. Rows are
            replayed in its order (stable; file order without a time column).
        limit: keep the first ``limit`` rows (after the month filter and ordering).

    Returns:
        The rows, indexed by their 0-based position in the file (their identity for unit ids).

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: unsupported file type, unknown or unparseable time column, invalid
            ``months`` or ``limit``, or ``months`` given without any time column.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"no production data at {path}; pass a parquet or CSV file of raw rows, or run "
            "`lossflow train` to write <data_dir>/runs/<run>/prepared/production.parquet"
        )
    suffixes = [s.lower() for s in path.suffixes]
    if suffixes[-1:] in ([".parquet"], [".pq"]):
        frame = pd.read_parquet(path)
    elif ".csv" in suffixes[-2:]:
        frame = pd.read_csv(path)
    else:
        raise ValueError(f"{path}: unsupported file type; give a .parquet or .csv file")
    frame = frame.reset_index(drop=True)
    frame.index.name = ROW_INDEX
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 rows; got {limit}")
    if time_column is not None and time_column not in frame.columns:
        raise ValueError(
            f"time column {time_column!r} is not in {path}; its columns: {list(frame.columns)}"
        )
    time_name = time_column or default_time_column(frame, path)
    if months:
        bad = sorted({m for m in months if not 1 <= m <= 12})
        if bad:
            raise ValueError(f"months are 1 to 12; got {bad}")
        if time_name is None:
            raise ValueError(
                f"cannot filter months: {path} has no known time column; name it (time_column, "
                "--time-column)"
            )
    if time_name is not None:
        try:
            times = pd.to_datetime(frame[time_name])
        except (ValueError, TypeError) as err:
            raise ValueError(
                f"time column {time_name!r} of {path} does not hold timestamps: {err}"
            ) from None
        frame[time_name] = times
        if months:
            frame = frame[times.dt.month.isin(list(months))]
        frame = frame.sort_values(time_name, kind="stable")
    return frame if limit is None else frame.iloc[:limit]


def json_value(value: Any) -> JsonScalar:
    """A pandas/numpy cell as a JSON scalar: missing (NaN, NA, NaT, inf) -> ``None``.

    Raises:
        TypeError: the value has no JSON form a record field can take.
    """
    if value is None or value is pd.NA or value is pd.NaT:
        return None
    if isinstance(value, bool | np.bool_):
        return bool(value)
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, str):
        return value
    if isinstance(value, datetime | date | pd.Timestamp):
        return value.isoformat()
    raise TypeError(
        f"cannot send a {type(value).__name__} value ({value!r}) in a JSON record; "
        "record fields are numbers, strings or null"
    )


def label_value(value: Any, task: str) -> JsonScalar:
    """The feedback label of a target cell: binary 0/1 (or its class name), multiclass class,
    regression float.

    Returns:
        ``None`` when the target is missing.

    Raises:
        ValueError: the value is not a label of ``task``.
    """
    label = json_value(value)
    if label is None:
        return None
    if task == "binary":
        if isinstance(label, bool) or (isinstance(label, int | float) and label in (0, 1)):
            return int(label)
        if isinstance(label, str):
            return label  # a class name (yes, good...): the service maps it to 0/1
        raise ValueError(f"binary targets are 0 or 1 or class names; got {value!r}")
    if task == "multiclass":
        if isinstance(label, float) and label.is_integer():
            return int(label)
        return label
    if isinstance(label, bool) or not isinstance(label, int | float):
        raise ValueError(f"{task} targets are numbers; got {value!r}")
    return float(label)


def records_of(frame: pd.DataFrame, features: Sequence[str]) -> list[dict[str, JsonScalar]]:
    """The rows of ``frame`` as JSON records holding exactly ``features``, in that order.

    Raises:
        TrafficError: ``frame`` lacks some of the features.
    """
    missing = [f for f in features if f not in frame.columns]
    if missing:
        raise TrafficError(
            f"the rows lack features the service takes: {missing}; replay the production rows "
            "of the data the served models were trained on (--data)"
        )
    names = list(features)
    return [
        {name: json_value(v) for name, v in zip(names, row, strict=True)}
        for row in frame[names].itertuples(index=False, name=None)
    ]
