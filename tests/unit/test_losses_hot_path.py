"""Nothing in a loss's forward or backward reads data back to the host.

A value read on the host (``.item()``, ``bool(tensor)``, ``if tensor.any()``, ``nonzero``)
synchronises a GPU with the host on every training step and breaks a ``torch.compile`` graph.
Targets are validated where the data is prepared (``lossflow.data.validation``); the per-call
target checks of the losses run only under ``lossflow.losses.target_checks()``.

Eager: every op a loss dispatches is watched for the ones that read a value back
(``aten._local_scalar_dense`` behind ``item``/``bool``/``float``, ``aten.nonzero`` and
``aten.is_nonzero``), the CPU stand-in for ``torch.cuda.set_sync_debug_mode("error")``.
Compiled: Dynamo traces each loss of the catalogue in one graph (no graph break).
"""

from __future__ import annotations

from typing import Any

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from lossflow.losses import build_loss, target_checks
from lossflow.losses.options import target_checks_enabled
from tests.unit.loss_cases import LossCase, all_cases

CASES = all_cases()
HOST_READS = {
    torch.ops.aten._local_scalar_dense.default,
    torch.ops.aten.nonzero.default,
    torch.ops.aten.is_nonzero.default,
}


class _HostReads(TorchDispatchMode):
    """Records the ops that read a tensor's value back to the host."""

    def __init__(self) -> None:
        super().__init__()
        self.seen: list[str] = []

    def __torch_dispatch__(self, func: Any, types: Any, args: Any = (), kwargs: Any = None) -> Any:
        if func in HOST_READS:
            self.seen.append(str(func))
        return func(*args, **(kwargs or {}))


def _inputs(case: LossCase) -> tuple[torch.Tensor, ...]:
    args = case.make(torch.Generator().manual_seed(0), torch.float32)
    return (args[0].detach().requires_grad_(True), *args[1:])


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_forward_and_backward_read_nothing_back_to_the_host(case: LossCase) -> None:
    loss = build_loss(case.spec)
    args = _inputs(case)
    with _HostReads() as reads:
        loss(*args).backward()
    assert reads.seen == [], f"{case.name} reads values on the host: {reads.seen}"


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_dynamo_traces_each_loss_without_a_graph_break(case: LossCase) -> None:
    torch._dynamo.reset()
    explanation = torch._dynamo.explain(build_loss(case.spec))(*_inputs(case))
    reasons = [b.reason.splitlines()[0] for b in explanation.break_reasons]
    assert explanation.graph_break_count == 0, f"{case.name} breaks the graph: {reasons}"


def test_target_checks_are_off_by_default_and_on_only_inside_the_block() -> None:
    x, bad = torch.zeros(4), torch.full((4,), 2.0)  # binary labels outside [0, 1]
    bce = build_loss({"name": "bce"})
    assert not target_checks_enabled()
    assert torch.isfinite(bce(x, bad))  # not checked: data is validated where it is prepared
    with target_checks():
        assert target_checks_enabled()
        with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
            bce(x, bad)
        with target_checks(enabled=False):
            bce(x, bad)
    assert not target_checks_enabled()
