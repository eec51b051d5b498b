"""Ranking lists: rows grouped into one list per query, padded to ``(Q, L)`` with a mask.

A ranking part (train, val, test) is stored as flat rows, the rows of each list contiguous, with
a list id per row; :func:`padded_index` turns the ids into a ``(Q, L)`` matrix of row indices
(``-1`` = padding) and the mask. Which rows a part keeps is :func:`keep_lists`' job: lists too
short or without a relevant item are dropped, lists too long are cut (``ListConfig``). The
popularity baseline (an item's mean training relevance) is computed here too.
"""

from __future__ import annotations

import logging

import numpy as np
import numpy.typing as npt
import pandas as pd

from lossflow.config.data import ColumnSchema, ListConfig

log = logging.getLogger(__name__)

IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def keep_lists(
    frame: pd.DataFrame, columns: ColumnSchema, lists: ListConfig, seed: int, part: str
) -> pd.DataFrame:
    """The rows of ``frame`` that form its ranking lists, each list's rows contiguous.

    Lists come in the order of their group's first row, rows within a list in the order of the
    frame. A list with fewer than ``lists.min_items`` rows or no row of positive relevance is
    dropped; a list with more than ``lists.max_items`` rows keeps ``max_items`` of them
    (``long_lists``: a seeded random sample kept in data order, or the first ones). What was
    dropped or cut is logged.

    Raises:
        ValueError: ``columns`` has no group column.
    """
    group = columns.group
    if group is None:
        raise ValueError("keep_lists needs columns.group (the query id)")
    if frame.empty:
        return frame
    codes, _ = pd.factorize(frame[group])
    order = np.argsort(codes, kind="stable")
    codes = codes[order]
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    sizes = np.diff(np.r_[starts, len(codes)])
    relevance = frame[columns.target].to_numpy(np.float64)[order]
    has_relevant = np.maximum.reduceat(relevance, starts) > 0
    short = sizes < lists.min_items
    keep_list = ~short & has_relevant
    rng = np.random.default_rng(seed)
    kept: list[IntArray] = []
    cut = 0
    for start, size in zip(starts[keep_list], sizes[keep_list], strict=True):
        rows = order[start : start + size]
        if size > lists.max_items:
            cut += 1
            if lists.long_lists == "first":
                rows = rows[: lists.max_items]
            else:
                rows = np.sort(rng.choice(rows, size=lists.max_items, replace=False))
        kept.append(rows)
    dropped_short = int(short.sum())
    dropped_empty = int((~short & ~has_relevant).sum())
    if dropped_short or dropped_empty or cut:
        log.info(
            "%s: %d lists; dropped %d with fewer than %d items and %d without a relevant item; "
            "cut %d longer than %d items to %d (%s)",
            part,
            len(starts),
            dropped_short,
            lists.min_items,
            dropped_empty,
            cut,
            lists.max_items,
            lists.max_items,
            lists.long_lists,
        )
    if not kept:
        return frame.iloc[:0]
    return frame.iloc[np.concatenate(kept)].reset_index(drop=True)


def list_ids(frame: pd.DataFrame, group: str) -> IntArray:
    """Contiguous list ids ``0 .. Q-1`` of the rows, in order of first appearance."""
    return np.asarray(pd.factorize(frame[group])[0], dtype=np.int64)


def padded_index(ids: npt.ArrayLike) -> tuple[IntArray, np.ndarray]:
    """The ``(Q, L)`` row indices of each list (``-1`` = padding) and the mask (True = item).

    Items keep their row order within a list; ``L`` is the longest list.

    Example:
        >>> index, mask = padded_index([0, 0, 1, 0])
        >>> index.tolist(), mask.tolist()
        ([[0, 1, 3], [2, -1, -1]], [[True, True, True], [True, False, False]])
    """
    ids_ = np.asarray(ids, dtype=np.int64)
    n_lists = int(ids_.max()) + 1 if ids_.size else 0
    order = np.argsort(ids_, kind="stable")
    sizes = np.bincount(ids_, minlength=n_lists)
    width = int(sizes.max()) if n_lists else 0
    starts = np.r_[0, np.cumsum(sizes)[:-1]]
    position = np.arange(len(ids_)) - np.repeat(starts, sizes)
    index = np.full((n_lists, max(width, 1)), -1, dtype=np.int64)
    index[ids_[order], position] = order
    return index, index >= 0


def gather(values: np.ndarray, index: IntArray, fill: float = 0.0) -> np.ndarray:
    """``values[index]`` with ``fill`` where ``index`` is padding (``-1``); ``(Q, L, ...)``."""
    out = values[np.where(index >= 0, index, 0)]
    out[index < 0] = fill
    return out


def item_popularity(train: pd.DataFrame, item: str, target: str) -> dict[str, float]:
    """Mean training relevance of every item (the popularity baseline's score)."""
    means = train.groupby(train[item].astype(str), sort=False)[target].mean()
    return {str(k): float(v) for k, v in means.items()}


def popularity_scores(
    frame: pd.DataFrame, item: str, popularity: dict[str, float], default: float
) -> FloatArray:
    """The popularity baseline's score of each row: its item's mean training relevance, or
    ``default`` (the mean over all training rows) for an item never seen in training."""
    keys = frame[item].astype(str)
    scores: FloatArray = keys.map(popularity).fillna(default).to_numpy(np.float64)
    return scores
