"""Train / validation / test / production splits: by time, stratified, or random.

The production part plays the role of future traffic (served, monitored for drift). Each part
has a fresh ``RangeIndex``; a time split keeps rows in time order, the other kinds keep the
input order within each part. With a group column, a random split and the subsample move whole
groups, so a query's rows never straddle two parts.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from lossflow.config.data import ColumnSchema, DataConfig, SplitConfig
from lossflow.errors import UserError

PART_NAMES: tuple[str, ...] = ("train", "val", "test", "production")


class SplitError(UserError, ValueError):
    """A split produced an unusable part; the message names the boundary or fraction to change."""


@dataclass(frozen=True)
class Splits:
    """The four parts of a dataset; ``production`` may be empty."""

    train: pd.DataFrame
    val: pd.DataFrame
    test: pd.DataFrame
    production: pd.DataFrame

    def parts(self) -> dict[str, pd.DataFrame]:
        """``{"train": ..., "val": ..., "test": ..., "production": ...}``."""
        return {
            "train": self.train,
            "val": self.val,
            "test": self.test,
            "production": self.production,
        }

    def sizes(self) -> dict[str, int]:
        """Row count of each part."""
        return {name: len(part) for name, part in self.parts().items()}


def _boundary(value: object, like: pd.Series) -> pd.Timestamp:
    stamp = pd.Timestamp(str(value))
    tz = getattr(like.dt, "tz", None)
    return stamp.tz_localize(tz) if tz is not None else stamp


def _time_parts(df: pd.DataFrame, split: SplitConfig, time: str) -> list[pd.DataFrame]:
    ordered = df.sort_values(time, kind="stable")
    stamps = ordered[time]
    train_end, val_end, test_end = (_boundary(d, stamps) for d in split.boundaries())
    parts = [
        ordered.loc[stamps < train_end],
        ordered.loc[(stamps >= train_end) & (stamps < val_end)],
        ordered.loc[(stamps >= val_end) & (stamps < test_end)],
        ordered.loc[stamps >= test_end],
    ]
    span = f"the data spans {stamps.min()} to {stamps.max()}"
    if parts[0].empty:
        raise SplitError(
            f"split.train_end={split.train_end}: no rows before it, so training is empty; move "
            f"train_end later ({span})"
        )
    if parts[1].empty:
        raise SplitError(
            f"split.val_end={split.val_end}: no rows in [train_end, val_end), so validation is "
            f"empty; move val_end later or train_end earlier ({span})"
        )
    if parts[2].empty:
        raise SplitError(
            f"split.test_end={split.test_end}: no rows in [val_end, test_end), so test is "
            f"empty; move test_end later or val_end earlier ({span})"
        )
    return parts


def _part_sizes(n: int, split: SplitConfig, minimum: int, unit: str) -> dict[str, int]:
    val_fraction, test_fraction, production_fraction = split.fractions()
    fractions = {
        "production": production_fraction,
        "test": test_fraction,
        "val": val_fraction,
    }
    sizes = {name: round(fraction * n) for name, fraction in fractions.items()}
    for name, fraction in fractions.items():
        if fraction > 0 and sizes[name] < minimum:
            raise SplitError(
                f"split.{name}_fraction={fraction:g} of {n} {unit} gives {sizes[name]} {unit}, "
                f"fewer than the {minimum} needed; raise {name}_fraction or use more data"
            )
    if n - sum(sizes.values()) < minimum:
        raise SplitError(
            f"split: val/test/production fractions leave {n - sum(sizes.values())} {unit} for "
            "training; lower the fractions"
        )
    return sizes


def _row_parts(
    df: pd.DataFrame, split: SplitConfig, stratify_on: str | None, seed: int
) -> list[pd.DataFrame]:
    n_classes = 1 if stratify_on is None else int(df[stratify_on].nunique())
    sizes = _part_sizes(len(df), split, max(1, n_classes), "rows")
    rest = df
    drawn: dict[str, pd.DataFrame] = {}
    for offset, name in enumerate(("production", "test", "val")):
        if sizes[name] == 0:
            drawn[name] = df.iloc[:0]
            continue
        rest, drawn[name] = train_test_split(
            rest,
            test_size=sizes[name],
            random_state=seed + offset,
            shuffle=True,
            stratify=None if stratify_on is None else rest[stratify_on],
        )
    ordered = [rest, drawn["val"], drawn["test"], drawn["production"]]
    return [part.sort_index(kind="stable") for part in ordered]


def _group_parts(df: pd.DataFrame, split: SplitConfig, group: str, seed: int) -> list[pd.DataFrame]:
    groups = pd.unique(df[group])
    sizes = _part_sizes(len(groups), split, 1, "groups")
    shuffled = np.random.default_rng(seed).permutation(len(groups))
    start = 0
    chosen: dict[str, np.ndarray] = {}
    for name in ("production", "test", "val"):
        chosen[name] = groups[shuffled[start : start + sizes[name]]]
        start += sizes[name]
    chosen["train"] = groups[shuffled[start:]]
    return [df.loc[df[group].isin(chosen[name])] for name in PART_NAMES]


def _subsample(
    part: pd.DataFrame,
    size: int,
    seed: int,
    columns: ColumnSchema,
    stratify: bool,
) -> pd.DataFrame:
    if len(part) <= size:
        return part
    rng = np.random.default_rng(seed)
    if columns.group is not None:
        counts = part[columns.group].value_counts(sort=False)
        order = rng.permutation(len(counts))
        cumulative = np.cumsum(counts.to_numpy()[order])
        keep = counts.index[order[: max(1, int(np.searchsorted(cumulative, size, "right")))]]
        return part.loc[part[columns.group].isin(keep)]
    target = part[columns.target]
    if stratify and size >= target.nunique() and target.value_counts().min() >= 2:
        kept, _ = train_test_split(
            part, train_size=size, random_state=seed, shuffle=True, stratify=target
        )
        return kept.sort_index(kind="stable")
    rows = np.sort(rng.choice(len(part), size=size, replace=False))
    return part.iloc[rows]


def split_frame(df: pd.DataFrame, cfg: DataConfig, columns: ColumnSchema) -> Splits:
    """Split ``df`` by ``cfg.split``, then subsample each part to ``cfg.subsample`` rows.

    A time split sorts by ``columns.time`` and cuts at the date boundaries (train is before
    ``train_end``, production from ``test_end`` on). A stratified split draws the seeded
    fractions keeping class proportions; a random split draws them uniformly, by whole groups
    when ``columns.group`` is set. The subsample is seeded per part (stratified when the split
    is), so each part's sample is reproducible on its own.

    Args:
        df: A frame that passed ``validate_frame``; it is not modified.
        cfg: The data config (split, subsample and seed are used).
        columns: Column roles of ``df``.

    Returns:
        The four parts, each with a fresh ``RangeIndex``.

    Raises:
        SplitError: Training, validation or test would be empty (or too small to stratify);
            the message names the boundary or fraction to change.
    """
    split = cfg.split
    if split.kind == "time":
        if columns.time is None:
            raise SplitError(
                "split.kind=time needs a time column; set data.columns.time or use a "
                "stratified/random split"
            )
        parts = _time_parts(df, split, columns.time)
    elif split.kind == "random" and columns.group is not None:
        parts = _group_parts(df, split, columns.group, cfg.seed)
    else:
        stratify_on = columns.target if split.kind == "stratified" else None
        parts = _row_parts(df, split, stratify_on, cfg.seed)
    if cfg.subsample is not None:
        parts = [
            _subsample(
                part, cfg.subsample, cfg.seed + 1000 * (i + 1), columns, split.kind == "stratified"
            )
            for i, part in enumerate(parts)
        ]
    train, val, test, production = (part.reset_index(drop=True) for part in parts)
    return Splits(train=train, val=val, test=test, production=production)
