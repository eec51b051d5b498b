"""Cases for the regression losses (see ``loss_cases.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from tests.unit.loss_cases import LossCase

_ROWS = 8


def _pair(gen: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Predictions and targets of shape (8, 3)."""
    input = torch.randn(_ROWS, 3, generator=gen, dtype=torch.float64)
    target = torch.randn(_ROWS, 3, generator=gen, dtype=torch.float64)
    return input.to(dtype), target.to(dtype)


def _counts(gen: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Log-rates in about [-2, 2] and non-negative integer counts (zeros included)."""
    log_rate = torch.randn(_ROWS, 3, generator=gen, dtype=torch.float64)
    counts = torch.randint(0, 7, (_ROWS, 3), generator=gen).to(torch.float64)
    return log_rate.to(dtype), counts.to(dtype)


def _mean_and_log_var(gen: torch.Generator, dtype: torch.dtype) -> tuple[Tensor, ...]:
    """Input (8, 2): mean and log-variance in about [-2, 2]; target (8,)."""
    input = torch.randn(_ROWS, 2, generator=gen, dtype=torch.float64)
    target = torch.randn(_ROWS, generator=gen, dtype=torch.float64)
    return input.to(dtype), target.to(dtype)


CASES = [
    LossCase(spec={"name": "mse"}, make=_pair),
    LossCase(spec={"name": "rmse"}, make=_pair, reductions=("mean",)),
    LossCase(spec={"name": "mae"}, make=_pair),
    LossCase(spec={"name": "huber", "delta": 0.5}, make=_pair),
    LossCase(spec={"name": "log_cosh"}, make=_pair),
    LossCase(spec={"name": "quantile", "quantile": 0.9}, make=_pair),
    LossCase(spec={"name": "poisson_nll"}, make=_counts),
    LossCase(id="poisson_nll_full", spec={"name": "poisson_nll", "full": True}, make=_counts),
    LossCase(spec={"name": "gaussian_nll"}, make=_mean_and_log_var),
    LossCase(
        id="gaussian_nll_full", spec={"name": "gaussian_nll", "full": True}, make=_mean_and_log_var
    ),
    LossCase(
        spec={"name": "asymmetric", "under_cost": 3.0, "over_cost": 1.0, "power": 2}, make=_pair
    ),
    LossCase(
        id="asymmetric_p1",
        spec={"name": "asymmetric", "under_cost": 0.5, "over_cost": 2.0, "power": 1},
        make=_pair,
    ),
]
