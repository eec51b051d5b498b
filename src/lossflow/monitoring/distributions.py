"""Summaries of one column's values that drift tests can be computed from, without the rows.

A reference profile keeps one summary per feature (and for the model's scores); a monitoring
window builds the same summary from the prediction log, chunk by chunk. The tests of
:mod:`lossflow.monitoring.drift` then compare two summaries.

- :class:`NumericSummary`: the distinct values and how often each occurs (``exact``), or, for a
  column with more than ``max_distinct`` distinct values, ``sketch_points`` weighted quantiles
  (an approximation of the empirical distribution function within ``1 / sketch_points``), plus
  the number of missing values. Exact summaries give exactly the statistics the raw values give.
- :class:`CategoricalSummary`: the count of each category, plus the number of missing values.

Example:
    >>> s = NumericSummary.of(np.array([1.0, 2.0, 2.0, np.nan]))
    >>> s.values.tolist(), s.counts.tolist(), s.missing, s.exact
    ([1.0, 2.0], [1.0, 2.0], 1, True)
    >>> s.merge(NumericSummary.of(np.array([2.0, 5.0]))).counts.tolist()
    [1.0, 3.0, 1.0]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float64]

MAX_DISTINCT = 20_000
SKETCH_POINTS = 4_001


def _weighted_quantiles(values: FloatArray, counts: FloatArray, points: int) -> FloatArray:
    """``points`` quantiles (at the midpoints of ``points`` equal-mass slices) of a weighted
    sample sorted by value."""
    cumulative = np.cumsum(counts)
    total = cumulative[-1]
    levels = (np.arange(points) + 0.5) / points * total
    points_at: FloatArray = values[np.searchsorted(cumulative, levels, side="left")]
    return points_at


@dataclass(frozen=True, eq=False)
class NumericSummary:
    """The distribution of a numeric column: sorted distinct values with their counts.

    Attributes:
        values: sorted distinct values present (no NaN).
        counts: how many rows hold each value (weights of quantile points in a sketch).
        missing: rows where the value is missing.
        exact: ``values``/``counts`` are the column's own values and counts (else a sketch).
    """

    values: FloatArray
    counts: FloatArray
    missing: int = 0
    exact: bool = True
    max_distinct: int = field(default=MAX_DISTINCT, compare=False)
    sketch_points: int = field(default=SKETCH_POINTS, compare=False)

    def __post_init__(self) -> None:
        if self.values.shape != self.counts.shape or self.values.ndim != 1:
            raise ValueError("values and counts must be 1-D arrays of the same length")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NumericSummary):
            return NotImplemented
        return (
            np.array_equal(self.values, other.values)
            and np.array_equal(self.counts, other.counts)
            and (self.missing, self.exact) == (other.missing, other.exact)
        )

    __hash__ = None  # type: ignore[assignment]

    @classmethod
    def of(
        cls,
        column: npt.ArrayLike,
        max_distinct: int = MAX_DISTINCT,
        sketch_points: int = SKETCH_POINTS,
    ) -> NumericSummary:
        """The summary of raw values (NaN counts as missing).

        Raises:
            ValueError: a value is infinite.
        """
        array = np.asarray(column, dtype=np.float64).ravel()
        present = array[~np.isnan(array)]
        if np.isinf(present).any():
            raise ValueError("a numeric column holds +/-inf; summaries need finite values")
        values, counts = np.unique(present, return_counts=True)
        return cls._bounded(
            values,
            counts.astype(np.float64),
            int(array.size - present.size),
            True,
            max_distinct,
            sketch_points,
        )

    @classmethod
    def _bounded(
        cls,
        values: FloatArray,
        counts: FloatArray,
        missing: int,
        exact: bool,
        max_distinct: int,
        sketch_points: int,
    ) -> NumericSummary:
        if values.size > max_distinct:
            total = float(counts.sum())
            points = _weighted_quantiles(values, counts, sketch_points)
            values, index = np.unique(points, return_inverse=True)
            counts = np.bincount(index).astype(np.float64) * (total / sketch_points)
            exact = False
        return cls(values, counts, missing, exact, max_distinct, sketch_points)

    @property
    def present(self) -> float:
        """Rows with a value (a count; fractional only never: sketches keep the total)."""
        return float(self.counts.sum())

    @property
    def rows(self) -> float:
        """Rows summarised, missing ones included."""
        return self.present + self.missing

    def merge(self, other: NumericSummary) -> NumericSummary:
        """The summary of both columns' rows together."""
        values = np.concatenate([self.values, other.values])
        weights = np.concatenate([self.counts, other.counts])
        merged, index = np.unique(values, return_inverse=True)
        counts = np.bincount(index, weights=weights).astype(np.float64)
        return NumericSummary._bounded(
            merged,
            counts,
            self.missing + other.missing,
            self.exact and other.exact,
            self.max_distinct,
            self.sketch_points,
        )

    def mean_std(self) -> tuple[float, float]:
        """Mean and population standard deviation (``ddof=0``) of the present values."""
        if self.values.size == 0:
            return float("nan"), float("nan")
        mean = float(np.average(self.values, weights=self.counts))
        var = float(np.average((self.values - mean) ** 2, weights=self.counts))
        return mean, var**0.5

    def raw(self) -> FloatArray:
        """The values as rows (exact summaries: the column itself, sorted; no missing)."""
        return np.repeat(self.values, np.round(self.counts).astype(np.int64))

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "kind": "numeric",
            "values": self.values.tolist(),
            "counts": self.counts.tolist(),
            "missing": self.missing,
            "exact": self.exact,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> NumericSummary:
        """Inverse of :meth:`to_json`."""
        return cls(
            np.asarray(data["values"], dtype=np.float64),
            np.asarray(data["counts"], dtype=np.float64),
            int(data["missing"]),
            bool(data["exact"]),
        )


@dataclass(frozen=True)
class CategoricalSummary:
    """The distribution of a categorical column.

    Attributes:
        counts: rows per category (missing excluded).
        missing: rows where the value is missing.
    """

    counts: dict[str, int]
    missing: int = 0

    @classmethod
    def of(cls, column: Iterable[str | None]) -> CategoricalSummary:
        """The summary of raw values (``None`` counts as missing)."""
        counter = Counter(column)
        missing = counter.pop(None, 0)
        return cls({str(k): int(v) for k, v in counter.items()}, int(missing))

    @property
    def present(self) -> int:
        """Rows with a value."""
        return sum(self.counts.values())

    @property
    def rows(self) -> int:
        """Rows summarised, missing ones included."""
        return self.present + self.missing

    def merge(self, other: CategoricalSummary) -> CategoricalSummary:
        """The summary of both columns' rows together."""
        counts = Counter(self.counts)
        counts.update(other.counts)
        return CategoricalSummary(dict(counts), self.missing + other.missing)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {"kind": "categorical", "counts": dict(self.counts), "missing": self.missing}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CategoricalSummary:
        """Inverse of :meth:`to_json`."""
        return cls({str(k): int(v) for k, v in data["counts"].items()}, int(data["missing"]))


Summary = NumericSummary | CategoricalSummary


def merge(left: Summary, right: Summary) -> Summary:
    """Two summaries of the same column, merged.

    Raises:
        TypeError: one is numeric and the other categorical.
    """
    if isinstance(left, NumericSummary) and isinstance(right, NumericSummary):
        return left.merge(right)
    if isinstance(left, CategoricalSummary) and isinstance(right, CategoricalSummary):
        return left.merge(right)
    raise TypeError("cannot merge a numeric and a categorical summary")


def summary_from_json(data: Mapping[str, Any]) -> Summary:
    """A summary written by ``to_json``."""
    if data.get("kind") == "categorical":
        return CategoricalSummary.from_json(data)
    return NumericSummary.from_json(data)
