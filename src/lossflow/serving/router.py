"""Sticky A/B assignment of units (users, sessions, devices) to model variants.

A unit's bucket is a 64-bit hash of ``"<experiment>:<unit_id>"`` mapped to ``[0, 1)``; variants own
consecutive slices of that interval in proportion to their weights. So the same unit always gets
the same variant for a given experiment, in every process and on every machine (no Python hash
randomisation), a new experiment name reshuffles every unit, and changing weights moves only the
units whose bucket crosses a slice boundary.
"""

from __future__ import annotations

import bisect
import hashlib
import math
from collections.abc import Mapping
from dataclasses import dataclass

_SCALE = float(1 << 64)


class RoutingError(ValueError):
    """Invalid traffic weights or unit id; the message says which and why."""


def bucket(experiment: str, unit_id: str) -> float:
    """The unit's stable position in ``[0, 1)`` for an experiment."""
    digest = hashlib.blake2b(f"{experiment}:{unit_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / _SCALE


@dataclass(frozen=True)
class TrafficSplit:
    """Weights of the variants that answer traffic, under one experiment name.

    Args:
        experiment: names the assignment; a new name reshuffles all units.
        weights: variant name -> weight >= 0 (normalised; they need not sum to 1 or 100).
    """

    experiment: str
    weights: Mapping[str, float]

    def __post_init__(self) -> None:
        if not self.experiment:
            raise RoutingError("experiment must be a non-empty name")
        if not self.weights:
            raise RoutingError("traffic weights must name at least one variant")
        for name, weight in self.weights.items():
            if not name:
                raise RoutingError("variant names must be non-empty")
            if not (weight >= 0 and math.isfinite(weight)):
                raise RoutingError(f"weight of variant '{name}' must be a finite number >= 0")
        if sum(self.weights.values()) <= 0:
            raise RoutingError("at least one variant needs a positive weight")

    @property
    def shares(self) -> dict[str, float]:
        """Each variant's share of traffic (weights normalised to sum to 1)."""
        total = sum(self.weights.values())
        return {name: weight / total for name, weight in self.weights.items()}


class Router:
    """Assigns unit ids to variants by a :class:`TrafficSplit`.

    Example:
        >>> router = Router(TrafficSplit("loss-ab-1", {"champion": 50, "challenger": 50}))
        >>> router.assign("user-42") == router.assign("user-42")
        True
    """

    def __init__(self, split: TrafficSplit) -> None:
        self.split = split
        names = [n for n, w in split.weights.items() if w > 0]
        shares = split.shares
        edges, acc = [], 0.0
        for name in names:
            acc += shares[name]
            edges.append(acc)
        edges[-1] = 1.0  # absorb rounding: every bucket in [0, 1) lands in a slice
        self._names = names
        self._edges = edges

    def assign(self, unit_id: str) -> str:
        """The variant serving ``unit_id``."""
        if not isinstance(unit_id, str) or not unit_id:
            raise RoutingError("unit_id must be a non-empty string")
        position = bucket(self.split.experiment, unit_id)
        return self._names[bisect.bisect_right(self._edges, position)]
