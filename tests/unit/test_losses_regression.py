"""Regression losses against independent references (scikit-learn, scipy, numpy)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays
from numpy.typing import NDArray
from scipy import stats
from sklearn.metrics import mean_absolute_error, mean_pinball_loss, mean_squared_error
from torch import Tensor, nn

from lossflow.losses import LOSS_SPECS, available_losses, build_loss, target_checks
from lossflow.losses.regression import (
    AsymmetricLoss,
    GaussianNLLLoss,
    HuberLoss,
    LogCoshLoss,
    MAELoss,
    MSELoss,
    PoissonNLLLoss,
    QuantileLoss,
    RMSELoss,
    asymmetric_loss,
    gaussian_nll_loss,
    huber_loss,
    log_cosh_loss,
    mae_loss,
    mse_loss,
    poisson_nll_loss,
    quantile_loss,
    rmse_loss,
)

REDUCTIONS = ("mean", "sum", "none")
REGRESSION_LOSSES = (
    "mse",
    "rmse",
    "mae",
    "huber",
    "log_cosh",
    "quantile",
    "poisson_nll",
    "gaussian_nll",
    "asymmetric",
)
FAST = settings(max_examples=40, deadline=None)
Array = NDArray[np.float64]


def _normal(seed: int, *shape: int, scale: float = 1.0) -> Array:
    return np.random.default_rng(seed).normal(scale=scale, size=shape)


def _t(a: Array, grad: bool = False) -> Tensor:
    return torch.tensor(a, dtype=torch.float64, requires_grad=grad)


def _np_reduce(values: Array, reduction: str) -> Array | float:
    if reduction == "mean":
        return float(values.mean())
    if reduction == "sum":
        return float(values.sum())
    return values


def _assert_value(got: Tensor, expected: Array | float, rtol: float = 1e-12) -> None:
    np.testing.assert_allclose(got.detach().numpy(), expected, rtol=rtol, atol=1e-12)


def _grad_of_mean(loss: Tensor, x: Tensor) -> Array:
    (grad,) = torch.autograd.grad(loss, x)
    out: Array = grad.numpy()
    return out


# Residuals are 0 or at least 1e-3 in size, so no product underflows to an exact 0.
residuals = arrays(
    np.float64,
    st.integers(1, 12),
    elements=st.one_of(st.just(0.0), st.floats(1e-3, 50), st.floats(-50, -1e-3)),
)


# ------------------------------------------------------------------------------------------ MSE


def test_mse_matches_sklearn() -> None:
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=200), rng.normal(size=200)
    got = mse_loss(torch.from_numpy(x), torch.from_numpy(y))
    assert got.item() == pytest.approx(mean_squared_error(y, x), rel=1e-12)


def test_mse_module_equals_functional() -> None:
    x, y = torch.randn(7, 3), torch.randn(7, 3)
    for reduction in ("mean", "sum", "none"):
        torch.testing.assert_close(MSELoss(reduction)(x, y), mse_loss(x, y, reduction))
    torch.testing.assert_close(build_loss({"name": "mse"})(x, y), mse_loss(x, y))


# ---------------------------------------------------------------- module == functional == spec

_PAIRS: list[tuple[dict[str, Any], type[nn.Module], Callable[..., Tensor], str]] = [
    ({"name": "mae"}, MAELoss, mae_loss, "pair"),
    ({"name": "huber", "delta": 0.3}, HuberLoss, huber_loss, "pair"),
    ({"name": "log_cosh"}, LogCoshLoss, log_cosh_loss, "pair"),
    ({"name": "quantile", "quantile": 0.8}, QuantileLoss, quantile_loss, "pair"),
    (
        {"name": "poisson_nll", "full": True, "max_log_rate": 1.0},
        PoissonNLLLoss,
        poisson_nll_loss,
        "counts",
    ),
    (
        {"name": "gaussian_nll", "full": True, "eps": 1e-3},
        GaussianNLLLoss,
        gaussian_nll_loss,
        "gauss",
    ),
    (
        {"name": "asymmetric", "under_cost": 2.0, "over_cost": 0.5, "power": 1},
        AsymmetricLoss,
        asymmetric_loss,
        "pair",
    ),
    (
        {"name": "asymmetric", "under_cost": 0.5, "over_cost": 3.0, "power": 2},
        AsymmetricLoss,
        asymmetric_loss,
        "pair",
    ),
]


def _inputs(kind: str) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(3)
    if kind == "gauss":
        return torch.randn(6, 4, 2, generator=gen), torch.randn(6, 4, generator=gen)
    x = torch.randn(6, 4, generator=gen)
    if kind == "counts":
        return x, torch.randint(0, 5, (6, 4), generator=gen).float()
    return x, torch.randn(6, 4, generator=gen)


@pytest.mark.parametrize(("spec", "module", "functional", "kind"), _PAIRS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_module_spec_and_functional_agree(
    spec: dict[str, Any],
    module: type[nn.Module],
    functional: Callable[..., Tensor],
    kind: str,
    reduction: str,
) -> None:
    x, y = _inputs(kind)
    options = {k: v for k, v in spec.items() if k != "name"}
    expected = functional(x, y, **options, reduction=reduction)
    torch.testing.assert_close(module(**options, reduction=reduction)(x, y), expected)
    built = build_loss({**spec, "reduction": reduction})
    assert isinstance(built, module)
    torch.testing.assert_close(built(x, y), expected)
    assert expected.shape == (() if reduction != "none" else y.shape)


def test_rmse_module_spec_and_functional_agree() -> None:
    x, y = _inputs("pair")
    torch.testing.assert_close(RMSELoss()(x, y), rmse_loss(x, y))
    torch.testing.assert_close(build_loss({"name": "rmse"})(x, y), rmse_loss(x, y))


def test_specs_are_registered_for_regression_with_summary_and_reference() -> None:
    catalogue = {info.name: info for info in available_losses()}
    for name in REGRESSION_LOSSES:
        assert LOSS_SPECS[name].tasks == frozenset({"regression"})
        info = catalogue[name]
        assert info.summary, f"{name} has no one-line summary"
        assert info.reference, f"{name} names no reference"
        assert all(p.description for p in info.parameters if p.name != "reduction"), name


def test_spec_defaults() -> None:
    assert build_loss({"name": "huber"}).delta == 1.0
    assert build_loss({"name": "quantile"}).quantile == 0.5
    poisson = build_loss({"name": "poisson_nll"})
    assert (poisson.full, poisson.max_log_rate) == (False, 30.0)
    gauss = build_loss({"name": "gaussian_nll"})
    assert (gauss.full, gauss.eps) == (False, 1e-6)
    asym = build_loss({"name": "asymmetric"})
    assert (asym.under_cost, asym.over_cost, asym.power) == (1.0, 1.0, 2)


@pytest.mark.parametrize(
    ("spec", "match"),
    [
        ({"name": "huber", "delta": 0.0}, "delta"),
        ({"name": "quantile", "quantile": 1.0}, "quantile"),
        ({"name": "poisson_nll", "max_log_rate": 100.0}, "max_log_rate"),
        ({"name": "gaussian_nll", "eps": -1.0}, "eps"),
        ({"name": "asymmetric", "under_cost": -1.0}, "under_cost"),
        ({"name": "asymmetric", "over_cost": 0.0}, "over_cost"),
        ({"name": "asymmetric", "power": 3}, "power"),
        ({"name": "rmse", "reduction": "sum"}, "only reduction='mean'"),
    ],
)
def test_spec_rejects_invalid_option_values(spec: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        build_loss(spec)


def test_spec_rejects_unknown_option_with_hint() -> None:
    # The spec's LossConfigError reaches the caller wrapped in pydantic's ValidationError; both
    # are ValueErrors.
    with pytest.raises(ValueError, match=r"unknown option 'quantil' \(did you mean 'quantile'\?\)"):
        build_loss({"name": "quantile", "quantil": 0.3})


# ---------------------------------------------------------------------- shape / dtype errors


@pytest.mark.parametrize(
    "functional",
    [mae_loss, huber_loss, log_cosh_loss, quantile_loss, poisson_nll_loss, asymmetric_loss],
)
def test_bad_inputs_raise_value_error(functional: Callable[..., Tensor]) -> None:
    x = torch.rand(4, 3)
    with pytest.raises(ValueError, match="same shape"):
        functional(x, torch.rand(4, 2))
    with pytest.raises(ValueError, match="floating-point"):
        functional(torch.ones(4, 3, dtype=torch.long), x)
    with pytest.raises(ValueError, match="floating-point"):
        functional(x, torch.ones(4, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        functional(torch.rand(0, 3), torch.rand(0, 3))
    with pytest.raises(ValueError, match="reduction"):
        functional(x, x, reduction="max")


def test_rmse_rejects_other_reductions() -> None:
    x = torch.rand(5)
    for reduction in ("sum", "none"):
        with pytest.raises(ValueError, match="only reduction='mean'"):
            rmse_loss(x, x, reduction=reduction)
        with pytest.raises(ValueError, match="only reduction='mean'"):
            RMSELoss(reduction)
    with pytest.raises(ValueError, match="reduction must be one of"):
        rmse_loss(x, x, reduction="max")


def test_mixed_precision_pair_is_promoted() -> None:
    x = torch.randn(6, requires_grad=True)
    y = torch.randn(6, dtype=torch.float64)
    loss = log_cosh_loss(x, y)
    assert loss.dtype == torch.float64
    loss.backward()
    assert x.grad is not None
    assert x.grad.dtype == torch.float32


# Losses with a closed-form gradient: (call, input shape); targets have shape input[:, 0] for
# gaussian_nll and the input's shape otherwise.
_CLOSED_FORM: list[tuple[Callable[..., Tensor], tuple[int, ...]]] = [
    (lambda x, y, r: log_cosh_loss(x, y, r), (5, 2)),
    (lambda x, y, r: quantile_loss(x, y, 0.3, r), (5, 2)),
    (lambda x, y, r: asymmetric_loss(x, y, 2.0, 0.5, 1, r), (5, 2)),
    (lambda x, y, r: asymmetric_loss(x, y, 0.5, 2.0, 2, r), (5, 2)),
    (lambda x, y, r: asymmetric_loss(x, y, 2.0, 0.5, 2, r), (5, 2)),
    (lambda x, y, r: asymmetric_loss(x, y, 2.0, 2.0, 2, r), (5, 2)),
    (lambda x, y, r: poisson_nll_loss(x, y.abs(), False, 0.5, r), (5, 2)),
    (lambda x, y, r: gaussian_nll_loss(x, y, True, 0.05, r), (5, 2)),
]
_CLOSED_FORM_IDS = [
    "log_cosh",
    "quantile",
    "asym_p1",
    "asym_p2_over",
    "asym_p2_under",
    "asym_p2_equal",
    "poisson",
    "gaussian_full",
]


def _closed_form_inputs(call: Callable[..., Tensor], shape: tuple[int, ...]) -> list[Tensor]:
    gen = torch.Generator().manual_seed(11)
    x = torch.randn(*shape, generator=gen, dtype=torch.float64)
    target_shape = shape[:-1] if call is _CLOSED_FORM[-1][0] else shape
    y = torch.randn(*target_shape, generator=gen, dtype=torch.float64)
    if call is _CLOSED_FORM[-1][0]:
        x[0, 1] = -4.0  # one log-variance below the clamp at log(0.05)
    return [x, y]


@pytest.mark.parametrize(("call", "shape"), _CLOSED_FORM, ids=_CLOSED_FORM_IDS)
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_closed_form_gradient_gradcheck(
    call: Callable[..., Tensor], shape: tuple[int, ...], reduction: str
) -> None:
    x, y = _closed_form_inputs(call, shape)
    x.requires_grad_(True)
    # Only the prediction needs a gradient: the closed-form (fast) path.
    assert torch.autograd.gradcheck(lambda a: call(a, y, reduction), (x,))
    # The target too: autograd through the plain formula.
    y.requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: call(a, b, reduction), (x, y))


@pytest.mark.parametrize(("call", "shape"), _CLOSED_FORM, ids=_CLOSED_FORM_IDS)
def test_closed_form_gradient_supports_double_backward(
    call: Callable[..., Tensor], shape: tuple[int, ...]
) -> None:
    x, y = _closed_form_inputs(call, shape)
    x.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a: call(a, y, "mean"), (x,))
    y.requires_grad_(True)
    assert torch.autograd.gradgradcheck(lambda a, b: call(a, b, "sum"), (x, y))


def test_log_cosh_second_derivative_is_one_minus_tanh_squared() -> None:
    x = torch.linspace(-3, 3, 7, dtype=torch.float64, requires_grad=True)
    y = torch.zeros(7, dtype=torch.float64)
    (grad,) = torch.autograd.grad(log_cosh_loss(x, y, "sum"), x, create_graph=True)
    (second,) = torch.autograd.grad(grad.sum(), x)
    torch.testing.assert_close(second, 1 - torch.tanh(x.detach()) ** 2)


# ----------------------------------------------------------------------------------------- RMSE


def test_rmse_matches_sqrt_of_sklearn_mse() -> None:
    x, y = _normal(1, 50, 3), _normal(2, 50, 3)
    expected = math.sqrt(mean_squared_error(y.ravel(), x.ravel()))
    assert rmse_loss(_t(x), _t(y)).item() == pytest.approx(expected, rel=1e-12)


def test_rmse_gradient_matches_formula() -> None:
    x, y = _normal(3, 40), _normal(4, 40)
    xt = _t(x, grad=True)
    rmse = math.sqrt(np.mean((x - y) ** 2))
    expected = (x - y) / (len(x) * rmse)
    np.testing.assert_allclose(_grad_of_mean(rmse_loss(xt, _t(y)), xt), expected, rtol=1e-10)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_rmse_gradient_is_zero_not_nan_at_perfect_prediction(dtype: torch.dtype) -> None:
    x = torch.randn(8, dtype=dtype, requires_grad=True)
    loss = rmse_loss(x, x.detach().clone())
    loss.backward()
    assert loss.item() < 1e-18
    assert x.grad is not None
    assert torch.equal(x.grad, torch.zeros_like(x))


# ------------------------------------------------------------------------------------------ MAE


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_mae_matches_numpy_and_sklearn(reduction: str) -> None:
    x, y = _normal(5, 30, 2), _normal(6, 30, 2)
    _assert_value(mae_loss(_t(x), _t(y), reduction), _np_reduce(np.abs(x - y), reduction))
    if reduction == "mean":
        expected = mean_absolute_error(y.ravel(), x.ravel())
        assert mae_loss(_t(x), _t(y)).item() == pytest.approx(expected, rel=1e-12)


def test_mae_gradient_is_sign_over_n() -> None:
    x, y = _normal(7, 25), _normal(8, 25)
    xt = _t(x, grad=True)
    expected = np.sign(x - y) / len(x)
    np.testing.assert_allclose(_grad_of_mean(mae_loss(xt, _t(y)), xt), expected, rtol=1e-12)


# ---------------------------------------------------------------------------------------- Huber


def _np_huber(d: Array, delta: float) -> Array:
    a = np.abs(d)
    out: Array = np.where(a <= delta, 0.5 * d**2, delta * (a - 0.5 * delta))
    return out


@pytest.mark.parametrize("delta", [0.1, 1.0, 2.5])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_huber_matches_numpy_formula(delta: float, reduction: str) -> None:
    x, y = _normal(9, 40, 2, scale=2.0), _normal(10, 40, 2)
    got = huber_loss(_t(x), _t(y), delta=delta, reduction=reduction)
    _assert_value(got, _np_reduce(_np_huber(x - y, delta), reduction))


@pytest.mark.parametrize("delta", [0.2, 1.0, 3.0])
def test_huber_gradient_is_clipped_residual(delta: float) -> None:
    x, y = _normal(11, 60, scale=3.0), _normal(12, 60)
    xt = _t(x, grad=True)
    expected = np.clip(x - y, -delta, delta) / len(x)
    got = _grad_of_mean(huber_loss(xt, _t(y), delta=delta), xt)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


@pytest.mark.parametrize("delta", [0.3, 1.0, 4.0])
def test_huber_equals_delta_times_smooth_l1(delta: float) -> None:
    x, y = torch.randn(50, dtype=torch.float64) * 3, torch.randn(50, dtype=torch.float64)
    torch.testing.assert_close(
        huber_loss(x, y, delta=delta), delta * F.smooth_l1_loss(x, y, beta=delta)
    )


@pytest.mark.parametrize("delta", [0.0, -1.0, math.nan, math.inf])
def test_huber_rejects_bad_delta(delta: float) -> None:
    x = torch.rand(3)
    with pytest.raises(ValueError, match="delta"):
        huber_loss(x, x, delta=delta)
    with pytest.raises(ValueError, match="delta"):
        HuberLoss(delta=delta)


# ------------------------------------------------------------------------------------- log-cosh


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_log_cosh_matches_numpy(reduction: str) -> None:
    x, y = _normal(13, 30, 3, scale=4.0), _normal(14, 30, 3)
    expected = _np_reduce(np.log(np.cosh(x - y)), reduction)
    np.testing.assert_allclose(
        log_cosh_loss(_t(x), _t(y), reduction).numpy(), expected, rtol=1e-10, atol=1e-13
    )


def test_log_cosh_gradient_is_tanh_over_n() -> None:
    x, y = _normal(15, 40, scale=4.0), _normal(16, 40)
    xt = _t(x, grad=True)
    expected = np.tanh(x - y) / len(x)
    got = _grad_of_mean(log_cosh_loss(xt, _t(y)), xt)
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-15)


def test_log_cosh_is_finite_and_linear_far_out_in_float32() -> None:
    x = torch.tensor([1e4, -1e4, 200.0], requires_grad=True)
    loss = log_cosh_loss(x, torch.zeros(3), reduction="none")
    expected = torch.tensor([1e4, 1e4, 200.0]) - math.log(2.0)
    torch.testing.assert_close(loss, expected)
    loss.sum().backward()
    assert x.grad is not None
    torch.testing.assert_close(x.grad, torch.tensor([1.0, -1.0, 1.0]))


def test_log_cosh_float32_tiny_residuals_nonnegative_with_tanh_gradient() -> None:
    d = torch.cat([torch.logspace(-8, 1, 40), -torch.logspace(-8, 1, 40)])
    x = d.clone().requires_grad_(True)
    loss = log_cosh_loss(x, torch.zeros_like(d), "none")
    assert (loss >= 0).all()
    # No cancellation against log 2: the error is a few ulp of |d|, not of log 2 (6e-8).
    exact = np.log(np.cosh(d.double().numpy()))
    error = np.abs(loss.detach().double().numpy() - exact)
    assert np.all(error <= 4e-7 * np.abs(d.double().numpy()))
    loss.sum().backward()
    assert x.grad is not None
    expected = np.tanh(d.double().numpy())
    np.testing.assert_allclose(x.grad.double().numpy(), expected, rtol=2e-7, atol=0)


@FAST
@given(residuals)
def test_log_cosh_is_bounded_by_quadratic_and_linear(d: Array) -> None:
    loss = log_cosh_loss(_t(d), torch.zeros(len(d), dtype=torch.float64), "none").numpy()
    a = np.abs(d)
    assert np.all(loss >= -1e-12)
    assert np.all(loss <= np.minimum(0.5 * d**2, a) + 1e-12)
    assert np.all(loss >= a - math.log(2.0) - 1e-12)


# ------------------------------------------------------------------------------------- quantile


@pytest.mark.parametrize("q", [0.01, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99])
def test_quantile_equals_sklearn_mean_pinball_loss(q: float) -> None:
    x, y = _normal(17, 300), _normal(18, 300, scale=2.0)
    got = quantile_loss(_t(x), _t(y), quantile=q).item()
    assert got == pytest.approx(mean_pinball_loss(y, x, alpha=q), rel=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_quantile_matches_numpy_pinball(reduction: str) -> None:
    q = 0.3
    x, y = _normal(19, 20, 2), _normal(20, 20, 2)
    r = y - x
    expected = _np_reduce(np.maximum(q * r, (q - 1) * r), reduction)
    _assert_value(quantile_loss(_t(x), _t(y), q, reduction), expected)


def test_quantile_gradient_and_median_case() -> None:
    q = 0.8
    x, y = _normal(21, 50), _normal(22, 50)
    xt = _t(x, grad=True)
    expected = np.where(x > y, 1 - q, -q) / len(x)
    np.testing.assert_allclose(_grad_of_mean(quantile_loss(xt, _t(y), q), xt), expected, rtol=1e-12)
    half_mae = 0.5 * mean_absolute_error(y, x)
    assert quantile_loss(_t(x), _t(y), 0.5).item() == pytest.approx(half_mae, rel=1e-12)


@pytest.mark.parametrize("q", [0.0, 1.0, -0.1, 1.5, math.nan])
def test_quantile_rejects_level_outside_open_unit_interval(q: float) -> None:
    x = torch.rand(3)
    with pytest.raises(ValueError, match="quantile must lie strictly between 0 and 1"):
        quantile_loss(x, x, quantile=q)
    with pytest.raises(ValueError, match="quantile"):
        QuantileLoss(quantile=q)


@FAST
@given(residuals, st.floats(0.01, 0.99))
def test_quantile_is_nonnegative_and_zero_only_at_perfect_prediction(d: Array, q: float) -> None:
    y = np.linspace(-1, 1, len(d))
    loss = quantile_loss(_t(y + d), _t(y), q, "none").numpy()
    assert np.all(loss >= 0)
    np.testing.assert_array_equal(loss == 0, d == 0)


# -------------------------------------------------------------------------------------- Poisson


def _counts(seed: int, n: int) -> Array:
    out: Array = np.random.default_rng(seed).poisson(3.0, size=n).astype(np.float64)
    return out


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_poisson_matches_torch_poisson_nll_below_max_log_rate(reduction: str) -> None:
    x, y = _normal(23, 40), _counts(24, 40)
    xt, xr = _t(x, grad=True), _t(x, grad=True)
    got = poisson_nll_loss(xt, _t(y), reduction=reduction)
    ref = F.poisson_nll_loss(xr, _t(y), log_input=True, full=False, reduction=reduction)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    ref.sum().backward()
    assert xt.grad is not None
    assert xr.grad is not None
    torch.testing.assert_close(xt.grad, xr.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_poisson_full_equals_scipy_negative_log_pmf(reduction: str) -> None:
    x, y = _normal(25, 40), _counts(26, 40)
    expected = _np_reduce(-stats.poisson.logpmf(y, np.exp(x)), reduction)
    _assert_value(poisson_nll_loss(_t(x), _t(y), full=True, reduction=reduction), expected, 1e-10)


def test_poisson_above_max_log_rate_is_the_tangent_line() -> None:
    m = 2.0
    x, y = np.array([2.5, 10.0, 1e4, 1.0]), np.array([1.0, 4.0, 0.0, 2.0])
    xt = _t(x, grad=True)
    loss = poisson_nll_loss(xt, _t(y), max_log_rate=m, reduction="none")
    rate = np.where(x > m, math.exp(m) * (1 + x - m), np.exp(np.minimum(x, m)))
    _assert_value(loss, rate - y * x)
    loss.sum().backward()
    assert xt.grad is not None
    np.testing.assert_allclose(xt.grad.numpy(), np.exp(np.minimum(x, m)) - y, rtol=1e-12)


def test_poisson_extension_is_continuous_with_continuous_slope() -> None:
    m, h = 30.0, 1e-7
    x = _t(np.array([m - h, m, m + h]), grad=True)
    loss = poisson_nll_loss(x, _t(np.full(3, 5.0)), reduction="none")
    loss.sum().backward()
    values = loss.detach().numpy()
    assert abs(values[2] - values[0]) <= 2 * h * math.exp(m) * 1.01
    assert x.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), math.exp(m) - 5.0, rtol=1e-6)


def test_poisson_is_finite_at_huge_log_rates_in_float32() -> None:
    x = torch.tensor([1e4, -1e4, 88.0, 200.0], requires_grad=True)
    loss = poisson_nll_loss(x, torch.tensor([3.0, 3.0, 0.0, 1.0]), full=True)
    loss.backward()
    assert torch.isfinite(loss)
    assert x.grad is not None
    assert torch.isfinite(x.grad).all()


@FAST
@given(arrays(np.float64, st.integers(1, 8), elements=st.floats(0, 40)))
def test_poisson_is_minimised_at_log_of_the_count(y: Array) -> None:
    y = np.round(y) + 1.0  # positive counts, so log(y) is finite
    x = _t(np.log(y), grad=True)
    loss = poisson_nll_loss(x, _t(y), reduction="sum")
    loss.backward()
    assert x.grad is not None
    np.testing.assert_allclose(x.grad.numpy(), 0.0, atol=1e-9)
    shifted = poisson_nll_loss(_t(np.log(y) + 0.1), _t(y), reduction="sum")
    assert shifted.item() > loss.item()


def test_poisson_rejects_negative_or_nan_targets_under_target_checks() -> None:
    x = torch.zeros(3)
    for bad in (torch.tensor([1.0, -1.0, 2.0]), torch.tensor([1.0, math.nan, 2.0])):
        with target_checks(), pytest.raises(ValueError, match="non-negative counts"):
            poisson_nll_loss(x, bad)


@pytest.mark.parametrize("m", [math.nan, math.inf, -math.inf, 51.0, -60.0])
def test_poisson_rejects_bad_max_log_rate(m: float) -> None:
    x = torch.zeros(3)
    with pytest.raises(ValueError, match="max_log_rate"):
        poisson_nll_loss(x, x, max_log_rate=m)
    with pytest.raises(ValueError, match="max_log_rate"):
        PoissonNLLLoss(max_log_rate=m)


# ------------------------------------------------------------------------------------- Gaussian


def _gauss(seed: int, n: int) -> tuple[Array, Array, Array]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=n), rng.normal(size=n), rng.normal(scale=2.0, size=n)


@pytest.mark.parametrize("full", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gaussian_matches_torch_gaussian_nll_with_exp_log_var(full: bool, reduction: str) -> None:
    mu, y, s = _gauss(27, 30)
    inp = _t(np.stack([mu, s], axis=-1), grad=True)
    mu_ref, s_ref = _t(mu, grad=True), _t(s, grad=True)
    got = gaussian_nll_loss(inp, _t(y), full=full, reduction=reduction)
    ref = F.gaussian_nll_loss(mu_ref, _t(y), s_ref.exp(), full=full, reduction=reduction)
    torch.testing.assert_close(got, ref, rtol=1e-12, atol=1e-12)
    got.sum().backward()
    ref.sum().backward()
    assert inp.grad is not None
    assert mu_ref.grad is not None
    assert s_ref.grad is not None
    torch.testing.assert_close(inp.grad[:, 0], mu_ref.grad, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(inp.grad[:, 1], s_ref.grad, rtol=1e-10, atol=1e-12)


def test_gaussian_full_equals_scipy_negative_log_pdf() -> None:
    mu, y, s = _gauss(28, 3 * 4)
    inp = _t(np.stack([mu, s], axis=-1).reshape(3, 4, 2))
    got = gaussian_nll_loss(inp, _t(y.reshape(3, 4)), full=True, reduction="none")
    expected = -stats.norm.logpdf(y, loc=mu, scale=np.exp(0.5 * s)).reshape(3, 4)
    _assert_value(got, expected, rtol=1e-11)


def test_gaussian_clamps_variance_at_eps() -> None:
    eps = 1e-6
    inp = torch.tensor([[0.5, -1e4], [0.5, math.log(eps)]], requires_grad=True)
    loss = gaussian_nll_loss(inp, torch.zeros(2), eps=eps, reduction="none")
    torch.testing.assert_close(loss[0], loss[1])
    ref = F.gaussian_nll_loss(inp.detach()[:, 0], torch.zeros(2), inp.detach()[:, 1].exp(), eps=eps)
    torch.testing.assert_close(loss.mean(), ref)
    loss.sum().backward()
    assert inp.grad is not None
    assert torch.isfinite(inp.grad).all()
    assert inp.grad[0, 1] == 0.0  # below the clamp the loss does not depend on the log-variance


@FAST
@given(
    arrays(np.float64, st.integers(1, 8), elements=st.floats(0.01, 100)),
    st.floats(-5, 5),
)
def test_gaussian_optimum_is_mean_at_target_and_log_var_at_log_squared_residual(
    resid: Array, y0: float
) -> None:
    y = np.full(len(resid), y0)
    inp = _t(np.stack([y + resid, np.log(resid**2)], axis=-1), grad=True)
    gaussian_nll_loss(inp, _t(y), reduction="sum").backward()
    assert inp.grad is not None
    np.testing.assert_allclose(inp.grad[:, 1].numpy(), 0.0, atol=1e-9)
    at_target = _t(np.stack([y, np.log(resid**2)], axis=-1), grad=True)
    gaussian_nll_loss(at_target, _t(y), reduction="sum").backward()
    assert at_target.grad is not None
    np.testing.assert_allclose(at_target.grad[:, 0].numpy(), 0.0, atol=1e-12)


def test_gaussian_shape_errors_explain_the_convention() -> None:
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\).*mean.*log-variance"):
        gaussian_nll_loss(torch.rand(4, 3), torch.rand(4))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 2\)"):
        gaussian_nll_loss(torch.tensor(1.0), torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"input\.shape\[:-1\].*expected target \(4,\)"):
        gaussian_nll_loss(torch.rand(4, 2), torch.rand(4, 2))
    with pytest.raises(ValueError, match="floating-point"):
        gaussian_nll_loss(torch.rand(4, 2), torch.ones(4, dtype=torch.long))
    with pytest.raises(ValueError, match="empty"):
        gaussian_nll_loss(torch.rand(0, 2), torch.rand(0))
    with pytest.raises(ValueError, match="reduction"):
        gaussian_nll_loss(torch.rand(4, 2), torch.rand(4), reduction="max")


@pytest.mark.parametrize("eps", [0.0, -1e-6, math.nan, math.inf])
def test_gaussian_rejects_bad_eps(eps: float) -> None:
    with pytest.raises(ValueError, match="eps"):
        gaussian_nll_loss(torch.rand(4, 2), torch.rand(4), eps=eps)
    with pytest.raises(ValueError, match="eps"):
        GaussianNLLLoss(eps=eps)


# ----------------------------------------------------------------------------------- asymmetric


def _np_asymmetric(x: Array, y: Array, under: float, over: float, power: int) -> Array:
    out: Array = under * np.maximum(y - x, 0) ** power + over * np.maximum(x - y, 0) ** power
    return out


@pytest.mark.parametrize(("under", "over"), [(3.0, 1.0), (1.0, 3.0), (0.2, 0.2), (1.0, 1e-3)])
@pytest.mark.parametrize("power", [1, 2])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_asymmetric_matches_numpy_formula(
    under: float, over: float, power: int, reduction: str
) -> None:
    x, y = _normal(29, 30, 2), _normal(30, 30, 2)
    got = asymmetric_loss(_t(x), _t(y), under, over, power, reduction)
    _assert_value(got, _np_reduce(_np_asymmetric(x, y, under, over, power), reduction))


@pytest.mark.parametrize(("under", "over"), [(3.0, 1.0), (1.0, 3.0), (2.0, 2.0)])
@pytest.mark.parametrize("power", [1, 2])
def test_asymmetric_gradient_matches_formula(under: float, over: float, power: int) -> None:
    x, y = _normal(31, 40), _normal(32, 40)
    xt = _t(x, grad=True)
    d = x - y
    cost = np.where(d > 0, over, under)
    expected = cost * (np.sign(d) if power == 1 else 2 * d) / len(x)
    got = _grad_of_mean(asymmetric_loss(xt, _t(y), under, over, power), xt)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_asymmetric_special_cases_are_mse_mae_and_quantile() -> None:
    x, y = _normal(33, 100), _normal(34, 100)
    assert asymmetric_loss(_t(x), _t(y), 1.0, 1.0, 2).item() == pytest.approx(
        mean_squared_error(y, x), rel=1e-12
    )
    assert asymmetric_loss(_t(x), _t(y), 1.0, 1.0, 1).item() == pytest.approx(
        mean_absolute_error(y, x), rel=1e-12
    )
    for q in (0.1, 0.5, 0.95):
        got = asymmetric_loss(_t(x), _t(y), q, 1.0 - q, 1)
        assert got.item() == pytest.approx(mean_pinball_loss(y, x, alpha=q), rel=1e-12)
        torch.testing.assert_close(got, quantile_loss(_t(x), _t(y), q))


@pytest.mark.parametrize(("under", "over"), [(1.0, 1.0), (3.0, 1.0), (1.0, 4.0), (0.37, 0.11)])
def test_asymmetric_p1_optimal_constant_is_the_cost_quantile(under: float, over: float) -> None:
    y = np.random.default_rng(35).gamma(2.0, size=101)
    tau = under / (under + over)
    candidates = np.sort(y)  # the loss is piecewise linear in c with kinks at the targets

    def loss_at(c: float) -> float:
        return asymmetric_loss(_t(np.full_like(y, c)), _t(y), under, over, 1).item()

    losses = np.array([loss_at(c) for c in candidates])
    best = candidates[int(np.argmin(losses))]
    assert best == np.quantile(y, tau, method="inverted_cdf")
    assert loss_at(best) < min(loss_at(best - 1e-3), loss_at(best + 1e-3))


@FAST
@given(residuals, st.floats(0.01, 10), st.floats(0.01, 10), st.sampled_from([1, 2]))
def test_asymmetric_is_nonnegative_zero_at_perfect_and_monotone_in_costs(
    d: Array, under: float, over: float, power: int
) -> None:
    y = np.linspace(-2, 2, len(d))
    loss = asymmetric_loss(_t(y + d), _t(y), under, over, power, "none").numpy()
    assert np.all(loss >= 0)
    np.testing.assert_array_equal(loss == 0, d == 0)
    dearer = asymmetric_loss(_t(y + d), _t(y), 2 * under, over, power, "none").numpy()
    # A dearer under-prediction raises exactly the under-predicted elements (by their loss), and
    # leaves the others (up to rounding: the cost factors are regrouped).
    under_predicted = d < 0
    np.testing.assert_allclose(dearer[under_predicted], 2 * loss[under_predicted], rtol=1e-12)
    np.testing.assert_allclose(dearer[~under_predicted], loss[~under_predicted], rtol=1e-12)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"under_cost": 0.0}, "under_cost"),
        ({"under_cost": math.nan}, "under_cost"),
        ({"over_cost": -2.0}, "over_cost"),
        ({"over_cost": math.inf}, "over_cost"),
        ({"power": 3}, "power must be 1"),
        ({"power": 0}, "power must be 1"),
        ({"power": True}, "power must be 1"),
    ],
)
def test_asymmetric_rejects_bad_options(kwargs: dict[str, Any], match: str) -> None:
    x = torch.rand(3)
    with pytest.raises(ValueError, match=match):
        asymmetric_loss(x, x, **kwargs)
    with pytest.raises(ValueError, match=match):
        AsymmetricLoss(**kwargs)


# ------------------------------------------------------------------------------------ precision


@pytest.mark.parametrize(
    "loss", [{"name": n} for n in REGRESSION_LOSSES if n not in ("gaussian_nll", "poisson_nll")]
)
def test_bf16_inputs_give_float32_losses(loss: dict[str, Any]) -> None:
    x = torch.randn(6, dtype=torch.bfloat16, requires_grad=True)
    value = build_loss(loss)(x, torch.randn(6, dtype=torch.bfloat16))
    assert value.dtype == torch.float32
    value.backward()
    assert x.grad is not None
    assert x.grad.dtype == torch.bfloat16
