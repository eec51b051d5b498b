r"""Weight penalties added to the training loss: ``l1``, ``l2``, ``elastic_net``.

These are explicit terms of the objective, logged separately, and distinct from an optimizer's
``weight_decay``: for plain SGD, ``weight_decay=λ`` equals an ``l2`` penalty of strength ``λ/2``;
for Adam it does not (the penalty's gradient is rescaled by Adam, decay is not), and for AdamW the
decay is decoupled from the loss altogether. Choose the penalty when the objective itself should
carry it (so it shows in the loss, in ablations and in ``loss_id``).

By default only weight matrices and kernels are penalised: biases (any parameter named ``bias``),
one-dimensional parameters and every parameter of a normalisation layer (BatchNorm, LayerNorm,
GroupNorm, InstanceNorm, RMSNorm) are left out, because shrinking them changes what the layer
computes rather than its complexity.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor, nn

from lossflow.losses.options import check_penalty

_NORM_LAYERS: tuple[type[nn.Module], ...] = (
    nn.modules.batchnorm._NormBase,
    nn.LayerNorm,
    nn.GroupNorm,
    nn.RMSNorm,
    nn.LocalResponseNorm,
)


def penalised_parameters(
    model: nn.Module, *, include_bias_and_norm: bool = False
) -> Iterator[tuple[str, nn.Parameter]]:
    """Yield ``(name, parameter)`` for the trainable parameters a penalty applies to."""
    for module_name, module in model.named_modules():
        is_norm = isinstance(module, _NORM_LAYERS)
        for param_name, param in module.named_parameters(recurse=False):
            if not param.requires_grad:
                continue
            if not include_bias_and_norm and (is_norm or param_name == "bias" or param.dim() < 2):
                continue
            yield (f"{module_name}.{param_name}" if module_name else param_name), param


class WeightPenalty(nn.Module):
    r"""Elastic-net family penalty on a model's weights.

    .. math:: R(\theta) = \lambda \left( \rho \sum |w| + (1 - \rho) \sum w^2 \right)

    ``l1`` is :math:`\rho = 1`, ``l2`` is :math:`\rho = 0` (note: :math:`\lambda \sum w^2`, with no
    factor 1/2), ``elastic_net`` any :math:`\rho \in [0, 1]` (the ``l1_ratio`` of scikit-learn's
    ``ElasticNet``, without its factor 1/2 on the squared term).

    Args:
        strength: :math:`\lambda \ge 0`.
        l1_ratio: :math:`\rho \in [0, 1]`.
        include_bias_and_norm: also penalise biases, 1-d and normalisation parameters.

    Example:
        >>> lin = nn.Linear(2, 1, bias=True)
        >>> with torch.no_grad():
        ...     _ = lin.weight.copy_(torch.tensor([[1.0, -2.0]]))
        >>> WeightPenalty(0.1, l1_ratio=1.0)(lin)
        tensor(0.3000, grad_fn=<MulBackward0>)
    """

    def __init__(
        self, strength: float, l1_ratio: float, *, include_bias_and_norm: bool = False
    ) -> None:
        super().__init__()
        check_penalty(strength, l1_ratio)
        self.strength = float(strength)
        self.l1_ratio = float(l1_ratio)
        self.include_bias_and_norm = include_bias_and_norm

    def forward(self, model: nn.Module) -> Tensor:
        params = [
            p
            for _, p in penalised_parameters(
                model, include_bias_and_norm=self.include_bias_and_norm
            )
        ]
        if not params:
            raise ValueError(
                f"{type(model).__name__} has no parameters to penalise "
                "(set include_bias_and_norm=true to include biases and normalisation layers)"
            )
        l1 = torch.stack([p.abs().sum() for p in params]).sum() if self.l1_ratio > 0 else None
        l2 = torch.stack([p.square().sum() for p in params]).sum() if self.l1_ratio < 1 else None
        total = torch.zeros((), dtype=params[0].dtype, device=params[0].device)
        if l1 is not None:
            total = total + self.l1_ratio * l1
        if l2 is not None:
            total = total + (1.0 - self.l1_ratio) * l2
        return self.strength * total
