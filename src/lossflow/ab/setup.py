"""What an A/B test is testing: its arms (variants, their aliases and versions) and its window,
as resolved from the service's config, the registry and the log (:mod:`lossflow.usecases.ab`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from lossflow.errors import UserError

REGRESSION_METRICS = frozenset({"mse", "mae", "pinball"})


class AbSetupError(UserError):
    """The A/B test cannot be analysed as configured; the message says what to fix."""


@dataclass(frozen=True)
class Arm:
    """One variant under test.

    Attributes:
        variant: its name in the service and the log.
        source: how the service resolves it (``alias:champion``, ``version:3``, ``path:...``).
        alias: the registry alias serving it (``None``: served by version or file, so the
            analysis cannot promote it).
        model_version: the version it serves now (``None``: unresolvable, see ``problem``).
        loss_id: the loss it was trained with (from the log).
        requests: requests it answered in the window.
        first: when its current version first answered in the experiment.
        problem: why it cannot be tested.
    """

    variant: str
    source: str
    alias: str | None
    model_version: str | None
    loss_id: str = ""
    requests: int = 0
    first: datetime | None = None
    problem: str | None = None


@dataclass(frozen=True)
class Setup:
    """What is under test, and from when.

    Attributes:
        model_name: the registered model.
        experiment: the routing experiment (the log's ``experiment`` column).
        weights: the traffic weights of every routed variant.
        weights_from: where they were read (shared routing, serving config, default split).
        champion: the control arm.
        challengers: the arms challenging it.
        start: the test's first moment (see the module).
        end: now.
        start_reason: why it starts there.
        problems: what prevents the analysis (empty: it can run).
    """

    model_name: str
    experiment: str
    weights: dict[str, float]
    weights_from: str
    champion: Arm
    challengers: list[Arm]
    start: datetime
    end: datetime
    start_reason: str
    problems: list[str] = field(default_factory=list)

    @property
    def arms(self) -> list[Arm]:
        """Champion first, then the challengers."""
        return [self.champion, *self.challengers]

    def versions(self) -> dict[str, str]:
        """variant -> model version, of the arms that resolved."""
        return {a.variant: a.model_version for a in self.arms if a.model_version is not None}

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "model_name": self.model_name,
            "experiment": self.experiment,
            "weights": self.weights,
            "weights_from": self.weights_from,
            "arms": [
                {**a.__dict__, "first": None if a.first is None else a.first.isoformat()}
                for a in self.arms
            ],
            "start": self.start.isoformat(),
            "end": self.end.isoformat(),
            "start_reason": self.start_reason,
            "problems": self.problems,
        }
