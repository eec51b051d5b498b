"""Permutation feature importance: how much a model's score drops when one feature's values are
shuffled across the rows (Breiman 2001; scikit-learn's ``permutation_importance``), on encoded
rows (encoding is row by row, so shuffling codes is shuffling raw values)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lossflow.comparison.scoring import Direction
from lossflow.data.preprocessing import EncodedFeatures


def _shuffled(
    features: EncodedFeatures, column: int, n_numeric: int, rng: np.random.Generator
) -> EncodedFeatures:
    numeric, categorical = features.numeric, features.categorical
    order = rng.permutation(len(features))
    if column < n_numeric:
        numeric = numeric.copy()
        numeric[:, column] = numeric[order, column]
    else:
        categorical = categorical.copy()
        j = column - n_numeric
        categorical[:, j] = categorical[order, j]
    return EncodedFeatures(numeric=numeric, categorical=categorical)


def permutation_importance(
    predict: Callable[[EncodedFeatures], np.ndarray],
    score: Callable[[np.ndarray], float],
    features: EncodedFeatures,
    names: Sequence[str],
    better: Direction,
    *,
    repeats: int,
    seed: int,
) -> dict[str, float]:
    """The mean drop of ``score`` when each feature is shuffled.

    Args:
        predict: the model's output on encoded rows.
        score: the metric of an output on these rows (the targets are bound in).
        features: the rows, numeric columns first, then categorical ones.
        names: the feature names in that order.
        better: which way ``score`` is better; the drop is ``base - shuffled`` for ``max`` and
            ``shuffled - base`` for ``min``, so a positive importance means the model relies on
            the feature.
        repeats: shuffles per feature (averaged).
        seed: seed of the shuffles.

    Raises:
        ValueError: ``names`` does not name every column.
    """
    n_numeric = features.numeric.shape[1]
    if len(names) != n_numeric + features.categorical.shape[1]:
        raise ValueError(
            f"names must name the {n_numeric} numeric and {features.categorical.shape[1]} "
            f"categorical columns; got {len(names)} names"
        )
    rng = np.random.default_rng(seed)
    base = score(predict(features))
    sign = 1.0 if better == "max" else -1.0
    importances: dict[str, float] = {}
    for column, name in enumerate(names):
        drops = [
            sign * (base - score(predict(_shuffled(features, column, n_numeric, rng))))
            for _ in range(repeats)
        ]
        importances[name] = float(np.mean(drops))
    return importances
