"""State the service's replicas and the A/B analysis share through the prediction-log database.

- **Traffic**: the routing experiment and the variant weights of one service (keyed by its
  registered model). ``PUT /admin/traffic`` on any replica writes it; every replica reads it at
  start and at each registry check, so all of them route a unit the same way (otherwise their
  splits disagree and the A/B test's sample-ratio check fails).
- **Locks**: a named lease with an owner and an expiry, taken by inserting a row (the primary
  key makes two takers impossible), released by deleting it; an expired lease may be taken over.
  The A/B analysis holds one while it moves aliases, so two concurrent runs cannot both act.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError

from lossflow.predlog.store import PredictionLog


@dataclass(frozen=True)
class TrafficState:
    """The shared routing of one service.

    Attributes:
        experiment: the routing experiment name.
        weights: variant -> weight.
        updated_at: when it was written.
        updated_by: who wrote it (a replica, an operator, the A/B analysis).
    """

    experiment: str
    weights: dict[str, float]
    updated_at: datetime
    updated_by: str


def read_traffic(log: PredictionLog, name: str) -> TrafficState | None:
    """The shared routing of service ``name``, or ``None`` when none was written."""
    t = log.tables.traffic
    with log.engine.connect() as conn:
        row = conn.execute(sa.select(t).where(t.c.name == name)).first()
    if row is None:
        return None
    weights = {str(k): float(v) for k, v in dict(row.weights).items()}
    return TrafficState(str(row.experiment), weights, row.updated_at, str(row.updated_by))


def write_traffic(
    log: PredictionLog, name: str, experiment: str, weights: Mapping[str, float], by: str
) -> TrafficState:
    """Set the shared routing of service ``name`` (insert or replace)."""
    t = log.tables.traffic
    state = TrafficState(experiment, dict(weights), datetime.now(UTC), by)
    values = {
        "experiment": experiment,
        "weights": state.weights,
        "updated_at": state.updated_at,
        "updated_by": by,
    }
    with log.engine.begin() as conn:
        updated = conn.execute(sa.update(t).where(t.c.name == name).values(**values)).rowcount
        if not updated:
            try:
                with conn.begin_nested():
                    conn.execute(sa.insert(t).values(name=name, **values))
            except IntegrityError:  # a replica inserted it meanwhile: ours is the later word
                conn.execute(sa.update(t).where(t.c.name == name).values(**values))
    return state


def acquire_lock(log: PredictionLog, name: str, owner: str, ttl_s: float) -> bool:
    """Take the lease ``name`` for ``ttl_s`` seconds; ``False`` when someone else holds it."""
    locks = log.tables.locks
    now = datetime.now(UTC)
    with log.engine.begin() as conn:
        conn.execute(sa.delete(locks).where(locks.c.name == name, locks.c.expires_at < now))
    try:
        with log.engine.begin() as conn:
            conn.execute(
                sa.insert(locks).values(
                    name=name,
                    owner=owner,
                    acquired_at=now,
                    expires_at=now + timedelta(seconds=ttl_s),
                )
            )
    except IntegrityError:
        return False
    return True


def release_lock(log: PredictionLog, name: str, owner: str) -> None:
    """Give the lease back (only its owner's)."""
    locks = log.tables.locks
    with log.engine.begin() as conn:
        conn.execute(sa.delete(locks).where(locks.c.name == name, locks.c.owner == owner))
