"""Losses for imbalanced classes: class-balanced (Cui et al. 2019) and logit-adjusted (Menon et
al. 2021) cross-entropy."""

from __future__ import annotations

import math
import numbers
from collections.abc import Mapping, Sequence
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
)
from lossflow.losses.classification._common import (
    BINARY_TASKS,
    CLASSIFICATION_TASKS,
    MULTICLASS_TASKS,
    binary_pair,
    check_half_open,
    is_multiclass,
    multiclass_pair,
)
from lossflow.losses.classification.focal import focal_loss
from lossflow.losses.options import Reduction
from lossflow.losses.spec import LossSpecBase, TaskType, register_loss

Base = Literal["ce", "bce", "focal"]
BASES: tuple[str, ...] = ("ce", "bce", "focal")


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
    check_half_open("beta", beta)
    if base not in BASES:
        raise ValueError(f"base must be one of {', '.join(BASES)}; got {base!r}")
    check_positive("gamma", gamma, allow_zero=True)


def class_balanced_weights(class_counts: Sequence[int], beta: float) -> list[float]:
    r"""Cui et al.'s class weights :math:`w_c = (1 - \beta) / (1 - \beta^{n_c})`, summing to C.

    :math:`(1 - \beta^{n}) / (1 - \beta)` is the effective number of samples of a class with
    :math:`n` samples; ``beta=0`` gives equal weights, ``beta -> 1`` weights ``~ 1 / n_c``.
    """
    _check_class_counts(class_counts)
    check_half_open("beta", beta)
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
    if is_multiclass(input, target):
        if base == "bce":
            raise ValueError(
                "base 'bce' needs a binary or multilabel target; use base 'ce' or 'focal' "
                "for class indices"
            )
        check_class_count("class_counts", class_counts, input.shape[1])
        if base == "focal":
            return focal_loss(input, target, alpha=weights, gamma=gamma, reduction=reduction)
        input, target = multiclass_pair(input, target, reduction)
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
    input, target = binary_pair(input, target, reduction)
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

    tasks: ClassVar[frozenset[TaskType]] = CLASSIFICATION_TASKS
    task_options: ClassVar[Mapping[TaskType, str]] = {
        "multiclass": "base: ce",
        "binary": "base: bce",
        "multilabel": "base: bce",
    }
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
        return {"ce": MULTICLASS_TASKS, "bce": BINARY_TASKS}.get(self.base, self.tasks)


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
    if is_multiclass(input, target):
        input, target = multiclass_pair(input, target, reduction)
        check_class_count(name, priors, input.shape[1])
        shift = torch.tensor(log_prior, dtype=input.dtype, device=input.device).mul_(tau)
        shift = shift.view(1, -1, *([1] * (input.dim() - 2)))
        return F.cross_entropy(input + shift, target, reduction=reduction)
    if len(priors) != 2:
        raise ValueError(
            f"{name} for a binary or multilabel target must have two entries "
            f"[negative, positive]; got {len(priors)}"
        )
    input, target = binary_pair(input, target, reduction)
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

    tasks: ClassVar[frozenset[TaskType]] = CLASSIFICATION_TASKS
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
