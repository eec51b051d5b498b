"""Cross-validation folds of a pool of rows: the same folds for every arm of a comparison.

Three kinds, all seeded:

- ``stratified``: repeated stratified k-fold (class proportions kept in every fold);
- ``kfold``: repeated shuffled k-fold (regression targets);
- ``time``: forward chaining on the time-ordered pool: the pool is cut into ``folds + 1`` blocks
  and fold ``k`` trains on blocks ``0..k`` and is scored on block ``k + 1``, so no model sees the
  future of the rows it is scored on.

Each fold also holds out part of its training rows for early stopping and the decision threshold:
a seeded (stratified) draw, or for time folds the latest rows before the scored block. Nothing of
a fold's test rows is seen while fitting it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt
import pandas as pd
from sklearn.model_selection import (
    RepeatedKFold,
    RepeatedStratifiedKFold,
    TimeSeriesSplit,
    train_test_split,
)

from lossflow.errors import UserError
from lossflow.losses import TaskType

FoldKind = Literal["stratified", "kfold", "time"]
IntArray = npt.NDArray[np.int64]
# Offsets of the seeds of the inner validation draws, so no two folds share one.
_REPEAT_STRIDE = 7919


class FoldError(UserError, ValueError):
    """The folds cannot work (too few rows, a fold without a class); the message says what to
    change. Raised before any training starts."""


@dataclass(frozen=True)
class Fold:
    """Row positions (into the pool) of one fold.

    Attributes:
        repeat: the repeat this fold belongs to (0 for time folds).
        index: the fold's index within its repeat.
        train: rows the model is fitted on.
        val: rows held out of the fit for early stopping and the threshold.
        test: rows the fold is scored on.
    """

    repeat: int
    index: int
    train: IntArray
    val: IntArray
    test: IntArray

    @property
    def name(self) -> str:
        """``r<repeat>f<index>``, e.g. ``r0f3``."""
        return f"r{self.repeat}f{self.index}"


def _inner_split(
    fit: IntArray, labels: npt.NDArray[np.generic] | None, val_fraction: float, seed: int
) -> tuple[IntArray, IntArray]:
    try:
        train, val = train_test_split(
            fit,
            test_size=val_fraction,
            random_state=seed,
            shuffle=True,
            stratify=None if labels is None else labels[fit],
        )
    except ValueError as err:
        raise FoldError(
            f"cannot hold out {val_fraction:g} of a fold's {len(fit)} training rows for "
            f"validation ({err}); use fewer folds, a larger cv.val_fraction or more rows"
        ) from None
    return np.sort(train).astype(np.int64), np.sort(val).astype(np.int64)


def _two_classes(labels: npt.NDArray[np.generic], target: str) -> None:
    values = np.unique(labels)
    if len(values) < 2:
        raise FoldError(
            f"the {len(labels)} rows cross-validated hold only class {values[0].item()!r} of "
            f"{target!r}; use more rows (data.subsample) or another split"
        )


def _check_class_sizes(labels: npt.NDArray[np.generic], folds: int, target: str) -> None:
    _two_classes(labels, target)
    values, counts = np.unique(labels, return_counts=True)
    rare = int(np.argmin(counts))
    if counts[rare] < folds:
        raise FoldError(
            f"class {values[rare].item()!r} of {target!r} has {counts[rare]} rows in the "
            f"{len(labels)} rows cross-validated, fewer than the {folds} folds, so some fold "
            f"would hold none of it; use at most {max(int(counts[rare]), 1)} folds (--folds) or "
            "more rows (data.subsample)"
        )


def cv_folds(
    pool: pd.DataFrame,
    *,
    kind: FoldKind,
    folds: int,
    repeats: int,
    seed: int,
    val_fraction: float,
    target: str,
    time: str | None = None,
) -> list[Fold]:
    """The folds of ``pool``, in repeat-then-fold order.

    Args:
        pool: the rows cross-validated (a fresh ``RangeIndex`` is not needed: positions are used).
        kind: ``stratified``, ``kfold`` or ``time``.
        folds: folds per repeat (forward-chaining steps for ``time``).
        repeats: repeats with fresh shuffles (must be 1 for ``time``).
        seed: seed of the shuffles and of the inner validation draws.
        val_fraction: share of each fold's training rows held out for validation.
        target: the target column (stratification, class checks).
        time: the time column (``time`` folds).

    Raises:
        FoldError: a class rarer than the folds, too few rows, or a time fold without a time
            column.
    """
    n = len(pool)
    if folds < 2:
        raise FoldError(f"cross-validation needs at least 2 folds; got {folds}")
    if n < 2 * (folds + 1):
        raise FoldError(
            f"{n} rows cannot be cut into {folds} folds with held-out validation rows; use "
            "fewer folds or more rows (data.subsample)"
        )
    labels = pool[target].to_numpy()
    out: list[Fold] = []
    if kind == "time":
        if time is None:
            raise FoldError("time folds need a time column; use cv.kind=stratified or kfold")
        if repeats != 1:
            raise FoldError("forward-chaining time folds are deterministic: use cv.repeats=1")
        order = np.argsort(pool[time].to_numpy(), kind="stable").astype(np.int64)
        for index, (fit_pos, test_pos) in enumerate(TimeSeriesSplit(n_splits=folds).split(order)):
            n_val = max(1, round(val_fraction * len(fit_pos)))
            fit = order[fit_pos]  # time-ordered: the latest rows are the validation rows
            out.append(
                Fold(0, index, np.sort(fit[:-n_val]), np.sort(fit[-n_val:]), order[test_pos])
            )
        return out
    stratify = kind == "stratified"
    if stratify:
        _check_class_sizes(labels, folds, target)
        splitter: RepeatedStratifiedKFold | RepeatedKFold = RepeatedStratifiedKFold(
            n_splits=folds, n_repeats=repeats, random_state=seed
        )
    else:
        splitter = RepeatedKFold(n_splits=folds, n_repeats=repeats, random_state=seed)
    for number, (fit, test) in enumerate(splitter.split(np.zeros((n, 1)), labels)):
        repeat, index = divmod(number, folds)
        train, val = _inner_split(
            fit.astype(np.int64),
            labels if stratify else None,
            val_fraction,
            seed + _REPEAT_STRIDE * repeat + index + 1,
        )
        out.append(Fold(repeat, index, train, val, np.sort(test).astype(np.int64)))
    return out


def check_fold_classes(
    labels: npt.NDArray[np.generic], folds: Sequence[Fold], task: TaskType, target: str
) -> None:
    """Refuse folds whose parts leave training, the threshold or the fold score undefined.

    Every fold's training rows must hold every class of the pool (a class unseen in training
    cannot be encoded when scoring); for a binary task its validation rows (the threshold) and
    test rows (ROC-AUC) need both classes too.

    Raises:
        FoldError: naming the fold, the part and the class it lacks.
    """
    if task not in ("binary", "multiclass"):
        return
    _two_classes(labels, target)
    classes = set(np.unique(labels).tolist())
    parts = ("train", "val", "test") if task == "binary" else ("train",)
    for fold in folds:
        for part in parts:
            rows = getattr(fold, part)
            present = set(np.unique(labels[rows]).tolist())
            missing = sorted(classes - present)
            if missing:
                raise FoldError(
                    f"fold {fold.name}: its {part} rows ({len(rows)}) hold no row of class "
                    f"{missing[0]!r} of {target!r}, so the fold cannot be "
                    f"{'trained' if part == 'train' else 'scored'}; use fewer folds (--folds), "
                    "more rows (data.subsample) or a stratified cv.kind"
                )
