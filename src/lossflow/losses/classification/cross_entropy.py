"""Binary cross-entropy (``bce``) and multiclass cross-entropy (``ce``) on logits."""

from __future__ import annotations

from collections.abc import Sequence
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
)
from lossflow.losses.classification._common import (
    BINARY_TASKS,
    MULTICLASS_TASKS,
    binary_pair,
    check_half_open,
    multiclass_pair,
)
from lossflow.losses.options import Reduction
from lossflow.losses.spec import LossSpecBase, TaskType, register_loss


def _check_pos_weight(pos_weight: float | None) -> None:
    if pos_weight is not None:
        check_positive("pos_weight", pos_weight)


def bce_loss(
    input: Tensor, target: Tensor, pos_weight: float | None = None, reduction: Reduction = "mean"
) -> Tensor:
    r"""Binary cross-entropy on logits.

    .. math:: \ell_i = -\left[ w_+ \, y_i \log \sigma(x_i) + (1 - y_i) \log \sigma(-x_i) \right]

    computed as ``torch.nn.functional.binary_cross_entropy_with_logits`` (log-space).

    Reference: scikit-learn ``log_loss`` (``pos_weight=None``); the formula above in numpy.

    Args:
        input: logits :math:`x`, any shape.
        target: labels :math:`y \in [0, 1]` (soft labels allowed), same shape as ``input``.
        pos_weight: :math:`w_+ > 0`, multiplies the positive term only; ``None`` means 1. A value
            of ``n_neg / n_pos`` makes positives count as much as negatives in total.
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> bce_loss(torch.tensor([0.0, 0.0]), torch.tensor([1.0, 0.0]))
        tensor(0.6931)
    """
    _check_pos_weight(pos_weight)
    input, target = binary_pair(input, target, reduction)
    weight = None
    if pos_weight is not None:
        weight = torch.tensor(pos_weight, dtype=input.dtype, device=input.device)
    return F.binary_cross_entropy_with_logits(input, target, pos_weight=weight, reduction=reduction)


class BCELoss(nn.Module):
    """Module form of :func:`bce_loss`."""

    def __init__(self, pos_weight: float | None = None, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        _check_pos_weight(pos_weight)
        self.pos_weight = pos_weight
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return bce_loss(input, target, self.pos_weight, self.reduction)


@register_loss
class BCESpec(LossSpecBase):
    """Binary cross-entropy on logits (binary and multilabel)."""

    tasks: ClassVar[frozenset[TaskType]] = BINARY_TASKS
    reference: ClassVar[str] = "torch.nn.functional.binary_cross_entropy_with_logits"
    name: Literal["bce"] = "bce"
    pos_weight: float | None = Field(
        default=None,
        description="weight (> 0) of the positive term; None means 1",
    )

    def build(self) -> nn.Module:
        return BCELoss(pos_weight=self.pos_weight, reduction=self.reduction)


def _check_class_weights(name: str, weights: Sequence[float] | None) -> None:
    if weights is None:
        return
    check_class_vector(name, weights)
    if not any(w > 0 for w in weights):
        raise ValueError(f"{name} must have at least one positive entry; got {list(weights)!r}")


def _check_ce_options(class_weights: Sequence[float] | None, label_smoothing: float) -> None:
    _check_class_weights("class_weights", class_weights)
    check_half_open("label_smoothing", label_smoothing)


def ce_loss(
    input: Tensor,
    target: Tensor,
    class_weights: Sequence[float] | None = None,
    label_smoothing: float = 0.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Multiclass cross-entropy on logits, with optional class weights and label smoothing.

    With :math:`\log p = \operatorname{log\_softmax}(x)`, smoothing :math:`\varepsilon` and
    weights :math:`w`:

    .. math::

        \ell_i = (1 - \varepsilon)\, w_{y_i} (-\log p_{i y_i})
            + \frac{\varepsilon}{C} \sum_k w_k (-\log p_{ik})

    exactly ``torch.nn.functional.cross_entropy``. With weights, ``mean`` is **not** the plain
    mean: it divides :math:`\sum_i \ell_i` by :math:`\sum_i w_{y_i}` (the sum of the targets'
    weights, torch semantics), so ``mean`` differs from the mean of ``none``.

    Reference: scikit-learn ``log_loss`` (no weights, no smoothing); the formula above in numpy.

    Args:
        input: logits :math:`x`.
        target: class indices :math:`y \in [0, C)`.
        class_weights: :math:`w_k \ge 0`, one per class (at least one positive); ``None`` means 1.
            A class's weight scales every sample of that class.
        label_smoothing: :math:`\varepsilon \in [0, 1)`; the target becomes
            :math:`(1 - \varepsilon)\,\mathrm{onehot}(y) + \varepsilon / C`.
        reduction: ``mean`` (weighted as above), ``sum``, or ``none``.

    Shape:
        input: ``(N, C)`` or ``(N, C, *)``; target: ``(N,)`` or ``(N, *)``; output: scalar, or
        ``(N,)`` / ``(N, *)`` for ``none``.

    Example:
        >>> ce_loss(torch.tensor([[0.0, 0.0]]), torch.tensor([1]))
        tensor(0.6931)
    """
    _check_ce_options(class_weights, label_smoothing)
    input, target = multiclass_pair(input, target, reduction)
    weight = None
    if class_weights is not None:
        check_class_count("class_weights", class_weights, input.shape[1])
        weight = torch.tensor(list(class_weights), dtype=input.dtype, device=input.device)
    return F.cross_entropy(
        input, target, weight=weight, label_smoothing=label_smoothing, reduction=reduction
    )


class CELoss(nn.Module):
    """Module form of :func:`ce_loss`."""

    def __init__(
        self,
        class_weights: Sequence[float] | None = None,
        label_smoothing: float = 0.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        _check_ce_options(class_weights, label_smoothing)
        self.class_weights = None if class_weights is None else tuple(class_weights)
        self.label_smoothing = label_smoothing
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return ce_loss(input, target, self.class_weights, self.label_smoothing, self.reduction)


@register_loss
class CESpec(LossSpecBase):
    """Multiclass cross-entropy on logits, optional class weights and label smoothing."""

    tasks: ClassVar[frozenset[TaskType]] = MULTICLASS_TASKS
    reference: ClassVar[str] = "torch.nn.functional.cross_entropy"
    name: Literal["ce"] = "ce"
    class_weights: list[float] | None = Field(
        default=None,
        description="one weight (>= 0) per class; weighted mean divides by the targets' weights",
    )
    label_smoothing: float = Field(
        default=0.0, description="in [0, 1): mass spread uniformly over all classes"
    )

    def build(self) -> nn.Module:
        return CELoss(self.class_weights, self.label_smoothing, reduction=self.reduction)
