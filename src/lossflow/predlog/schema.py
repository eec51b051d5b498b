"""The prediction log's tables, the same on SQLite and PostgreSQL.

- ``predictions``: one row per answered request (``request_id`` primary key), with the routing
  ``experiment``, the variant, model version and loss id that answered, the raw records, outputs
  and latency. ``ix_predictions_variant_ts (variant, ts)`` makes "rows of variant V between t0
  and t1" a range scan; ``ix_predictions_ts (ts)`` serves windows over every variant.
- ``feedback``: the true labels of a request, written once, joined on ``request_id``.
- ``prediction_dead_letters``: records the database refused for good (a duplicate request id, a
  value too long for its column), kept whole with the error so an operator can fix and replay
  them; the service keeps serving.
- ``traffic_state``: the routing experiment and variant weights every replica of a service
  follows (``lossflow.predlog.state``), so a traffic change on one replica reaches all.
- ``locks``: named leases, so that one A/B analysis at a time may move aliases.
- ``log_models``: the registered model whose predictions the log holds (one per log: monitoring,
  the A/B analysis and retraining read every row of it as that model's traffic).
- ``failures``: requests a variant was routed but failed to answer (a 5xx from its model), with
  the unit and experiment, so the A/B analysis counts the unit and the variant's error rate.

Databases created before the ``experiment`` column existed are upgraded in place by
:func:`upgrade` (rows logged before get ``experiment = ''``).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from lossflow.predlog.records import PredictionRecord, require_utc

EXPERIMENT_LENGTH = 128


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """Aware UTC datetimes on every backend (naive UTC text on SQLite, timestamptz elsewhere)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> sa.types.TypeEngine[Any]:
        """SQLite stores naive text; give it a naive DateTime."""
        if dialect.name == "sqlite":
            return dialect.type_descriptor(sa.DateTime())
        return dialect.type_descriptor(sa.DateTime(timezone=True))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Refuse naive values; store UTC."""
        if value is None:
            return None
        utc = require_utc(value, "timestamp")
        return utc.replace(tzinfo=None) if dialect.name == "sqlite" else utc

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Return aware UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


# Column order of ``predictions``: the writer sends rows in this order.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "request_id",
    "unit_id",
    "ts",
    "experiment",
    "variant",
    "model_version",
    "loss_id",
    "features",
    "outputs",
    "latency_ms",
    "n_records",
)


def row_values(record: PredictionRecord) -> list[Any]:
    """``record`` as the values of a ``predictions`` row, in :data:`PREDICTION_COLUMNS` order."""
    row = record.to_row()
    return [row[name] for name in PREDICTION_COLUMNS]


class Tables:
    """The log's tables in one ``MetaData`` (optionally in a PostgreSQL schema)."""

    def __init__(self, schema: str | None) -> None:
        self.metadata = sa.MetaData(schema=schema)
        self.predictions = sa.Table(
            "predictions",
            self.metadata,
            sa.Column("request_id", sa.String(128), primary_key=True),
            sa.Column("unit_id", sa.String(256), nullable=False),
            sa.Column("ts", UTCDateTime(), nullable=False),
            sa.Column(
                "experiment", sa.String(EXPERIMENT_LENGTH), nullable=False, server_default=""
            ),
            sa.Column("variant", sa.String(64), nullable=False),
            sa.Column("model_version", sa.String(64), nullable=False),
            sa.Column("loss_id", sa.String(128), nullable=False),
            sa.Column("features", sa.JSON(), nullable=False),
            sa.Column("outputs", sa.JSON(), nullable=False),
            sa.Column("latency_ms", sa.Float(), nullable=False),
            sa.Column("n_records", sa.Integer(), nullable=False),
            sa.Index("ix_predictions_ts", "ts"),
            sa.Index("ix_predictions_variant_ts", "variant", "ts"),
        )
        fk_target = f"{schema}.predictions.request_id" if schema else "predictions.request_id"
        self.feedback = sa.Table(
            "feedback",
            self.metadata,
            sa.Column(
                "request_id",
                sa.String(128),
                sa.ForeignKey(fk_target, ondelete="CASCADE"),
                primary_key=True,
            ),
            sa.Column("labels", sa.JSON(), nullable=False),
            sa.Column("ts", UTCDateTime(), nullable=False),
        )
        self.traffic = sa.Table(
            "traffic_state",
            self.metadata,
            sa.Column("name", sa.String(256), primary_key=True),
            sa.Column("experiment", sa.String(EXPERIMENT_LENGTH), nullable=False),
            sa.Column("weights", sa.JSON(), nullable=False),
            sa.Column("updated_at", UTCDateTime(), nullable=False),
            sa.Column("updated_by", sa.Text(), nullable=False),
        )
        self.locks = sa.Table(
            "locks",
            self.metadata,
            sa.Column("name", sa.String(256), primary_key=True),
            sa.Column("owner", sa.Text(), nullable=False),
            sa.Column("acquired_at", UTCDateTime(), nullable=False),
            sa.Column("expires_at", UTCDateTime(), nullable=False),
        )
        self.models = sa.Table(
            "log_models",
            self.metadata,
            # one row at most: the owner's (the key makes a second claim fail)
            sa.Column("slot", sa.String(16), primary_key=True),
            sa.Column("name", sa.String(256), nullable=False),
            sa.Column("claimed_at", UTCDateTime(), nullable=False),
        )
        self.failures = sa.Table(
            "failures",
            self.metadata,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("unit_id", sa.String(256), nullable=False),
            sa.Column("ts", UTCDateTime(), nullable=False),
            sa.Column("experiment", sa.String(EXPERIMENT_LENGTH), nullable=False),
            sa.Column("variant", sa.String(64), nullable=False),
            sa.Column("model_version", sa.String(64), nullable=False),
            sa.Column("status", sa.Integer(), nullable=False),
            sa.Column("error", sa.Text(), nullable=False),
            sa.Index("ix_failures_experiment_ts", "experiment", "ts"),
        )
        self.dead_letters = sa.Table(
            "prediction_dead_letters",
            self.metadata,
            sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
            sa.Column("request_id", sa.Text(), nullable=False),
            sa.Column("ts", UTCDateTime(), nullable=False),
            sa.Column("error", sa.Text(), nullable=False),
            sa.Column("record", sa.JSON(), nullable=False),
        )

    def upgrade(self, conn: sa.Connection) -> list[str]:
        """Bring tables created by an older lossflow up to this layout; return what changed.

        Adds ``predictions.experiment`` (``''`` for old rows) and the indexes; drops the
        single-column ``variant`` index the composite one replaces.
        """
        inspector = sa.inspect(conn)
        schema = self.metadata.schema
        if not inspector.has_table("predictions", schema=schema):
            return []
        preparer = conn.dialect.identifier_preparer
        changed: list[str] = []
        columns = {c["name"] for c in inspector.get_columns("predictions", schema=schema)}
        if "experiment" not in columns:
            table = preparer.format_table(self.predictions)
            conn.execute(
                sa.text(
                    f"ALTER TABLE {table} ADD COLUMN experiment "
                    f"VARCHAR({EXPERIMENT_LENGTH}) NOT NULL DEFAULT ''"
                )
            )
            changed.append("added predictions.experiment")
        existing = {ix["name"] for ix in inspector.get_indexes("predictions", schema=schema)}
        for index in self.predictions.indexes:
            if index.name not in existing:
                index.create(conn)
                changed.append(f"created index {index.name}")
        if "ix_predictions_variant" in existing:
            name = preparer.quote("ix_predictions_variant")
            qualified = f"{preparer.quote_schema(schema)}.{name}" if schema else name
            conn.execute(sa.text(f"DROP INDEX {qualified}"))
            changed.append("dropped index ix_predictions_variant")
        return changed
