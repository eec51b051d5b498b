"""The retrain decision is a pure function: each rule from hand-made evidence."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import pytest

from lossflow.monitoring.decision import Evidence, PastRequest, Policy, decide, dedup_key
from lossflow.monitoring.distributions import NumericSummary
from lossflow.monitoring.drift import ColumnDrift, DriftMethods, DriftReport
from lossflow.monitoring.performance import Decay, MetricEstimate, PerformanceReport
from lossflow.monitoring.prior import PriorShift

NOW = datetime(2013, 11, 30, tzinfo=UTC)
POLICY = Policy(min_rows=100, cooldown_s=3600)


def _column(name: str, drifted: bool) -> ColumnDrift:
    return ColumnDrift(name, "numeric", "wasserstein", 0.5 if drifted else 0.01, 0.1, "ks",
                       1e-9, 1e-9, drifted, 1000, 1000, 0.0, 0.0, True)  # fmt: skip


def _drift(drifted: int, total: int = 4) -> DriftReport:
    columns = tuple(_column(f"f{i}", i < drifted) for i in range(total))
    share = drifted / total
    return DriftReport(columns, {}, share, share >= 0.5, DriftMethods())


def _prior(new: list[float], shifted: bool) -> PriorShift:
    return PriorShift(["0", "1"], [0.75, 0.25], "labels", new, 1000, 1e-6, None, None, None,
                      abs(new[1] - 0.25), shifted)  # fmt: skip


def _performance(decayed: bool = False) -> PerformanceReport:
    estimate = MetricEstimate("roc_auc", 0.60, 0.58, 0.62, 1000)
    decay = [Decay("roc_auc", 0.70, estimate, 0.08, True)] if decayed else []
    return PerformanceReport(1000, 1000, 1.0, {}, {"roc_auc": estimate}, None, {}, decay)


def _evidence(**changes: object) -> Evidence:
    base = Evidence("m", "3", {"name": "focal", "gamma": 2.0}, "binary", "a", "b", 1000,
                    drift=_drift(0), prior=_prior([0.75, 0.25], False),
                    performance=_performance())  # fmt: skip
    return dataclasses.replace(base, **changes)  # type: ignore[arg-type]


def test_nothing_wrong_is_no_action() -> None:
    decision = decide(_evidence(), POLICY, [], NOW)
    assert decision.status == "no_action"
    assert decision.candidate_losses == []


def test_covariate_shift_alone_retrains_the_current_loss_on_recent_data() -> None:
    decision = decide(_evidence(drift=_drift(3)), POLICY, [], NOW)
    assert decision.status == "retrain"
    assert [r.code for r in decision.reasons] == ["dataset_drift"]
    assert decision.candidate_losses == [{"name": "focal", "gamma": 2.0}]


def test_label_prior_shift_proposes_logit_adjustment_to_the_new_prior_and_class_balance() -> None:
    decision = decide(_evidence(prior=_prior([0.87, 0.13], True)), POLICY, [], NOW)
    assert decision.status == "retrain"
    names = [c["name"] for c in decision.candidate_losses]
    assert names[:2] == ["logit_adjusted", "class_balanced"]
    priors = decision.candidate_losses[0]["class_priors"]
    ratio = [0.75 / 0.87, 0.25 / 0.13]
    assert priors == pytest.approx([r / sum(ratio) for r in ratio], abs=1e-6)


def test_a_positive_class_falling_toward_rarity_adds_focal() -> None:
    decision = decide(_evidence(prior=_prior([0.94, 0.06], True)), POLICY, [], NOW)
    assert {"name": "focal", "gamma": 2.0, "alpha": 0.25} in decision.candidate_losses


def test_heavier_regression_tails_propose_huber_and_the_median_quantile() -> None:
    evidence = _evidence(task="regression", prior=None, residual_kurtosis=9.0,
                         reference_residual_kurtosis=3.0, loss_spec={"name": "mse"})  # fmt: skip
    decision = decide(evidence, POLICY, [], NOW)
    assert [r.code for r in decision.reasons] == ["heavy_tails"]
    assert decision.candidate_losses == [{"name": "huber"}, {"name": "quantile", "quantile": 0.5}]


def test_decay_alone_retrains() -> None:
    decision = decide(_evidence(performance=_performance(decayed=True)), POLICY, [], NOW)
    assert [r.code for r in decision.reasons] == ["decay:roc_auc"]
    assert decision.status == "retrain"


def test_too_few_rows_or_an_unjudgeable_window_never_retrain() -> None:
    few = decide(_evidence(rows=50, drift=_drift(4)), POLICY, [], NOW)
    assert few.status == "insufficient_data"
    assert "decision.min_rows" in few.reasons[0].message
    broken = decide(_evidence(problem="records do not fit", drift=_drift(4)), POLICY, [], NOW)
    assert broken.status == "insufficient_data"
    assert broken.candidate_losses == []


def test_the_same_causes_ask_once_and_a_cooldown_holds() -> None:
    evidence = _evidence(drift=_drift(3))
    first = decide(evidence, POLICY, [], NOW)
    assert first.dedup_key == dedup_key("m", "3", ["dataset_drift"])
    asked = [PastRequest(NOW - timedelta(minutes=10), str(first.dedup_key))]
    assert decide(evidence, POLICY, asked, NOW).status == "duplicate"
    other = decide(_evidence(prior=_prior([0.9, 0.1], True)), POLICY, asked, NOW)
    assert other.status == "cooldown"
    later = decide(
        _evidence(prior=_prior([0.9, 0.1], True)), POLICY, asked, NOW + timedelta(hours=2)
    )
    assert later.status == "retrain"
    new_version = decide(dataclasses.replace(evidence, model_version="4"), POLICY, asked,
                         NOW + timedelta(hours=2))  # fmt: skip
    assert new_version.status == "retrain", "a new version is judged afresh"


def test_summaries_round_trip_through_json() -> None:
    summary = NumericSummary.of([1.0, 2.0, 2.0, float("nan")])
    assert NumericSummary.from_json(summary.to_json()) == summary
