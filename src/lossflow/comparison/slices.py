"""Slices of scored rows: per-slice scores of one fold, and the later months a model meets.

A slice is a column of the raw rows (``carrier``, ``origin``, ``month``), ``hour_band`` (the
scheduled ``hour`` cut into night 0-5, morning 6-11, afternoon 12-17, evening 18-23) or
``class`` (the target: per-class scores, e.g. accuracy within each digit). A slice with fewer
rows than ``min_rows`` in a fold, or on which the metric is undefined (one class where ROC-AUC
needs two), is recorded with its row count and why it has no score -- never dropped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

HOUR_BANDS = ("night 0-5", "morning 6-11", "afternoon 12-17", "evening 18-23")
CLASS_SLICE = "class"
HOUR_BAND_SLICE = "hour_band"


@dataclass(frozen=True)
class SliceScore:
    """One slice value's score on one fold.

    Attributes:
        slice: the slice column (``carrier``).
        value: the slice value (``UA``).
        rows: rows of the fold in the slice.
        score: the metric on those rows; None when too few rows or undefined.
        reason: why there is no score.
    """

    slice: str
    value: str
    rows: int
    score: float | None
    reason: str | None = None


def slice_labels(raw: pd.DataFrame, name: str, target: str) -> pd.Series:
    """The slice value of each row, as text.

    Raises:
        KeyError: ``name`` is neither a column of ``raw`` nor ``hour_band``/``class``.
    """
    if name == CLASS_SLICE:
        return raw[target].astype(str)
    if name == HOUR_BAND_SLICE:
        if "hour" not in raw.columns:
            raise KeyError("hour_band slices need an 'hour' column")
        band = np.clip(raw["hour"].to_numpy(dtype=np.float64) // 6, 0, 3).astype(int)
        return pd.Series(np.asarray(HOUR_BANDS, dtype=object)[band], index=raw.index)
    if name not in raw.columns:
        raise KeyError(name)
    return raw[name].astype(str)


def slice_scores(
    raw: pd.DataFrame,
    names: Sequence[str],
    target: str,
    score: Callable[[np.ndarray], float],
    *,
    min_rows: int,
    in_order: bool = False,
) -> list[SliceScore]:
    """Score each value of each slice column on its rows.

    Args:
        raw: the scored rows (raw, as read), in the order of the outputs ``score`` is given.
        names: slice columns.
        target: the target column (for ``class`` slices).
        score: the metric of the rows at the given positions (outputs and targets bound in).
        min_rows: fewer rows: no score (``reason`` says so).
        in_order: keep the values in the order they first appear (held-out months and parts)
            instead of sorting them.

    Raises:
        KeyError: a slice that is not a column (the plan checks names before training).
    """
    out: list[SliceScore] = []
    for name in names:
        labels = slice_labels(raw, name, target).to_numpy()
        values = list(dict.fromkeys(labels.tolist()))
        for value in values if in_order else sorted(values):
            rows = np.flatnonzero(labels == value)
            if len(rows) < min_rows:
                out.append(SliceScore(name, value, len(rows), None, f"fewer than {min_rows} rows"))
                continue
            try:
                out.append(SliceScore(name, value, len(rows), score(rows)))
            except ValueError as err:
                out.append(SliceScore(name, value, len(rows), None, str(err).split(";")[0]))
    return out


def later_groups(raw: pd.DataFrame, time: str | None) -> pd.Series:
    """The group of each held-out row: its month (``2013-09``) when rows have a time column,
    else the held-out part it came from (column ``part``)."""
    if time is not None and time in raw.columns:
        return raw[time].dt.strftime("%Y-%m")
    return raw["part"].astype(str)
