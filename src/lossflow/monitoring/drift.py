"""Drift between a reference and a window, per column and over the dataset, with pinned methods.

Each column is judged by an **effect** and a **test**, both named in config (never chosen by
sample size): for numeric columns the effect is the Wasserstein distance normed by the
reference's standard deviation (``wasserstein``) or the population stability index (``psi``),
and the test is the two-sample Kolmogorov–Smirnov test (``ks``); for categorical columns the
effect is the Jensen–Shannon distance (``jensenshannon``, natural log) or ``psi``, and the test
is Pearson's chi-squared test of the window's counts against the reference proportions
(``chisquare``). A column **drifts** only when its effect reaches its threshold *and* its test
is significant after Benjamini–Hochberg across the columns at ``alpha``: with a million rows
every test is significant, so significance alone means nothing, and with a hundred rows a large
effect can be noise.

Each statistic is computed as Evidently 0.7 computes it (``ValueDrift`` with the same method and
threshold), from summaries instead of rows: exact summaries give Evidently's numbers (a test
checks it on flights data), sketches of columns with very many distinct values approximate the
distribution function within ``1 / sketch_points``. The Evidently report itself
(:func:`evidently_report`) is the human-readable view; it is run on bounded samples.

The dataset drifts when the share of drifted features reaches ``dataset_share``. Prediction
drift is the same numeric judgement applied to the model's scores.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import stats
from scipy.spatial import distance

from lossflow.monitoring.distributions import CategoricalSummary, NumericSummary, Summary
from lossflow.stats.multiple import benjamini_hochberg

NumericEffect = Literal["wasserstein", "psi"]
CategoricalEffect = Literal["jensenshannon", "psi"]
# scipy's ks_2samp computes exact p-values up to this many rows per side, asymptotic beyond.
KS_EXACT_MAX_ROWS = 10_000
_STD_FLOOR = 0.001  # Evidently's floor of the reference standard deviation
_PSI_KEYS_MAX = 20  # Evidently bins a numeric column by value when it has at most this many


# --- statistics ------------------------------------------------------------------------------


def wasserstein_normed(reference: NumericSummary, current: NumericSummary) -> float:
    """First Wasserstein distance divided by the reference's standard deviation (floor 0.001)."""
    raw = stats.wasserstein_distance(
        reference.values, current.values, reference.counts, current.counts
    )
    return float(raw) / max(reference.mean_std()[1], _STD_FLOOR)


def ks_test(reference: NumericSummary, current: NumericSummary) -> tuple[float, float]:
    """Two-sample Kolmogorov–Smirnov statistic and two-sided p-value, as ``scipy.stats.ks_2samp``
    with ``method="auto"``: exact when both sides have at most 10,000 rows, else Smirnov's
    asymptotic distribution ``kstwo`` at ``round(n1 n2 / (n1 + n2))``."""
    n1, n2 = reference.present, current.present
    if max(n1, n2) <= KS_EXACT_MAX_ROWS and reference.exact and current.exact:
        result = stats.ks_2samp(reference.raw(), current.raw())
        return float(result.statistic), float(result.pvalue)
    support = np.union1d(reference.values, current.values)
    cdf_ref = _cdf(reference, support)
    cdf_cur = _cdf(current, support)
    d = float(np.max(np.abs(cdf_ref - cdf_cur)))
    en = np.round(n1 * n2 / (n1 + n2))
    return d, float(np.clip(stats.kstwo.sf(d, en), 0.0, 1.0))


def _cdf(summary: NumericSummary, at: np.ndarray) -> np.ndarray:
    cumulative = np.cumsum(summary.counts) / summary.present
    index = np.searchsorted(summary.values, at, side="right") - 1
    return np.where(index >= 0, cumulative[np.clip(index, 0, None)], 0.0)


def _fill_zeroes(percents: np.ndarray) -> np.ndarray:
    """Evidently's replacement of empty bins before a PSI (``get_binned_data(feel_zeroes)``)."""
    nonzero = percents[percents != 0]
    smallest = float(nonzero.min()) if nonzero.size else 0.0
    fill = smallest / 10**6 if smallest <= 0.0001 else 0.0001
    return np.where(percents == 0, fill, percents)


def _numeric_bins(reference: NumericSummary, current: NumericSummary) -> tuple[np.ndarray, ...]:
    """Reference and current shares per bin, binned as Evidently's ``get_binned_data``: by value
    for at most 20 distinct reference values, else Sturges bins over both columns."""
    if reference.values.size <= _PSI_KEYS_MAX:
        keys = np.union1d(reference.values, current.values)
        ref = _shares_at(reference, keys)
        cur = _shares_at(current, keys)
        return ref, cur
    n = reference.present + current.present
    low = min(reference.values[0], current.values[0])
    high = max(reference.values[-1], current.values[-1])
    edges = np.histogram_bin_edges([low, high], bins=int(math.ceil(math.log2(n)) + 1))
    ref = np.histogram(reference.values, edges, weights=reference.counts)[0] / reference.present
    cur = np.histogram(current.values, edges, weights=current.counts)[0] / current.present
    return ref, cur


def _shares_at(summary: NumericSummary, keys: np.ndarray) -> np.ndarray:
    shares = np.zeros(keys.size)
    shares[np.searchsorted(keys, summary.values)] = summary.counts / summary.present
    return shares


def psi(reference: Summary, current: Summary) -> float:
    """Population stability index ``Σ (r - c) ln(r / c)`` over Evidently's bins."""
    if isinstance(reference, NumericSummary) and isinstance(current, NumericSummary):
        ref, cur = _numeric_bins(reference, current)
    elif isinstance(reference, CategoricalSummary) and isinstance(current, CategoricalSummary):
        ref, cur = _category_shares(reference, current)
    else:
        raise TypeError("psi compares two numeric or two categorical summaries")
    ref, cur = _fill_zeroes(ref), _fill_zeroes(cur)
    return float(np.sum((ref - cur) * np.log(ref / cur)))


def _category_shares(
    reference: CategoricalSummary, current: CategoricalSummary
) -> tuple[np.ndarray, np.ndarray]:
    keys = sorted(set(reference.counts) | set(current.counts))
    ref = np.array([reference.counts.get(k, 0) for k in keys], dtype=np.float64)
    cur = np.array([current.counts.get(k, 0) for k in keys], dtype=np.float64)
    return ref / max(reference.present, 1), cur / max(current.present, 1)


def jensenshannon(reference: CategoricalSummary, current: CategoricalSummary) -> float:
    """Jensen–Shannon distance (natural log) between the category shares."""
    ref, cur = _category_shares(reference, current)
    return float(distance.jensenshannon(ref, cur))


def chisquare_test(reference: CategoricalSummary, current: CategoricalSummary) -> float:
    """p-value of Pearson's chi-squared test of the window's counts against the reference
    proportions (a category the reference never saw makes it 0)."""
    keys = sorted(set(reference.counts) | set(current.counts))
    scale = current.present / max(reference.present, 1)
    expected = np.array([reference.counts.get(k, 0) * scale for k in keys], dtype=np.float64)
    observed = np.array([current.counts.get(k, 0) for k in keys], dtype=np.float64)
    if len(keys) < 2:
        return 1.0
    if (expected == 0).any():
        return 0.0 if observed[expected == 0].sum() > 0 else 1.0
    return float(stats.chisquare(observed, expected).pvalue)


# --- verdicts --------------------------------------------------------------------------------


@dataclass(frozen=True)
class DriftMethods:
    """The pinned methods and thresholds of a drift report (from the monitoring config)."""

    numeric_effect: NumericEffect = "wasserstein"
    numeric_threshold: float = 0.1
    categorical_effect: CategoricalEffect = "jensenshannon"
    categorical_threshold: float = 0.1
    alpha: float = 0.05
    dataset_share: float = 0.5


@dataclass(frozen=True)
class ColumnDrift:
    """One column's drift.

    Attributes:
        column: the feature (or ``prediction``).
        kind: ``numeric`` or ``categorical``.
        effect_method: ``wasserstein``, ``psi`` or ``jensenshannon``.
        effect: the effect size; drift needs ``effect >= threshold``.
        threshold: the effect threshold.
        test_method: ``ks`` or ``chisquare``.
        p_value: the test's p-value.
        p_adjusted: Benjamini–Hochberg adjusted across the report's columns.
        drifted: effect at or above threshold and ``p_adjusted <= alpha``.
        reference_rows: rows with a value in the reference.
        current_rows: rows with a value in the window.
        missing_share: share of the window's rows without a value.
        reference_missing_share: the same in the reference.
        exact: both summaries are exact (else a sketch approximates the statistics).
    """

    column: str
    kind: str
    effect_method: str
    effect: float
    threshold: float
    test_method: str
    p_value: float
    p_adjusted: float
    drifted: bool
    reference_rows: float
    current_rows: float
    missing_share: float
    reference_missing_share: float
    exact: bool

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return dict(self.__dict__)


def _column(
    name: str, reference: Summary, current: Summary, methods: DriftMethods
) -> tuple[str, str, float, float, str, float]:
    if isinstance(reference, NumericSummary) and isinstance(current, NumericSummary):
        effect = (
            wasserstein_normed(reference, current)
            if methods.numeric_effect == "wasserstein"
            else psi(reference, current)
        )
        return (
            "numeric",
            methods.numeric_effect,
            effect,
            methods.numeric_threshold,
            "ks",
            ks_test(reference, current)[1],
        )
    if isinstance(reference, CategoricalSummary) and isinstance(current, CategoricalSummary):
        effect = (
            jensenshannon(reference, current)
            if methods.categorical_effect == "jensenshannon"
            else psi(reference, current)
        )
        return (
            "categorical",
            methods.categorical_effect,
            effect,
            methods.categorical_threshold,
            "chisquare",
            chisquare_test(reference, current),
        )
    raise TypeError(f"column {name!r}: the reference and the window summarise different kinds")


@dataclass(frozen=True)
class DriftReport:
    """Drift of every column of a window against its reference.

    Attributes:
        columns: one verdict per compared column (columns with no value on either side are
            listed in ``skipped``).
        skipped: columns that could not be compared, with why.
        drifted_share: share of compared columns that drift.
        dataset_drift: ``drifted_share >= dataset_share``.
        methods: what was used.
    """

    columns: tuple[ColumnDrift, ...]
    skipped: dict[str, str]
    drifted_share: float
    dataset_drift: bool
    methods: DriftMethods

    @property
    def drifted(self) -> list[str]:
        """The drifted columns, most drifted (largest effect over threshold) first."""
        hits = [c for c in self.columns if c.drifted]
        return [c.column for c in sorted(hits, key=lambda c: -c.effect / c.threshold)]

    def column(self, name: str) -> ColumnDrift:
        """The verdict of one column.

        Raises:
            KeyError: the column was not compared.
        """
        for c in self.columns:
            if c.column == name:
                return c
        raise KeyError(name)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "columns": [c.to_json() for c in self.columns],
            "skipped": dict(self.skipped),
            "drifted_share": self.drifted_share,
            "dataset_drift": self.dataset_drift,
            "drifted": self.drifted,
            "methods": dict(self.methods.__dict__),
        }


def drift_report(
    reference: Mapping[str, Summary],
    current: Mapping[str, Summary],
    methods: DriftMethods,
    columns: Sequence[str] | None = None,
) -> DriftReport:
    """Judge every column of ``columns`` (default: the reference's) in ``current``.

    Raises:
        KeyError: a column is missing from the window's summaries.
    """
    names = list(columns if columns is not None else reference)
    rows: list[tuple[str, tuple[str, str, float, float, str, float]]] = []
    skipped: dict[str, str] = {}
    for name in names:
        ref, cur = reference[name], current[name]
        if ref.present == 0 or cur.present == 0:
            side = "reference" if ref.present == 0 else "window"
            skipped[name] = f"no value in the {side}"
            continue
        rows.append((name, _column(name, ref, cur, methods)))
    adjusted = (
        benjamini_hochberg([r[1][5] for r in rows], methods.alpha)[1] if rows else np.zeros(0)
    )
    verdicts = []
    for (name, (kind, effect_method, effect, threshold, test, p)), p_adj in zip(
        rows, adjusted, strict=True
    ):
        ref, cur = reference[name], current[name]
        verdicts.append(
            ColumnDrift(
                column=name,
                kind=kind,
                effect_method=effect_method,
                effect=effect,
                threshold=threshold,
                test_method=test,
                p_value=p,
                p_adjusted=float(p_adj),
                drifted=bool(effect >= threshold and p_adj <= methods.alpha),
                reference_rows=float(ref.present),
                current_rows=float(cur.present),
                missing_share=cur.missing / max(cur.rows, 1),
                reference_missing_share=ref.missing / max(ref.rows, 1),
                exact=bool(getattr(ref, "exact", True) and getattr(cur, "exact", True)),
            )
        )
    share = sum(v.drifted for v in verdicts) / len(verdicts) if verdicts else 0.0
    return DriftReport(
        columns=tuple(verdicts),
        skipped=skipped,
        drifted_share=share,
        dataset_drift=bool(verdicts) and share >= methods.dataset_share,
        methods=methods,
    )


# --- the Evidently view ----------------------------------------------------------------------


def evidently_report(
    reference: Any,
    current: Any,
    methods: DriftMethods,
    numeric: Sequence[str],
    categorical: Sequence[str],
    path: Path,
    *,
    target: str | None = None,
    prediction: str | None = None,
    task: str = "binary",
) -> Path:
    """Write Evidently 0.7's HTML report of two bounded samples (pandas frames) to ``path``:
    data drift with the pinned methods and, when ``target`` and ``prediction`` are columns of
    both frames, the classification (or regression) quality.

    Evidently is imported here only: it is the human-readable view, not the verdict.
    """
    from evidently import BinaryClassification, DataDefinition, Dataset, Regression, Report
    from evidently.presets import ClassificationPreset, DataDriftPreset, RegressionPreset

    metrics: list[Any] = [
        DataDriftPreset(
            columns=[*numeric, *categorical],
            num_method=methods.numeric_effect,
            num_threshold=methods.numeric_threshold,
            cat_method=methods.categorical_effect,
            cat_threshold=methods.categorical_threshold,
            drift_share=methods.dataset_share,
        )
    ]
    kwargs: dict[str, Any] = {}
    if target is not None and prediction is not None:
        if task == "regression":
            kwargs["regression"] = [Regression(target=target, prediction=prediction)]
            metrics.append(RegressionPreset())
        else:
            kwargs["classification"] = [
                BinaryClassification(target=target, prediction_probas=prediction)
            ]
            metrics.append(ClassificationPreset())
    definition = DataDefinition(
        numerical_columns=[*numeric, *([prediction] if prediction else [])],
        categorical_columns=[*categorical, *([target] if target and task != "regression" else [])],
        **kwargs,
    )
    with warnings.catch_warnings():
        # Evidently's quality metrics at its own 0.5 cut warn through scikit-learn when a
        # sample has no predicted positives; the report shows it, the terminal need not.
        warnings.simplefilter("ignore", category=UserWarning)
        warnings.simplefilter("ignore", category=RuntimeWarning)
        snapshot = Report(metrics).run(
            Dataset.from_pandas(current, data_definition=definition),
            Dataset.from_pandas(reference, data_definition=definition),
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    snapshot.save_html(str(path))
    return path
