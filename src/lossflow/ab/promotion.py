"""What acting on an A/B decision moves in the registry's aliases (the lease and the calls that
act are :func:`lossflow.usecases.ab.act` and :func:`lossflow.usecases.ab.rollback`).

- **promote**: the champion's alias moves to the challenger's version, the old champion's
  version becomes ``previous``, the challenger's alias is removed;
- **reject**: the rejected challengers' aliases are removed;
- **rollback** (an operator's call): the champion's alias moves back to ``previous``, which is
  removed.

The running service follows the aliases (its registry watch), so it serves the new champion
alone at its next check. Every move happens under a lease in the prediction-log database (two
concurrent analyses cannot both act) and only when the aliases still point where they did when
the traffic was measured (compare-and-set): a second run on the same data finds no challenger
and does nothing. A dry run reports the same moves without making them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from lossflow.ab.decision import AbDecision
from lossflow.ab.setup import Setup
from lossflow.contract import PREVIOUS
from lossflow.tracking import WritableModelRegistry

ActionKind = Literal["promote", "reject", "rollback", "none"]


@dataclass(frozen=True)
class Move:
    """One alias change: ``alias`` from ``before`` to ``after`` (``None``: absent/removed)."""

    alias: str
    before: str | None
    after: str | None


@dataclass(frozen=True)
class Action:
    """What acting on a decision did (or, in a dry run, would do).

    Attributes:
        kind: ``promote``, ``reject``, ``rollback`` or ``none``.
        applied: the moves were made.
        dry_run: nothing was meant to change.
        message: what happened, for people.
        moves: the alias changes.
        touched: model version -> what happened to it (``promoted``, ``replaced``,
            ``rejected``, ``rolled_back``, ``restored``).
    """

    kind: ActionKind
    applied: bool
    dry_run: bool
    message: str
    moves: list[Move] = field(default_factory=list)
    touched: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "kind": self.kind,
            "applied": self.applied,
            "dry_run": self.dry_run,
            "message": self.message,
            "moves": [m.__dict__ for m in self.moves],
            "touched": self.touched,
        }


def planned(setup: Setup, decision: AbDecision) -> Action:
    """The moves ``decision`` calls for (not applied)."""
    arms = {a.variant: a for a in setup.arms}
    champion = setup.champion
    if decision.verdict == "promote" and decision.challenger is not None:
        winner = arms[decision.challenger]
        if champion.alias is None or winner.alias is None:
            return _by_config(champion.source if champion.alias is None else winner.source)
        moves = [
            Move(champion.alias, champion.model_version, winner.model_version),
            Move(PREVIOUS, None, champion.model_version),
            Move(winner.alias, winner.model_version, None),
        ]
        touched = {str(winner.model_version): "promoted", str(champion.model_version): "replaced"}
        return Action(
            "promote", False, False,
            f"{winner.variant} version {winner.model_version} becomes {champion.alias}; version "
            f"{champion.model_version} is kept as {PREVIOUS}; alias {winner.alias} is removed",
            moves, touched,
        )  # fmt: skip
    if decision.verdict == "reject":
        losers = [arms[c.challenger] for c in decision.comparisons if c.verdict == "reject"]
        fixed = [a for a in losers if a.alias is None]
        if fixed:
            return _by_config(fixed[0].source)
        moves = [Move(str(a.alias), a.model_version, None) for a in losers]
        return Action(
            "reject", False, False,
            "; ".join(f"alias {a.alias} (version {a.model_version}) is removed" for a in losers),
            moves, {str(a.model_version): "rejected" for a in losers},
        )  # fmt: skip
    return Action("none", False, False, f"nothing to do: {decision.verdict}")


def _by_config(source: str) -> Action:
    return Action(
        "none", False, False,
        f"a variant is served by {source}, not a registry alias: the analysis cannot move it; "
        "change configs/serving/ to act on the decision",
    )  # fmt: skip


def apply_moves(
    registry: WritableModelRegistry, model: str, moves: list[Move]
) -> tuple[list[Move], str | None]:
    """Make the moves if every alias of an arm is still where ``before`` says (``previous``
    is overwritten whatever it was); return the moves as made, or why none was."""
    current = registry.aliases(model)
    for move in moves:
        if move.alias != PREVIOUS and current.get(move.alias) != move.before:
            return moves, (
                f"alias {move.alias} points at {current.get(move.alias)} now, not "
                f"{move.before} as when the traffic was measured; nothing was moved, run the "
                "analysis again"
            )
    made = [Move(m.alias, current.get(m.alias), m.after) for m in moves]
    for move in made:
        if move.after is not None:
            registry.set_alias(model, move.alias, move.after)
    for move in made:
        if move.after is None and move.before is not None:
            registry.delete_alias(model, move.alias)
    return made, None
