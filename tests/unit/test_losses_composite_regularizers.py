"""Composite losses (fixed and learned weights) and the weight penalties."""

from __future__ import annotations

import pytest
import torch
from pydantic import ValidationError
from torch import nn

from lossflow.losses import build_loss, build_regularizer, parse_regularizer_spec
from lossflow.losses.composite import CompositeLoss
from lossflow.losses.regression import MSELoss
from lossflow.losses.regularizers import WeightPenalty, penalised_parameters

BINARY_COMPOSITE = {
    "name": "composite",
    "terms": {
        "bce": {"weight": 2.0, "loss": {"name": "bce"}},
        "focal": {"weight": 0.5, "loss": {"name": "focal", "gamma": 1.0, "alpha": None}},
    },
}


def test_composite_is_the_weighted_sum_of_its_terms_and_reports_each() -> None:
    logits, target = torch.randn(32), (torch.rand(32) > 0.5).float()
    loss = build_loss(BINARY_COMPOSITE)
    assert isinstance(loss, CompositeLoss)
    total, terms = loss.forward_with_terms(logits, target)
    bce = build_loss({"name": "bce"})(logits, target)
    focal = build_loss({"name": "focal", "gamma": 1.0, "alpha": None})(logits, target)
    torch.testing.assert_close(terms["bce"], bce)
    torch.testing.assert_close(terms["focal"], focal)
    torch.testing.assert_close(total, 2.0 * bce + 0.5 * focal)
    torch.testing.assert_close(loss(logits, target), total)
    assert not terms["bce"].requires_grad, "reported terms are detached for logging"


def test_uncertainty_balancing_follows_kendall_and_learns_log_variances() -> None:
    loss = build_loss({**BINARY_COMPOSITE, "balancing": "uncertainty"})
    assert isinstance(loss, CompositeLoss)
    assert loss.log_vars is not None
    with torch.no_grad():
        loss.log_vars["bce"].fill_(0.7)
        loss.log_vars["focal"].fill_(-0.3)
    logits, target = torch.randn(32), (torch.rand(32) > 0.5).float()
    total, terms = loss.forward_with_terms(logits, target)
    expected = 2.0 * (0.5 * torch.exp(torch.tensor(-0.7)) * terms["bce"] + 0.35) + 0.5 * (
        0.5 * torch.exp(torch.tensor(0.3)) * terms["focal"] - 0.15
    )
    torch.testing.assert_close(total, expected)
    total.backward()
    assert all(p.grad is not None and p.grad.abs() > 0 for p in loss.log_vars.values())
    # The learned weights are parameters of the loss, so an optimizer over the system sees them.
    assert {n for n, _ in loss.named_parameters()} == {"log_vars.bce", "log_vars.focal"}


def test_uncertainty_weight_converges_to_the_inverse_term_value() -> None:
    # d/ds [0.5 e^{-s} L + 0.5 s] = 0  <=>  s = log L: the learned log-variance tracks the term.
    loss = CompositeLoss({"a": MSELoss()}, balancing="uncertainty")
    assert loss.log_vars is not None
    x, y = torch.zeros(8), torch.full((8,), 2.0)  # MSE = 4
    opt = torch.optim.SGD(loss.parameters(), lr=0.5)
    for _ in range(300):
        opt.zero_grad()
        loss(x, y).backward()
        opt.step()
    assert loss.log_vars["a"].item() == pytest.approx(torch.log(torch.tensor(4.0)).item(), abs=1e-3)


def test_composite_rejects_bad_terms() -> None:
    with pytest.raises(ValueError, match="at least one loss term"):
        CompositeLoss({})
    with pytest.raises(ValueError, match="weight of term 'a'"):
        CompositeLoss({"a": MSELoss()}, {"a": -1.0})
    with pytest.raises(ValueError, match="terms that do not exist: b"):
        CompositeLoss({"a": MSELoss()}, {"b": 1.0})
    with pytest.raises(ValueError, match="term 'a' must reduce to a scalar"):
        CompositeLoss({"a": MSELoss(reduction="none")})
    with pytest.raises(ValueError, match="balancing"):
        CompositeLoss({"a": MSELoss()}, balancing="magic")  # type: ignore[arg-type]


class _Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.emb = nn.Embedding(4, 3)
        self.lin = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)
        self.bn = nn.BatchNorm1d(2)
        self.scale = nn.Parameter(torch.ones(2))


def test_penalties_exclude_biases_and_norm_layers_by_default() -> None:
    net = _Net()
    assert [n for n, _ in penalised_parameters(net)] == ["emb.weight", "lin.weight"]
    everything = {n for n, _ in penalised_parameters(net, include_bias_and_norm=True)}
    assert everything == {n for n, _ in net.named_parameters()}


@pytest.mark.parametrize(("name", "ratio"), [("l1", 1.0), ("l2", 0.0), ("elastic_net", 0.3)])
def test_penalty_values_match_the_formula(name: str, ratio: float) -> None:
    net = _Net()
    spec = {"name": name, "strength": 0.01}
    if name == "elastic_net":
        spec["l1_ratio"] = ratio
    penalty = build_regularizer(spec)
    weights = [net.emb.weight, net.lin.weight]
    l1 = sum(float(w.detach().abs().sum()) for w in weights)
    l2 = sum(float(w.detach().square().sum()) for w in weights)
    assert penalty(net).item() == pytest.approx(0.01 * (ratio * l1 + (1 - ratio) * l2), rel=1e-6)


def test_l2_penalty_gradient_equals_sgd_weight_decay_of_twice_the_strength() -> None:
    lin = nn.Linear(5, 1, bias=False)
    penalty = WeightPenalty(0.05, l1_ratio=0.0)
    penalty(lin).backward()
    assert lin.weight.grad is not None
    torch.testing.assert_close(lin.weight.grad, 2 * 0.05 * lin.weight.detach())


def test_regularizer_spec_errors_are_specific() -> None:
    with pytest.raises(ValidationError, match="needs l1_ratio"):
        parse_regularizer_spec({"name": "elastic_net", "strength": 0.1})
    with pytest.raises(ValidationError, match="l1_ratio applies to elastic_net only"):
        parse_regularizer_spec({"name": "l2", "strength": 0.1, "l1_ratio": 0.5})
    with pytest.raises(ValidationError, match="strength must be a finite number >= 0"):
        parse_regularizer_spec({"name": "l1", "strength": -1})
    with pytest.raises(ValidationError, match="unknown option 'strenght'"):
        parse_regularizer_spec({"name": "l1", "strenght": 1})
    with pytest.raises(ValueError, match="no parameters to penalise"):
        WeightPenalty(0.1, 1.0)(nn.LayerNorm(3))
