"""Sticky, deterministic A/B assignment."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from lossflow.serving.router import Router, RoutingError, TrafficSplit

UNITS = [f"unit-{i}" for i in range(10_000)]


@pytest.mark.parametrize(
    "weights",
    [
        {"champion": 50, "challenger": 50},
        {"champion": 90, "challenger": 10},
        {"a": 1.0, "b": 2.0, "c": 1.0},
    ],
)
def test_split_over_10000_units_is_within_2_points_of_the_weights(
    weights: dict[str, float],
) -> None:
    split = TrafficSplit("exp-1", weights)
    counts = Counter(Router(split).assign(u) for u in UNITS)
    for name, share in split.shares.items():
        assert abs(counts[name] / len(UNITS) - share) <= 0.02, (name, counts)


def test_assignment_is_sticky_across_routers_and_processes() -> None:
    split = TrafficSplit("exp-1", {"champion": 50, "challenger": 50})
    first = [Router(split).assign(u) for u in UNITS[:200]]
    assert first == [Router(split).assign(u) for u in UNITS[:200]]
    code = (
        "from lossflow.serving.router import Router, TrafficSplit;"
        "r = Router(TrafficSplit('exp-1', {'champion': 50, 'challenger': 50}));"
        "print(','.join(r.assign(f'unit-{i}') for i in range(200)))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.strip().split(",") == first


def test_new_experiment_reshuffles_and_weight_changes_move_only_boundary_units() -> None:
    even = Router(TrafficSplit("exp-1", {"champion": 50, "challenger": 50}))
    other = Router(TrafficSplit("exp-2", {"champion": 50, "challenger": 50}))
    moved = sum(even.assign(u) != other.assign(u) for u in UNITS)
    assert 0.4 < moved / len(UNITS) < 0.6, "a new experiment name is an independent draw"
    more = Router(TrafficSplit("exp-1", {"champion": 60, "challenger": 40}))
    changes = {(even.assign(u), more.assign(u)) for u in UNITS if even.assign(u) != more.assign(u)}
    assert changes == {("challenger", "champion")}, "only units crossing the boundary move"


def test_zero_weight_variant_gets_no_traffic() -> None:
    router = Router(TrafficSplit("exp-1", {"champion": 100, "challenger": 0}))
    assert {router.assign(u) for u in UNITS[:2000]} == {"champion"}


def test_invalid_splits_and_unit_ids_are_rejected() -> None:
    with pytest.raises(RoutingError, match="at least one variant"):
        TrafficSplit("exp", {})
    with pytest.raises(RoutingError, match="weight of variant 'b'"):
        TrafficSplit("exp", {"a": 1, "b": -1})
    with pytest.raises(RoutingError, match="positive weight"):
        TrafficSplit("exp", {"a": 0, "b": 0})
    with pytest.raises(RoutingError, match="experiment"):
        TrafficSplit("", {"a": 1})
    router = Router(TrafficSplit("exp", {"a": 1}))
    with pytest.raises(RoutingError, match="unit_id"):
        router.assign("")
