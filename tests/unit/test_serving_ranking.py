"""``POST /rank``'s order: defined for every score, NaN and infinities included."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from lossflow.serving.predictor import Prediction
from lossflow.serving.ranking import ranked, ranked_outputs

NAN = math.nan


def _ranked(*scores: float | None) -> dict[str, list[object]]:
    return ranked([Prediction(value=s) for s in scores])


def test_highest_score_first_and_ties_keep_the_request_order() -> None:
    assert _ranked(0.2, 0.9, 0.2, 0.5) == {"scores": [0.2, 0.9, 0.2, 0.5], "order": [1, 3, 0, 2]}


@pytest.mark.parametrize(
    ("scores", "order"),
    [
        ((NAN, 0.2, 0.9), [2, 1, 0]),  # NaN first in the request: sorted by -NaN it stayed first
        ((0.2, NAN, 0.9, NAN, 0.5), [2, 4, 0, 1, 3]),
        ((NAN, NAN), [0, 1]),
        ((math.inf, 1.0, -math.inf), [1, 0, 2]),  # not finite: no score, ranked last
        ((None, 3.0), [1, 0]),
    ],
)
def test_items_without_a_finite_score_come_last_in_request_order(
    scores: tuple[float | None, ...], order: list[int]
) -> None:
    answer = _ranked(*scores)
    assert answer["order"] == order
    assert answer["scores"] == [s if s is not None and math.isfinite(s) else None for s in scores]


def test_the_order_is_a_sorted_permutation_for_random_lists_with_nan() -> None:
    rng = random.Random(7)
    for _ in range(200):
        scores = [rng.choice([NAN, rng.random(), 0.5]) for _ in range(rng.randint(1, 12))]
        order = _ranked(*scores)["order"]
        assert sorted(order) == list(range(len(scores)))
        finite = [i for i in order if not math.isnan(scores[i])]
        missing = [i for i in order if math.isnan(scores[i])]
        assert order == finite + missing
        assert missing == sorted(missing)
        for a, b in itertools.pairwise(finite):
            assert scores[a] > scores[b] or (scores[a] == scores[b] and a < b)


def test_the_log_keeps_each_items_score_and_rank() -> None:
    outputs = ranked_outputs(_ranked(0.1, NAN, 0.7))
    assert outputs == [
        {"score": 0.1, "rank": 2},
        {"score": None, "rank": 3},
        {"score": 0.7, "rank": 1},
    ]
