"""Classification losses against independent references (scikit-learn, scipy, kornia, numpy)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from kornia.losses import binary_focal_loss_with_logits as kornia_binary_focal
from kornia.losses import focal_loss as kornia_focal
from numpy.typing import NDArray
from pydantic import ValidationError
from scipy.special import expit, log_expit, log_softmax, logsumexp, softmax
from scipy.stats import entropy
from sklearn.metrics import log_loss
from torch import Tensor, nn

from lossflow.losses import (
    LossConfigError,
    build_loss,
    check_task,
    parse_loss_spec,
    target_checks,
)
from lossflow.losses.classification import (
    BCELoss,
    CELoss,
    ClassBalancedLoss,
    CostSensitiveLoss,
    FocalLoss,
    KLDivLoss,
    LogitAdjustedLoss,
    bce_loss,
    ce_loss,
    class_balanced_loss,
    class_balanced_weights,
    cost_sensitive_loss,
    focal_loss,
    kl_div_loss,
    logit_adjusted_loss,
)
from lossflow.losses.classification.focal import _binary_focal

Array = NDArray[np.float64]
REDUCTIONS = ("mean", "sum", "none")


def _reduce(values: Array, reduction: str) -> Array | float:
    if reduction == "mean":
        return float(values.mean())
    if reduction == "sum":
        return float(values.sum())
    return values


def _close(got: Tensor, expected: Array | float, rtol: float = 1e-10) -> None:
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=rtol, atol=1e-12)


def _grad(fn: Callable[[Tensor], Tensor], x: Tensor) -> Tensor:
    x = x.detach().clone().requires_grad_(True)
    fn(x).sum().backward()
    assert x.grad is not None
    return x.grad


def _binary_data(n: int = 64, soft: bool = False, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 3.0 * torch.randn(n, generator=gen, dtype=torch.float64)
    y = torch.rand(n, generator=gen, dtype=torch.float64)
    return x, (y if soft else (y > 0.5).double())


def _class_data(n: int = 48, c: int = 4, seed: int = 0) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(seed)
    x = 2.0 * torch.randn(n, c, generator=gen, dtype=torch.float64)
    return x, torch.randint(0, c, (n,), generator=gen)


# ---- numpy references -------------------------------------------------------------------------


def np_bce(x: Array, y: Array, pos_weight: float = 1.0) -> Array:
    return -(pos_weight * y * log_expit(x) + (1 - y) * log_expit(-x))


def np_torchvision_focal(x: Array, y: Array, alpha: float | None, gamma: float) -> Array:
    """torchvision.ops.sigmoid_focal_loss, line by line in numpy."""
    p = 1.0 / (1.0 + np.exp(-x))
    ce = np_bce(x, y)
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def torch_torchvision_focal(x: Tensor, y: Tensor, alpha: float | None, gamma: float) -> Tensor:
    """torchvision.ops.sigmoid_focal_loss (autograd reference for gradients)."""
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, y, reduction="none")
    p_t = p * y + (1 - p) * (1 - y)
    loss = ce * ((1 - p_t) ** gamma)
    if alpha is not None:
        loss = (alpha * y + (1 - alpha) * (1 - y)) * loss
    return loss


def np_multiclass_focal(x: Array, y: Array, alpha: list[float] | None, gamma: float) -> Array:
    p_y = softmax(x, axis=1)[np.arange(len(y)), y]
    a = np.ones(len(y)) if alpha is None else np.asarray(alpha)[y]
    return -a * (1 - p_y) ** gamma * np.log(p_y)


def np_paper_weights(counts: list[int], beta: float) -> Array:
    effective = (1.0 - np.power(beta, np.asarray(counts, dtype=float))) / (1.0 - beta)
    w = 1.0 / effective
    return w / w.sum() * len(counts)


# ---- bce ---------------------------------------------------------------------------------------


def test_bce_matches_sklearn_log_loss() -> None:
    x, y = _binary_data(200)
    got = bce_loss(x, y)
    expected = log_loss(y.numpy(), 1.0 / (1.0 + np.exp(-x.numpy())))
    assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_bce_pos_weight_matches_the_formula(reduction: str) -> None:
    x, y = _binary_data(40, soft=True)
    got = bce_loss(x.view(8, 5), y.view(8, 5), pos_weight=3.0, reduction=reduction)  # type: ignore[arg-type]
    expected = np_bce(x.numpy(), y.numpy(), 3.0).reshape(8, 5)
    _close(got, _reduce(expected, reduction))


def test_bce_rejects_bad_targets_and_options() -> None:
    x, y = _binary_data(8)
    with pytest.raises(ValueError, match=r"pos_weight must be a finite positive"):
        BCELoss(pos_weight=0.0)
    with target_checks(), pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        bce_loss(x, y + 0.5)
    with pytest.raises(ValueError, match="same shape"):
        bce_loss(x, y[:4])
    with pytest.raises(ValueError, match="target must be a floating-point tensor"):
        bce_loss(x, y.long())
    with pytest.raises(ValueError, match="reduction must be one of"):
        bce_loss(x, y, reduction="max")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="empty"):
        bce_loss(x[:0], y[:0])


# ---- ce ----------------------------------------------------------------------------------------


def test_ce_matches_sklearn_log_loss() -> None:
    x, y = _class_data(100, 5)
    got = ce_loss(x, y)
    expected = log_loss(y.numpy(), softmax(x.numpy(), axis=1), labels=list(range(5)))
    assert got.item() == pytest.approx(expected, rel=1e-10)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ce_weights_and_smoothing_follow_torch_semantics(reduction: str) -> None:
    x, y = _class_data(30, 4)
    w, eps = np.array([1.0, 2.0, 0.5, 0.0]), 0.2
    logp = log_softmax(x.numpy(), axis=1)
    yy = y.numpy()
    per = (1 - eps) * w[yy] * -logp[np.arange(30), yy] + eps / 4 * -(w * logp).sum(1)
    expected = {"none": per, "sum": per.sum(), "mean": per.sum() / w[yy].sum()}[reduction]
    got = ce_loss(x, y, class_weights=w.tolist(), label_smoothing=eps, reduction=reduction)  # type: ignore[arg-type]
    _close(got, expected)


def test_ce_rejects_bad_options_and_targets() -> None:
    x, y = _class_data(6, 3)
    with pytest.raises(ValueError, match=r"class_weights\[1\] must be non-negative"):
        CELoss(class_weights=[1.0, -1.0, 1.0])
    with pytest.raises(ValueError, match="class_weights must have at least one positive"):
        CELoss(class_weights=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"label_smoothing must lie in \[0, 1\)"):
        CELoss(label_smoothing=1.0)
    with pytest.raises(ValueError, match="class_weights has 2 entries but the input has 3"):
        ce_loss(x, y, class_weights=[1.0, 2.0])
    with target_checks(), pytest.raises(ValueError, match="class indices outside"):
        ce_loss(x, y + 3)
    with pytest.raises(ValueError, match="must hold integer class indices"):
        ce_loss(x, y.double())


# ---- focal -------------------------------------------------------------------------------------


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.0, 3.5])
@pytest.mark.parametrize("alpha", [None, 0.25, 1.0])
def test_binary_focal_matches_torchvision(soft: bool, gamma: float, alpha: float | None) -> None:
    x, y = _binary_data(64, soft=soft)
    for reduction in REDUCTIONS:
        got = focal_loss(x, y, alpha=alpha, gamma=gamma, reduction=reduction)  # type: ignore[arg-type]
        expected = np_torchvision_focal(x.numpy(), y.numpy(), alpha, gamma)
        _close(got, _reduce(expected, reduction), rtol=1e-9)
    ours = _grad(lambda z: focal_loss(z, y, alpha, gamma, "none"), x)
    reference = _grad(lambda z: torch_torchvision_focal(z, y, alpha, gamma), x)
    torch.testing.assert_close(ours, reference, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha", [None, 0.25, 0.9])
@pytest.mark.parametrize("gamma", [0.0, 0.7, 2.0])
def test_binary_focal_matches_kornia_on_hard_labels(alpha: float | None, gamma: float) -> None:
    x, y = _binary_data(30)
    x, y = x.view(6, 5), y.view(6, 5)
    for reduction in REDUCTIONS:
        expected = kornia_binary_focal(x, y, alpha=alpha, gamma=gamma, reduction=reduction)
        torch.testing.assert_close(focal_loss(x, y, alpha, gamma, reduction), expected)  # type: ignore[arg-type]
    ours = _grad(lambda z: focal_loss(z, y, alpha, gamma, "sum"), x)
    theirs = _grad(lambda z: kornia_binary_focal(z, y, alpha=alpha, gamma=gamma), x)
    torch.testing.assert_close(ours, theirs)


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_multiclass_focal_matches_kornia_and_numpy(gamma: float) -> None:
    x, y = _class_data(40, 4)
    alpha = [0.25, 1.0, 2.0, 0.5]
    # Our per-class list is kornia's ``weight`` (with alpha=None); kornia returns a (N, C) map.
    theirs = kornia_focal(x, y, alpha=None, gamma=gamma, weight=torch.tensor(alpha).double())
    ours = focal_loss(x, y, alpha=alpha, gamma=gamma, reduction="none")
    torch.testing.assert_close(ours, theirs.sum(1))
    _close(ours, np_multiclass_focal(x.numpy(), y.numpy(), alpha, gamma))
    # kornia's float alpha weights class 0 by 1 - a and every other class by a.
    kornia_float = kornia_focal(x, y, alpha=0.3, gamma=gamma, reduction="sum")
    torch.testing.assert_close(focal_loss(x, y, [0.7, 0.3, 0.3, 0.3], gamma, "sum"), kornia_float)
    ours_grad = _grad(lambda z: focal_loss(z, y, alpha, gamma, "sum"), x)
    kornia_grad = _grad(
        lambda z: kornia_focal(z, y, None, gamma, "sum", torch.tensor(alpha).double()), x
    )
    torch.testing.assert_close(ours_grad, kornia_grad)


def test_multiclass_focal_accepts_spatial_inputs() -> None:
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(4, 3, 5, 2, generator=gen, dtype=torch.float64)
    y = torch.randint(0, 3, (4, 5, 2), generator=gen)
    got = focal_loss(x, y, alpha=None, gamma=2.0, reduction="none")
    assert got.shape == (4, 5, 2)
    torch.testing.assert_close(got, kornia_focal(x, y, None, 2.0).sum(1))


@pytest.mark.parametrize("soft", [False, True], ids=["hard", "soft"])
def test_focal_with_gamma_zero_is_bce_in_value_and_gradient(soft: bool) -> None:
    x, y = _binary_data(50, soft=soft)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(
            focal_loss(x, y, None, 0.0, reduction),  # type: ignore[arg-type]
            F.binary_cross_entropy_with_logits(x, y, reduction=reduction),
        )
    torch.testing.assert_close(
        _grad(lambda z: focal_loss(z, y, None, 0.0), x),
        _grad(lambda z: F.binary_cross_entropy_with_logits(z, y), x),
    )


def test_focal_with_gamma_zero_is_ce_in_value_and_gradient() -> None:
    x, y = _class_data(50, 5)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(
            focal_loss(x, y, None, 0.0, reduction),  # type: ignore[arg-type]
            F.cross_entropy(x, y, reduction=reduction),
        )
    torch.testing.assert_close(
        _grad(lambda z: focal_loss(z, y, None, 0.0), x),
        _grad(lambda z: F.cross_entropy(z, y), x),
    )


@pytest.mark.parametrize("gamma", [0.0, 0.3, 1.0, 2.5])
def test_the_binary_path_is_exact_at_hard_labels(gamma: float) -> None:
    # One computation serves hard and soft labels; at hard labels it equals the hard-label form
    # (v = (1 - 2y) x, 1 - p_t = sigmoid(v), -log p_t = softplus(v)) in value and gradient,
    # saturated logits included.
    x, y = _binary_data(64)
    x = torch.cat([x, torch.tensor([60.0, -60.0, 60.0, -60.0, 1e4, -1e4], dtype=torch.float64)])
    y = torch.cat([y, torch.tensor([1.0, 0.0, 0.0, 1.0, 1.0, 0.0], dtype=torch.float64)])
    loss, grad = _binary_focal(x, y, 0.25, gamma, "none", True)
    xn, yn = x.numpy(), y.numpy()
    v = (1 - 2 * yn) * xn
    q, ce = expit(v), -log_expit(-v)
    m = q**gamma
    alpha_t = 0.25 * yn + 0.75 * (1 - yn)
    _close(loss, alpha_t * m * ce)
    assert grad is not None
    expected = alpha_t * (1 - 2 * yn) * (m * q + gamma * expit(-v) * m * ce)
    np.testing.assert_allclose(grad.numpy(), expected, rtol=1e-10, atol=1e-300)


@pytest.mark.parametrize("gamma", [0.2, 0.5, 0.9])
def test_focal_gamma_below_one_has_finite_gradients_at_saturation(gamma: float) -> None:
    big = torch.tensor([30.0, -30.0, 200.0, -200.0, 1e4, -1e4])
    hard, soft = torch.tensor([1.0, 0.0, 1.0, 0.0, 1.0, 0.0]), torch.full((6,), 0.3)
    assert torch.isfinite(_grad(lambda z: focal_loss(z, hard, 0.25, gamma), big)).all()
    assert torch.isfinite(_grad(lambda z: focal_loss(z, soft, 0.25, gamma), big)).all()
    logits = torch.tensor([[1e4, 0.0, -1e4], [50.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    grad = _grad(lambda z: focal_loss(z, torch.tensor([0, 0, 2]), None, gamma), logits)
    assert torch.isfinite(grad).all()
    # A correct prediction with p_t == 1 exactly contributes neither loss nor gradient.
    assert grad[0].abs().max() == 0


def test_focal_without_grad_equals_with_grad() -> None:
    x, y = _binary_data(32, soft=True)
    with torch.no_grad():
        off = focal_loss(x.clone().requires_grad_(True), y, 0.25, 1.5)
    on = focal_loss(x.clone().requires_grad_(True), y, 0.25, 1.5)
    torch.testing.assert_close(off, on.detach())
    assert on.requires_grad
    assert not off.requires_grad


def test_focal_float32_matches_float64() -> None:
    x, y = _binary_data(1000)
    expected = focal_loss(x, y, 0.25, 2.0)
    torch.testing.assert_close(
        focal_loss(x.float(), y.float()).double(), expected, rtol=1e-5, atol=0
    )


def test_focal_rejects_bad_options_and_targets() -> None:
    xb, yb = _binary_data(6)
    xm, ym = _class_data(6, 3)
    with pytest.raises(ValueError, match="gamma must be a finite non-negative"):
        FocalLoss(gamma=-1.0)
    with pytest.raises(ValueError, match=r"alpha must lie in \[0, 1\]"):
        FocalLoss(alpha=1.5)
    with pytest.raises(ValueError, match=r"alpha\[0\] must be non-negative"):
        FocalLoss(alpha=[-1.0, 1.0])
    with pytest.raises(ValueError, match=r"alpha=0\.25 is a binary"):
        focal_loss(xm, ym, alpha=0.25)
    with pytest.raises(ValueError, match="alpha as a per-class list needs a multiclass target"):
        focal_loss(xb, yb, alpha=[0.5, 0.5])
    with pytest.raises(ValueError, match="alpha has 2 entries but the input has 3 classes"):
        focal_loss(xm, ym, alpha=[0.5, 0.5])
    with target_checks(), pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        focal_loss(xb, yb - 0.5)
    with target_checks(), pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        focal_loss(xb, torch.full_like(yb, float("nan")))
    with pytest.raises(ValueError, match="detach the target"):
        focal_loss(xb, yb.clone().requires_grad_(True))
    with pytest.raises(ValueError, match="integer target is read as multiclass"):
        focal_loss(xb, yb.long())


@settings(max_examples=60, deadline=None)
@given(
    x=st.lists(st.floats(-30, 30), min_size=1, max_size=12),
    y=st.lists(st.sampled_from([0.0, 1.0, 0.25, 0.6]), min_size=12, max_size=12),
    gamma=st.floats(0, 5),
    alpha=st.one_of(st.none(), st.floats(0, 1)),
)
def test_focal_is_non_negative_and_at_most_bce(
    x: list[float], y: list[float], gamma: float, alpha: float | None
) -> None:
    xt = torch.tensor(x, dtype=torch.float64)
    yt = torch.tensor(y[: len(x)], dtype=torch.float64)
    focal = focal_loss(xt, yt, alpha, gamma, "none")
    bce = torch.from_numpy(np_bce(xt.numpy(), yt.numpy()))
    assert (focal >= 0).all()
    assert (focal <= bce * (1 + 1e-12) + 1e-300).all()
    # More focusing never increases the loss: (1 - p_t)^gamma is decreasing in gamma.
    assert (focal_loss(xt, yt, alpha, gamma + 1.0, "none") <= focal * (1 + 1e-12)).all()


@settings(max_examples=60, deadline=None)
@given(a=st.floats(-20, 20), b=st.floats(-20, 20), gamma=st.floats(0, 4))
def test_focal_decreases_towards_a_perfect_prediction(a: float, b: float, gamma: float) -> None:
    low, high = sorted((a, b))
    x = torch.tensor([low, high], dtype=torch.float64)
    positive = focal_loss(x, torch.ones(2, dtype=torch.float64), 0.25, gamma, "none")
    negative = focal_loss(-x, torch.zeros(2, dtype=torch.float64), 0.25, gamma, "none")
    assert positive[1] <= positive[0]
    assert negative[1] <= negative[0]
    assert focal_loss(torch.tensor([40.0]), torch.ones(1), 0.25, gamma) < 1e-12


# ---- class_balanced ----------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [0.0, 0.9, 0.999, 0.9999])
def test_class_balanced_weights_follow_the_paper(beta: float) -> None:
    counts = [5000, 300, 20, 1]
    np.testing.assert_allclose(
        class_balanced_weights(counts, beta), np_paper_weights(counts, beta), rtol=1e-12
    )
    assert sum(class_balanced_weights(counts, beta)) == pytest.approx(len(counts))


@pytest.mark.parametrize("base", ["ce", "focal"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_balanced_multiclass_is_the_weighted_base_loss(base: str, reduction: str) -> None:
    x, y = _class_data(36, 3)
    counts, beta = [400, 50, 7], 0.99
    w = np_paper_weights(counts, beta)
    gamma = 2.0 if base == "focal" else 0.0
    per = w[y.numpy()] * np_multiclass_focal(x.numpy(), y.numpy(), None, gamma)
    got = class_balanced_loss(x, y, counts, beta, base, 2.0, reduction)  # type: ignore[arg-type]
    _close(got, _reduce(per, reduction))


@pytest.mark.parametrize("base", ["bce", "focal"])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_class_balanced_binary_is_the_weighted_base_loss(base: str, reduction: str) -> None:
    x, y = _binary_data(40, soft=True)
    counts, beta = [950, 50], 0.999
    w0, w1 = np_paper_weights(counts, beta)
    weight = w1 * y.numpy() + w0 * (1 - y.numpy())
    gamma = 1.5 if base == "focal" else 0.0
    per = weight * np_torchvision_focal(x.numpy(), y.numpy(), None, gamma)
    got = class_balanced_loss(x, y, counts, beta, base, 1.5, reduction)  # type: ignore[arg-type]
    _close(got, _reduce(per, reduction), rtol=1e-9)


def test_class_balanced_with_beta_zero_is_the_base_loss() -> None:
    x, y = _class_data(20, 3)
    torch.testing.assert_close(
        class_balanced_loss(x, y, [100, 10, 1], beta=0.0, base="ce"), F.cross_entropy(x, y)
    )


def test_class_balanced_needs_counts_to_build_but_not_to_validate() -> None:
    spec = parse_loss_spec({"name": "class_balanced", "base": "ce"})
    assert spec.task_types() == {"multiclass"}
    assert parse_loss_spec({"name": "class_balanced", "base": "bce"}).task_types() == {
        "binary",
        "multilabel",
    }
    with pytest.raises(ValueError, match="class_balanced needs class_counts; training fills"):
        spec.build()
    with pytest.raises(ValidationError, match=r"beta must lie in \[0, 1\)"):
        parse_loss_spec({"name": "class_balanced", "beta": 1.0})
    with pytest.raises(ValidationError, match=r"class_counts\[1\] must be a positive integer"):
        parse_loss_spec({"name": "class_balanced", "class_counts": [3, 0]})
    with pytest.raises(ValueError, match="base must be one of"):
        ClassBalancedLoss([1, 2], base="hinge")  # type: ignore[arg-type]


def test_class_balanced_rejects_base_target_mismatches() -> None:
    xm, ym = _class_data(6, 3)
    xb, yb = _binary_data(6)
    with pytest.raises(ValueError, match="base 'bce' needs a binary"):
        class_balanced_loss(xm, ym, [1, 2, 3], base="bce")
    with pytest.raises(ValueError, match="base 'ce' needs a multiclass target"):
        class_balanced_loss(xb, yb, [1, 2], base="ce")
    with pytest.raises(ValueError, match=r"must be \[n_negative, n_positive\]"):
        class_balanced_loss(xb, yb, [1, 2, 3])
    with pytest.raises(ValueError, match="class_counts has 2 entries but the input has 3"):
        class_balanced_loss(xm, ym, [1, 2])


# ---- logit_adjusted ----------------------------------------------------------------------------


@pytest.mark.parametrize("tau", [0.0, 0.5, 1.0, 2.0])
def test_logit_adjusted_is_ce_on_numpy_adjusted_logits(tau: float) -> None:
    x, y = _class_data(30, 3)
    priors = np.array([0.7, 0.2, 0.1])
    adjusted = torch.from_numpy(x.numpy() + tau * np.log(priors))
    for reduction in REDUCTIONS:
        got = logit_adjusted_loss(x, y, class_priors=[7, 2, 1], tau=tau, reduction=reduction)  # type: ignore[arg-type]
        torch.testing.assert_close(got, F.cross_entropy(adjusted, y, reduction=reduction))
    torch.testing.assert_close(
        logit_adjusted_loss(x, y, class_counts=[70, 20, 10], tau=tau),
        logit_adjusted_loss(x, y, class_priors=[0.7, 0.2, 0.1], tau=tau),
    )


def test_logit_adjusted_reduces_to_ce_at_tau_zero_or_uniform_priors() -> None:
    x, y = _class_data(30, 3)
    ce = F.cross_entropy(x, y)
    torch.testing.assert_close(logit_adjusted_loss(x, y, class_priors=[0.8, 0.1, 0.1], tau=0), ce)
    torch.testing.assert_close(logit_adjusted_loss(x, y, class_counts=[5, 5, 5], tau=3.0), ce)


def test_logit_adjusted_binary_is_bce_on_the_shifted_logit() -> None:
    x, y = _binary_data(30)
    shifted = torch.from_numpy(x.numpy() + 0.5 * np.log(0.1 / 0.9))
    got = logit_adjusted_loss(x, y, class_priors=[0.9, 0.1], tau=0.5, reduction="none")
    _close(got, np_bce(shifted.numpy(), y.numpy()))


def test_logit_adjusted_option_errors() -> None:
    x, y = _class_data(6, 3)
    with pytest.raises(ValueError, match="exactly one of class_priors and class_counts"):
        LogitAdjustedLoss(class_priors=[0.5, 0.5], class_counts=[1, 1])
    with pytest.raises(ValueError, match="logit_adjusted needs class_priors or class_counts"):
        LogitAdjustedLoss()
    with pytest.raises(ValueError, match="tau must be a finite non-negative"):
        LogitAdjustedLoss(class_priors=[0.5, 0.5], tau=-1.0)
    with pytest.raises(ValueError, match=r"class_priors\[0\] must be positive"):
        LogitAdjustedLoss(class_priors=[0.0, 1.0])
    with pytest.raises(ValueError, match="class_priors has 2 entries but the input has 3"):
        logit_adjusted_loss(x, y, class_priors=[0.5, 0.5])
    with pytest.raises(ValueError, match="class_counts for a binary or multilabel target"):
        logit_adjusted_loss(*_binary_data(6), class_counts=[1, 2, 3])
    spec = parse_loss_spec({"name": "logit_adjusted", "tau": 2.0})  # counts filled later
    with pytest.raises(ValueError, match="training fills them"):
        spec.build()
    with pytest.raises(ValidationError, match="tau must be"):
        parse_loss_spec({"name": "logit_adjusted", "tau": -2.0})


# ---- cost_sensitive ----------------------------------------------------------------------------


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cost_sensitive_binary_matches_the_formula(reduction: str) -> None:
    x, y = _binary_data(40, soft=True)
    xs, ys = x.numpy(), y.numpy()
    expected = -(5.0 * ys * log_expit(xs) + 2.0 * (1 - ys) * log_expit(-xs))
    got = cost_sensitive_loss(x, y, fn_cost=5.0, fp_cost=2.0, reduction=reduction)  # type: ignore[arg-type]
    _close(got, _reduce(expected, reduction))


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_cost_sensitive_multiclass_matches_the_formula(reduction: str) -> None:
    x, y = _class_data(30, 3)
    cost = np.array([[0.0, 1.0, 4.0], [2.0, 0.0, 1.0], [8.0, 0.5, 0.0]])
    p = softmax(x.numpy(), axis=1)
    per = -(cost[y.numpy()] * np.log1p(-p)).sum(1)
    got = cost_sensitive_loss(x, y, cost_matrix=cost.tolist(), reduction=reduction)  # type: ignore[arg-type]
    _close(got, _reduce(per, reduction))


def test_cost_sensitive_binary_equals_the_two_class_matrix() -> None:
    x2, y = _class_data(40, 2)
    fn, fp = 3.0, 0.5
    matrix = cost_sensitive_loss(x2, y, cost_matrix=[[0, fp], [fn, 0]], reduction="none")
    margin = x2[:, 1] - x2[:, 0]
    binary = cost_sensitive_loss(margin, y.double(), fn_cost=fn, fp_cost=fp, reduction="none")
    torch.testing.assert_close(matrix, binary)
    grad2 = _grad(lambda z: cost_sensitive_loss(z, y, cost_matrix=[[0, fp], [fn, 0]]), x2)
    grad1 = _grad(lambda z: cost_sensitive_loss(z, y.double(), fn_cost=fn, fp_cost=fp), margin)
    torch.testing.assert_close(grad2[:, 1], grad1)
    torch.testing.assert_close(grad2[:, 0], -grad1)


@pytest.mark.parametrize(("fn", "fp"), [(1.0, 1.0), (5.0, 1.0), (1.0, 4.0), (2.5, 7.0)])
def test_cost_sensitive_minimiser_is_the_bayes_cost_optimal_rule(fn: float, fp: float) -> None:
    # Expected loss of a constant logit c when a fraction eta of the examples is positive,
    # minimised over a fine grid of c (one vectorised call per label).
    grid = torch.linspace(-12.0, 12.0, 48001, dtype=torch.float64)
    if_positive = cost_sensitive_loss(grid, torch.ones_like(grid), fn, fp, reduction="none")
    if_negative = cost_sensitive_loss(grid, torch.zeros_like(grid), fn, fp, reduction="none")
    for eta in (0.03, 0.15, 0.3, 0.47, 0.62, 0.75, 0.85, 0.97):  # none on a threshold
        best = grid[torch.argmin(eta * if_positive + (1.0 - eta) * if_negative)]
        prob = torch.sigmoid(best).item()
        assert (prob > 0.5) == (eta > fp / (fn + fp))
        assert prob == pytest.approx(fn * eta / (fn * eta + fp * (1 - eta)), abs=2e-4)


def test_cost_sensitive_multiclass_is_stable_at_large_logits() -> None:
    x = torch.tensor([[40.0, 0.0, -3.0], [0.0, 30.0, 30.0], [-1e4, 1e4, 0.0], [5.0, 5.0, 5.0]])
    y = torch.tensor([1, 0, 0, 2])
    cost = [[0.0, 1.0, 4.0], [2.0, 0.0, 1.0], [8.0, 0.5, 0.0]]
    got = cost_sensitive_loss(x, y, cost_matrix=cost, reduction="none")
    xs = x.double().numpy()
    lse = logsumexp(xs, axis=1)
    log1m = np.stack(
        [logsumexp(np.delete(xs, k, axis=1), axis=1) - lse for k in range(3)], axis=1
    )  # log(1 - p_k) = logsumexp over the other classes - logsumexp over all
    expected = -(np.asarray(cost)[y.numpy()] * log1m).sum(1)
    np.testing.assert_allclose(got.double().numpy(), expected, rtol=1e-6)
    assert torch.isfinite(_grad(lambda z: cost_sensitive_loss(z, y, cost_matrix=cost), x)).all()


def test_cost_sensitive_option_errors() -> None:
    xm, ym = _class_data(6, 3)
    xb, yb = _binary_data(6)
    with pytest.raises(ValueError, match="not both"):
        CostSensitiveLoss(fn_cost=2.0, cost_matrix=[[0, 1], [1, 0]])
    with pytest.raises(ValueError, match=r"zero diagonal.*cost_matrix\[1\]\[1\] = 2"):
        CostSensitiveLoss(cost_matrix=[[0, 1], [1, 2]])
    with pytest.raises(ValueError, match=r"cost_matrix\[0\]\[1\] must be non-negative"):
        CostSensitiveLoss(cost_matrix=[[0, -1], [1, 0]])
    with pytest.raises(ValueError, match="cost_matrix must be square"):
        CostSensitiveLoss(cost_matrix=[[0, 1, 1], [1, 0]])
    with pytest.raises(ValueError, match="fn_cost must be a finite positive"):
        CostSensitiveLoss(fn_cost=0.0)
    with pytest.raises(ValueError, match="for class indices give cost_matrix"):
        cost_sensitive_loss(xm, ym, fn_cost=2.0)
    with pytest.raises(ValueError, match="cost_matrix needs a multiclass target"):
        cost_sensitive_loss(xb, yb, cost_matrix=[[0, 1], [1, 0]])
    with pytest.raises(ValueError, match="cost_matrix has 2 entries but the input has 3"):
        cost_sensitive_loss(xm, ym, cost_matrix=[[0, 1], [1, 0]])
    assert parse_loss_spec({"name": "cost_sensitive"}).task_types() == {"binary", "multilabel"}
    matrix_spec = parse_loss_spec({"name": "cost_sensitive", "cost_matrix": [[0, 1], [2, 0]]})
    with pytest.raises(LossConfigError, match="not a binary task"):
        check_task(matrix_spec, "binary")


# ---- kl_div ------------------------------------------------------------------------------------


def test_kl_div_matches_scipy_entropy_and_torch_batchmean() -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(12, 5, generator=gen, dtype=torch.float64)
    t = torch.rand(12, 5, generator=gen, dtype=torch.float64)
    t[0, :2] = 0.0  # zero probabilities: 0 log 0 = 0
    t = t / t.sum(1, keepdim=True)
    per_row = [entropy(t[i].numpy(), softmax(x[i].numpy())) for i in range(12)]
    _close(kl_div_loss(x, t, reduction="none"), np.array(per_row))
    _close(kl_div_loss(x, t, reduction="sum"), float(np.sum(per_row)))
    batchmean = F.kl_div(F.log_softmax(x, 1), t, reduction="batchmean")
    torch.testing.assert_close(kl_div_loss(x, t), batchmean)
    assert kl_div_loss(x, F.softmax(x, 1)).abs() < 1e-12  # zero at the target distribution


def test_kl_div_rejects_invalid_distributions() -> None:
    x, t = torch.zeros(3, 2), torch.full((3, 2), 0.5)
    with target_checks(), pytest.raises(ValueError, match="rows must sum to 1"):
        kl_div_loss(x, t * 1.01)
    with target_checks(), pytest.raises(ValueError, match="must be non-negative"):
        kl_div_loss(x, torch.tensor([[1.5, -0.5]] * 3))
    with pytest.raises(ValueError, match=r"must have shape \(N, C\)"):
        kl_div_loss(x.view(6), t.view(6))
    with pytest.raises(ValueError, match="same shape"):
        kl_div_loss(x, t[:2])
    # A bf16 target cannot sum to 1 within 1e-4: its own precision is the tolerance.
    probs = torch.tensor([[0.3, 0.3, 0.4]]).to(torch.bfloat16)
    assert torch.isfinite(kl_div_loss(torch.zeros(1, 3), probs))


# ---- modules, specs ----------------------------------------------------------------------------

MODULES: list[tuple[type[nn.Module], dict[str, Any], Callable[..., Tensor], bool]] = [
    (BCELoss, {"pos_weight": 2.0}, bce_loss, False),
    (CELoss, {"class_weights": [1.0, 2.0, 3.0], "label_smoothing": 0.1}, ce_loss, True),
    (FocalLoss, {"alpha": 0.4, "gamma": 1.5}, focal_loss, False),
    (FocalLoss, {"alpha": [1.0, 2.0, 0.5], "gamma": 0.5}, focal_loss, True),
    (ClassBalancedLoss, {"class_counts": [30, 5, 1], "beta": 0.9}, class_balanced_loss, True),
    (ClassBalancedLoss, {"class_counts": [9, 1], "base": "bce"}, class_balanced_loss, False),
    (LogitAdjustedLoss, {"class_counts": [6, 3, 1], "tau": 0.5}, logit_adjusted_loss, True),
    (CostSensitiveLoss, {"fn_cost": 4.0, "fp_cost": 2.0}, cost_sensitive_loss, False),
    (
        CostSensitiveLoss,
        {"cost_matrix": [[0, 1, 2], [1, 0, 1], [3, 1, 0]]},
        cost_sensitive_loss,
        True,
    ),
]


@pytest.mark.parametrize(("module", "options", "functional", "multiclass"), MODULES)
def test_module_equals_functional(
    module: type[nn.Module],
    options: dict[str, Any],
    functional: Callable[..., Tensor],
    multiclass: bool,
) -> None:
    x, y = _class_data(9, 3) if multiclass else _binary_data(9, soft=True)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(
            module(**options, reduction=reduction)(x, y),
            functional(x, y, **options, reduction=reduction),
        )


def test_kl_div_module_and_specs_build_the_functionals() -> None:
    x = torch.randn(4, 3, dtype=torch.float64)
    t = F.softmax(torch.randn(4, 3, dtype=torch.float64), 1)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(KLDivLoss(reduction)(x, t), kl_div_loss(x, t, reduction))  # type: ignore[arg-type]
    torch.testing.assert_close(
        build_loss({"name": "kl_div", "reduction": "sum"})(x, t), kl_div_loss(x, t, "sum")
    )
    xb, yb = _binary_data(9)
    built = build_loss({"name": "focal", "gamma": 3.0, "alpha": None, "reduction": "none"})
    assert isinstance(built, FocalLoss)
    torch.testing.assert_close(built(xb, yb), focal_loss(xb, yb, None, 3.0, "none"))


def test_spec_task_types_follow_the_options() -> None:
    assert parse_loss_spec({"name": "focal"}).task_types() == {"binary", "multilabel"}
    assert parse_loss_spec({"name": "focal", "alpha": None}).task_types() == {
        "binary",
        "multiclass",
        "multilabel",
    }
    assert parse_loss_spec({"name": "focal", "alpha": [1, 2]}).task_types() == {"multiclass"}
    assert parse_loss_spec({"name": "class_balanced"}).task_types() == {
        "binary",
        "multiclass",
        "multilabel",
    }
    with pytest.raises(LossConfigError, match="loss 'ce' fits multiclass tasks, not a binary"):
        check_task(parse_loss_spec({"name": "ce"}), "binary")
    with pytest.raises(LossConfigError, match="not a multiclass task"):
        check_task(parse_loss_spec({"name": "bce"}), "multiclass")
    with pytest.raises(ValidationError, match="label_smoothing"):
        parse_loss_spec({"name": "ce", "label_smoothing": 1.5})
