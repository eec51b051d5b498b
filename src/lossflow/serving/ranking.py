"""How ``POST /rank`` turns a list's per-item scores into its answer and its log row.

The order is defined for every input: items from the highest score down; equal scores keep the
request order; an item without a finite score (NaN or infinite: a fault of the model, not of the
request) comes after every item that has one, in request order, and its score is answered and
logged as ``null`` (JSON has no NaN). The answer stays usable and the same list always gets the
same order; the route logs a warning naming the variant when it happens.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from lossflow.serving.predictor import Prediction


def ranked(predictions: Sequence[Prediction]) -> dict[str, list[Any]]:
    """``/rank``'s ``scores`` (request order; ``None`` where not finite) and ``order`` (item
    positions by score, highest first; ties and items without a finite score keep the request
    order, the latter after all others).

    Example:
        >>> ranked([Prediction(value=0.2), Prediction(value=float("nan")), Prediction(value=0.9)])
        {'scores': [0.2, None, 0.9], 'order': [2, 0, 1]}
    """
    scores: list[float | None] = []
    for p in predictions:
        value = math.nan if p.value is None else float(p.value)
        scores.append(value if math.isfinite(value) else None)
    order = sorted(
        range(len(scores)),
        key=lambda i: (1, 0.0) if (s := scores[i]) is None else (0, -s),
    )
    return {"scores": scores, "order": order}


def ranked_outputs(answer: Mapping[str, list[Any]]) -> list[dict[str, Any]]:
    """What the log keeps of a ranked list, per item: its ``score`` and its ``rank`` (1 = top),
    so A/B analysis tells a list (NDCG per unit) from regression values."""
    ranks = {item: position + 1 for position, item in enumerate(answer["order"])}
    return [{"score": s, "rank": ranks[i]} for i, s in enumerate(answer["scores"])]
