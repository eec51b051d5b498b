"""Shared argument checks, reductions and the hand-gradient autograd function of the losses.

Every loss in this package reduces the same way and rejects bad arguments with a ``ValueError``
that names the argument, so these helpers are the one place that behaviour is written. Checks of a
target's values read data on the host and run only under :func:`lossflow.losses.target_checks`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, cast

import torch
from torch import Tensor
from torch.autograd.function import FunctionCtx, once_differentiable

from lossflow.losses.options import REDUCTIONS, target_checks_enabled

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def check_reduction(reduction: str) -> None:
    """Raise ``ValueError`` unless ``reduction`` is one of ``mean``, ``sum``, ``none``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}; got {reduction!r}")


def reduce(loss: Tensor, reduction: str) -> Tensor:
    """Reduce an unreduced loss tensor by ``reduction`` (checked by the caller)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    return loss


def as_float(x: Tensor) -> Tensor:
    """Upcast half-precision tensors to float32; losses are always computed in >= float32.

    Under bf16/fp16 autocast the network's logits arrive in low precision; computing a loss in
    that precision loses the small probabilities that log-space formulas exist to keep.
    """
    return x.float() if x.dtype in _LOW_PRECISION else x


def check_floating(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` unless ``x`` has a floating dtype."""
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")


def check_same_shape(input: Tensor, target: Tensor, *, input_name: str = "input") -> None:
    """Raise ``ValueError`` unless ``input`` and ``target`` have the same shape."""
    if input.shape != target.shape:
        raise ValueError(
            f"{input_name} and target must have the same shape; "
            f"got {input_name} {tuple(input.shape)} and target {tuple(target.shape)}"
        )


def check_nonempty(name: str, x: Tensor) -> None:
    """Raise ``ValueError`` for an empty tensor, whose mean would silently be NaN."""
    if x.numel() == 0:
        raise ValueError(
            f"{name} is empty (shape {tuple(x.shape)}); a loss needs at least one element"
        )


def checking_targets() -> bool:
    """Whether a loss checks its target's values on this call.

    Only under :func:`lossflow.losses.target_checks` (a debugging aid, off by default) and never
    inside a compiled region: a value check reads data back to the host, which synchronises a GPU
    and breaks a ``torch.compile`` graph. Shape, dtype and option checks always run.
    """
    return target_checks_enabled() and not torch.compiler.is_compiling()


def check_values(ok: Tensor, message: Callable[[], str]) -> None:
    """Raise ``ValueError(message())`` unless every element of the boolean tensor ``ok`` is true.

    Reads ``ok`` on the host: call it only where :func:`checking_targets` is true.
    """
    if not bool(ok.all()):
        raise ValueError(message())


def check_positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a finite positive (or non-negative) number."""
    bad = not (value >= 0 if allow_zero else value > 0) or value != value or value == float("inf")
    if bad:
        kind = "non-negative" if allow_zero else "positive"
        raise ValueError(f"{name} must be a finite {kind} number; got {value!r}")


def check_open_unit(name: str, value: float) -> None:
    """Raise ``ValueError`` unless ``0 < value < 1``."""
    if not 0.0 < value < 1.0:
        raise ValueError(f"{name} must lie strictly between 0 and 1; got {value!r}")


def check_class_vector(
    name: str, values: Sequence[float], *, positive: bool = False, nonnegative: bool = True
) -> None:
    """Raise ``ValueError`` unless ``values`` lists finite numbers of the required sign."""
    if len(values) == 0:
        raise ValueError(f"{name} must list one number per class; got an empty list")
    for i, v in enumerate(values):
        if v != v or v in (float("inf"), float("-inf")):
            raise ValueError(f"{name}[{i}] must be finite; got {v!r}")
        if positive and v <= 0:
            raise ValueError(f"{name}[{i}] must be positive; got {v!r}")
        if nonnegative and v < 0:
            raise ValueError(f"{name}[{i}] must be non-negative; got {v!r}")


def class_index_target(input: Tensor, target: Tensor) -> None:
    """Check a multiclass pair: logits ``(N, C, *)`` and integer class indices ``(N, *)``."""
    if input.dim() < 2:
        raise ValueError(
            f"multiclass input must have shape (N, C) or (N, C, *); got {tuple(input.shape)}"
        )
    if target.is_floating_point() or target.is_complex():
        raise ValueError(
            f"multiclass target must hold integer class indices; got dtype {target.dtype}"
        )
    expected = (input.shape[0], *input.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"multiclass target must have shape {expected} for input {tuple(input.shape)}; "
            f"got {tuple(target.shape)}"
        )
    n_classes = input.shape[1]
    if checking_targets():
        check_values(
            (target >= 0) & (target < n_classes),
            lambda: f"multiclass target holds class indices outside [0, {n_classes - 1}]",
        )


def check_class_count(name: str, values: Sequence[float], n_classes: int) -> None:
    """Raise ``ValueError`` unless a per-class option has one entry per class of the input."""
    if len(values) != n_classes:
        raise ValueError(
            f"{name} has {len(values)} entries but the input has {n_classes} classes; "
            "give one entry per class"
        )


# compute(input, with_grad) -> (per-sample values (N, *), their gradient (N, C, *) if with_grad).
ValueAndGrad = Callable[[Tensor, bool], tuple[Tensor, Tensor | None]]


class _HandGradient(torch.autograd.Function):
    """Per-sample losses whose gradient with respect to ``input`` is computed in the forward pass.

    ``compute(input, True)`` returns the ``(N, *)`` losses (a list's, for ranking) and their
    ``(N, C, *)`` gradient; only that gradient is kept for the backward pass, so no large
    intermediate outlives the call, and the backward pass is one product. Differentiable once.
    """

    @staticmethod
    def forward(ctx: FunctionCtx, input: Tensor, compute: ValueAndGrad) -> Tensor:
        value, grad = compute(input, True)
        ctx.save_for_backward(cast(Tensor, grad))  # with_grad=True always returns it
        return value

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_value: Tensor) -> tuple[Tensor, None]:
        (grad,) = ctx.saved_tensors
        return grad_value.unsqueeze(1) * grad, None


def with_hand_gradient(input: Tensor, compute: ValueAndGrad) -> Tensor:
    """``compute``'s per-sample losses, differentiable in ``input`` when autograd needs it."""
    if torch.is_grad_enabled() and input.requires_grad:
        value: Tensor = _HandGradient.apply(input, compute)  # type: ignore[no-untyped-call]
        return value
    return compute(input, False)[0]
