"""Oversampling, batch noise and mixup, and image augmentation of the training split."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
from scipy import stats
from torch.nn import functional as F

from lossflow.config.data import AugmentConfig, ImageAugmentConfig
from lossflow.data.augment import AugmentedBatch, BatchAugment, ImageAugment, oversample
from lossflow.data.preprocessing import EncodedFeatures
from lossflow.data.sources import load_digits_frame


def _imbalanced(n_major: int = 90, n_minor: int = 10) -> tuple[EncodedFeatures, np.ndarray]:
    rng = np.random.default_rng(0)
    n = n_major + n_minor
    numeric = rng.normal(size=(n, 3)).astype(np.float32)
    numeric[n_major:] += 5.0
    categorical = rng.integers(1, 6, size=(n, 2)).astype(np.int64)
    y = np.r_[np.zeros(n_major), np.ones(n_minor)].astype(np.float32)
    return EncodedFeatures(numeric=numeric, categorical=categorical), y


@pytest.mark.parametrize("method", ["random", "smote"])
@pytest.mark.parametrize("ratio", [0.5, 1.0])
def test_oversampling_reaches_the_ratio(method: str, ratio: float) -> None:
    encoded, y = _imbalanced()
    out, labels = oversample(encoded, y, method, ratio=ratio, seed=1)  # type: ignore[arg-type]
    counts = np.bincount(labels.astype(int))
    assert counts[0] == 90
    assert counts[1] == int(np.ceil(ratio * 90))
    assert labels.dtype == y.dtype
    assert len(out) == len(labels)
    np.testing.assert_array_equal(out.numeric[:100], encoded.numeric)  # originals first


def test_random_oversampling_duplicates_minority_rows() -> None:
    encoded, y = _imbalanced()
    out, labels = oversample(encoded, y, "random", ratio=1.0, seed=0)
    minority = {tuple(r) for r in np.c_[encoded.numeric[90:], encoded.categorical[90:]]}
    added = np.c_[out.numeric[100:], out.categorical[100:]]
    assert all(tuple(r) in minority for r in added)
    assert (labels[100:] == 1).all()


def test_smote_rows_lie_on_segments_between_minority_neighbours() -> None:
    encoded, y = _imbalanced()
    out, _ = oversample(encoded, y, "smote", ratio=1.0, seed=3, k_neighbors=3)
    minority_num = encoded.numeric[90:].astype(np.float64)
    minority_cat = encoded.categorical[90:]
    for row_num, row_cat in zip(out.numeric[100:], out.categorical[100:], strict=True):
        found = False
        for i in range(10):
            if not (minority_cat[i] == row_cat).all():
                continue  # categoricals come from the base row
            for j in range(10):
                if i == j:
                    continue
                direction = minority_num[j] - minority_num[i]
                u = (row_num[0] - minority_num[i, 0]) / direction[0]
                point = minority_num[i] + u * direction
                if -1e-6 <= u <= 1 + 1e-6 and np.allclose(point, row_num, atol=1e-4):
                    found = True
        assert found, row_num
    assert not any((out.numeric[100:] == r).all(axis=1).any() for r in encoded.numeric[:90])


def test_smote_copies_nan_from_the_base_row() -> None:
    encoded, y = _imbalanced()
    encoded.numeric[90:, 2] = np.nan
    out, _ = oversample(encoded, y, "smote", ratio=1.0, seed=0)
    assert np.isnan(out.numeric[100:, 2]).all()
    assert np.isfinite(out.numeric[100:, :2]).all()


def test_oversampling_logs_rows_added(caplog: pytest.LogCaptureFixture) -> None:
    encoded, y = _imbalanced()
    with caplog.at_level(logging.INFO, logger="lossflow.data.augment"):
        oversample(encoded, y, "smote", ratio=0.5, seed=0)
    assert "added 35 rows of class 1 (10 -> 45)" in caplog.text


def test_multiclass_oversampling_fills_every_minority_class() -> None:
    encoded, _ = _imbalanced()
    y = np.r_[np.zeros(60), np.ones(30), np.full(10, 2)].astype(np.int64)
    _, labels = oversample(encoded, y, "random", ratio=0.5, seed=0)
    np.testing.assert_array_equal(np.bincount(labels), [60, 30, 30])


def test_oversampling_none_and_bad_inputs() -> None:
    encoded, y = _imbalanced()
    same, same_y = oversample(encoded, y, "none")
    assert same is encoded
    assert same_y is y
    with pytest.raises(ValueError, match="integer class labels"):
        oversample(encoded, y + 0.5, "random")
    with pytest.raises(ValueError, match="ratio must be in"):
        oversample(encoded, y, "random", ratio=0.0)
    with pytest.raises(ValueError, match="100 feature rows but 99 labels"):
        oversample(encoded, y[:-1], "random")


def test_noise_has_the_configured_std_and_only_in_training() -> None:
    torch.manual_seed(0)
    augment = BatchAugment(noise_std=0.3)
    numeric = torch.randn(20_000, 4)
    categorical = torch.randint(0, 5, (20_000, 2))
    y = torch.rand(20_000)
    batch = augment(numeric, categorical, y)
    noise = batch.numeric - numeric
    assert noise.std().item() == pytest.approx(0.3, rel=0.02)
    assert abs(noise.mean().item()) < 0.01
    assert batch.perm is None
    assert batch.lam == 1.0
    assert batch.categorical is categorical
    augment.eval()
    assert augment(numeric, categorical, y).numeric is numeric


def test_mixup_mixes_rows_and_lambda_is_beta_distributed() -> None:
    torch.manual_seed(0)
    alpha = 0.4
    augment = BatchAugment(mixup_alpha=alpha)
    numeric = torch.randn(16, 3)
    categorical = torch.randint(0, 5, (16, 2))
    y = torch.randint(0, 2, (16,)).float()
    lams = []
    for _ in range(2000):
        batch = augment(numeric, categorical, y)
        assert batch.perm is not None
        assert 0.0 <= batch.lam <= 1.0
        lams.append(batch.lam)
    expected = batch.lam * numeric + (1 - batch.lam) * numeric[batch.perm]
    torch.testing.assert_close(batch.numeric, expected)
    assert batch.categorical is categorical
    assert sorted(batch.perm.tolist()) == list(range(16))
    values = np.array(lams)
    assert values.mean() == pytest.approx(0.5, abs=0.03)  # ~3.6 standard errors
    assert values.var() == pytest.approx(1 / (4 * (2 * alpha + 1)), rel=0.12)
    assert stats.kstest(values, stats.beta(alpha, alpha).cdf).pvalue > 0.01


def test_combine_mixes_any_loss_of_the_targets() -> None:
    logits = torch.randn(8)
    y = torch.randint(0, 2, (8,)).float()
    perm = torch.randperm(8)
    batch = AugmentedBatch(numeric=torch.zeros(8, 1), categorical=torch.zeros(8, 0), y=y,
                           perm=perm, lam=0.3)  # fmt: skip
    loss = batch.combine(lambda target: F.binary_cross_entropy_with_logits(logits, target))
    expected = 0.3 * F.binary_cross_entropy_with_logits(logits, y) + 0.7 * (
        F.binary_cross_entropy_with_logits(logits, y[perm])
    )
    torch.testing.assert_close(loss, expected)
    assert batch.y_perm is not None
    torch.testing.assert_close(batch.y_perm, y[perm])
    plain = AugmentedBatch(numeric=torch.zeros(8, 1), categorical=torch.zeros(8, 0), y=y)
    torch.testing.assert_close(
        plain.combine(lambda target: F.binary_cross_entropy_with_logits(logits, target)),
        F.binary_cross_entropy_with_logits(logits, y),
    )


def test_batch_augment_from_config_and_bad_options() -> None:
    augment = BatchAugment.from_config(AugmentConfig(noise_std=0.1, mixup_alpha=0.2))
    assert (augment.noise_std, augment.mixup_alpha) == (0.1, 0.2)
    assert not BatchAugment().active
    with pytest.raises(ValueError, match="noise_std"):
        BatchAugment(noise_std=-1.0)
    with pytest.raises(ValueError, match="same batch size"):
        augment(torch.zeros(4, 2), torch.zeros(3, 1), torch.zeros(4))


def _digit_images(n: int = 32) -> torch.Tensor:
    pixels = load_digits_frame().drop(columns="digit").to_numpy()[:n]
    return torch.tensor(pixels, dtype=torch.float32).reshape(n, 1, 8, 8)


def test_image_augment_keeps_shape_and_changes_images() -> None:
    torch.manual_seed(0)
    images = _digit_images()
    augment = ImageAugment(ImageAugmentConfig(rotation_degrees=30.0, scale=(0.8, 1.2), p=1.0,
                                              hflip=True))  # fmt: skip
    out = augment(images)
    assert out.shape == images.shape
    assert out.dtype == images.dtype
    assert not torch.allclose(out, images)
    assert torch.isfinite(out).all()
    augment.eval()
    assert torch.equal(augment(images), images)


def test_image_augment_with_p_zero_is_identity() -> None:
    images = _digit_images()
    augment = ImageAugment(ImageAugmentConfig(rotation_degrees=30.0, hflip=True, p=0.0))
    assert augment.training
    torch.testing.assert_close(augment(images), images, rtol=0, atol=0)


def test_hflip_only_mirrors_columns() -> None:
    images = _digit_images()
    augment = ImageAugment(ImageAugmentConfig(rotation_degrees=0.0, scale=(1.0, 1.0),
                                              hflip=True, p=1.0))  # fmt: skip
    torch.testing.assert_close(augment(images), images.flip(-1))


def test_image_augment_rejects_flat_input() -> None:
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        ImageAugment(ImageAugmentConfig())(torch.zeros(4, 64))
