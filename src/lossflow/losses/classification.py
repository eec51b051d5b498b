"""Classification losses: binary, multilabel and multiclass.

Binary and multilabel losses take logits of any shape and a floating target of the same shape with
values in [0, 1] (soft labels allowed). Multiclass losses take logits ``(N, C)`` or ``(N, C, *)``
and integer class indices ``(N,)`` or ``(N, *)``. A loss that supports both reads the mode from the
target: an integer target with one dimension fewer than the input is multiclass, anything else is
binary elementwise. Every loss computes in at least float32 and in log space.

Focal loss is the benchmarked hot path: its forward pass computes the loss and its gradient together
and the backward pass only scales that gradient. Such functions are differentiable once
(a second derivative raises instead of silently being wrong).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lossflow.losses._base import (
    as_float,
    check_class_count,
    check_class_vector,
    check_floating,
    check_nonempty,
    check_positive,
    check_reduction,
    check_same_shape,
    check_values,
    class_index_target,
    reduce,
)
from lossflow.losses.spec import LossSpecBase, Reduction, TaskType, register_loss

_BINARY: frozenset[TaskType] = frozenset({"binary", "multilabel"})
_MULTICLASS: frozenset[TaskType] = frozenset({"multiclass"})
_ALL: frozenset[TaskType] = _BINARY | _MULTICLASS

Base = Literal["ce", "bce", "focal"]
BASES: tuple[str, ...] = ("ce", "bce", "focal")


# --------------------------------------------------------------------------------------------
# Shared checks
# --------------------------------------------------------------------------------------------


def _apply(function: type[torch.autograd.Function], *args: Any) -> Tensor:
    """Call a custom autograd function (``Function.apply`` is untyped in torch's stubs)."""
    return cast(Callable[..., Tensor], function.apply)(*args)


def _is_multiclass(input: Tensor, target: Tensor) -> bool:
    """Whether ``(input, target)`` is a multiclass pair (integer target, one dimension fewer)."""
    if target.is_floating_point():
        return False
    if input.dim() == target.dim() + 1:
        return True
    raise ValueError(
        "an integer target is read as multiclass class indices and needs an input of shape "
        f"(N, C, *) with one more dimension; got input {tuple(input.shape)} and target "
        f"{tuple(target.shape)}. For a binary or multilabel loss pass a floating-point target "
        "of the input's shape"
    )


def _binary_pair(input: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """Check a binary/multilabel pair; return it in >= float32 and in one dtype (no range check)."""
    check_reduction(reduction)
    check_floating("input", input)
    if not target.is_floating_point():
        raise ValueError(
            "binary/multilabel target must be a floating-point tensor of 0/1 (or soft) labels; "
            f"got dtype {target.dtype}"
        )
    check_same_shape(input, target)
    check_nonempty("input", input)
    input = as_float(input)
    return input, target.to(input.dtype)


def _check_unit_target(target: Tensor) -> None:
    """Raise ``ValueError`` unless every target value lies in [0, 1] (NaN fails)."""
    low, high = torch.aminmax(target)
    check_values(
        (low >= 0) & (high <= 1),
        f"binary/multilabel target values must lie in [0, 1]; got values in "
        f"[{low.item():g}, {high.item():g}]",
    )


def _multiclass_input(input: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """Check a multiclass pair; return logits in >= float32 and int64 class indices."""
    check_reduction(reduction)
    check_floating("input", input)
    class_index_target(input, target)
    check_nonempty("input", input)
    return as_float(input), target.long()


def _class_tensor(values: Sequence[float], like: Tensor, target: Tensor) -> Tensor:
    """A per-class vector on ``like``'s dtype and device, indexed by ``target`` -> per sample."""
    return torch.tensor(list(values), dtype=like.dtype, device=like.device)[target]


def _check_unit_closed(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got {value!r}")


def _check_half_open(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {value!r}")


def _softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)``, returning ``x`` only where ``log1p(e^-x)`` is below the dtype's eps."""
    return F.softplus(x, threshold=40.0 if x.dtype == torch.float64 else 20.0)


# --------------------------------------------------------------------------------------------
# bce
# --------------------------------------------------------------------------------------------


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
    input, target = _binary_pair(input, target, reduction)
    _check_unit_target(target)
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

    tasks: ClassVar[frozenset[TaskType]] = _BINARY
    reference: ClassVar[str] = "torch.nn.functional.binary_cross_entropy_with_logits"
    name: Literal["bce"] = "bce"
    pos_weight: float | None = Field(
        default=None,
        description="weight (> 0) of the positive term; None means 1",
    )

    def build(self) -> nn.Module:
        return BCELoss(pos_weight=self.pos_weight, reduction=self.reduction)


# --------------------------------------------------------------------------------------------
# ce
# --------------------------------------------------------------------------------------------


def _check_class_weights(name: str, weights: Sequence[float] | None) -> None:
    if weights is None:
        return
    check_class_vector(name, weights)
    if not any(w > 0 for w in weights):
        raise ValueError(f"{name} must have at least one positive entry; got {list(weights)!r}")


def _check_ce_options(class_weights: Sequence[float] | None, label_smoothing: float) -> None:
    _check_class_weights("class_weights", class_weights)
    _check_half_open("label_smoothing", label_smoothing)


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
    input, target = _multiclass_input(input, target, reduction)
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

    tasks: ClassVar[frozenset[TaskType]] = _MULTICLASS
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


# --------------------------------------------------------------------------------------------
# focal
# --------------------------------------------------------------------------------------------


def _check_focal_options(alpha: float | Sequence[float] | None, gamma: float) -> None:
    check_positive("gamma", gamma, allow_zero=True)
    if alpha is None:
        return
    if isinstance(alpha, int | float):
        _check_unit_closed("alpha", float(alpha))
    else:
        check_class_vector("alpha", alpha)


# Exponents with a dedicated (fast, exact) kernel in torch.pow: square, cube, sqrt.
_FAST_POWERS = (0.5, 2.0, 3.0)


def _focal_weight(q: Tensor, gamma: float, out: Tensor | None = None) -> Tensor | None:
    """``q ** gamma`` for ``0 <= q <= 1`` (``None`` for ``gamma == 0``), finite at ``q == 0``."""
    if gamma == 0:
        return None
    if gamma == 1:
        return q
    if gamma in _FAST_POWERS:
        return torch.pow(q, gamma, out=out) if out is not None else torch.pow(q, gamma)
    # exp(gamma * log q): far cheaper than a general pow on CPU; log 0 = -inf gives exactly 0.
    log_q = torch.log(q, out=out) if out is not None else torch.log(q)
    return log_q.mul_(gamma).exp_()


def _binary_focal_hard(
    x: Tensor,
    y: Tensor,
    alpha: float | None,
    gamma: float,
    reduction: str,
    need_grad: bool,
    buf: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Hard labels: with ``v = (1 - 2y) x``, ``1 - p_t = sigmoid(v)``, ``-log p_t = softplus(v)``.

    d loss / dx = alpha_t (1 - 2y) [m q + gamma (1 - q) m ce] with ``q = sigmoid(v)``,
    ``m = q^gamma``; no ``q^(gamma - 1)`` appears, so ``gamma < 1`` has finite gradients at
    saturated logits. Three full-size buffers (``buf``, ``ce``, ``q``) are reused in place: fresh
    memory is page-faulted on every call, so each one avoided is a pass saved.
    """
    v = torch.addcmul(x, x, y, value=-2.0, out=buf) if buf is not None else x - 2 * x * y
    ce = _softplus(v)
    q = torch.sigmoid(v) if (need_grad or gamma != 0) else None
    m: Tensor | None = None
    if q is not None and gamma != 0:
        if gamma == 1 or gamma in _FAST_POWERS:
            m = _focal_weight(q, gamma, out=v)
        else:  # log q = logsigmoid(v) = v - softplus(v): no extra transcendental pass
            m = v.sub_(ce).mul_(gamma).exp_()
    mce = ce if m is None else ce.mul_(m)  # ce itself is not needed again
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
    if not need_grad or q is None:
        return loss, None
    if m is None:  # gamma == 0: d loss / dx = alpha_t (1 - 2y) q
        inner, grad = q, v
    else:  # m q + gamma (1 - q) m ce, into m's buffer (into v's when m is q)
        inner = torch.mul(m, q, out=v) if m is q else m.mul_(q)
        inner.add_(mce, alpha=gamma).addcmul_(q, mce, value=-gamma)
        grad = q
    # alpha_t (1 - 2y) is linear in a hard y: (1 - alpha) - y, or 1 - 2y without alpha.
    start = 1.0 if alpha is None else 1.0 - alpha
    slope = -2.0 if alpha is None else -1.0
    torch.add(torch.tensor(start, dtype=y.dtype, device=y.device), y, alpha=slope, out=grad)
    return loss, grad.mul_(inner)


def _binary_focal_soft(
    x: Tensor,
    y: Tensor,
    alpha: float | None,
    gamma: float,
    reduction: str,
    need_grad: bool,
    buf: Tensor | None = None,
) -> tuple[Tensor, Tensor | None]:
    """Soft labels (torchvision): ``ce = softplus(x) - x y``, ``1 - p_t = lerp(p, 1 - p, y)``.

    d loss / dx = alpha_t [m (p - y) + gamma m ce (1 - 2y) p (1 - p) / q], ``m = q^gamma``.
    Without cancellation at hard labels (a soft target may hold some): ``ce`` is
    ``lerp(relu(x), relu(-x), y) + softplus(-|x|)`` with ``softplus(-|x|) =
    -log1p(-min(p, 1 - p))``, ``p - y = lerp(p, -(1 - p), y)``, ``p (1 - p)`` is
    ``sigmoid(x) sigmoid(-x)``. ``q`` is 0 only where a hard label is saturated, where ``m ce`` is
    0 too, so ``q`` is floored at the smallest normal number. Buffers are reused in place.
    """
    x_neg = torch.neg(x, out=buf) if buf is not None else x.neg()
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


def _binary_focal_formula(x: Tensor, y: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """Unreduced binary focal loss in plain differentiable ops, for ``torch.compile``.

    Inductor fuses it (and its autograd) into single kernels, which beats the eager
    hand-written gradient. ``1 - p_t = y sigmoid(-x) + (1 - y) sigmoid(x)`` has no cancellation;
    it is floored at the smallest normal number before the power, so ``gamma < 1`` keeps a finite
    gradient at saturated logits.
    """
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    if gamma != 0:
        q = torch.lerp(torch.sigmoid(x), torch.sigmoid(-x), y)
        ce = ce * q.clamp_min(torch.finfo(q.dtype).tiny).pow(gamma)
    return ce if alpha is None else ce * ((1.0 - alpha) + (2.0 * alpha - 1.0) * y)


def _binary_focal(
    x: Tensor, y: Tensor, alpha: float | None, gamma: float, reduction: str, need_grad: bool
) -> tuple[Tensor, Tensor | None]:
    """Check the target range and pick the hard- or soft-label computation.

    One pass computes ``h = y - y^2``: ``h >= 0`` exactly on [0, 1] and ``h == 0`` exactly at 0
    and 1, so the range check and the hard-label test share one ``aminmax``; both paths reuse
    ``h``'s buffer.
    """
    h = torch.addcmul(y, y, y, value=-1.0)
    low, high = torch.aminmax(h)
    if not bool(low >= 0):
        _check_unit_target(y)  # raises with the offending range
    if bool(high == 0):
        return _binary_focal_hard(x, y, alpha, gamma, reduction, need_grad, h)
    return _binary_focal_soft(x, y, alpha, gamma, reduction, need_grad, h)


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


class _MulticlassFocal(torch.autograd.Function):
    """Multiclass focal loss, reduced; its forward also computes d loss / d logits (saved).

    With ``g`` the derivative w.r.t. ``log p_y``, d loss / d x = g (onehot(y) - softmax(x)),
    written into the buffer of ``log_softmax(x)``: one full-size buffer in all.
    """

    @staticmethod
    def forward(
        ctx: Any, input: Tensor, target: Tensor, alpha: Tensor | None, gamma: float, reduction: str
    ) -> Tensor:
        index = target.unsqueeze(1)
        log_probs = F.log_softmax(input, 1)
        loss, g = _focal_from_log_prob(log_probs.gather(1, index).squeeze(1), alpha, gamma, True)
        g = cast(Tensor, g).unsqueeze(1)
        grad = log_probs.exp_().mul_(g.neg()).scatter_add_(1, index, g)
        ctx.save_for_backward(grad)
        ctx.scale = 1.0 / loss.numel() if reduction == "mean" else 1.0
        ctx.reduction = reduction
        return reduce(loss, reduction)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, ...]:
        (grad,) = ctx.saved_tensors
        if ctx.reduction == "none":
            return grad * grad_output.unsqueeze(1), None, None, None, None
        if ctx.scale != 1.0:
            grad_output = grad_output * ctx.scale
        return grad * grad_output, None, None, None, None


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
        >>> torch.allclose(focal_loss(x, y, alpha=None, gamma=0.0), bce_loss(x, y))
        True
        >>> focal_loss(torch.zeros(2, 3), torch.tensor([0, 2]), alpha=[1.0, 1.0, 2.0], gamma=2.0)
        tensor(0.7324)
    """
    _check_focal_options(alpha, gamma)
    if _is_multiclass(input, target):
        if isinstance(alpha, int | float):
            raise ValueError(
                f"alpha={alpha!r} is a binary (positive-class) weight; for a multiclass target "
                "give alpha as a list with one weight per class, or None"
            )
        input, target = _multiclass_input(input, target, reduction)
        alpha_y = None
        if alpha is not None:
            check_class_count("alpha", alpha, input.shape[1])
            alpha_y = _class_tensor(alpha, input, target)
        if input.requires_grad and torch.is_grad_enabled():
            return _apply(_MulticlassFocal, input, target, alpha_y, float(gamma), reduction)
        log_p = F.log_softmax(input, 1).gather(1, target.unsqueeze(1)).squeeze(1)
        return reduce(_focal_from_log_prob(log_p, alpha_y, float(gamma), False)[0], reduction)
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
    input, target = _binary_pair(input, target, reduction)
    binary_alpha = None if alpha is None else float(alpha)
    if torch.compiler.is_compiling():
        return reduce(_binary_focal_formula(input, target, binary_alpha, float(gamma)), reduction)
    if input.requires_grad and torch.is_grad_enabled():
        return _apply(_BinaryFocal, input, target, binary_alpha, float(gamma), reduction)
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

    tasks: ClassVar[frozenset[TaskType]] = _ALL
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
            return _MULTICLASS
        return self.tasks if self.alpha is None else self.tasks - _MULTICLASS


# --------------------------------------------------------------------------------------------
# class_balanced
# --------------------------------------------------------------------------------------------


def _check_class_counts(class_counts: Sequence[int] | None) -> None:
    if class_counts is None:
        return
    if len(class_counts) == 0:
        raise ValueError("class_counts must list one count per class; got an empty list")
    for i, n in enumerate(class_counts):
        if isinstance(n, bool) or not isinstance(n, numbers.Integral) or n < 1:
            raise ValueError(f"class_counts[{i}] must be a positive integer; got {n!r}")


def _check_class_balanced_options(
    class_counts: Sequence[int] | None, beta: float, base: str, gamma: float
) -> None:
    _check_class_counts(class_counts)
    _check_half_open("beta", beta)
    if base not in BASES:
        raise ValueError(f"base must be one of {', '.join(BASES)}; got {base!r}")
    check_positive("gamma", gamma, allow_zero=True)


def class_balanced_weights(class_counts: Sequence[int], beta: float) -> list[float]:
    r"""Cui et al.'s class weights :math:`w_c = (1 - \beta) / (1 - \beta^{n_c})`, summing to C.

    :math:`(1 - \beta^{n}) / (1 - \beta)` is the effective number of samples of a class with
    :math:`n` samples; ``beta=0`` gives equal weights, ``beta -> 1`` weights ``~ 1 / n_c``.
    """
    _check_class_counts(class_counts)
    _check_half_open("beta", beta)
    raw = [
        (1.0 - beta) / -math.expm1(n * math.log(beta)) if beta > 0 else 1.0 for n in class_counts
    ]
    scale = len(raw) / sum(raw)
    return [w * scale for w in raw]


def class_balanced_loss(
    input: Tensor,
    target: Tensor,
    class_counts: Sequence[int],
    beta: float = 0.999,
    base: Base = "focal",
    gamma: float = 2.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Class-balanced loss (Cui et al., "Class-Balanced Loss Based on Effective Number of
    Samples", CVPR 2019).

    .. math::

        w_c = \frac{1 - \beta}{1 - \beta^{n_c}} \Big/ \frac{1}{C}\sum_k \frac{1 - \beta}
            {1 - \beta^{n_k}}, \qquad \ell_i = w_{y_i} L_i

    where :math:`L_i` is the unweighted base loss (cross-entropy, binary cross-entropy or focal
    with ``alpha=None``) and the weights sum to the number of classes :math:`C`. ``mean`` is the
    **plain** mean of :math:`\ell_i` (not divided by the weights). Binary/multilabel targets use
    ``class_counts = [n_negative, n_positive]`` and the element weight
    :math:`w_1 y + w_0 (1 - y)`.

    Reference: the weights from the paper's formula in numpy, times the base loss.

    Args:
        input: logits.
        target: class indices (``ce``, ``focal``) or binary labels in [0, 1] (``bce``, ``focal``).
        class_counts: training samples per class, positive integers, one per class (two,
            ``[n_negative, n_positive]``, for binary targets).
        beta: :math:`\beta \in [0, 1)`; 0 gives equal weights, close to 1 inverse-frequency.
        base: ``ce``, ``bce`` or ``focal``.
        gamma: focal ``gamma`` (used only by ``base="focal"``).
        reduction: ``mean`` (plain mean), ``sum`` or ``none``.

    Shape:
        as the base loss.

    Example:
        >>> x, y = torch.zeros(2, 2), torch.tensor([0, 1])
        >>> class_balanced_loss(x, y, [90, 10], beta=0.9, base="ce")
        tensor(0.6931)
    """
    _check_class_balanced_options(class_counts, beta, base, gamma)
    weights = class_balanced_weights(class_counts, beta)
    if _is_multiclass(input, target):
        if base == "bce":
            raise ValueError(
                "base 'bce' needs a binary or multilabel target; use base 'ce' or 'focal' "
                "for class indices"
            )
        check_class_count("class_counts", class_counts, input.shape[1])
        if base == "focal":
            return focal_loss(input, target, alpha=weights, gamma=gamma, reduction=reduction)
        input, target = _multiclass_input(input, target, reduction)
        weight = torch.tensor(weights, dtype=input.dtype, device=input.device)
        return reduce(F.cross_entropy(input, target, weight=weight, reduction="none"), reduction)
    if base == "ce":
        raise ValueError(
            "base 'ce' needs a multiclass target (integer class indices); use base 'bce' or "
            "'focal' for binary or multilabel targets"
        )
    if len(class_counts) != 2:
        raise ValueError(
            "class_counts for a binary or multilabel target must be [n_negative, n_positive]; "
            f"got {len(class_counts)} entries"
        )
    w0, w1 = weights
    if base == "focal":
        # w1 y + w0 (1 - y) = 2 alpha_t with alpha = w1 / 2, since w0 + w1 = 2.
        return 2.0 * focal_loss(input, target, alpha=w1 / 2.0, gamma=gamma, reduction=reduction)
    input, target = _binary_pair(input, target, reduction)
    _check_unit_target(target)
    weight = torch.rsub(target, w0, alpha=w0 - w1)
    return F.binary_cross_entropy_with_logits(input, target, weight=weight, reduction=reduction)


_NEEDS_COUNTS = "; training fills them from the training split, or give them in the spec"


class ClassBalancedLoss(nn.Module):
    """Module form of :func:`class_balanced_loss`; the class weights are computed once here."""

    def __init__(
        self,
        class_counts: Sequence[int] | None,
        beta: float = 0.999,
        base: Base = "focal",
        gamma: float = 2.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        _check_class_balanced_options(class_counts, beta, base, gamma)
        if class_counts is None:
            raise ValueError("class_balanced needs class_counts" + _NEEDS_COUNTS)
        self.class_counts = tuple(class_counts)
        self.beta = beta
        self.base = base
        self.gamma = gamma
        self.reduction = reduction
        self.weights = tuple(class_balanced_weights(class_counts, beta))

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return class_balanced_loss(
            input, target, self.class_counts, self.beta, self.base, self.gamma, self.reduction
        )


@register_loss
class ClassBalancedSpec(LossSpecBase):
    """Class-balanced loss (Cui et al. 2019): base loss weighted by inverse effective counts."""

    tasks: ClassVar[frozenset[TaskType]] = _ALL
    reference: ClassVar[str] = "numpy weights (1-beta)/(1-beta^n) times the unweighted base loss"
    name: Literal["class_balanced"] = "class_balanced"
    class_counts: list[int] | None = Field(
        default=None,
        description=(
            "training samples per class ([n_negative, n_positive] for binary); None: filled "
            "from the training split"
        ),
    )
    beta: float = Field(default=0.999, description="in [0, 1): 0 equal weights, ->1 inverse freq")
    base: Base = Field(default="focal", description="base loss: ce, bce or focal")
    gamma: float = Field(default=2.0, description="focal gamma (base focal only)")

    def validate_options(self) -> None:
        if self.class_counts is None:
            _check_class_balanced_options(None, self.beta, self.base, self.gamma)
        else:
            self.build()

    def build(self) -> nn.Module:
        return ClassBalancedLoss(
            self.class_counts, self.beta, self.base, self.gamma, reduction=self.reduction
        )

    def task_types(self) -> frozenset[TaskType]:
        return {"ce": _MULTICLASS, "bce": _BINARY}.get(self.base, self.tasks)


# --------------------------------------------------------------------------------------------
# logit_adjusted
# --------------------------------------------------------------------------------------------


def _check_logit_adjusted_options(
    tau: float, class_priors: Sequence[float] | None, class_counts: Sequence[int] | None
) -> None:
    check_positive("tau", tau, allow_zero=True)
    if class_priors is not None and class_counts is not None:
        raise ValueError("give exactly one of class_priors and class_counts, not both")
    if class_priors is not None:
        check_class_vector("class_priors", class_priors, positive=True)
    _check_class_counts(class_counts)


def _priors(
    class_priors: Sequence[float] | None, class_counts: Sequence[int] | None
) -> tuple[str, list[float]]:
    """The option given and the normalised priors it defines."""
    name, raw = (
        ("class_priors", [float(p) for p in class_priors])
        if class_priors is not None
        else ("class_counts", [float(n) for n in class_counts or ()])
    )
    if not raw:
        raise ValueError("logit_adjusted needs class_priors or class_counts" + _NEEDS_COUNTS)
    total = sum(raw)
    return name, [p / total for p in raw]


def logit_adjusted_loss(
    input: Tensor,
    target: Tensor,
    class_priors: Sequence[float] | None = None,
    class_counts: Sequence[int] | None = None,
    tau: float = 1.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Logit-adjusted loss (Menon et al., "Long-tail learning via logit adjustment", ICLR 2021).

    Multiclass: :math:`\ell_i = \mathrm{CE}(x_i + \tau \log \pi, y_i)`. Binary/multilabel:
    :math:`\ell_i = \mathrm{BCE}(x_i + \tau \log(\pi_1 / \pi_0), y_i)`. The training logits are
    shifted by the log priors, so the raw logits the model outputs (used unshifted at inference)
    estimate the balanced posterior; ``tau=0`` or uniform priors give plain CE/BCE.

    Reference: ``torch.nn.functional.cross_entropy`` on logits adjusted in numpy.

    Args:
        input: logits.
        target: class indices, or binary labels in [0, 1] of the input's shape.
        class_priors: class priors :math:`\pi` (positive; normalised to sum to 1), one per class
            (``[pi_0, pi_1]`` for binary). Exactly one of ``class_priors``/``class_counts``.
        class_counts: training samples per class (positive integers); :math:`\pi = n / \sum n`.
        tau: temperature :math:`\tau \ge 0` of the adjustment.
        reduction: ``mean``, ``sum`` or ``none``.

    Shape:
        as :func:`ce_loss` (multiclass) or :func:`bce_loss` (binary).

    Example:
        >>> logit_adjusted_loss(torch.zeros(1, 2), torch.tensor([1]), class_priors=[0.5, 0.5])
        tensor(0.6931)
    """
    _check_logit_adjusted_options(tau, class_priors, class_counts)
    name, priors = _priors(class_priors, class_counts)
    log_prior = [math.log(p) for p in priors]
    if _is_multiclass(input, target):
        input, target = _multiclass_input(input, target, reduction)
        check_class_count(name, priors, input.shape[1])
        shift = torch.tensor(log_prior, dtype=input.dtype, device=input.device).mul_(tau)
        shift = shift.view(1, -1, *([1] * (input.dim() - 2)))
        return F.cross_entropy(input + shift, target, reduction=reduction)
    if len(priors) != 2:
        raise ValueError(
            f"{name} for a binary or multilabel target must have two entries "
            f"[negative, positive]; got {len(priors)}"
        )
    input, target = _binary_pair(input, target, reduction)
    _check_unit_target(target)
    return F.binary_cross_entropy_with_logits(
        input + tau * (log_prior[1] - log_prior[0]), target, reduction=reduction
    )


class LogitAdjustedLoss(nn.Module):
    """Module form of :func:`logit_adjusted_loss`."""

    def __init__(
        self,
        class_priors: Sequence[float] | None = None,
        class_counts: Sequence[int] | None = None,
        tau: float = 1.0,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        check_reduction(reduction)
        _check_logit_adjusted_options(tau, class_priors, class_counts)
        _priors(class_priors, class_counts)  # raises when neither is given
        self.class_priors = None if class_priors is None else tuple(class_priors)
        self.class_counts = None if class_counts is None else tuple(class_counts)
        self.tau = tau
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return logit_adjusted_loss(
            input, target, self.class_priors, self.class_counts, self.tau, self.reduction
        )


@register_loss
class LogitAdjustedSpec(LossSpecBase):
    """Logit-adjusted cross-entropy (Menon et al. 2021) for long-tailed classes."""

    tasks: ClassVar[frozenset[TaskType]] = _ALL
    reference: ClassVar[str] = "torch.nn.functional.cross_entropy on numpy-adjusted logits"
    name: Literal["logit_adjusted"] = "logit_adjusted"
    tau: float = Field(default=1.0, description="temperature >= 0 of the log-prior shift")
    class_priors: list[float] | None = Field(
        default=None, description="positive class priors (normalised); or give class_counts"
    )
    class_counts: list[int] | None = Field(
        default=None,
        description="training samples per class; None with no priors: filled from training",
    )

    def validate_options(self) -> None:
        if self.class_priors is None and self.class_counts is None:
            _check_logit_adjusted_options(self.tau, None, None)
        else:
            self.build()

    def build(self) -> nn.Module:
        return LogitAdjustedLoss(
            self.class_priors, self.class_counts, self.tau, reduction=self.reduction
        )


# --------------------------------------------------------------------------------------------
# cost_sensitive
# --------------------------------------------------------------------------------------------


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


def _log_one_minus_softmax(x: Tensor) -> Tensor:
    """``log(1 - softmax(x, 1))`` without cancellation.

    With ``m`` the row maximum, ``e = exp(x - m)`` and ``S = sum(e) >= 1``: for every entry but
    the argmax, ``S - e_k >= 1`` and ``log(1 - p_k) = log(S - e_k) - log S``; for the argmax it is
    ``logsumexp`` of the other entries minus ``logsumexp`` of all.
    """
    m = x.detach().amax(1, keepdim=True)
    top = x.detach().argmax(1, keepdim=True)
    e = (x - m).exp()
    s = e.sum(1, keepdim=True)
    log_s = s.log()
    # The argmax entry gets a placeholder 1 (its gradient is dropped by the scatter below).
    rest = (s - e).scatter(1, top, 1.0).log() - log_s
    others = torch.logsumexp(x.scatter(1, top, float("-inf")), 1, keepdim=True)
    return rest.scatter(1, top, others - m - log_s)


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
    :math:`\log(1 - p_k)` is computed without cancellation (see ``_log_one_minus_softmax``).

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
    multiclass = _is_multiclass(input, target)
    if cost_matrix is None:
        if multiclass:
            raise ValueError(
                "fn_cost/fp_cost are binary costs and need a float target of the input's shape; "
                "for class indices give cost_matrix"
            )
        input, target = _binary_pair(input, target, reduction)
        _check_unit_target(target)
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
    input, target = _multiclass_input(input, target, reduction)
    check_class_count("cost_matrix", cost_matrix[0], input.shape[1])  # square: checked
    costs = torch.tensor([list(row) for row in cost_matrix], dtype=input.dtype, device=input.device)
    row_costs = costs[target].movedim(-1, 1)  # (N, C, *): C[y_i][k]
    per_sample = (row_costs * _log_one_minus_softmax(input)).sum(1).neg()
    return reduce(per_sample, reduction)


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

    tasks: ClassVar[frozenset[TaskType]] = _ALL
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
        return _BINARY if self.cost_matrix is None else _MULTICLASS


# --------------------------------------------------------------------------------------------
# kl_div
# --------------------------------------------------------------------------------------------


def kl_div_loss(input: Tensor, target: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""KL divergence from the predicted to the target distribution, per row.

    .. math:: \ell_i = \mathrm{KL}(t_i \,\|\, \mathrm{softmax}(x_i))
        = \sum_k t_{ik} \bigl(\log t_{ik} - \operatorname{log\_softmax}(x_i)_k\bigr)

    with :math:`0 \log 0 = 0`. ``mean`` is the mean over rows (the true batch-mean KL, torch's
    ``batchmean``, **not** torch's elementwise ``mean``), ``sum`` the total, ``none`` per row.

    Reference: ``scipy.stats.entropy(t, softmax(x))`` per row;
    ``torch.nn.functional.kl_div(log_softmax(x), t, reduction="batchmean")``.

    Args:
        input: logits :math:`x`.
        target: target probabilities :math:`t`: non-negative, each row summing to 1 within 1e-4
            (or the target dtype's eps, if larger, for half-precision targets).
        reduction: ``mean`` (over rows), ``sum``, or ``none``.

    Shape:
        input, target: ``(N, C)``; output: scalar, or ``(N,)`` for ``none``.

    Example:
        >>> kl_div_loss(torch.zeros(1, 2), torch.tensor([[0.5, 0.5]]))
        tensor(0.)
    """
    check_reduction(reduction)
    check_floating("input", input)
    check_floating("target", target)
    if input.dim() != 2:
        raise ValueError(f"kl_div input must have shape (N, C); got {tuple(input.shape)}")
    check_same_shape(input, target)
    check_nonempty("input", input)
    tolerance = max(1e-4, torch.finfo(target.dtype).eps)
    input = as_float(input)
    target = target.to(input.dtype)
    check_values(target.min() >= 0, "kl_div target probabilities must be non-negative")
    deviation = (target.sum(1) - 1.0).abs().max()
    check_values(
        deviation <= tolerance,
        f"kl_div target rows must sum to 1 (within {tolerance:g}); the worst row is off by "
        f"{deviation.item():g}",
    )
    per_row = F.kl_div(F.log_softmax(input, 1), target, reduction="none").sum(1)
    return reduce(per_row, reduction)


class KLDivLoss(nn.Module):
    """Module form of :func:`kl_div_loss`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return kl_div_loss(input, target, self.reduction)


@register_loss
class KLDivSpec(LossSpecBase):
    """KL(target || softmax(logits)) per row; mean is the batch mean (distillation, soft labels)."""

    tasks: ClassVar[frozenset[TaskType]] = _MULTICLASS
    reference: ClassVar[str] = "scipy.stats.entropy; torch.nn.functional.kl_div(batchmean)"
    name: Literal["kl_div"] = "kl_div"

    def build(self) -> nn.Module:
        return KLDivLoss(reduction=self.reduction)
