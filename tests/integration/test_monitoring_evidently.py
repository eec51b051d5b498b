"""Drift verdicts on real flights data against Evidently 0.7 itself (the oracle), and the false
alarm rate of the dataset-drift verdict on windows from the training period.

Reference: January–June 2013 (the training period); "winter": November–December, which the
data's own weather moved (FACTS.md: normed Wasserstein of temp 0.52 in Nov–Dec); A/A: other
rows of January–June.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from lossflow.data.sources import FLIGHTS_CATEGORICAL, FLIGHTS_NUMERIC, load_flights
from lossflow.monitoring.distributions import CategoricalSummary, NumericSummary, Summary
from lossflow.monitoring.drift import (
    DriftMethods,
    chisquare_test,
    drift_report,
    jensenshannon,
    ks_test,
    wasserstein_normed,
)

pytestmark = pytest.mark.slow
NUMERIC = list(FLIGHTS_NUMERIC)
CATEGORICAL = list(FLIGHTS_CATEGORICAL)


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return load_flights("binary")


def _period(frame: pd.DataFrame, months: list[int]) -> pd.DataFrame:
    return frame[frame["scheduled_departure"].dt.month.isin(months)].reset_index(drop=True)


def _summaries(frame: pd.DataFrame) -> dict[str, Summary]:
    out: dict[str, Summary] = {n: NumericSummary.of(frame[n].to_numpy(np.float64)) for n in NUMERIC}
    for name in CATEGORICAL:
        out[name] = CategoricalSummary.of(
            None if pd.isna(v) else str(v) for v in frame[name].tolist()
        )
    return out


def _evidently(reference: pd.DataFrame, current: pd.DataFrame) -> dict[tuple[str, str], float]:
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    metrics = [ValueDrift(column=c, method=m, threshold=t) for c in NUMERIC for m, t in
               (("wasserstein", 0.1), ("ks", 0.05))]  # fmt: skip
    metrics += [ValueDrift(column=c, method=m, threshold=t) for c in CATEGORICAL for m, t in
                (("jensenshannon", 0.1), ("chisquare", 0.05))]  # fmt: skip
    definition = DataDefinition(numerical_columns=NUMERIC, categorical_columns=CATEGORICAL)
    columns = [*NUMERIC, *CATEGORICAL]
    snapshot = Report(metrics).run(
        Dataset.from_pandas(current[columns], data_definition=definition),
        Dataset.from_pandas(reference[columns], data_definition=definition),
    )
    results: dict[tuple[str, str], float] = {}
    for metric in snapshot.dict()["metrics"]:
        config: dict[str, Any] = metric["config"]
        results[(config["column"], config["method"])] = float(metric["value"])
    return results


@pytest.mark.parametrize("case", ["winter", "same period"])
def test_every_column_statistic_and_verdict_equals_evidentlys(
    flights: pd.DataFrame, case: str
) -> None:
    train = _period(flights, [1, 2, 3, 4, 5, 6])
    reference = train.sample(n=20_000, random_state=0)
    if case == "winter":
        current = _period(flights, [11, 12]).sample(n=8_000, random_state=1)
    else:
        current = train.drop(reference.index).sample(n=8_000, random_state=1)
    ref, cur = _summaries(reference), _summaries(current)
    oracle = _evidently(reference, current)
    for name in NUMERIC:
        effect = wasserstein_normed(ref[name], cur[name])  # type: ignore[arg-type]
        p = ks_test(ref[name], cur[name])[1]  # type: ignore[arg-type]
        assert effect == pytest.approx(oracle[(name, "wasserstein")], rel=1e-9), name
        assert p == pytest.approx(oracle[(name, "ks")], rel=1e-6, abs=1e-300), name
        assert (effect >= 0.1) == (oracle[(name, "wasserstein")] >= 0.1), name
        assert (p <= 0.05) == (oracle[(name, "ks")] <= 0.05), name
    for name in CATEGORICAL:
        effect = jensenshannon(ref[name], cur[name])  # type: ignore[arg-type]
        p = chisquare_test(ref[name], cur[name])  # type: ignore[arg-type]
        assert effect == pytest.approx(oracle[(name, "jensenshannon")], rel=1e-9), name
        assert p == pytest.approx(oracle[(name, "chisquare")], rel=1e-6, abs=1e-300), name
    report = drift_report(ref, cur, DriftMethods())
    weather = {"temp", "dewp", "pressure"}
    if case == "winter":
        assert weather <= set(report.drifted), report.drifted
    else:
        assert report.drifted == [], report.drifted


def test_the_dataset_drift_false_alarm_rate_on_training_period_windows(
    flights: pd.DataFrame,
) -> None:
    # 250 windows of 2,000 rows resampled from January–June against a profile of January–June:
    # the dataset-drift verdict fires in at most 5% of them (it fires in none, in practice).
    train = _period(flights, [1, 2, 3, 4, 5, 6])
    ref = _summaries(train.sample(n=50_000, random_state=0))
    rng = np.random.default_rng(0)
    methods = DriftMethods()
    alarms = drifted_columns = 0
    windows = 250
    for _ in range(windows):
        rows = rng.choice(len(train), size=2000, replace=True)
        report = drift_report(ref, _summaries(train.iloc[rows]), methods)
        alarms += report.dataset_drift
        drifted_columns += len(report.drifted)
    assert alarms / windows <= 0.05
    assert drifted_columns / (windows * len(ref)) <= 0.05
