"""Regression losses: point, quantile and distributional.

Every functional takes ``(input, target)`` of the same shape unless its docstring says otherwise,
computes in at least float32, and reduces by ``reduction`` (``mean`` default, ``sum``, ``none``).

Where autograd through a chain of elementwise ops would be slow, the loss computes its gradient
in the prediction in closed form during the forward pass (``_ElementwiseLoss``); gradients in the
target and higher derivatives go through autograd on the plain formula, so they are exact too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, ClassVar, Literal, cast

import torch
import torch.nn.functional as F
from pydantic import Field
from torch import Tensor, nn

from lossflow.losses._base import (
    as_float,
    check_floating,
    check_nonempty,
    check_open_unit,
    check_positive,
    check_reduction,
    check_same_shape,
    check_values,
    checking_targets,
    reduce,
)
from lossflow.losses.options import Reduction
from lossflow.losses.spec import LossSpecBase, TaskType, register_loss

_REGRESSION: frozenset[TaskType] = frozenset({"regression"})
_LOG2 = math.log(2.0)
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
# |max_log_rate| <= 50 keeps exp(max_log_rate) normal in float32 (exp(88.7) overflows) with room
# for the linear extension exp(m) (1 + x - m) at log-rates x up to 1e16.
_MAX_LOG_RATE_LIMIT = 50.0


def _check_pair(input: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    check_reduction(reduction)
    check_floating("input", input)
    check_floating("target", target)
    check_same_shape(input, target)
    check_nonempty("input", input)
    return _common_dtype(as_float(input), as_float(target))


def _common_dtype(input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
    """Cast both tensors to their promoted dtype (a closed-form gradient must match its input's)."""
    if input.dtype == target.dtype:
        return input, target
    dtype = torch.promote_types(input.dtype, target.dtype)
    return input.to(dtype), target.to(dtype)


class _Elementwise:
    """An elementwise loss with a closed-form derivative in its prediction.

    ``values_and_state`` is the fast path, free to work in place on its own temporaries: the
    unreduced loss and a tensor ``state`` kept for the backward pass, from which ``input_grad``
    gives ``d loss_i / d input`` times the reduction's factor (by default ``state`` is that
    derivative). ``formula`` is the same loss written plainly with differentiable torch ops; it
    serves gradients in the target and higher derivatives, which are rare and need not be fast.
    """

    def values_and_state(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        raise NotImplementedError

    def input_grad(self, state: Tensor, scale: Tensor) -> Tensor:
        return state * scale

    def formula(self, input: Tensor, target: Tensor) -> Tensor:
        raise NotImplementedError


class _ElementwiseLoss(torch.autograd.Function):
    """Autograd for an :class:`_Elementwise` loss.

    The gradient in the prediction is the kernel's closed form; when the target needs a gradient
    or a graph of the gradient is being built (``create_graph=True``), autograd runs through the
    kernel's ``formula`` instead.
    """

    @staticmethod
    def forward(
        ctx: Any, input: Tensor, target: Tensor, kernel: _Elementwise, reduction: str
    ) -> Tensor:
        loss, state = kernel.values_and_state(input, target)
        ctx.save_for_backward(input, target, state)
        ctx.kernel = kernel
        ctx.reduction = reduction
        return reduce(loss, reduction)

    @staticmethod
    def backward(ctx: Any, grad_output: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        input, target, state = ctx.saved_tensors
        need_input, need_target = ctx.needs_input_grad[:2]
        create_graph = torch.is_grad_enabled()  # true only under backward(create_graph=True)
        if need_target or create_graph:
            wanted = [t for t, need in ((input, need_input), (target, need_target)) if need]
            with torch.enable_grad():
                loss = reduce(ctx.kernel.formula(input, target), ctx.reduction)
            grads = iter(torch.autograd.grad(loss, wanted, grad_output, create_graph=create_graph))
            grad_input = next(grads) if need_input else None
            return grad_input, (next(grads) if need_target else None), None, None
        if ctx.reduction == "mean":
            scale = grad_output / target.numel()
        elif ctx.reduction == "none" and input.dim() > grad_output.dim():
            scale = grad_output.unsqueeze(-1)  # one loss per row of a (..., k) input
        else:
            scale = grad_output
        return ctx.kernel.input_grad(state, scale), None, None, None


def _elementwise_loss(
    kernel: _Elementwise, input: Tensor, target: Tensor, reduction: str
) -> Tensor:
    """The kernel's loss, reduced: its closed-form gradient in eager mode; its plain formula
    under ``torch.compile``, where Inductor fuses the formula and its autograd into fewer
    passes than the hand-written ones."""
    if torch.compiler.is_compiling():
        return reduce(kernel.formula(input, target), reduction)
    # Function.apply is untyped in torch's stubs.
    apply = cast(Callable[..., Tensor], _ElementwiseLoss.apply)
    return apply(input, target, kernel, reduction)


def mse_loss(input: Tensor, target: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Mean squared error :math:`\ell_i = (x_i - y_i)^2`.

    Reference: ``torch.nn.functional.mse_loss``; scikit-learn ``mean_squared_error``.

    Args:
        input: predictions :math:`x`.
        target: targets :math:`y`, same shape as ``input``.
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> mse_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        tensor(2.)
    """
    input, target = _check_pair(input, target, reduction)
    return F.mse_loss(input, target, reduction=reduction)


class MSELoss(nn.Module):
    """Module form of :func:`mse_loss`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, self.reduction)


@register_loss
class MSESpec(LossSpecBase):
    """Mean squared error; the conditional mean minimises it."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "torch.nn.functional.mse_loss"
    name: Literal["mse"] = "mse"

    def build(self) -> nn.Module:
        return MSELoss(reduction=self.reduction)


# --------------------------------------------------------------------------------------- RMSE


def _check_rmse_reduction(reduction: str) -> None:
    check_reduction(reduction)
    if reduction != "mean":
        raise ValueError(
            "rmse is a batch-level loss (the square root of the batch's mean squared error), so "
            f"only reduction='mean' is supported; got reduction={reduction!r}. "
            "Use mse for per-element losses"
        )


def rmse_loss(input: Tensor, target: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Root mean squared error :math:`\sqrt{\frac{1}{n}\sum_i (x_i - y_i)^2}` over the batch.

    The square root is taken of the batch mean, so the loss is not a mean of per-element terms
    and only ``reduction="mean"`` exists. The mean is clamped below at the dtype's smallest
    normal number before the root, so the gradient at a perfect prediction is zero, not NaN.

    Reference: the square root of scikit-learn ``mean_squared_error``.

    Args:
        input: predictions :math:`x`.
        target: targets :math:`y`, same shape as ``input``.
        reduction: must be ``mean`` (any other value raises ``ValueError``).

    Shape:
        input, target: ``(*)``; output: scalar.

    Example:
        >>> rmse_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 4.0]))
        tensor(1.4142)
    """
    _check_rmse_reduction(reduction)
    input, target = _check_pair(input, target, reduction)
    return F.mse_loss(input, target).clamp_min(torch.finfo(input.dtype).tiny).sqrt()


class RMSELoss(nn.Module):
    """Module form of :func:`rmse_loss`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        _check_rmse_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return rmse_loss(input, target, self.reduction)


@register_loss
class RMSESpec(LossSpecBase):
    """Root mean squared error of the batch; batch-level, so only reduction 'mean'."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "sqrt(sklearn.metrics.mean_squared_error)"
    name: Literal["rmse"] = "rmse"

    def build(self) -> nn.Module:
        return RMSELoss(reduction=self.reduction)


# ---------------------------------------------------------------------------------------- MAE


def mae_loss(input: Tensor, target: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Mean absolute error :math:`\ell_i = |x_i - y_i|`.

    The conditional median minimises it. Its gradient at :math:`x_i = y_i` is 0.

    Reference: ``torch.nn.functional.l1_loss``; scikit-learn ``mean_absolute_error``.

    Args:
        input: predictions :math:`x`.
        target: targets :math:`y`, same shape as ``input``.
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> mae_loss(torch.tensor([1.0, 2.0]), torch.tensor([1.0, 5.0]))
        tensor(1.5000)
    """
    input, target = _check_pair(input, target, reduction)
    return F.l1_loss(input, target, reduction=reduction)


class MAELoss(nn.Module):
    """Module form of :func:`mae_loss`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mae_loss(input, target, self.reduction)


@register_loss
class MAESpec(LossSpecBase):
    """Mean absolute error; the conditional median minimises it."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "torch.nn.functional.l1_loss"
    name: Literal["mae"] = "mae"

    def build(self) -> nn.Module:
        return MAELoss(reduction=self.reduction)


# -------------------------------------------------------------------------------------- Huber


def huber_loss(
    input: Tensor, target: Tensor, delta: float = 1.0, reduction: Reduction = "mean"
) -> Tensor:
    r"""Huber loss: quadratic for small residuals, linear for large ones.

    With :math:`d_i = x_i - y_i`:

    .. math::
        \ell_i = \begin{cases} \tfrac12 d_i^2 & |d_i| \le \delta \\
                 \delta\,(|d_i| - \tfrac12 \delta) & |d_i| > \delta \end{cases}

    It equals ``delta * smooth_l1_loss(input, target, beta=delta)``.

    Reference: Huber (1964), "Robust Estimation of a Location Parameter";
    ``torch.nn.functional.huber_loss``.

    Args:
        input: predictions :math:`x`.
        target: targets :math:`y`, same shape as ``input``.
        delta: :math:`\delta > 0`, the absolute residual at which the loss switches from
            quadratic to linear; the gradient's magnitude is capped at ``delta``. It is in the
            **target's unit** (a regression network outputs in that unit: its last layer starts
            at the training target's mean and standard deviation), so ``delta: 15`` means 15
            minutes of delay, or 15 dollars of a room price. Huber's classical choice is 1.345
            times the residuals' standard deviation (95% efficiency for Gaussian errors); the
            retrain flow suggests exactly that, robustly, from the champion's residuals.
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> huber_loss(torch.tensor([0.5, 3.0]), torch.tensor([0.0, 0.0]), reduction="none")
        tensor([0.1250, 2.5000])
    """
    check_positive("delta", delta)
    input, target = _check_pair(input, target, reduction)
    return F.huber_loss(input, target, reduction=reduction, delta=delta)


class HuberLoss(nn.Module):
    """Module form of :func:`huber_loss`."""

    def __init__(self, delta: float = 1.0, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_positive("delta", delta)
        check_reduction(reduction)
        self.delta = delta
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return huber_loss(input, target, self.delta, self.reduction)


@register_loss
class HuberSpec(LossSpecBase):
    """Huber loss: squared error below delta, absolute error above; robust to outliers."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "torch.nn.functional.huber_loss"
    name: Literal["huber"] = "huber"
    delta: float = Field(
        1.0,
        description="absolute residual (> 0), in the target's unit, where the loss turns from "
        "quadratic to linear; about 1.345 residual standard deviations is Huber's choice",
    )

    def build(self) -> nn.Module:
        return HuberLoss(delta=self.delta, reduction=self.reduction)


# ----------------------------------------------------------------------------------- log-cosh


class _LogCosh(_Elementwise):
    """log cosh(d) = |d| + softplus(-2|d|) - log 2, with slope tanh(d).

    With ``em = expm1(-2|d|)`` (in ``(-1, 0]``) the value is ``|d| + log1p(em / 2)`` and the
    slope ``sign(d) * (-em / (2 + em))``: two transcendental calls in all (``torch.tanh`` alone
    costs more than both), no overflow, and no ``- log 2`` cancellation, so small residuals keep
    their precision (the absolute error is about one ulp of ``|d|``).
    """

    def values_and_state(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        diff = input - target
        absdiff = diff.abs()
        em = absdiff.mul(-2.0).expm1_()  # exp(-2|d|) - 1
        denom = em.add(2.0)
        slope = torch.div(em, denom, out=denom).copysign_(diff)  # tanh(d)
        loss = absdiff.add_(em.mul_(0.5).log1p_()).clamp_(min=0.0)
        return loss, slope

    def formula(self, input: Tensor, target: Tensor) -> Tensor:
        # d + softplus(-2d) - log 2 (no abs, so second derivatives are right at d = 0 too).
        diff = input - target
        return diff + F.softplus(-2.0 * diff) - _LOG2


def log_cosh_loss(input: Tensor, target: Tensor, reduction: Reduction = "mean") -> Tensor:
    r"""Log-cosh loss :math:`\ell_i = \log\cosh(x_i - y_i)`.

    About :math:`\tfrac12 d^2` for small residuals :math:`d` and :math:`|d| - \log 2` for large
    ones, smooth everywhere, with gradient :math:`\tanh(d)`. Computed as
    :math:`|d| + \operatorname{softplus}(-2|d|) - \log 2`, in the form
    :math:`|d| + \operatorname{log1p}(\operatorname{expm1}(-2|d|) / 2)`, which stays finite where
    :math:`\cosh d` overflows (:math:`|d| > 89` in float32) and keeps small residuals precise.

    Reference: Chen et al. (2019), "Log Hyperbolic Cosine Loss Improves Variational
    Auto-Encoder"; ``numpy.log(numpy.cosh(d))``.

    Args:
        input: predictions :math:`x`.
        target: targets :math:`y`, same shape as ``input``.
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> log_cosh_loss(torch.tensor([0.0, 1.0, 1e4]), torch.zeros(3), reduction="none")
        tensor([0.0000e+00, 4.3378e-01, 9.9993e+03])
    """
    input, target = _check_pair(input, target, reduction)
    return _elementwise_loss(_LogCosh(), input, target, reduction)


class LogCoshLoss(nn.Module):
    """Module form of :func:`log_cosh_loss`."""

    def __init__(self, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_reduction(reduction)
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return log_cosh_loss(input, target, self.reduction)


@register_loss
class LogCoshSpec(LossSpecBase):
    """Log-cosh loss: smooth, quadratic near zero and linear in the tails."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "numpy.log(numpy.cosh(input - target))"
    name: Literal["log_cosh"] = "log_cosh"

    def build(self) -> nn.Module:
        return LogCoshLoss(reduction=self.reduction)


# ------------------------------------------------------------------ asymmetric and quantile


class _AsymmetricLinear(_Elementwise):
    """under * relu(y - x) + over * relu(x - y); slope over, -under, or 0 where x = y."""

    def __init__(self, under: float, over: float) -> None:
        self.under = under
        self.over = over

    def values_and_state(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        diff = input - target
        # Built from sign() by clamps, products with 0 and +-1 and one exact sum, so every slope
        # is exactly over or -under: faster than torch.where on CPU, and free of cancellation.
        sign = diff.sign()
        slope = sign.clamp(min=0.0).mul_(self.over).add_(sign.clamp_(max=0.0), alpha=self.under)
        return diff.mul_(slope), slope

    def formula(self, input: Tensor, target: Tensor) -> Tensor:
        diff = input - target
        return self.over * F.relu(diff) + self.under * F.relu(-diff)


class _AsymmetricSquared(_Elementwise):
    """under * relu(y - x)^2 + over * relu(x - y)^2; slope 2 * cost * (x - y).

    With ``u = leaky_relu(x - y, sqrt(under / over))`` the loss is ``over * u^2`` and the slope
    ``2 * over * leaky_relu(u, sqrt(under / over))``: one temporary and one in-place pass, close to
    the fused ``mse_loss`` kernel in speed (``torch.where`` on the sign is several times slower
    on CPU). Over-predicted elements are exact; under-predicted ones within a few ulp.
    """

    def __init__(self, under: float, over: float) -> None:
        self.under = under
        self.over = over
        self.slope_ratio = math.sqrt(under / over)

    def values_and_state(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        scaled = F.leaky_relu_(input - target, self.slope_ratio)
        loss = scaled.square()
        return (loss if self.over == 1.0 else loss.mul_(self.over)), scaled

    def input_grad(self, state: Tensor, scale: Tensor) -> Tensor:
        return F.leaky_relu(state, self.slope_ratio).mul_(scale * (2.0 * self.over))

    def formula(self, input: Tensor, target: Tensor) -> Tensor:
        diff = input - target
        return self.over * F.relu(diff).square() + self.under * F.relu(-diff).square()


def _check_asymmetric_options(under_cost: float, over_cost: float, power: int) -> None:
    check_positive("under_cost", under_cost)
    check_positive("over_cost", over_cost)
    if isinstance(power, bool) or power not in (1, 2):
        raise ValueError(f"power must be 1 (absolute error) or 2 (squared error); got {power!r}")


def quantile_loss(
    input: Tensor, target: Tensor, quantile: float = 0.5, reduction: Reduction = "mean"
) -> Tensor:
    r"""Quantile (pinball) loss; the conditional ``quantile``-quantile minimises it.

    With :math:`r_i = y_i - x_i` and :math:`q` = ``quantile``:

    .. math::
        \ell_i = \max\bigl(q\, r_i,\ (q - 1)\, r_i\bigr)

    so under-prediction (:math:`x < y`) costs :math:`q` per unit and over-prediction
    :math:`1 - q` per unit. ``quantile=0.5`` gives half the absolute error. The ``mean`` equals
    scikit-learn's ``mean_pinball_loss(target, input, alpha=quantile)`` (not twice it).

    Reference: Koenker & Bassett (1978), "Regression Quantiles";
    ``sklearn.metrics.mean_pinball_loss``.

    Args:
        input: predicted quantiles :math:`x`.
        target: targets :math:`y`, same shape as ``input``.
        quantile: :math:`q \in (0, 1)`, the quantile level being predicted.
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> quantile_loss(torch.tensor([0.0, 4.0]), torch.tensor([2.0, 2.0]), 0.9, "none")
        tensor([1.8000, 0.2000])
    """
    check_open_unit("quantile", quantile)
    input, target = _check_pair(input, target, reduction)
    kernel = _AsymmetricLinear(under=quantile, over=1.0 - quantile)
    return _elementwise_loss(kernel, input, target, reduction)


class QuantileLoss(nn.Module):
    """Module form of :func:`quantile_loss`."""

    def __init__(self, quantile: float = 0.5, reduction: Reduction = "mean") -> None:
        super().__init__()
        check_open_unit("quantile", quantile)
        check_reduction(reduction)
        self.quantile = quantile
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return quantile_loss(input, target, self.quantile, self.reduction)


@register_loss
class QuantileSpec(LossSpecBase):
    """Pinball loss for the q-quantile; equals sklearn's mean_pinball_loss(alpha=q)."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "sklearn.metrics.mean_pinball_loss"
    name: Literal["quantile"] = "quantile"
    quantile: float = Field(
        0.5,
        description="quantile level q in (0, 1), unit-free; under-prediction costs q, "
        "over-prediction 1 - q (the loss itself is in the target's unit)",
    )

    def build(self) -> nn.Module:
        return QuantileLoss(quantile=self.quantile, reduction=self.reduction)


def asymmetric_loss(
    input: Tensor,
    target: Tensor,
    under_cost: float = 1.0,
    over_cost: float = 1.0,
    power: int = 2,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Asymmetric error: under- and over-prediction are charged different costs.

    .. math::
        \ell_i = c_u \operatorname{relu}(y_i - x_i)^p + c_o \operatorname{relu}(x_i - y_i)^p

    Special cases: :math:`c_u = c_o = 1` gives the squared error (:math:`p = 2`) or the absolute
    error (:math:`p = 1`); :math:`p = 1` with :math:`(c_u, c_o) = (q, 1 - q)` is the quantile
    loss. With :math:`p = 1` the optimal constant prediction is the
    :math:`c_u / (c_u + c_o)` quantile of the targets; with :math:`p = 2` it is the
    corresponding expectile.

    Reference: Newey & Powell (1987), "Asymmetric Least Squares Estimation and Testing"
    (:math:`p = 2`); Koenker & Bassett (1978) (:math:`p = 1`).

    Args:
        input: predictions :math:`x`.
        target: targets :math:`y`, same shape as ``input``.
        under_cost: :math:`c_u > 0`, the cost per unit (``power=1``) or per squared unit
            (``power=2``) of under-prediction, :math:`x < y`.
        over_cost: :math:`c_o > 0`, the same for over-prediction, :math:`x > y`.
        power: :math:`p`, 1 (absolute error) or 2 (squared error).
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> x, y = torch.tensor([1.0, 3.0]), torch.tensor([2.0, 2.0])
        >>> asymmetric_loss(x, y, under_cost=4.0, over_cost=1.0, power=2, reduction="none")
        tensor([4., 1.])
    """
    _check_asymmetric_options(under_cost, over_cost, power)
    input, target = _check_pair(input, target, reduction)
    kernel_type = _AsymmetricLinear if power == 1 else _AsymmetricSquared
    return _elementwise_loss(kernel_type(under_cost, over_cost), input, target, reduction)


class AsymmetricLoss(nn.Module):
    """Module form of :func:`asymmetric_loss`."""

    def __init__(
        self,
        under_cost: float = 1.0,
        over_cost: float = 1.0,
        power: int = 2,
        reduction: Reduction = "mean",
    ) -> None:
        super().__init__()
        _check_asymmetric_options(under_cost, over_cost, power)
        check_reduction(reduction)
        self.under_cost = under_cost
        self.over_cost = over_cost
        self.power = power
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return asymmetric_loss(
            input, target, self.under_cost, self.over_cost, self.power, self.reduction
        )


@register_loss
class AsymmetricSpec(LossSpecBase):
    """Asymmetric absolute or squared error with separate under- and over-prediction costs."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "numpy formula; mse/mae/quantile as special cases"
    name: Literal["asymmetric"] = "asymmetric"
    under_cost: float = Field(
        1.0,
        description="cost (> 0) per unit, or squared unit, of under-prediction (input < target)",
    )
    over_cost: float = Field(
        1.0, description="cost (> 0) per unit, or squared unit, of over-prediction (input > target)"
    )
    power: int = Field(2, description="1 for absolute error, 2 for squared error")

    def build(self) -> nn.Module:
        return AsymmetricLoss(
            under_cost=self.under_cost,
            over_cost=self.over_cost,
            power=self.power,
            reduction=self.reduction,
        )


# ---------------------------------------------------------------------------------- Poisson


class _PoissonNLL(_Elementwise):
    """rate(x) - y x, where rate is exp(x) up to m = max_log_rate and its tangent line above."""

    def __init__(self, max_log_rate: float) -> None:
        self.max_log_rate = max_log_rate

    def values_and_state(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        m = self.max_log_rate
        clamped = input.clamp(max=m)
        rate_slope = clamped.exp()  # d rate / dx: exp(x), or exp(m) above m
        # rate(x) = exp(min(x, m)) (1 + x - min(x, m)): the tangent line's rise above m is added
        # everywhere (it is 0 below m), so no branch reads the data.
        loss = torch.addcmul(rate_slope, rate_slope, torch.sub(input, clamped, out=clamped))
        return loss.addcmul_(target, input, value=-1.0), rate_slope.sub_(target)

    def formula(self, input: Tensor, target: Tensor) -> Tensor:
        clamped = input.clamp(max=self.max_log_rate)
        return clamped.exp() * (1.0 + input - clamped) - target * input


def _check_max_log_rate(max_log_rate: float) -> None:
    if not -_MAX_LOG_RATE_LIMIT <= max_log_rate <= _MAX_LOG_RATE_LIMIT:
        raise ValueError(
            f"max_log_rate must be a finite number in [-{_MAX_LOG_RATE_LIMIT:g}, "
            f"{_MAX_LOG_RATE_LIMIT:g}] so that exp(max_log_rate) and the linear extension above "
            f"it stay finite and non-zero in float32; got {max_log_rate!r}"
        )


def poisson_nll_loss(
    input: Tensor,
    target: Tensor,
    full: bool = False,
    max_log_rate: float = 30.0,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Poisson negative log-likelihood with the prediction given as a log-rate.

    With log-rate :math:`x_i` (rate :math:`\lambda_i = e^{x_i}`) and count :math:`y_i \ge 0`:

    .. math::
        \ell_i = e^{x_i} - y_i x_i \;\bigl[+ \log\Gamma(y_i + 1)\bigr]

    The bracketed term is added when ``full=True``, making :math:`\ell_i` exactly
    :math:`-\log \operatorname{Poisson}(y_i; e^{x_i})`; it does not depend on the prediction.
    Above :math:`m` = ``max_log_rate`` the exponential is replaced by its first-order Taylor
    extension :math:`e^{m}(1 + x_i - m)`, which joins it continuously with a continuous slope
    and keeps the loss convex, so log-rates far above :math:`m` (e.g. ``1e4``, where
    :math:`e^{x}` overflows) give finite losses and gradients. Below :math:`m` the loss is
    exact.

    Reference: ``torch.nn.functional.poisson_nll_loss(log_input=True, full=False)``;
    ``-scipy.stats.poisson.logpmf(target, exp(input))`` for ``full=True`` (torch's ``full``
    uses Stirling's approximation instead of the exact :math:`\log\Gamma`).

    Args:
        input: predicted log-rates :math:`x` (not rates).
        target: observed counts :math:`y \ge 0`, same shape as ``input``; non-integer values
            are allowed (the formula is used as is).
        full: add :math:`\log\Gamma(y + 1)` so the loss is the full negative log-likelihood.
        max_log_rate: :math:`m`, the log-rate above which :math:`e^x` is extended linearly;
            finite, in :math:`[-50, 50]`.
        reduction: ``mean`` over all elements, ``sum``, or ``none``.

    Shape:
        input, target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> x, y = torch.tensor([0.0, math.log(2.0)]), torch.tensor([1.0, 2.0])
        >>> poisson_nll_loss(x, y, reduction="none")
        tensor([1.0000, 0.6137])
        >>> poisson_nll_loss(x, y, full=True, reduction="none")
        tensor([1.0000, 1.3069])
    """
    _check_max_log_rate(max_log_rate)
    input, target = _check_pair(input, target, reduction)
    if checking_targets():
        check_values(
            target.min() >= 0,
            lambda: (
                "poisson_nll target must hold non-negative counts; got a negative (or NaN) value"
            ),
        )
    out = _elementwise_loss(_PoissonNLL(max_log_rate), input, target, reduction)
    if full:
        out = out + reduce(torch.lgamma(target + 1.0), reduction)
    return out


class PoissonNLLLoss(nn.Module):
    """Module form of :func:`poisson_nll_loss`."""

    def __init__(
        self, full: bool = False, max_log_rate: float = 30.0, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        _check_max_log_rate(max_log_rate)
        check_reduction(reduction)
        self.full = full
        self.max_log_rate = max_log_rate
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return poisson_nll_loss(input, target, self.full, self.max_log_rate, self.reduction)


@register_loss
class PoissonNLLSpec(LossSpecBase):
    """Poisson negative log-likelihood of counts; the prediction is the log-rate."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "torch.nn.functional.poisson_nll_loss(log_input=True)"
    nonnegative_target: ClassVar[bool] = True
    name: Literal["poisson_nll"] = "poisson_nll"
    full: bool = Field(
        False, description="add log(target!) so the loss is the exact negative log-likelihood"
    )
    max_log_rate: float = Field(
        30.0, description="log-rate above which exp is replaced by its tangent line (no overflow)"
    )

    def build(self) -> nn.Module:
        return PoissonNLLLoss(
            full=self.full, max_log_rate=self.max_log_rate, reduction=self.reduction
        )


# --------------------------------------------------------------------------------- Gaussian


class _GaussianNLL(_Elementwise):
    """0.5 (s_c + (y - mu)^2 exp(-s_c)) [+ 0.5 log 2 pi], with s_c = max(s, log eps)."""

    def __init__(self, log_eps: float, full: bool) -> None:
        self.log_eps = log_eps
        self.constant = _HALF_LOG_2PI if full else 0.0

    def values_and_state(self, input: Tensor, target: Tensor) -> tuple[Tensor, Tensor]:
        mean, log_var = input.unbind(-1)
        clamped = log_var.clamp(min=self.log_eps)
        resid = target - mean
        resid_over_var = torch.exp(-clamped).mul_(resid)
        sq_over_var = resid.mul_(resid_over_var)  # (y - mu)^2 / var
        loss = clamped.add_(sq_over_var).mul_(0.5).add_(self.constant)
        # d / d mu = -(y - mu) / var; d / d s = (1 - (y - mu)^2 / var) / 2 above the clamp, else 0.
        grad_log_var = sq_over_var.neg_().add_(1.0).mul_(0.5)
        grad_log_var.masked_fill_(log_var < self.log_eps, 0.0)
        return loss, torch.stack((resid_over_var.neg_(), grad_log_var), dim=-1)

    def formula(self, input: Tensor, target: Tensor) -> Tensor:
        mean, log_var = input.unbind(-1)
        clamped = log_var.clamp(min=self.log_eps)
        return 0.5 * (clamped + (target - mean).square() * torch.exp(-clamped)) + self.constant


def _check_gaussian_pair(input: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    check_reduction(reduction)
    check_floating("input", input)
    check_floating("target", target)
    if input.dim() == 0 or input.shape[-1] != 2:
        raise ValueError(
            "gaussian_nll input must have shape (..., 2): input[..., 0] is the predicted mean "
            f"and input[..., 1] the predicted log-variance; got input {tuple(input.shape)}"
        )
    if target.shape != input.shape[:-1]:
        raise ValueError(
            "gaussian_nll target must have shape input.shape[:-1] (input is (..., 2): mean and "
            f"log-variance); got input {tuple(input.shape)} and target {tuple(target.shape)}, "
            f"expected target {tuple(input.shape[:-1])}"
        )
    check_nonempty("input", input)
    return _common_dtype(as_float(input), as_float(target))


def gaussian_nll_loss(
    input: Tensor,
    target: Tensor,
    full: bool = False,
    eps: float = 1e-6,
    reduction: Reduction = "mean",
) -> Tensor:
    r"""Gaussian negative log-likelihood with a predicted mean and log-variance.

    With mean :math:`\mu_i` = ``input[..., 0]``, log-variance :math:`s_i` = ``input[..., 1]``
    and :math:`\tilde s_i = \max(s_i, \log\varepsilon)`:

    .. math::
        \ell_i = \tfrac12 \bigl(\tilde s_i + (y_i - \mu_i)^2 e^{-\tilde s_i}\bigr)
                 \;\bigl[+ \tfrac12 \log 2\pi\bigr]

    The bracketed constant is added when ``full=True``, making :math:`\ell_i` exactly
    :math:`-\log \mathcal N(y_i; \mu_i, e^{s_i})`. The variance is clamped below at
    :math:`\varepsilon` as in ``torch.nn.GaussianNLLLoss``, which keeps a log-variance of
    ``-1e4`` finite; below the clamp the loss does not depend on :math:`s_i`, so its gradient
    in :math:`s_i` is 0 there (torch instead lets the gradient pass through its clamp).

    Reference: Nix & Weigend (1994), "Estimating the Mean and Variance of the Target
    Probability Distribution"; ``torch.nn.functional.gaussian_nll_loss`` with ``var=exp(s)``;
    ``-scipy.stats.norm.logpdf`` for ``full=True``.

    Args:
        input: the predicted mean and log-variance stacked in the last dimension.
        target: targets :math:`y`, shape ``input.shape[:-1]``.
        full: add :math:`\tfrac12 \log 2\pi` so the loss is the full negative log-likelihood.
        eps: :math:`\varepsilon > 0`, the smallest variance used (the log-variance is clamped
            below at :math:`\log\varepsilon`).
        reduction: ``mean`` over all elements of ``target``, ``sum``, or ``none``.

    Shape:
        input: ``(*, 2)``; target: ``(*)``; output: scalar, or ``(*)`` for ``none``.

    Example:
        >>> input = torch.tensor([[0.0, 0.0], [1.0, math.log(4.0)]])
        >>> gaussian_nll_loss(input, torch.tensor([1.0, 1.0]), reduction="none")
        tensor([0.5000, 0.6931])
    """
    check_positive("eps", eps)
    input, target = _check_gaussian_pair(input, target, reduction)
    return _elementwise_loss(_GaussianNLL(math.log(eps), full), input, target, reduction)


class GaussianNLLLoss(nn.Module):
    """Module form of :func:`gaussian_nll_loss`."""

    def __init__(
        self, full: bool = False, eps: float = 1e-6, reduction: Reduction = "mean"
    ) -> None:
        super().__init__()
        check_positive("eps", eps)
        check_reduction(reduction)
        self.full = full
        self.eps = eps
        self.reduction = reduction

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return gaussian_nll_loss(input, target, self.full, self.eps, self.reduction)


@register_loss
class GaussianNLLSpec(LossSpecBase):
    """Gaussian negative log-likelihood; input[..., 0] is the mean, input[..., 1] log-variance."""

    tasks: ClassVar[frozenset[TaskType]] = _REGRESSION
    reference: ClassVar[str] = "torch.nn.functional.gaussian_nll_loss(var=exp(log_var))"
    name: Literal["gaussian_nll"] = "gaussian_nll"
    full: bool = Field(
        False, description="add log(2 pi) / 2 so the loss is the exact negative log-likelihood"
    )
    eps: float = Field(
        1e-6, description="smallest variance (> 0); the log-variance is clamped below at log(eps)"
    )

    def build(self) -> nn.Module:
        return GaussianNLLLoss(full=self.full, eps=self.eps, reduction=self.reduction)
