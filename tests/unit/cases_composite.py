"""Cases for the composite loss (see ``loss_cases.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from tests.unit.loss_cases import LossCase


def _binary(gen: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, ...]:
    logits = torch.randn(10, generator=gen, dtype=dtype)
    target = (torch.rand(10, generator=gen) > 0.5).to(dtype)
    return logits, target


CASES = [
    LossCase(
        id="composite_fixed",
        spec={
            "name": "composite",
            "terms": {
                "bce": {"weight": 1.0, "loss": {"name": "bce"}},
                "focal": {"weight": 0.5, "loss": {"name": "focal", "gamma": 2.0}},
            },
        },
        make=_binary,
        reductions=("mean",),
    ),
    LossCase(
        id="composite_uncertainty",
        spec={
            "name": "composite",
            "balancing": "uncertainty",
            "terms": {
                "bce": {"weight": 1.0, "loss": {"name": "bce"}},
                "cost": {
                    "weight": 1.0,
                    "loss": {"name": "cost_sensitive", "fn_cost": 5.0, "fp_cost": 1.0},
                },
            },
        },
        make=_binary,
        reductions=("mean",),
    ),
]
