"""What the classification losses share: task sets, reading an (input, target) pair as binary or
multiclass, option checks and a stable softplus."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from lossflow.losses._base import (
    as_float,
    check_floating,
    check_nonempty,
    check_reduction,
    check_same_shape,
    check_values,
    checking_targets,
    class_index_target,
)
from lossflow.losses.spec import TaskType

BINARY_TASKS: frozenset[TaskType] = frozenset({"binary", "multilabel"})
MULTICLASS_TASKS: frozenset[TaskType] = frozenset({"multiclass"})
CLASSIFICATION_TASKS: frozenset[TaskType] = BINARY_TASKS | MULTICLASS_TASKS


def is_multiclass(input: Tensor, target: Tensor) -> bool:
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


def binary_pair(input: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """Check a binary/multilabel pair; return it in >= float32 and in one dtype.

    The target's values are checked to lie in [0, 1] only under
    :func:`lossflow.losses.target_checks`.
    """
    check_reduction(reduction)
    check_floating("input", input)
    if not target.is_floating_point():
        raise ValueError(
            "binary/multilabel target must be a floating-point tensor of 0/1 (or soft) labels; "
            f"got dtype {target.dtype}"
        )
    check_same_shape(input, target)
    check_nonempty("input", input)
    if checking_targets():
        low, high = torch.aminmax(target)
        check_values(
            (low >= 0) & (high <= 1),
            lambda: (
                "binary/multilabel target values must lie in [0, 1]; got values in "
                f"[{low.item():g}, {high.item():g}]"
            ),
        )
    input = as_float(input)
    return input, target.to(input.dtype)


def multiclass_pair(input: Tensor, target: Tensor, reduction: str) -> tuple[Tensor, Tensor]:
    """Check a multiclass pair; return logits in >= float32 and int64 class indices."""
    check_reduction(reduction)
    check_floating("input", input)
    class_index_target(input, target)
    check_nonempty("input", input)
    return as_float(input), target.long()


def class_tensor(values: Sequence[float], like: Tensor, target: Tensor) -> Tensor:
    """A per-class vector on ``like``'s dtype and device, indexed by ``target`` -> per sample."""
    return torch.tensor(list(values), dtype=like.dtype, device=like.device)[target]


def check_unit_closed(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must lie in [0, 1]; got {value!r}")


def check_half_open(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must lie in [0, 1); got {value!r}")


def softplus(x: Tensor) -> Tensor:
    """``log(1 + e^x)``, returning ``x`` only where ``log1p(e^-x)`` is below the dtype's eps."""
    return F.softplus(x, threshold=40.0 if x.dtype == torch.float64 else 20.0)
