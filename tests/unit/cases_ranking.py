"""Cases for the learning-to-rank losses (see ``loss_cases.py``).

``make`` returns ``(scores, relevance, mask)``: ``(Q, L)`` scores, graded relevance with ties and a
bool mask with padded items. The "edge" batches also hold a query whose items are all padding and
one whose items all share one grade (0 for the listwise losses), which count in no mean, so for
them ``mean`` is not the mean of ``none``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tests.unit.loss_cases import LossCase

_Q, _L, _GRADES = 8, 6, 3


def _batch(gen: torch.Generator, dtype: torch.dtype, *, edge: bool) -> tuple[Tensor, ...]:
    scores = torch.randn(_Q, _L, generator=gen, dtype=torch.float64)
    relevance = torch.randint(0, _GRADES, (_Q, _L), generator=gen).to(torch.float64)
    # Every query keeps a pair with distinct grades, so it counts for every loss...
    relevance[:, 0], relevance[:, 1] = _GRADES - 1, 0.0
    lengths = torch.randint(2, _L + 1, (_Q, 1), generator=gen)
    mask = torch.arange(_L) < lengths
    # ...and some lists are padded; padding holds junk that must not matter.
    mask[-1, 2:] = False
    relevance = relevance.where(mask, -1.0)
    if edge:
        mask[0] = False  # a query without any real item
        relevance[1] = 0.0  # a query without a pair and without positive relevance
    return scores.to(dtype), relevance.to(dtype), mask


def _padded(gen: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, ...]:
    return _batch(gen, dtype, edge=False)


def _edge(gen: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, ...]:
    return _batch(gen, dtype, edge=True)


def _unmasked(gen: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, ...]:
    scores, relevance, _ = _batch(gen, dtype, edge=False)
    return scores, relevance.clamp_min(0.0)


CASES = [
    LossCase(spec={"name": "margin_ranking"}, make=_padded),
    LossCase(
        id="margin_ranking_edge",
        spec={"name": "margin_ranking", "margin": 0.5},
        make=_edge,
        mean_is_mean_of_none=False,
    ),
    LossCase(id="margin_ranking_unmasked", spec={"name": "margin_ranking"}, make=_unmasked),
    LossCase(spec={"name": "ranknet"}, make=_padded),
    LossCase(
        id="ranknet_edge",
        spec={"name": "ranknet", "sigma": 2.0},
        make=_edge,
        mean_is_mean_of_none=False,
    ),
    LossCase(id="ranknet_unmasked", spec={"name": "ranknet"}, make=_unmasked),
    LossCase(spec={"name": "listnet"}, make=_padded),
    LossCase(
        id="listnet_edge",
        spec={"name": "listnet", "temperature": 0.5},
        make=_edge,
        mean_is_mean_of_none=False,
    ),
    LossCase(id="listnet_unmasked", spec={"name": "listnet"}, make=_unmasked),
    LossCase(spec={"name": "listmle"}, make=_padded),
    LossCase(id="listmle_edge", spec={"name": "listmle"}, make=_edge, mean_is_mean_of_none=False),
    LossCase(id="listmle_unmasked", spec={"name": "listmle"}, make=_unmasked),
]
