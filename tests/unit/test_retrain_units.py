"""The retraining's pure parts: the request, the post-hoc prior correction's arithmetic and
the pre-screen's choice."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lossflow.retrain.posthoc import PosthocError, adjusted_probabilities, prior_shift
from lossflow.retrain.prescreen import Screened, choose
from lossflow.retrain.request import RetrainRequest, RetrainRequestError
from lossflow.stats.paired import PairedTTest

PAYLOAD = {
    "model_name": "lossflow-flights",
    "model_version": "3",
    "reasons": ["prior_shift"],
    "candidate_losses": [{"name": "logit_adjusted", "tau": 1.0}],
    "window": ["2013-09-01T00:00:00+00:00", "2013-10-01T00:00:00+00:00"],
    "dedup_key": "abc",
    "prior": {"classes": ["0", "1"], "reference": [0.75, 0.25], "basis": "labels",
              "observed": [0.87, 0.13], "estimated": [0.8, 0.2]},
}  # fmt: skip


def test_a_request_reads_the_monitoring_event_payload() -> None:
    r = RetrainRequest.from_payload(PAYLOAD)
    assert (r.model_name, r.model_version, r.dedup_key) == ("lossflow-flights", "3", "abc")
    assert r.window_start.isoformat() == "2013-09-01T00:00:00+00:00"
    assert r.prior == {"classes": ["0", "1"], "reference": [0.75, 0.25], "new": [0.87, 0.13]}
    assert r.pure_prior_shift
    estimated = RetrainRequest.from_payload(
        {**PAYLOAD, "prior": {**PAYLOAD["prior"], "basis": "predictions"},  # type: ignore[dict-item]
         "reasons": ["prior_shift", "dataset_drift"]}
    )  # fmt: skip
    assert estimated.prior is not None
    assert estimated.prior["new"] == [0.8, 0.2]
    assert not estimated.pure_prior_shift


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"dedup_key": None}, "lacks dedup_key"),
        ({"window": ["soon", "later"]}, "two ISO times"),
        ({"window": ["2013-10-01", "2013-09-01"]}, "is empty"),
    ],
)
def test_a_malformed_request_is_one_clear_error(change: dict[str, object], message: str) -> None:
    with pytest.raises(RetrainRequestError, match=message):
        RetrainRequest.from_payload({**PAYLOAD, **change})


def test_the_prior_correction_is_bayes_rule() -> None:
    # Binary: the logit moves by log-odds(new) - log-odds(reference).
    [shift] = prior_shift([0.75, 0.25], [0.5, 0.5], "binary")
    assert shift == pytest.approx(math.log(3.0), rel=1e-6)
    p = np.array([0.1, 0.25, 0.9])
    adjusted = adjusted_probabilities(p, [0.75, 0.25], [0.5, 0.5])
    odds = p / (1 - p) * 3.0
    assert adjusted == pytest.approx(odds / (1 + odds))
    # Multiclass: reweight by new / reference and renormalise.
    q = np.array([[0.2, 0.3, 0.5]])
    out = adjusted_probabilities(q, [0.5, 0.25, 0.25], [0.25, 0.25, 0.5])
    expected = q * np.array([0.5, 1.0, 2.0])
    assert out == pytest.approx(expected / expected.sum())
    with pytest.raises(PosthocError, match="prior 0"):
        prior_shift([1.0, 0.0], [0.5, 0.5], "binary")


def _screened(name: str, mean: float, low: float, high: float) -> Screened:
    verdict = (
        "better" if high < 0 else "worse" if low > 0 else "not_worse" if mean < 0 else "no_gain"
    )
    return Screened(
        name, name, 0.5, 0.5 + mean, PairedTTest(mean, low, high, 0.1, 500, 0.95), verdict
    )  # type: ignore[arg-type]


def test_the_best_not_worse_candidate_is_chosen_and_nothing_when_none_gains() -> None:
    screened = [
        _screened("a", -0.01, -0.03, 0.01),  # not worse, better on average
        _screened("b", -0.02, -0.04, -0.001),  # significantly better
        _screened("c", 0.05, 0.02, 0.08),  # worse
    ]
    chosen, why = choose(screened, "not_worse")
    assert chosen is not None
    assert chosen.name == "b"
    assert "b is better" in why
    only_a, _ = choose([screened[0], screened[2]], "not_worse")
    assert only_a is not None
    assert only_a.name == "a"
    none, why = choose([screened[0], screened[2]], "better")
    assert none is None
    assert "no candidate is significantly better" in why
    flat, why = choose([_screened("d", 0.001, -0.01, 0.012)], "not_worse")
    assert flat is None
    assert "d no_gain" in why
