"""Learning-to-rank losses: pairwise (margin ranking, RankNet) and listwise (ListNet, ListMLE).

Every functional takes ``scores`` ``(Q, L)`` (raw model scores of ``L`` items in each of ``Q``
lists), ``relevance`` ``(Q, L)`` (graded relevance, finite and ``>= 0``) and an optional ``mask``
``(Q, L)`` (bool, ``True`` = real item, ``False`` = padding). Padded items contribute nothing: their
scores and relevances, whatever they hold, change neither the loss nor any gradient.

Each loss is first a per-query value; ``reduction="none"`` returns it as ``(Q,)``, ``"sum"`` sums
it over queries and ``"mean"`` averages it over the queries that *count*: for the pairwise losses
a query counts when it has at least one valid pair, for the listwise losses when it has at least
one real item and positive total relevance. Queries that do not count give ``0`` in ``"none"`` and
are left out of the ``"mean"`` denominator (a batch where no query counts gives ``0``).
"""

from __future__ import annotations

from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lossflow.losses._base import (
    as_float,
    check_floating,
    check_nonempty,
    check_positive,
    check_reduction,
    check_values,
    checking_targets,
    reduce,
    with_hand_gradient,
)
from lossflow.losses.options import Reduction
from lossflow.losses.spec import LossSpecBase, TaskType, register_loss

_RANKING: frozenset[TaskType] = frozenset({"ranking"})

_PairKind = Literal["softplus", "hinge"]


def _check_lists(
    scores: Tensor, relevance: Tensor, mask: Tensor | None, reduction: str
) -> tuple[Tensor, Tensor]:
    """Validate a ranking batch; return ``scores`` in at least float32 and ``relevance`` alike."""
    check_reduction(reduction)
    check_floating("scores", scores)
    check_floating("relevance", relevance)
    if scores.dim() != 2:
        raise ValueError(
            f"scores must have shape (Q, L): Q lists of L items; got {tuple(scores.shape)}"
        )
    if relevance.shape != scores.shape:
        raise ValueError(
            f"relevance must have the shape of scores {tuple(scores.shape)}; "
            f"got {tuple(relevance.shape)}"
        )
    if mask is not None:
        if mask.dtype != torch.bool:
            raise ValueError(
                f"mask must be a bool tensor (True = real item, False = padding); "
                f"got dtype {mask.dtype}"
            )
        if mask.shape != scores.shape:
            raise ValueError(
                f"mask must have the shape of scores {tuple(scores.shape)}; got {tuple(mask.shape)}"
            )
    check_nonempty("scores", scores)
    scores = as_float(scores)
    relevance = relevance.to(scores.dtype)
    if checking_targets():
        # Padding may hold anything (e.g. -1): only real items are checked.
        real = relevance if mask is None else relevance.where(mask, 0.0)
        check_values(
            (real.amin() >= 0) & (real.amax() < float("inf")),
            lambda: "relevance must be finite and >= 0 (graded relevance) at every real item",
        )
    return scores, relevance


def _reduce_queries(per_query: Tensor, counts: Tensor, reduction: str) -> Tensor:
    """Reduce per-query losses; ``mean`` divides by the number of queries that count."""
    if reduction == "mean":
        return per_query.sum() / counts.sum().clamp_min(1)
    return reduce(per_query, reduction)


def _pair_sums(
    scores: Tensor,
    with_grad: bool,
    *,
    above: Tensor,
    below: Tensor,
    kind: _PairKind,
    margin: float,
) -> tuple[Tensor, Tensor | None]:
    """Per-query sum of ``f(s_j - s_i)`` over the pairs ``above_i > below_j``, and its gradient.

    ``f`` is ``softplus`` or the hinge ``x -> max(0, x + margin)``. The pair structure is written
    into one ``(Q, L, L)`` buffer as a bias (``0`` on pairs, the most negative finite number
    elsewhere, where ``f`` is then exactly ``0``) and the score gaps are added in place: the hinge
    allocates one ``(Q, L, L)`` tensor, ``softplus`` two, and no pair mask is applied afterwards.
    """
    q, n = scores.shape
    # x[q, i, j] = s_j - s_i (+ margin) on pairs, about -max elsewhere.
    x = torch.empty((q, n, n), dtype=scores.dtype, device=scores.device)
    torch.le(above.unsqueeze(2), below.unsqueeze(1), out=x)
    x.mul_(-torch.finfo(scores.dtype).max)
    x.add_((scores + margin if margin else scores).unsqueeze(1)).sub_(scores.unsqueeze(2))
    if kind == "softplus":
        per_pair = F.softplus(x)
        del x
    else:
        per_pair = x.clamp_min_(0.0)
    total = per_pair.sum((1, 2))
    if not with_grad:
        return total, None
    # d/ds_k sum_ij f(x_ij) = sum_i f'(x_ik) - sum_j f'(x_kj), and f' = 0 off the pairs.
    if kind == "softplus":
        # -f'(x) = -sigmoid(x) = expm1(-softplus(x)), in place.
        neg_slope = per_pair.neg_().expm1_()
        return total, neg_slope.sum(2) - neg_slope.sum(1)
    # The hinge's derivative is the sign of its (non-negative) value.
    slope = per_pair.sign_()
    return total, slope.sum(1) - slope.sum(2)


@torch.library.custom_op("lossflow::logcumsumexp_by_rows", mutates_args=())
def _logcumsumexp_by_rows(y: Tensor, reverse: bool) -> Tensor:
    """``logcumsumexp`` over dim 0 as one ``logaddexp`` per row, vectorised along the row.

    An opaque op, so a compiled graph calls this loop as it is (traced, its unrolled steps make
    a slow kernel) without a graph break. Not differentiable: the callers compute gradients by
    hand.
    """
    rows = list(y.unbind(0))
    if reverse:
        rows.reverse()
    out = [rows[0]]
    for row in rows[1:]:
        out.append(torch.logaddexp(out[-1], row))
    if reverse:
        out.reverse()
    return torch.stack(out)


@_logcumsumexp_by_rows.register_fake
def _(y: Tensor, reverse: bool) -> Tensor:
    return torch.empty_like(y)


def _logcumsumexp(y: Tensor, *, reverse: bool = False) -> Tensor:
    """``logcumsumexp`` over dim 0 (from the last entry back with ``reverse``).

    On CPU one ``logaddexp`` per position, vectorised over the other dimension: several times
    faster than ``torch.logcumsumexp``, which scans element by element there, and as exact (each
    step is a maximum plus ``log1p(exp(-|d|))``). Elsewhere ``torch.logcumsumexp``, one parallel
    scan.
    """
    if y.device.type == "cpu" and len(y) > 0:
        out: Tensor = _logcumsumexp_by_rows(y, reverse)
        return out
    if reverse:
        return torch.logcumsumexp(y.flip(0), 0).flip(0)
    return torch.logcumsumexp(y, 0)


def _plackett_luce(
    backwards_scores: Tensor, with_grad: bool, *, real: Tensor | None
) -> tuple[Tensor, Tensor | None]:
    """Per-list Plackett-Luce NLL of scores given from the last-ranked item to the first.

    With ``y`` the scores from the bottom of the ranking up and ``t_p = log sum_{q <= p} exp(y_q)``
    (a log-cumulative sum, exact for any spread of scores, with no branch on the data) the loss is
    ``sum_p (t_p - y_p)``; ``real`` marks the real items (padding comes first). The gradient
    comes with it: autograd through ``logcumsumexp`` would run it three times, with flips and
    masks around each. Positions run along dim 0 of the transposed ``(L, Q)`` lists, so each
    step of a scan covers every list at once.
    """
    y = backwards_scores.t().contiguous()
    real_t = None if real is None else real.t().contiguous()
    cum = _logcumsumexp(y)
    terms = cum - y
    if real_t is not None:
        terms = terms.where(real_t, 0.0)
    if not with_grad:
        return terms.sum(0), None
    # d/dy_k = sum_{p >= k} exp(y_k - t_p) - 1 = expm1(y_k + log sum_{p >= k} exp(-t_p)).
    grad = _logcumsumexp(cum.neg_(), reverse=True).add_(y).expm1_()
    if real_t is not None:
        grad = grad.where(real_t, 0.0)
    return terms.sum(0), grad.t()


def _pairwise(
    scores: Tensor,
    relevance: Tensor,
    mask: Tensor | None,
    kind: _PairKind,
    margin: float,
    reduction: str,
) -> Tensor:
    """Mean of ``f(s_j - s_i)`` over each query's pairs ``rel_i > rel_j``, reduced over queries."""
    if mask is None:
        above = below = relevance
    else:
        # Padding never wins (-inf) and never loses (+inf) a comparison, so it forms no pair;
        # its scores are zeroed so that whatever they hold cannot reach the sums.
        above = relevance.where(mask, float("-inf"))
        below = relevance.where(mask, float("inf"))
        scores = scores.where(mask, 0.0)
    # Pairs per query without a (Q, L, L) pass: item i beats the items ranked strictly below it.
    beaten = torch.searchsorted(below.sort(dim=1).values, above.contiguous(), side="left")
    n_pairs = beaten.sum(1)
    total = with_hand_gradient(
        scores, partial(_pair_sums, above=above, below=below, kind=kind, margin=margin)
    )
    per_query = total / n_pairs.clamp_min(1).to(total.dtype)
    return _reduce_queries(per_query, n_pairs > 0, reduction)


def margin_ranking_loss(
    scores: Tensor,
    relevance: Tensor,
    mask: Tensor | None = None,
    margin: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Pairwise hinge loss: a more relevant item should outscore a less relevant one by ``margin``.

    For query :math:`q` with pairs :math:`P_q = \{(i, j) : r_i > r_j\}` of real items,

    .. math::
        \ell_q = \frac{1}{|P_q|} \sum_{(i, j) \in P_q} \max(0,\ m - (s_i - s_j)),

    and :math:`\ell_q = 0` when :math:`P_q` is empty. Items of equal relevance form no pair.

    Reference: ``torch.nn.functional.margin_ranking_loss(s_i, s_j, 1, margin)`` on the enumerated
    pairs; Herbrich et al., "Large margin rank boundaries for ordinal regression", 2000.

    Args:
        scores: raw scores :math:`s` of the items of each list.
        relevance: graded relevance :math:`r \ge 0`; only its order within a list matters.
        mask: ``True`` for real items, ``False`` for padding (ignored entirely); ``None``: all real.
        margin: :math:`m \ge 0`, the score gap below which a correctly ordered pair still costs;
            ``0`` penalises only mis-ordered pairs.
        reduction: ``mean`` over queries with at least one pair, ``sum`` over queries, or
            ``none``.

    Shape:
        scores, relevance, mask: ``(Q, L)``; output: scalar, or ``(Q,)`` for ``none``.

    Example:
        >>> scores = torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, 3.0]])
        >>> relevance = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
        >>> margin_ranking_loss(scores, relevance, reduction="none")
        tensor([0.1667, 3.5000])
    """
    check_positive("margin", margin, allow_zero=True)
    scores, relevance = _check_lists(scores, relevance, mask, reduction)
    return _pairwise(scores, relevance, mask, "hinge", float(margin), reduction)


def ranknet_loss(
    scores: Tensor,
    relevance: Tensor,
    mask: Tensor | None = None,
    sigma: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""RankNet: logistic loss on the score difference of every ordered pair.

    For query :math:`q` with pairs :math:`P_q = \{(i, j) : r_i > r_j\}` of real items,

    .. math::
        \ell_q = \frac{1}{|P_q|} \sum_{(i, j) \in P_q} \log\bigl(1 + e^{-\sigma (s_i - s_j)}\bigr)
        = \frac{1}{|P_q|} \sum_{(i, j) \in P_q} \operatorname{softplus}(-\sigma (s_i - s_j)),

    the cross-entropy of the modelled :math:`P(i \succ j) = \operatorname{sigmoid}(\sigma (s_i -
    s_j))` against the target 1, and :math:`\ell_q = 0` when :math:`P_q` is empty. Ties in
    relevance form no pair (the paper's target 1/2 for ties is not used).

    Reference: Burges et al., "Learning to rank using gradient descent", ICML 2005;
    ``torch.nn.functional.binary_cross_entropy_with_logits(sigma * (s_i - s_j), 1)`` on the
    enumerated pairs.

    Args:
        scores: raw scores :math:`s` of the items of each list.
        relevance: graded relevance :math:`r \ge 0`; only its order within a list matters.
        mask: ``True`` for real items, ``False`` for padding (ignored entirely); ``None``: all real.
        sigma: :math:`\sigma > 0`, the steepness of the sigmoid (RankNet's shape parameter);
            larger values demand larger score gaps for the same loss.
        reduction: ``mean`` over queries with at least one pair, ``sum`` over queries, or
            ``none``.

    Shape:
        scores, relevance, mask: ``(Q, L)``; output: scalar, or ``(Q,)`` for ``none``.

    Example:
        >>> scores = torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, 3.0]])
        >>> relevance = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
        >>> ranknet_loss(scores, relevance, reduction="none")
        tensor([0.2675, 2.5878])
        >>> mask = torch.tensor([[True, True, False], [True, True, True]])  # drop item 3 of list 1
        >>> ranknet_loss(scores, relevance, mask, reduction="none")
        tensor([0.2014, 2.5878])
    """
    check_positive("sigma", sigma)
    scores, relevance = _check_lists(scores, relevance, mask, reduction)
    return _pairwise(scores * sigma, relevance, mask, "softplus", 0.0, reduction)


def listnet_loss(
    scores: Tensor,
    relevance: Tensor,
    mask: Tensor | None = None,
    temperature: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""ListNet (top-one approximation): cross-entropy between relevance and score softmaxes.

    Over the real items :math:`V_q` of query :math:`q`,

    .. math::
        \ell_q = -\sum_{i \in V_q} \operatorname{softmax}(r / T)_i \,
        \log \operatorname{softmax}(s)_i,

    both softmaxes taken over :math:`V_q` only. A query counts when it has a real item of
    positive relevance; otherwise (all-zero relevance, or no real item) :math:`\ell_q = 0`.

    Reference: Cao et al., "Learning to rank: from pairwise approach to listwise approach",
    ICML 2007; ``torch.nn.functional.cross_entropy(s, softmax(r / T))`` (probability targets).

    Args:
        scores: raw scores :math:`s` of the items of each list.
        relevance: graded relevance :math:`r \ge 0`; its values, not only their order, shape the
            target distribution.
        mask: ``True`` for real items, ``False`` for padding (ignored entirely); ``None``: all real.
        temperature: :math:`T > 0` divides the relevance before its softmax: small values
            concentrate the target on the most relevant items, large ones flatten it.
        reduction: ``mean`` over queries that count, ``sum`` over queries, or ``none``.

    Shape:
        scores, relevance, mask: ``(Q, L)``; output: scalar, or ``(Q,)`` for ``none``.

    Example:
        >>> scores = torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, 3.0]])
        >>> relevance = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
        >>> listnet_loss(scores, relevance, reduction="none")
        tensor([0.8535, 2.2814])
    """
    check_positive("temperature", temperature)
    scores, relevance = _check_lists(scores, relevance, mask, reduction)
    if mask is not None:
        # The most negative finite number: padding gets probability 0 and a finite
        # log-probability, so 0 * log p stays 0 and no gradient reaches it.
        low = torch.finfo(scores.dtype).min
        scores = scores.where(mask, low)
        relevance = relevance.where(mask, low)
    top = relevance.amax(1, keepdim=True)
    counts = top.squeeze(1) > 0
    if temperature != 1.0:
        # Shifted by the top relevance first, so that a small temperature cannot overflow.
        relevance = (relevance - top) / temperature
    target = torch.softmax(relevance, dim=1)
    per_query = F.cross_entropy(scores, target, reduction="none")
    return _reduce_queries(per_query.where(counts, 0.0), counts, reduction)


def listmle_loss(
    scores: Tensor,
    relevance: Tensor,
    mask: Tensor | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""ListMLE: Plackett-Luce negative log-likelihood of the list sorted by relevance.

    With :math:`\pi` the order of the :math:`n_q` real items of query :math:`q` by relevance,
    descending,

    .. math::
        \ell_q = \sum_{i=1}^{n_q} \Bigl[\log \sum_{k=i}^{n_q} e^{s_{\pi_k}} - s_{\pi_i}\Bigr].

    Ties in relevance are broken by the items' position in the list (a stable sort: the earlier
    item is ranked first), so the loss is deterministic. A query counts when it has a real item of
    positive relevance; otherwise :math:`\ell_q = 0`. A list with one real item costs 0.

    Reference: Xia et al., "Listwise approach to learning to rank: theory and algorithm",
    ICML 2008.

    Args:
        scores: raw scores :math:`s` of the items of each list.
        relevance: graded relevance :math:`r \ge 0`; only its order within a list matters.
        mask: ``True`` for real items, ``False`` for padding (ignored entirely); ``None``: all real.
        reduction: ``mean`` over queries that count, ``sum`` over queries, or ``none``.

    Shape:
        scores, relevance, mask: ``(Q, L)``; output: scalar, or ``(Q,)`` for ``none``.

    Example:
        >>> scores = torch.tensor([[2.0, 0.5, 0.0], [0.0, 1.0, 3.0]])
        >>> relevance = torch.tensor([[2.0, 1.0, 0.0], [1.0, 1.0, 0.0]])
        >>> listmle_loss(scores, relevance, reduction="none")
        tensor([0.7804, 5.2968])
    """
    scores, relevance = _check_lists(scores, relevance, mask, reduction)
    # Relevance is >= 0, so a key of -1 sorts padding after every real item.
    key = relevance if mask is None else relevance.where(mask, -1.0)
    counts = key.amax(1) > 0
    order = torch.sort(key, dim=1, descending=True, stable=True).indices
    # Walk the ranking from its last item: the suffix sums of the formula become prefix sums.
    backwards = order.flip(1)
    if mask is not None:
        # Finite fill: its weight exp(fill - s) is 0 and every cumulative sum stays finite.
        scores = scores.where(mask, torch.finfo(scores.dtype).min)
    ranked = scores.gather(1, backwards)
    real = None if mask is None else mask.gather(1, backwards)
    per_query = with_hand_gradient(ranked, partial(_plackett_luce, real=real))
    return _reduce_queries(per_query.where(counts, 0.0), counts, reduction)


class MarginRankingLoss(nn.Module):
    """Module form of :func:`margin_ranking_loss`."""

    def __init__(self, margin: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_positive("margin", margin, allow_zero=True)
        check_reduction(reduction)
        self.margin = float(margin)
        self.reduction = reduction

    def forward(self, scores: Tensor, relevance: Tensor, mask: Tensor | None = None) -> Tensor:
        return margin_ranking_loss(scores, relevance, mask, self.margin, self.reduction)


class RankNetLoss(nn.Module):
    """Module form of :func:`ranknet_loss`."""

    def __init__(self, sigma: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_positive("sigma", sigma)
        check_reduction(reduction)
        self.sigma = float(sigma)
        self.reduction = reduction

    def forward(self, scores: Tensor, relevance: Tensor, mask: Tensor | None = None) -> Tensor:
        return ranknet_loss(scores, relevance, mask, self.sigma, self.reduction)


class ListNetLoss(nn.Module):
    """Module form of :func:`listnet_loss`."""

    def __init__(self, temperature: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_positive("temperature", temperature)
        check_reduction(reduction)
        self.temperature = float(temperature)
        self.reduction = reduction

    def forward(self, scores: Tensor, relevance: Tensor, mask: Tensor | None = None) -> Tensor:
        return listnet_loss(scores, relevance, mask, self.temperature, self.reduction)


class ListMLELoss(nn.Module):
    """Module form of :func:`listmle_loss`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, scores: Tensor, relevance: Tensor, mask: Tensor | None = None) -> Tensor:
        return listmle_loss(scores, relevance, mask, self.reduction)


@register_loss
class MarginRankingSpec(LossSpecBase):
    """Pairwise hinge: a more relevant item must outscore a less relevant one by a margin."""

    tasks: ClassVar[frozenset[TaskType]] = _RANKING
    reference: ClassVar[str] = "torch.nn.functional.margin_ranking_loss on enumerated pairs"
    name: Literal["margin_ranking"] = "margin_ranking"
    margin: float = Field(
        1.0,
        description="score gap (>= 0) below which a correctly ordered pair still costs; "
        "0 penalises only mis-ordered pairs",
    )

    def build(self) -> nn.Module:
        return MarginRankingLoss(margin=self.margin, reduction=self.reduction)


@register_loss
class RankNetSpec(LossSpecBase):
    """RankNet: logistic loss on the score gap of every pair of differently relevant items."""

    tasks: ClassVar[frozenset[TaskType]] = _RANKING
    reference: ClassVar[str] = (
        "torch.nn.functional.binary_cross_entropy_with_logits(sigma * (s_i - s_j), 1) "
        "on enumerated pairs"
    )
    name: Literal["ranknet"] = "ranknet"
    sigma: float = Field(
        1.0,
        description="steepness (> 0) of the sigmoid on the score gap: P(i > j) = "
        "sigmoid(sigma * (s_i - s_j))",
    )

    def build(self) -> nn.Module:
        return RankNetLoss(sigma=self.sigma, reduction=self.reduction)


@register_loss
class ListNetSpec(LossSpecBase):
    """ListNet: cross-entropy between the softmax of the relevance and of the scores."""

    tasks: ClassVar[frozenset[TaskType]] = _RANKING
    reference: ClassVar[str] = (
        "torch.nn.functional.cross_entropy with probability targets (unmasked); numpy (masked)"
    )
    name: Literal["listnet"] = "listnet"
    temperature: float = Field(
        1.0,
        description="divides the relevance (> 0) before its softmax, in the relevance's unit: "
        "ratings of 1-5 spread the target, counts in the hundreds put it all on the top item "
        "unless the temperature is of their scale (listmle and ranknet use the order only)",
    )

    def build(self) -> nn.Module:
        return ListNetLoss(temperature=self.temperature, reduction=self.reduction)


@register_loss
class ListMLESpec(LossSpecBase):
    """ListMLE: Plackett-Luce likelihood of the order by relevance (ties: list position)."""

    tasks: ClassVar[frozenset[TaskType]] = _RANKING
    reference: ClassVar[str] = "plain-Python Plackett-Luce negative log-likelihood"
    name: Literal["listmle"] = "listmle"

    def build(self) -> nn.Module:
        return ListMLELoss(reduction=self.reduction)
