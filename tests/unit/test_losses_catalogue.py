"""Properties every registered loss must have, checked over the whole catalogue.

Each loss family provides example inputs (``cases_*.py``); these tests check, for each case:
reductions agree with each other, float64 gradcheck, finite values and gradients at logits of
±1e4 in float32 and under bf16 autocast, and the spec/registry behaviour.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from lossflow.losses import LOSS_SPECS, build_loss
from tests.unit.loss_cases import LossCase, all_cases

CASES = all_cases()


def _with_reduction(case: LossCase, reduction: str) -> dict[str, object]:
    return {**case.spec, "reduction": reduction}


def _inputs(case: LossCase, dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, ...]:
    gen = torch.Generator().manual_seed(seed)
    return case.make(gen, dtype)


def _extreme(x: Tensor, gen: torch.Generator) -> Tensor:
    sign = torch.where(torch.rand(x.shape, generator=gen) > 0.5, 1.0, -1.0)
    return (sign * 1e4).to(x.dtype)


def test_every_registered_loss_has_a_case() -> None:
    covered = {str(case.spec["name"]) for case in CASES}
    assert covered == set(LOSS_SPECS), f"losses without a case: {set(LOSS_SPECS) - covered}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_reductions_agree(case: LossCase) -> None:
    args = _inputs(case, torch.float64)
    results = {r: build_loss(_with_reduction(case, r))(*args) for r in case.reductions}
    for reduction in ("mean", "sum"):
        if reduction in results:
            assert results[reduction].dim() == 0, f"{reduction} must give a scalar"
    if "none" in results and "sum" in results:
        torch.testing.assert_close(results["none"].sum(), results["sum"])
    if "none" in results and "mean" in results and case.mean_is_mean_of_none:
        torch.testing.assert_close(results["none"].mean(), results["mean"])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_unsupported_or_unknown_reduction_is_rejected(case: LossCase) -> None:
    for reduction in ("max", *(r for r in ("mean", "sum", "none") if r not in case.reductions)):
        with pytest.raises(ValueError, match="reduction"):
            build_loss(_with_reduction(case, reduction))(*_inputs(case, torch.float64))


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_gradcheck_float64(case: LossCase) -> None:
    pred, *rest = _inputs(case, torch.float64)
    loss = build_loss(case.spec).double()
    pred = pred.detach().requires_grad_(True)
    assert torch.autograd.gradcheck(lambda p: loss(p, *rest), (pred,), eps=1e-6, atol=1e-5)


@pytest.mark.parametrize(
    ("case", "reduction"),
    [(case, r) for case in CASES for r in case.reductions],
    ids=[f"{case.name}-{r}" for case in CASES for r in case.reductions],
)
def test_finite_at_extreme_logits_float32(case: LossCase, reduction: str) -> None:
    gen = torch.Generator().manual_seed(1)
    pred, *rest = _inputs(case, torch.float32)
    pred = _extreme(pred, gen).requires_grad_(True)
    value = build_loss(_with_reduction(case, reduction))(pred, *rest)
    assert torch.isfinite(value).all(), f"non-finite loss at ±1e4: {value}"
    value.sum().backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all(), "non-finite gradient at ±1e4"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
@pytest.mark.parametrize("extreme", [False, True], ids=["normal", "pm1e4"])
def test_bf16_autocast_is_finite_and_close_to_float32(case: LossCase, extreme: bool) -> None:
    gen = torch.Generator().manual_seed(2)
    pred32, *rest = _inputs(case, torch.float32)
    if extreme:
        pred32 = _extreme(pred32, gen)
    pred = pred32.to(torch.bfloat16).requires_grad_(True)
    loss = build_loss(case.spec)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(pred, *rest)
    assert value.dtype == torch.float32, "losses compute in float32 under autocast"
    assert torch.isfinite(value).all()
    value.backward()
    assert pred.grad is not None
    assert torch.isfinite(pred.grad).all()
    # The same bf16-rounded inputs in float32 give the same value: nothing is lost in bf16.
    reference = build_loss(case.spec)(pred.detach().float(), *rest)
    torch.testing.assert_close(value, reference, rtol=1e-4, atol=1e-4)
