"""State the service's replicas and the A/B analysis share through the prediction-log database.

- **Traffic**: the routing experiment and the variant weights of one service (keyed by its
  registered model). ``PUT /admin/traffic`` on any replica writes it; every replica reads it at
  start and at each registry check, so all of them route a unit the same way (otherwise their
  splits disagree and the A/B test's sample-ratio check fails).
- **Owner**: the registered model whose predictions the log holds. A log is one model's: a
  service claims it at start, and a service, monitoring, A/B analysis or retrain of another
  model is refused (two projects must not share a log, or each would judge the other's traffic).
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

from lossflow.errors import UserError
from lossflow.predlog.store import PredictionLog

OWNER_SLOT = "owner"


class LogOwnerError(UserError):
    """The prediction log holds another model's predictions; the message says what to change."""


def log_owners(log: PredictionLog) -> list[str]:
    """The models that claimed the log (none for a new log, or one an older lossflow wrote)."""
    models = log.tables.models
    with log.engine.connect() as conn:
        if not sa.inspect(conn).has_table(models.name, schema=models.schema):
            return []
        return [str(r.name) for r in conn.execute(sa.select(models.c.name))]


def _refuse(log: PredictionLog, model: str, owners: list[str]) -> LogOwnerError:
    url = log.engine.url.render_as_string()
    return LogOwnerError(
        f"the prediction log at {url} holds the predictions of model {owners[0]!r}, not "
        f"{model!r}: a log is one model's (its monitoring and A/B analysis read every row); give "
        f"{model!r} its own: another data_dir (each project has one) or log.url"
    )


def claim_log(log: PredictionLog, model: str) -> None:
    """Make ``model`` the log's owner (a service does at start; idempotent).

    Raises:
        LogOwnerError: another model owns it.
    """
    if log_owners(check_log_owner(log, model)):
        return
    row = {"slot": OWNER_SLOT, "name": model, "claimed_at": datetime.now(UTC)}
    with log.engine.begin() as conn:
        try:
            with conn.begin_nested():
                conn.execute(sa.insert(log.tables.models).values(**row))
        except IntegrityError:  # another service claimed it meanwhile: whose is it?
            pass
    check_log_owner(log, model)


def check_log_owner(log: PredictionLog, model: str) -> PredictionLog:
    """``log``, when it holds ``model``'s predictions (or nobody has claimed it yet).

    Raises:
        LogOwnerError: another model owns it.
    """
    owners = log_owners(log)
    if owners and model not in owners:
        raise _refuse(log, model, owners)
    return log


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
