"""What each trained model is inspected for: filter-normalised landscapes (Li et al. 2018), the
losses against the margin, permutation importances and slices."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from lossflow.comparison.importance import permutation_importance
from lossflow.comparison.landscape import (
    MarginCurve,
    filter_normalized_direction,
    loss_landscape,
    loss_vs_margin,
)
from lossflow.comparison.slices import slice_scores
from lossflow.data.preprocessing import EncodedFeatures
from lossflow.losses import build_loss


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 1), nn.Flatten(0))


def test_directions_are_filter_normalised_and_skip_biases() -> None:
    net = _net()
    directions = filter_normalized_direction(net, torch.Generator().manual_seed(1))
    for param, direction in zip(net.parameters(), directions, strict=True):
        assert direction.shape == param.shape
        if param.dim() == 1:
            assert torch.count_nonzero(direction) == 0
        else:
            torch.testing.assert_close(direction.norm(dim=1), param.detach().norm(dim=1))


def test_landscape_is_centred_on_the_trained_weights_and_restores_them() -> None:
    net = _net()
    x, y = torch.randn(64, 4), torch.randint(0, 2, (64,)).float()
    loss = nn.BCEWithLogitsLoss()
    before = [p.detach().clone() for p in net.parameters()]

    def objective() -> float:
        with torch.no_grad():
            return float(loss(net(x), y))

    land = loss_landscape(objective, net, points_1d=5, points_2d=3, span=1.0, seed=0)
    assert land.line[2] == pytest.approx(objective())
    assert land.surface[1, 1] == pytest.approx(land.center)
    assert land.surface.shape == (3, 3)
    for p, b in zip(net.parameters(), before, strict=True):
        assert torch.equal(p.detach(), b)
    again = loss_landscape(objective, net, points_1d=5, points_2d=3, span=1.0, seed=0)
    np.testing.assert_allclose(again.surface, land.surface)


def _binary_curve(spec: dict[str, object]) -> MarginCurve:
    curve = loss_vs_margin(build_loss(spec), "binary", n_classes=2, span=4.0, points=9)
    assert curve is not None
    return curve


def test_focal_with_gamma_zero_weighs_examples_like_bce() -> None:
    bce = _binary_curve({"name": "bce"})
    focal0 = _binary_curve({"name": "focal", "gamma": 0.0, "alpha": None})
    focal2 = _binary_curve({"name": "focal", "gamma": 2.0, "alpha": None})
    np.testing.assert_allclose(focal0.losses["y=1"], bce.losses["y=1"], rtol=1e-6)
    # |d bce / d z| = sigmoid(-margin): the textbook pull of log loss.
    np.testing.assert_allclose(bce.gradients["y=1"], 1 / (1 + np.exp(bce.margins)), rtol=1e-5)
    easy = bce.margins > 2
    assert (focal2.gradients["y=1"][easy] < 0.1 * bce.gradients["y=1"][easy]).all()


def test_permutation_importance_finds_the_feature_the_model_uses() -> None:
    rng = np.random.default_rng(0)
    numeric = rng.normal(size=(500, 2)).astype(np.float32)
    categorical = rng.integers(1, 4, size=(500, 1))
    features = EncodedFeatures(numeric=numeric, categorical=categorical)
    y = (numeric[:, 0] > 0).astype(float)

    def predict(f: EncodedFeatures) -> np.ndarray:
        return 1 / (1 + np.exp(-4 * f.numeric[:, 0]))

    def accuracy(out: np.ndarray) -> float:
        return float(((out >= 0.5) == y).mean())

    got = permutation_importance(
        predict, accuracy, features, ["a", "b", "c"], "max", repeats=3, seed=0
    )
    assert got["a"] > 0.4
    assert got["b"] == 0.0
    assert got["c"] == 0.0
    with pytest.raises(ValueError, match="names must name"):
        permutation_importance(predict, accuracy, features, ["a"], "max", repeats=1, seed=0)


def test_slices_too_small_or_undefined_are_reported_not_dropped() -> None:
    raw = pd.DataFrame({"carrier": ["UA"] * 60 + ["OO"] * 5 + ["B6"] * 30, "hour": [7] * 95})
    y = np.array([0, 1] * 30 + [1] * 5 + [0] * 30)

    def score(rows: np.ndarray) -> float:
        if len(set(y[rows])) < 2:
            raise ValueError("ROC AUC is undefined: y_true has only class 0; use more rows")
        return float(y[rows].mean())

    got = {
        (s.slice, s.value): s
        for s in slice_scores(raw, ["carrier", "hour_band"], "y", score, min_rows=10)
    }
    assert got[("carrier", "UA")].score == 0.5
    assert got[("carrier", "OO")].reason == "fewer than 10 rows"
    assert got[("carrier", "B6")].score is None
    assert "undefined" in str(got[("carrier", "B6")].reason)
    assert got[("hour_band", "morning 6-11")].rows == 95
