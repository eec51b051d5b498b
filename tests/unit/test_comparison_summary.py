"""The verdict is a pure function of the evidence: a winner only when it beats every other arm
after Holm's correction; otherwise no detectable difference, with what the design could detect.
And convergence speed, scoring directions."""

from __future__ import annotations

import numpy as np
import pytest

from lossflow.comparison.scoring import Direction, epochs_to_fraction
from lossflow.comparison.summary import ArmSummary, PairTest, decide, pairwise_tests
from lossflow.stats.multiple import holm


def _arm(name: str, scores: list[float]) -> ArmSummary:
    return ArmSummary(name=name, loss=name, loss_id=None, error=None, scores=tuple(scores))


NOISE = [0.001, -0.002, 0.0015, -0.001, 0.0005, 0.002, -0.0015, 0.001, -0.0005, 0.0]


def _tests(arms: list[ArmSummary], better: Direction = "max") -> list[PairTest]:
    pairs = [(a, b) for i, a in enumerate(arms) for b in arms[i + 1 :]]
    return pairwise_tests(pairs, n_train=900, n_test=100, better=better, alpha=0.05, power=0.8)


def test_a_clear_winner_is_named() -> None:
    base = np.array(NOISE) + 0.70
    arms = [_arm("a", list(base + 0.05)), _arm("b", list(base)), _arm("c", list(base[::-1]))]
    tests = _tests(arms)
    verdict = decide(arms, tests, "roc_auc", 0.05, 0.8)
    assert verdict.winner == "a"
    assert "a is better on roc_auc than every other arm" in verdict.text
    adjusted = holm([t.test.p_value for t in tests])[1]
    assert [t.p_holm for t in tests] == pytest.approx(adjusted.tolist())


def test_lower_is_better_metrics_pick_the_lowest() -> None:
    base = np.array(NOISE) + 0.3
    arms = [_arm("cheap", list(base - 0.05)), _arm("dear", list(base))]
    verdict = decide(arms, _tests(arms, better="min"), "expected_cost", 0.05, 0.8)
    assert verdict.winner == "cheap"


def test_no_difference_states_the_smallest_detectable_one() -> None:
    base = np.array(NOISE) + 0.70
    arms = [_arm("a", list(base)), _arm("b", list(base[::-1]))]
    tests = _tests(arms)
    verdict = decide(arms, tests, "accuracy", 0.05, 0.8)
    assert verdict.winner is None
    assert verdict.text.startswith("no detectable difference at this data size")
    assert verdict.min_detectable_effect == pytest.approx(tests[0].min_detectable_effect)
    assert f"{verdict.min_detectable_effect:.3g}" in verdict.text


def test_significant_pairs_without_a_winner_are_listed() -> None:
    base = np.array(NOISE) + 0.70
    arms = [_arm("a", list(base + 0.05)), _arm("b", list(base[::-1] + 0.05)), _arm("c", list(base))]
    verdict = decide(arms, _tests(arms), "roc_auc", 0.05, 0.8)
    assert verdict.winner is None
    assert "a beats c" in verdict.text
    assert "b beats c" in verdict.text


def test_failed_arms_take_no_part() -> None:
    arms = [_arm("a", [0.7, 0.71]), ArmSummary("b", "b", None, "fold r0f0: diverged")]
    assert decide(arms, [], "roc_auc", 0.05, 0.8).text.startswith("no comparison")


def test_epochs_to_95_percent_of_the_best() -> None:
    assert epochs_to_fraction([0.5, 0.6, 0.67, 0.69, 0.70], "max") == 3  # 0.67 >= 0.665
    assert epochs_to_fraction([float("nan"), 0.70, 0.70], "max") == 2
    assert epochs_to_fraction([2.0, 1.2, 1.04, 1.0], "min") == 3
    assert epochs_to_fraction([float("nan")], "max") is None
