"""Cost-weighted log loss: false-negative/false-positive costs, or a cost matrix."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from functools import partial
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lossflow.losses._base import (
    check_class_count,
    check_class_vector,
    check_positive,
    check_reduction,
    reduce,
    with_hand_gradient,
)
from lossflow.losses.classification._common import (
    BINARY_TASKS,
    CLASSIFICATION_TASKS,
    MULTICLASS_TASKS,
    binary_pair,
    is_multiclass,
    multiclass_pair,
)
from lossflow.losses.options import Reduction
from lossflow.losses.spec import LossSpecBase, TaskType, register_loss


def _check_cost_options(
    fn_cost: float | None, fp_cost: float | None, cost_matrix: Sequence[Sequence[float]] | None
) -> None:
    if cost_matrix is not None:
        if fn_cost is not None or fp_cost is not None:
            raise ValueError(
                "give either the binary costs fn_cost/fp_cost or cost_matrix (multiclass), not both"
            )
        size = len(cost_matrix)
        if size < 2:
            raise ValueError(f"cost_matrix must be C x C with C >= 2; got {size} rows")
        for i, row in enumerate(cost_matrix):
            if len(row) != size:
                raise ValueError(
                    f"cost_matrix must be square; row {i} has {len(row)} entries, not {size}"
                )
            check_class_vector(f"cost_matrix[{i}]", row)
            if row[i] != 0:
                raise ValueError(
                    f"cost_matrix must have a zero diagonal (a correct prediction costs "
                    f"nothing); got cost_matrix[{i}][{i}] = {row[i]!r}"
                )
        return
    if fn_cost is not None:
        check_positive("fn_cost", fn_cost)
    if fp_cost is not None:
        check_positive("fp_cost", fp_cost)


def _cost_matrix(x: Tensor, need_grad: bool, *, costs: Tensor) -> tuple[Tensor, Tensor | None]:
    """Per-sample ``-sum_k c_k log(1 - p_k)`` (``c = costs``, ``p = softmax(x, 1)``) and its
    gradient in ``x``, without cancellation and with no branch on the data.

    With ``m`` the largest logit of a row (at ``top``), ``m2`` the largest of the others,
    ``e_k = exp(x_k - m2)`` off ``top`` (0 at ``top``), ``S = sum_k e_k >= 1`` and ``t = exp(m2 -
    m) <= 1``: ``p_top = 1 / (1 + S t)`` and ``p_k = e_k t p_top`` elsewhere. Off ``top``,
    ``p_k <= 1/2`` and ``log1p(-p_k)`` is exact; at ``top``, ``log(1 - p_top) = log S + m2 - m -
    log1p(S t)``, finite for any logits. The gradient ``d/dx_j = r_j - p_j sum_k r_k`` with
    ``r_k = c_k p_k / (1 - p_k)`` becomes ``r_j - w e_j`` off ``top`` (``w`` one number per row)
    and ``p_top (c_top - sum_{k != top} r_k)`` at ``top``, so no ``1 / (1 - p_top)`` is formed.
    """
    m, top = x.max(1, keepdim=True)
    d = (x - m).scatter_(1, top, float("-inf"))
    gap = d.amax(1, keepdim=True)  # m2 - m
    e = d.sub_(gap).exp_()
    s = e.sum(1, keepdim=True)
    t = gap.exp()
    st = s * t
    p_top = st.add(1.0).reciprocal_()
    minus_p = torch.mul(e, -(t * p_top))  # -p_k off top, 0 at top
    c_top = costs.gather(1, top)
    total = (costs * torch.log1p(minus_p)).sum(1, keepdim=True)
    total.addcmul_(c_top, s.log().add_(gap).sub_(st.log1p()))  # c_top log(1 - p_top)
    loss = total.squeeze(1).neg_()
    if not need_grad:
        return loss, None
    r = torch.div(minus_p, torch.rsub(minus_p, -1.0), out=minus_p).mul_(costs)  # 0 at top
    r_sum = r.sum(1, keepdim=True)
    w = (t * r_sum).add_(c_top / s).mul_(p_top)
    grad = r.addcmul_(e, w, value=-1.0)
    return loss, grad.scatter_(1, top, p_top * (c_top - r_sum))


def cost_sensitive_loss(
    input: Tensor,
    target: Tensor,
    fn_cost: float | None = None,
    fp_cost: float | None = None,
    cost_matrix: Sequence[Sequence[float]] | None = None,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Cost-weighted log loss.

    **Binary** (``fn_cost``/``fp_cost``, float target):

    .. math::

        \ell_i = -\left[c_{FN}\, y_i \log \sigma(x_i) + c_{FP} (1 - y_i) \log \sigma(-x_i)\right]

    For a constant logit and positive rate :math:`\eta` the minimiser is
    :math:`\sigma(x^*) = c_{FN}\eta / (c_{FN}\eta + c_{FP}(1 - \eta))`, so "predict positive iff
    :math:`\sigma(x) > 0.5`" is the Bayes cost-optimal rule
    :math:`\eta > c_{FP} / (c_{FN} + c_{FP})`: threshold the trained model at 0.5.

    **Multiclass** (``cost_matrix``, integer target), with :math:`C[t][k]` the cost of predicting
    :math:`k` when the truth is :math:`t` (zero diagonal) and :math:`p = \mathrm{softmax}(x)`:

    .. math:: \ell_i = \sum_{k \ne y_i} C[y_i][k] \, \bigl(-\log(1 - p_{ik})\bigr)

    i.e. each wrong class is pushed down in proportion to the cost of predicting it. With
    ``C = [[0, fp], [fn, 0]]`` it is exactly the binary loss of the logit :math:`x_1 - x_0`.
    :math:`\log(1 - p_k)` is computed without cancellation (see ``_cost_matrix``), and the
    forward pass computes the gradient too: the loss is differentiable once in the logits.

    Reference: the formulas above in numpy float64.

    Args:
        input: logits.
        target: binary labels in [0, 1] (binary costs) or class indices (``cost_matrix``).
        fn_cost: :math:`c_{FN} > 0`, cost of a false negative (weight of the positive term);
            ``None`` means 1.
        fp_cost: :math:`c_{FP} > 0`, cost of a false positive (weight of the negative term);
            ``None`` means 1.
        cost_matrix: ``cost_matrix[true][pred]``, non-negative, zero diagonal, C x C with
            C >= 2. Give either it or the binary costs, not both.
        reduction: ``mean`` over elements (binary) or samples (multiclass), ``sum``, ``none``.

    Shape:
        binary as :func:`bce_loss`; multiclass input ``(N, C)``/``(N, C, *)``, target
        ``(N,)``/``(N, *)``, output ``(N,)``/``(N, *)`` for ``none``.

    Example:
        >>> cost_sensitive_loss(torch.zeros(2), torch.tensor([1.0, 0.0]), fn_cost=5.0, fp_cost=1.0)
        tensor(2.0794)
    """
    _check_cost_options(fn_cost, fp_cost, cost_matrix)
    multiclass = is_multiclass(input, target)
    if cost_matrix is None:
        if multiclass:
            raise ValueError(
                "fn_cost/fp_cost are binary costs and need a float target of the input's shape; "
                "for class indices give cost_matrix"
            )
        input, target = binary_pair(input, target, reduction)
        fn = 1.0 if fn_cost is None else fn_cost
        fp = 1.0 if fp_cost is None else fp_cost
        pos_weight = torch.tensor(fn / fp, dtype=input.dtype, device=input.device)
        loss = F.binary_cross_entropy_with_logits(
            input, target, pos_weight=pos_weight, reduction=reduction
        )
        return loss if fp == 1.0 else loss * fp
    if not multiclass:
        raise ValueError(
            "cost_matrix needs a multiclass target (integer class indices); for a binary target "
            "give fn_cost and fp_cost"
        )
    input, target = multiclass_pair(input, target, reduction)
    check_class_count("cost_matrix", cost_matrix[0], input.shape[1])  # square: checked
    costs = torch.tensor([list(row) for row in cost_matrix], dtype=input.dtype, device=input.device)
    row_costs = costs[target].movedim(-1, 1)  # (N, C, *): C[y_i][k]
    return reduce(with_hand_gradient(input, partial(_cost_matrix, costs=row_costs)), reduction)


class CostSensitiveLoss(nn.Module):
    """Module form of :func:`cost_sensitive_loss`."""

    def __init__(
        self,
        fn_cost: float | None = None,
        fp_cost: float | None = None,
        cost_matrix: Sequence[Sequence[float]] | None = None,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        _check_cost_options(fn_cost, fp_cost, cost_matrix)
        self.fn_cost = fn_cost
        self.fp_cost = fp_cost
        self.cost_matrix = None if cost_matrix is None else tuple(tuple(row) for row in cost_matrix)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return cost_sensitive_loss(
            input, target, self.fn_cost, self.fp_cost, self.cost_matrix, self.reduction
        )


@register_loss
class CostSensitiveSpec(LossSpecBase):
    """Cost-weighted log loss: false-negative/false-positive costs, or a cost matrix."""

    tasks: ClassVar[frozenset[TaskType]] = CLASSIFICATION_TASKS
    task_options: ClassVar[Mapping[TaskType, str]] = {
        "multiclass": "a cost_matrix (cost_matrix[true][pred], zero diagonal)",
        "binary": "fn_cost/fp_cost without a cost_matrix",
        "multilabel": "fn_cost/fp_cost without a cost_matrix",
    }
    reference: ClassVar[str] = "numpy float64 cost-weighted log loss"
    name: Literal["cost_sensitive"] = "cost_sensitive"
    fn_cost: float | None = Field(
        default=None, description="binary: cost (> 0) of a false negative; None means 1"
    )
    fp_cost: float | None = Field(
        default=None, description="binary: cost (> 0) of a false positive; None means 1"
    )
    cost_matrix: list[list[float]] | None = Field(
        default=None,
        description="multiclass: cost_matrix[true][pred], >= 0 with zero diagonal",
    )

    def build(self) -> nn.Module:
        return CostSensitiveLoss(
            self.fn_cost, self.fp_cost, self.cost_matrix, reduction=self.reduction
        )

    def task_types(self) -> frozenset[TaskType]:
        return BINARY_TASKS if self.cost_matrix is None else MULTICLASS_TASKS
