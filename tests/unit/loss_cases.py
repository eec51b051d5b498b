"""Example inputs for every registered loss, used by the catalogue-wide property tests.

Each loss family keeps its cases in ``cases_<family>.py`` as ``CASES: list[LossCase]``; this module
gathers them. A case's ``make(gen, dtype)`` returns the positional arguments of the loss module:
the first is the prediction (the tensor that gets gradients), the rest are targets (and masks).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Maker = Callable[[torch.Generator, torch.dtype], tuple[Tensor, ...]]


@dataclass(frozen=True)
class LossCase:
    """One loss spec with a way to make valid inputs for it.

    Attributes:
        spec: the config mapping passed to ``build_loss``.
        make: returns ``(prediction, *targets)`` in the given floating dtype.
        id: pytest id; defaults to the spec's name.
        reductions: the reductions the loss supports.
        mean_is_mean_of_none: whether ``reduction="mean"`` equals ``reduction="none"`` averaged.
    """

    spec: Mapping[str, Any]
    make: Maker
    id: str = ""
    reductions: tuple[str, ...] = ("mean", "sum", "none")
    mean_is_mean_of_none: bool = True
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return self.id or str(self.spec["name"])


def all_cases() -> list[LossCase]:
    from tests.unit import cases_classification, cases_composite, cases_ranking, cases_regression

    return [
        *cases_regression.CASES,
        *cases_classification.CASES,
        *cases_ranking.CASES,
        *cases_composite.CASES,
    ]
