"""Cases for the classification losses (see ``loss_cases.py``)."""

from __future__ import annotations

import torch
from torch import Tensor

from tests.unit.loss_cases import LossCase, Maker

Pair = tuple[Tensor, ...]


def _logits(gen: torch.Generator, dtype: torch.dtype, *shape: int) -> Tensor:
    return (2.0 * torch.randn(*shape, generator=gen, dtype=torch.float64)).to(dtype)


def _hard(*shape: int) -> Maker:
    def make(gen: torch.Generator, dtype: torch.dtype) -> Pair:
        x = _logits(gen, dtype, *shape)
        y = (torch.rand(*shape, generator=gen, dtype=torch.float64) > 0.5).to(dtype)
        return x, y

    return make


def _soft(*shape: int) -> Maker:
    def make(gen: torch.Generator, dtype: torch.dtype) -> Pair:
        x = _logits(gen, dtype, *shape)
        y = torch.rand(*shape, generator=gen, dtype=torch.float64)
        y[0] = 1.0  # a mixed tensor: hard labels inside a soft target
        return x, y.to(dtype)

    return make


def _classes(n: int, c: int, *extra: int) -> Maker:
    def make(gen: torch.Generator, dtype: torch.dtype) -> Pair:
        x = _logits(gen, dtype, n, c, *extra)
        y = torch.randint(0, c, (n, *extra), generator=gen)
        return x, y

    return make


def _distributions(n: int, c: int) -> Maker:
    def make(gen: torch.Generator, dtype: torch.dtype) -> Pair:
        x = _logits(gen, dtype, n, c)
        t = torch.rand(n, c, generator=gen, dtype=torch.float64)
        t[0, 0] = 0.0  # a zero probability: 0 log 0 = 0
        return x, (t / t.sum(1, keepdim=True)).to(dtype)

    return make


def _case(
    id: str, spec: dict[str, object], make: Maker, *, mean_is_mean_of_none: bool = True
) -> LossCase:
    return LossCase(spec=spec, make=make, id=id, mean_is_mean_of_none=mean_is_mean_of_none)


CASES: list[LossCase] = [
    _case("bce", {"name": "bce"}, _hard(10)),
    _case("bce_pos_weight_multilabel_soft", {"name": "bce", "pos_weight": 3.0}, _soft(6, 3)),
    _case("ce", {"name": "ce"}, _classes(10, 4)),
    _case(
        "ce_weights_smoothing",
        {"name": "ce", "class_weights": [1.0, 2.0, 0.5, 0.0], "label_smoothing": 0.1},
        _classes(10, 4),
        mean_is_mean_of_none=False,
    ),
    _case("ce_spatial", {"name": "ce"}, _classes(6, 3, 2)),
    _case("focal_binary", {"name": "focal"}, _hard(10)),
    _case("focal_binary_gamma_half", {"name": "focal", "gamma": 0.5}, _hard(4, 3)),
    _case(
        "focal_binary_soft",
        {"name": "focal", "alpha": None, "gamma": 1.5},
        _soft(10),
    ),
    _case(
        "focal_multiclass",
        {"name": "focal", "alpha": [0.25, 1.0, 2.0, 0.5]},
        _classes(10, 4),
    ),
    _case(
        "focal_multiclass_gamma_half",
        {"name": "focal", "alpha": None, "gamma": 0.5},
        _classes(8, 3),
    ),
    _case(
        "class_balanced_focal_multiclass",
        {"name": "class_balanced", "class_counts": [500, 40, 3], "beta": 0.99},
        _classes(9, 3),
    ),
    _case(
        "class_balanced_ce",
        {"name": "class_balanced", "class_counts": [500, 40, 3], "base": "ce"},
        _classes(9, 3),
    ),
    _case(
        "class_balanced_bce",
        {"name": "class_balanced", "class_counts": [900, 100], "base": "bce"},
        _hard(10),
    ),
    _case(
        "class_balanced_focal_binary",
        {"name": "class_balanced", "class_counts": [900, 100], "gamma": 1.0},
        _hard(10),
    ),
    _case(
        "logit_adjusted_multiclass",
        {"name": "logit_adjusted", "class_counts": [70, 20, 10]},
        _classes(9, 3),
    ),
    _case(
        "logit_adjusted_binary",
        {"name": "logit_adjusted", "class_priors": [0.9, 0.1], "tau": 0.5},
        _hard(10),
    ),
    _case(
        "cost_sensitive_binary",
        {"name": "cost_sensitive", "fn_cost": 5.0, "fp_cost": 2.0},
        _hard(10),
    ),
    _case(
        "cost_sensitive_multiclass",
        {"name": "cost_sensitive", "cost_matrix": [[0, 1, 4], [2, 0, 1], [8, 1, 0]]},
        _classes(9, 3),
    ),
    _case("kl_div", {"name": "kl_div"}, _distributions(8, 4)),
]
