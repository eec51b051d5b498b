"""Composite loss: a weighted sum of named loss terms, optionally with learned balancing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar, Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import Tensor, nn

from lossflow.losses.spec import LossSpec, LossSpecBase, TaskType, register_loss

Balancing = Literal["fixed", "uncertainty"]
BALANCINGS: tuple[str, ...] = ("fixed", "uncertainty")


class CompositeLoss(nn.Module):
    r"""Weighted sum of named loss terms, each applied to the same ``(input, target, ...)``.

    With ``balancing="fixed"``:

    .. math:: L = \sum_i w_i L_i

    With ``balancing="uncertainty"`` (Kendall, Gal & Cipolla, "Multi-Task Learning Using
    Uncertainty to Weigh Losses for Scene Geometry and Semantics", CVPR 2018, eq. 7), each term
    gets a learned log-variance :math:`s_i` (an ``nn.Parameter`` initialised at 0, trained by the
    same optimizer as the network):

    .. math:: L = \sum_i w_i \left( \tfrac{1}{2} e^{-s_i} L_i + \tfrac{1}{2} s_i \right)

    so a noisy term is down-weighted while :math:`\tfrac{1}{2} s_i` stops every weight collapsing
    to zero. The learned total can be negative; the individual terms cannot be hidden: they are
    always returned by :meth:`forward_with_terms` before weighting.

    Args:
        terms: term name -> loss module. Every term must reduce to a scalar.
        weights: term name -> fixed weight :math:`w_i` (>= 0); missing names weigh 1.
        balancing: ``fixed`` or ``uncertainty``.

    Example:
        >>> from lossflow.losses.regression import MSELoss
        >>> loss = CompositeLoss({"a": MSELoss(), "b": MSELoss()}, {"a": 1.0, "b": 0.5})
        >>> loss(torch.tensor([1.0]), torch.tensor([3.0]))
        tensor(6.)
    """

    def __init__(
        self,
        terms: Mapping[str, nn.Module],
        weights: Mapping[str, float] | None = None,
        balancing: Balancing = "fixed",
    ) -> None:
        super().__init__()
        if not terms:
            raise ValueError("terms must name at least one loss term")
        weights = dict(weights or {})
        unknown = sorted(set(weights) - set(terms))
        if unknown:
            raise ValueError(f"weights name terms that do not exist: {', '.join(unknown)}")
        for key, w in weights.items():
            if not (w >= 0 and w != float("inf")):
                raise ValueError(f"weight of term '{key}' must be a finite number >= 0; got {w!r}")
        if balancing not in BALANCINGS:
            raise ValueError(f"balancing must be one of {', '.join(BALANCINGS)}; got {balancing!r}")
        for key, term in terms.items():
            if getattr(term, "reduction", "mean") == "none":
                raise ValueError(f"term '{key}' must reduce to a scalar; its reduction is 'none'")
        self.terms = nn.ModuleDict(dict(terms))
        self.weights = {key: float(weights.get(key, 1.0)) for key in terms}
        self.balancing = balancing
        self.log_vars = (
            nn.ParameterDict({key: nn.Parameter(torch.zeros(())) for key in terms})
            if balancing == "uncertainty"
            else None
        )

    def forward_with_terms(self, *args: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """Return the total and each term's unweighted value (detached, for logging)."""
        values: dict[str, Tensor] = {}
        weighted: list[Tensor] = []
        for key, term in self.terms.items():
            value = term(*args)
            values[key] = value.detach()
            if self.log_vars is not None:
                s = self.log_vars[key]
                value = 0.5 * torch.exp(-s) * value + 0.5 * s
            weighted.append(self.weights[key] * value)
        return torch.stack(weighted).sum(), values

    def forward(self, *args: Tensor) -> Tensor:
        return self.forward_with_terms(*args)[0]


class CompositeTerm(BaseModel):
    """One named term of a composite loss."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    weight: float = Field(1.0, description="fixed weight w_i of the term (>= 0)")
    loss: LossSpec = Field(description="the term's loss spec (any registered loss)")


@register_loss
class CompositeSpec(LossSpecBase):
    """Weighted sum of named loss terms; optional learned (uncertainty) balancing."""

    tasks: ClassVar[frozenset[TaskType]] = frozenset(
        {"regression", "binary", "multiclass", "multilabel", "ranking"}
    )
    reference: ClassVar[str] = "sum of the terms' own losses"
    name: Literal["composite"] = "composite"
    terms: dict[str, CompositeTerm] = Field(description="term name -> {weight, loss}")
    balancing: Balancing = Field(
        "fixed", description="fixed weights, or 'uncertainty' (Kendall et al. 2018 learned weights)"
    )
    reduction: Literal["mean"] = Field(
        "mean", description="a composite is a scalar: each term reduces by its own reduction"
    )

    def task_types(self) -> frozenset[TaskType]:
        fits: frozenset[TaskType] = self.tasks
        for term in self.terms.values():
            fits = fits & term.loss.task_types()
        return fits

    def with_class_counts(self, counts: list[int]) -> CompositeSpec:
        terms = {
            key: {"weight": t.weight, "loss": t.loss.with_class_counts(counts)}
            for key, t in self.terms.items()
        }
        return CompositeSpec.model_validate({**self.model_dump(), "terms": terms})

    def build(self) -> CompositeLoss:
        return CompositeLoss(
            {key: term.loss.build() for key, term in self.terms.items()},
            {key: term.weight for key, term in self.terms.items()},
            self.balancing,
        )


def leaf_losses(spec: LossSpecBase) -> set[str]:
    """The names of the losses ``spec`` is made of (itself, or its composite's terms, nested)."""
    if isinstance(spec, CompositeSpec):
        return set().union(*(leaf_losses(t.loss) for t in spec.terms.values()))
    return {spec.name}
