"""The rows a retrain trains on and the rows its candidates are pre-screened on.

- **History**: the training source's rows before its production period (what the champion could
  have been trained on);
- **the log**: the labelled production rows the service answered (one row per record, its
  features as sent, the feedback label, the answer's time, the unit), the shadow's duplicates
  excluded;
- **the pool** (trained on): history and the log's rows before the evidence window, all of them
  (``expanding``) or the last ``months`` months (``sliding``), written as a Parquet file with the
  source's columns and labels as the source writes them (a binary ``yes``/``no``, a class name),
  split at training time by stratified fractions (:class:`lossflow.config.data.PoolConfig`: the
  candidates' recipes name it beside the ``data`` section it came from);
- **the pre-screen rows**: the log's labelled rows inside the evidence window, never trained on.

A ranking model's logged request is one list: its rows get the request id as their group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd

from lossflow import predlog
from lossflow.config.data import ColumnSchema, PoolConfig
from lossflow.config.retrain import RetrainConfig
from lossflow.config.training import TrainingConfig
from lossflow.contract import SHADOW
from lossflow.data.prepare import load_checked
from lossflow.data.splits import split_frame
from lossflow.errors import UserError
from lossflow.predlog.state import check_log_owner
from lossflow.predlog.store import PredictionLog
from lossflow.retrain.request import RetrainRequest

UNIT = "_unit_id"  # the pre-screen rows' unit (not a feature)
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
MONTH = timedelta(days=30.44)


class RetrainDataError(UserError):
    """The retrain has no data to train or pre-screen on; the message says what is missing."""


@dataclass(frozen=True)
class RetrainData:
    """The pool on disk and the pre-screen rows.

    Attributes:
        pool: the Parquet file of training rows.
        columns: its column roles (the source's).
        task: the learning task.
        history_rows: rows from the source's history.
        log_rows: labelled production rows from the log.
        prescreen: the evidence window's labelled rows (features, target, ``_unit_id``).
        since: the pool's earliest time (``None``: the whole history).
    """

    pool: Path
    columns: ColumnSchema
    task: str
    history_rows: int
    log_rows: int
    prescreen: pd.DataFrame
    since: datetime | None

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (for the run's params and the timeline)."""
        return {
            "pool": str(self.pool),
            "history_rows": self.history_rows,
            "log_rows": self.log_rows,
            "prescreen_rows": len(self.prescreen),
            "since": None if self.since is None else self.since.isoformat(),
        }


def history(cfg: TrainingConfig) -> tuple[pd.DataFrame, ColumnSchema]:
    """The source's rows before its production period (train, validation and test), unsampled
    (rows without a label left out as ``data.missing_target`` says)."""
    data = cfg.data.model_copy(update={"subsample": None})
    base = cfg.model_copy(update={"pool": None, "data": data})
    frame, columns, _ = load_checked(base)
    splits = split_frame(frame, base.data, columns)
    past = pd.concat([splits.train, splits.val, splits.test], ignore_index=True)
    return past, columns


def labelled_log_rows(
    log: PredictionLog,
    start: datetime,
    end: datetime,
    columns: ColumnSchema,
    class_names: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The log's labelled records answered in ``[start, end)``: features, target, time, unit
    (and for ranking the request id as the group).

    Args:
        class_names: a binary model's ``(negative, positive)`` names: the log's 0/1 labels
            become them, as the source writes its labels.
    """
    read = log.read(start, end)
    read = read[read["labels"].notna() & (read["variant"] != SHADOW)]
    features = (*columns.numeric, *columns.categorical)
    rows: list[dict[str, Any]] = []
    for request_id, records, labels, ts, unit in zip(
        read["request_id"], read["features"], read["labels"], read["ts"], read["unit_id"],
        strict=True,
    ):  # fmt: skip
        if len(records) != len(labels):
            continue  # the log refuses such feedback; nothing to pair
        when = pd.Timestamp(ts).tz_convert("UTC").tz_localize(None)
        for record, label in zip(records, labels, strict=True):
            row = {name: record.get(name) for name in features}
            row[columns.target] = label if class_names is None else class_names[int(label)]
            if columns.time is not None:
                row[columns.time] = when
            if columns.group is not None and columns.group not in features:
                # a logged /rank request is one list: the request is its group (or, when the
                # list is a point in time, its time)
                row[columns.group] = when if columns.group == columns.time else str(request_id)
            if columns.item is not None and columns.item not in features:
                row[columns.item] = record.get(columns.item)
            row[UNIT] = str(unit)
            rows.append(row)
    frame = pd.DataFrame(rows, columns=[*columns.all_columns(), UNIT])
    return frame


def log_exists(retrain: RetrainConfig) -> bool:
    """Whether there is a prediction log to read (a URL, or the embedded file)."""
    return retrain.log.url is not None or (retrain.data_dir / "predictions.db").is_file()


def open_log(retrain: RetrainConfig) -> PredictionLog:
    """The prediction log the retrain reads."""
    log = predlog.open_log(retrain.log.url, retrain.log.db_schema, retrain.data_dir)
    return check_log_owner(log, retrain.tracking.registered_model)


def build(
    retrain: RetrainConfig,
    cfg: TrainingConfig,
    request: RetrainRequest,
    directory: Path,
    class_names: Sequence[str] | None = None,
) -> RetrainData:
    """Write the pool under ``directory`` and collect the pre-screen rows (see the module).

    Args:
        retrain: the retrain's configuration (its data policy, the log).
        cfg: the champion's recipe (its data section is the source).
        request: the monitoring decision (its evidence window).
        directory: where the pool is written.
        class_names: a binary model's named classes (the log's 0/1 become them in the pool).

    Raises:
        RetrainDataError: the pool is empty.
    """
    past, columns = history(cfg)
    log_frame = pd.DataFrame(columns=[*columns.all_columns(), UNIT])
    prescreen = log_frame
    if log_exists(retrain):
        log = open_log(retrain)
        try:
            if retrain.data.include_log:
                log_frame = labelled_log_rows(
                    log, EPOCH, request.window_start, columns, class_names
                )
            prescreen = labelled_log_rows(log, request.window_start, request.window_end, columns)
        finally:
            log.dispose()
    parts = [past, log_frame.drop(columns=[UNIT])]
    since = None
    if retrain.data.policy == "sliding":
        since = request.window_start - retrain.data.months * MONTH
        if columns.time is None:
            raise RetrainDataError(
                "data.policy=sliding needs a time column in the source; use policy=expanding"
            )
        cut = pd.Timestamp(since).tz_convert("UTC").tz_localize(None)
        parts = [p[pd.to_datetime(p[columns.time]) >= cut] for p in parts]
    pool = pd.concat([p for p in parts if len(p)], ignore_index=True) if any(
        len(p) for p in parts
    ) else pd.DataFrame(columns=columns.all_columns())  # fmt: skip
    if pool.empty:
        raise RetrainDataError(
            f"no rows to retrain on with data.policy={retrain.data.policy} before "
            f"{request.window_start.isoformat()}; widen data.months or use policy=expanding"
        )
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "pool.parquet"
    for name in columns.categorical:
        pool[name] = pool[name].astype("string")
    pool.to_parquet(path, index=False)
    return RetrainData(path, columns, cfg.data.task, len(parts[0]), len(parts[1]), prescreen, since)


def pool_config(retrain: RetrainConfig, data: RetrainData, until: datetime) -> PoolConfig:
    """The ``pool`` section of every candidate's training configuration (and recipe)."""
    return PoolConfig(
        path=data.pool,
        policy=retrain.data.policy,
        until=until,
        since=data.since,
        history_rows=data.history_rows,
        log_rows=data.log_rows,
        val_fraction=retrain.data.val_fraction,
        test_fraction=retrain.data.test_fraction,
    )
