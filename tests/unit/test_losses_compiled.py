"""Under ``torch.compile`` the losses give their eager values and gradients (the elementwise
regression losses take their plain formula there, the others their eager code, traced)."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from lossflow.losses import build_loss

SPECS: list[tuple[dict[str, Any], str]] = [
    ({"name": "focal", "gamma": 2.0, "alpha": 0.25}, "binary"),
    ({"name": "focal", "gamma": 0.5, "alpha": None}, "soft"),
    ({"name": "poisson_nll", "max_log_rate": 3.0}, "counts"),
    ({"name": "log_cosh"}, "regression"),
    ({"name": "quantile", "quantile": 0.8}, "regression"),
    ({"name": "asymmetric", "under_cost": 3.0}, "regression"),
    (
        {
            "name": "cost_sensitive",
            "cost_matrix": [[0.0, 1.0, 2.0], [1.0, 0.0, 1.0], [4.0, 1.0, 0.0]],
        },
        "classes",
    ),
    ({"name": "listmle"}, "lists"),
    ({"name": "ranknet", "sigma": 2.0}, "lists"),
    ({"name": "margin_ranking"}, "lists"),
]


def _inputs(kind: str) -> tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    if kind == "classes":
        return torch.randn(170, 3, generator=gen) * 3, torch.randint(0, 3, (170,), generator=gen)
    if kind == "lists":
        relevance = torch.randint(0, 4, (32, 16), generator=gen).float()
        mask = torch.rand(32, 16, generator=gen) < 0.8
        return torch.randn(32, 16, generator=gen) * 3, relevance, mask
    x = torch.randn(512, generator=gen) * 3
    if kind == "binary":
        return x, (torch.rand(512, generator=gen) < 0.3).float()
    if kind == "soft":
        return x, torch.rand(512, generator=gen)
    if kind == "counts":
        return x, torch.poisson(torch.full((512,), 2.0), generator=gen)
    return x, torch.randn(512, generator=gen)


@pytest.mark.slow
@pytest.mark.parametrize(("spec", "kind"), SPECS, ids=[f"{s['name']}-{k}" for s, k in SPECS])
def test_compiled_loss_matches_eager_in_value_and_gradient(spec: dict[str, Any], kind: str) -> None:
    torch._dynamo.reset()
    x, *y = _inputs(kind)
    eager_x = x.clone().requires_grad_(True)
    eager = build_loss(spec)(eager_x, *y)
    eager.backward()
    compiled_x = x.clone().requires_grad_(True)
    compiled = torch.compile(build_loss(spec), fullgraph=True)(compiled_x, *y)
    compiled.backward()
    torch.testing.assert_close(compiled, eager, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(compiled_x.grad, eager_x.grad, rtol=1e-4, atol=1e-7)


@pytest.mark.gpu
@pytest.mark.parametrize(("spec", "kind"), SPECS, ids=[f"{s['name']}-{k}" for s, k in SPECS])
def test_cuda_loss_matches_cpu(spec: dict[str, Any], kind: str) -> None:
    x, *y = _inputs(kind)
    cpu_x = x.clone().requires_grad_(True)
    cpu = build_loss(spec)(cpu_x, *y)
    cpu.backward()
    cuda_x = x.cuda().requires_grad_(True)
    cuda = build_loss(spec)(cuda_x, *(t.cuda() for t in y))
    cuda.backward()
    torch.testing.assert_close(cuda.cpu(), cpu, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(cuda_x.grad.cpu(), cpu_x.grad, rtol=1e-4, atol=1e-7)  # type: ignore[union-attr]
