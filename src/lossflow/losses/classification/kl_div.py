"""KL divergence from the predicted to a target distribution (distillation, soft labels)."""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from lossflow.losses._base import (
    as_float,
    check_floating,
    check_nonempty,
    check_reduction,
    check_same_shape,
    check_values,
    checking_targets,
    reduce,
)
from lossflow.losses.classification._common import (
    MULTICLASS_TASKS,
)
from lossflow.losses.options import Reduction
from lossflow.losses.spec import LossSpecBase, TaskType, register_loss


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
    if checking_targets():
        check_values(target.min() >= 0, lambda: "kl_div target probabilities must be non-negative")
        deviation = (target.sum(1) - 1.0).abs().max()
        check_values(
            deviation <= tolerance,
            lambda: (
                f"kl_div target rows must sum to 1 (within {tolerance:g}); the worst row is "
                f"off by {deviation.item():g}"
            ),
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

    tasks: ClassVar[frozenset[TaskType]] = MULTICLASS_TASKS
    reference: ClassVar[str] = "scipy.stats.entropy; torch.nn.functional.kl_div(batchmean)"
    name: Literal["kl_div"] = "kl_div"

    def build(self) -> nn.Module:
        return KLDivLoss(reduction=self.reduction)
