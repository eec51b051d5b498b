"""Focal loss (Lin et al. 2017) for binary, multilabel and multiclass targets.

Focal loss is the benchmarked hot path: its forward pass computes the loss and its gradient together
and the backward pass only scales that gradient; ``torch.compile`` traces the same code and fuses
it (faster than torchvision's formula through autograd, compiled too). Such functions are
differentiable once (a second derivative raises instead of silently being wrong).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lossflow.losses._base import (
    check_class_count,
    check_class_vector,
    check_positive,
    check_reduction,
    reduce,
    with_hand_gradient,
)
from lossflow.losses.classification._common import (
    CLASSIFICATION_TASKS,
    MULTICLASS_TASKS,
    binary_pair,
    check_unit_closed,
    class_tensor,
    is_multiclass,
    multiclass_pair,
)
from lossflow.losses.options import Reduction
from lossflow.losses.spec import LossSpecBase, TaskType, register_loss


def _check_focal_options(alpha: float | Sequence[float] | None, gamma: float) -> None:
    check_positive("gamma", gamma, allow_zero=True)
    if alpha is None:
        return
    if isinstance(alpha, int | float):
        check_unit_closed("alpha", float(alpha))
    else:
        check_class_vector("alpha", alpha)


# Exponents with a dedicated (fast, exact) kernel in torch.pow: square, cube, sqrt.
_FAST_POWERS = (0.5, 2.0, 3.0)


def _focal_weight(q: Tensor, gamma: float) -> Tensor | None:
    """``q ** gamma`` for ``0 <= q <= 1`` (``None`` for ``gamma == 0``), finite at ``q == 0``."""
    if gamma == 0:
        return None
    if gamma == 1:
        return q
    if gamma in _FAST_POWERS:
        return torch.pow(q, gamma)
    # exp(gamma * log q): far cheaper than a general pow on CPU; log 0 = -inf gives exactly 0.
    return torch.log(q).mul_(gamma).exp_()


def _binary_focal(
    x: Tensor, y: Tensor, alpha: float | None, gamma: float, reduction: str, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Binary focal loss, reduced, and its gradient: ``ce = softplus(x) - x y`` (torchvision, soft
    labels allowed), ``1 - p_t = lerp(p, 1 - p, y)``.

    d loss / dx = alpha_t [m (p - y) + gamma m ce (1 - 2y) p (1 - p) / q], ``m = q^gamma``.
    One computation for hard and soft labels alike (choosing by the target's values would read
    them on the host), without cancellation at hard labels: ``ce`` is
    ``lerp(relu(x), relu(-x), y) + softplus(-|x|)`` with ``softplus(-|x|) =
    -log1p(-min(p, 1 - p))``, ``p - y = lerp(p, -(1 - p), y)``, ``p (1 - p)`` is
    ``sigmoid(x) sigmoid(-x)``. ``q`` is 0 only where a hard label is saturated, where ``m ce`` is
    0 too, so ``q`` is floored at the smallest normal number. Buffers are reused in place.
    """
    x_neg = x.neg()
    p = torch.sigmoid(x)
    p_neg = torch.sigmoid(x_neg)
    ce = torch.relu(x).lerp_(x_neg.relu_(), y)  # lerp is exact at y = 0 and y = 1
    ce.sub_(torch.minimum(p, p_neg, out=x_neg).neg_().log1p_())
    q = torch.lerp(p, p_neg, y, out=x_neg)
    m = _focal_weight(q, gamma)
    mce = ce if m is None else ce.mul_(m)
    if reduction == "none":
        loss = mce if alpha is None else torch.rsub(y, 1.0 - alpha, alpha=1.0 - 2.0 * alpha)
        if alpha is not None:
            loss.mul_(mce)
    else:
        total = mce.sum()
        if alpha is not None:  # sum alpha_t mce, alpha_t = (1 - alpha) + (2 alpha - 1) y
            positives = torch.dot(y.reshape(-1), mce.reshape(-1))
            total = total.mul(1.0 - alpha).add_(positives, alpha=2.0 * alpha - 1.0)
        loss = total / mce.numel() if reduction == "mean" else total
    if not need_grad:
        return loss, None
    tiny = torch.finfo(q.dtype).tiny
    ratio = torch.clamp_min(q, tiny) if m is q else q.clamp_min_(tiny)
    ratio.reciprocal_().mul_(p).mul_(p_neg)  # p (1 - p) / q, in [0, 1]
    ratio.mul_(mce).addcmul_(ratio, y, value=-2.0)  # m ce (1 - 2y) p (1 - p) / q
    grad = p.lerp_(p_neg.neg_(), y)  # p - y
    if m is not None:
        grad.mul_(m)
    grad.add_(ratio, alpha=gamma)
    if alpha is not None:
        alpha_t = torch.tensor(1.0 - alpha, dtype=y.dtype, device=y.device)
        grad.mul_(torch.add(alpha_t, y, alpha=2.0 * alpha - 1.0, out=p_neg))
    return loss, grad


class _BinaryFocal(torch.autograd.Function):
    """Binary focal loss, reduced; its forward also computes d loss / d input (saved)."""

    @staticmethod
    def forward(
        ctx: Any,
        input: Tensor,
        target: Tensor,
        alpha: float | None,
        gamma: float,
        reduction: str,
    ) -> Tensor:
        loss, grad = _binary_focal(input, target, alpha, gamma, reduction, True)
        ctx.save_for_backward(grad)
        ctx.scale = 1.0 / input.numel() if reduction == "mean" else 1.0
        return loss

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        if ctx.scale != 1.0:
            grad_output = grad_output * ctx.scale
        return grad * grad_output, None, None, None, None


def _focal_from_log_prob(
    log_p: Tensor, alpha: Tensor | None, gamma: float, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Per-sample ``-alpha_y (1 - p_y)^gamma log p_y`` and its derivative w.r.t. ``log p_y``.

    d/d log p = -alpha m (1 - gamma log p * p / q), ``q = 1 - p = -expm1(log p)``, ``m = q^gamma``;
    where ``q == 0`` the ratio ``log p * p / q`` is its limit -1.
    """
    q = torch.expm1(log_p).neg_()
    m = _focal_weight(q, gamma)
    loss = log_p.neg() if m is None else torch.mul(m, log_p).neg_()
    if alpha is not None:
        loss.mul_(alpha)
    if not need_grad:
        return loss, None
    if m is None:
        grad = log_p.new_full(log_p.shape, -1.0)
    else:
        ratio = torch.where(q > 0, log_p * log_p.exp() / q, -1.0)
        grad = ratio.mul_(-gamma).add_(1.0).mul_(m).neg_()
    return loss, grad if alpha is None else grad.mul_(alpha)


def _multiclass_focal(
    input: Tensor, with_grad: bool, *, target: Tensor, alpha: Tensor | None, gamma: float
) -> tuple[Tensor, Tensor | None]:
    """Per-sample multiclass focal loss and, with ``with_grad``, its gradient in the logits.

    With ``g`` the derivative w.r.t. ``log p_y``, d loss / d x = g (onehot(y) - softmax(x)),
    written into the buffer of ``log_softmax(x)``: one full-size buffer in all.
    """
    index = target.unsqueeze(1)
    log_probs = F.log_softmax(input, 1)
    loss, g = _focal_from_log_prob(log_probs.gather(1, index).squeeze(1), alpha, gamma, with_grad)
    if g is None:
        return loss, None
    g = g.unsqueeze(1)
    return loss, log_probs.exp_().mul_(g.neg()).scatter_add_(1, index, g)


def focal_loss(
    input: Tensor,
    target: Tensor,
    alpha: float | Sequence[float] | None = 0.25,
    gamma: float = 2.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Focal loss (Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017).

    .. math:: \ell_i = -\alpha_t (1 - p_t)^\gamma \log p_t

    **Binary / multilabel** (float target of the input's shape): :math:`p = \sigma(x)`,
    :math:`p_t = p y + (1 - p)(1 - y)`, :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)`, and
    :math:`-\log p_t` is the binary cross-entropy :math:`\mathrm{softplus}(x) - x y`: exactly
    ``torchvision.ops.sigmoid_focal_loss``, also for soft labels. For hard labels it equals
    ``kornia.losses.binary_focal_loss_with_logits`` with the same ``alpha``; for soft labels kornia
    weights the two terms by ``y`` and ``1 - y`` instead. The forward pass computes the gradient
    too (the backward pass only scales it), so the target receives no gradient.

    **Multiclass** (integer target): :math:`p = \mathrm{softmax}(x)`, :math:`p_t = p_{y}`,
    :math:`\alpha_t = \alpha_{y}` from a per-class list. This is ``kornia.losses.focal_loss`` with
    ``alpha=None, weight=alpha``, summed over the class dimension of its ``reduction="none"`` map
    (kornia's float ``alpha=a`` is our ``[1 - a, a, ..., a]``).

    With ``gamma=0`` and ``alpha=None`` it equals :func:`bce_loss` / :func:`ce_loss` in value
    and gradient. :math:`1 - p_t` is a sigmoid of the logit (or ``-expm1(log p_t)``), never
    ``1 - p_t`` by subtraction, and no :math:`(1 - p_t)^{\gamma - 1}` appears in the gradient,
    so ``gamma < 1`` keeps finite gradients at saturated logits.

    Reference: ``torchvision.ops.sigmoid_focal_loss`` (numpy re-implementation),
    ``kornia.losses.binary_focal_loss_with_logits`` and ``kornia.losses.focal_loss``.

    Args:
        input: logits :math:`x`.
        target: binary labels in [0, 1] (same shape as ``input``) or class indices.
        alpha: binary target: a float in [0, 1], the weight of the **positive** class (negatives
            get ``1 - alpha``), as torchvision; default 0.25 (down-weights positives).
            Multiclass target: a list of per-class weights (>= 0), one per class; a float
            raises ``ValueError``. ``None``: no weighting (all weights 1).
        gamma: focusing parameter :math:`\gamma \ge 0`; 0 gives cross-entropy.
        reduction: ``mean`` over all elements (binary) or samples (multiclass), ``sum``, ``none``.

    Shape:
        binary: input, target ``(*)``, output ``(*)`` for ``none``. Multiclass: input ``(N, C)``
        or ``(N, C, *)``, target ``(N,)`` or ``(N, *)``, output ``(N,)`` / ``(N, *)`` for ``none``.

    Example:
        >>> x, y = torch.tensor([2.0, -1.0]), torch.tensor([1.0, 0.0])
        >>> bce = F.binary_cross_entropy_with_logits(x, y)
        >>> torch.allclose(focal_loss(x, y, alpha=None, gamma=0.0), bce)
        True
        >>> focal_loss(torch.zeros(2, 3), torch.tensor([0, 2]), alpha=[1.0, 1.0, 2.0], gamma=2.0)
        tensor(0.7324)
    """
    _check_focal_options(alpha, gamma)
    if is_multiclass(input, target):
        if isinstance(alpha, int | float):
            raise ValueError(
                f"alpha={alpha!r} is a binary (positive-class) weight; for a multiclass target "
                "give alpha as a list with one weight per class, or None"
            )
        input, target = multiclass_pair(input, target, reduction)
        alpha_y = None
        if alpha is not None:
            check_class_count("alpha", alpha, input.shape[1])
            alpha_y = class_tensor(alpha, input, target)
        compute = partial(_multiclass_focal, target=target, alpha=alpha_y, gamma=float(gamma))
        return reduce(with_hand_gradient(input, compute), reduction)
    if alpha is not None and not isinstance(alpha, int | float):
        raise ValueError(
            "alpha as a per-class list needs a multiclass target; for a binary or multilabel "
            "target give alpha as the positive-class weight in [0, 1], or None"
        )
    if target.requires_grad:
        raise ValueError(
            "focal_loss computes no gradient for the target; detach the target "
            "(target.detach()) before calling it"
        )
    input, target = binary_pair(input, target, reduction)
    binary_alpha = None if alpha is None else float(alpha)
    if input.requires_grad and torch.is_grad_enabled():
        apply = cast(Callable[..., Tensor], _BinaryFocal.apply)  # untyped in torch's stubs
        return apply(input, target, binary_alpha, float(gamma), reduction)
    return _binary_focal(input, target, binary_alpha, float(gamma), reduction, False)[0]


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`."""

    def __init__(
        self,
        alpha: float | Sequence[float] | None = 0.25,
        gamma: float = 2.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        _check_focal_options(alpha, gamma)
        self.alpha: float | tuple[float, ...] | None = (
            alpha if alpha is None or isinstance(alpha, int | float) else tuple(alpha)
        )
        self.gamma = gamma
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return focal_loss(input, target, self.alpha, self.gamma, self.reduction)


@register_loss
class FocalSpec(LossSpecBase):
    """Focal loss (Lin et al. 2017): cross-entropy down-weighting easy examples by (1-p_t)^gamma."""

    tasks: ClassVar[frozenset[TaskType]] = CLASSIFICATION_TASKS
    task_options: ClassVar[Mapping[TaskType, str]] = {
        "multiclass": "alpha to null or to a list of one weight per class (loss.alpha=null)"
    }
    reference: ClassVar[str] = (
        "torchvision.ops.sigmoid_focal_loss (numpy), kornia.losses.binary_focal_loss_with_logits, "
        "kornia.losses.focal_loss"
    )
    name: Literal["focal"] = "focal"
    alpha: float | list[float] | None = Field(
        default=0.25,
        description=(
            "binary: weight in [0, 1] of the positive class (negatives 1 - alpha), as "
            "torchvision; multiclass: one weight per class (a float raises); None: no weighting"
        ),
    )
    gamma: float = Field(default=2.0, description="focusing parameter >= 0; 0 gives cross-entropy")

    def build(self) -> nn.Module:
        return FocalLoss(alpha=self.alpha, gamma=self.gamma, reduction=self.reduction)

    def task_types(self) -> frozenset[TaskType]:
        # A float alpha weighs the positive class (binary); a list weighs classes (multiclass).
        if isinstance(self.alpha, list):
            return MULTICLASS_TASKS
        return self.tasks if self.alpha is None else self.tasks - MULTICLASS_TASKS
