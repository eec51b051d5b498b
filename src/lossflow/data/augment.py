"""Training-split augmentation: minority oversampling, batch noise and mixup, image transforms.

Dataset-level ``oversample`` runs once on the encoded training split (random duplicates or
SMOTE interpolation). ``BatchAugment`` and ``ImageAugment`` are modules active only in training
mode, drawing from torch's global RNG (seeded by ``lightning.seed_everything``).
Validation, test and production data are never augmented.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import kornia.augmentation as K
import numpy as np
import numpy.typing as npt
import torch
from sklearn.neighbors import NearestNeighbors
from torch import Tensor, nn

from lossflow.config.data import AugmentConfig, ImageAugmentConfig, OversampleMethod

if TYPE_CHECKING:
    from lossflow.data.preprocessing import EncodedFeatures

logger = logging.getLogger(__name__)

DEFAULT_SMOTE_NEIGHBORS = 5


def _class_labels(y: npt.NDArray[np.generic]) -> npt.NDArray[np.int64]:
    if y.ndim != 1:
        raise ValueError(f"oversample needs a 1-D label array; got shape {y.shape}")
    values = np.asarray(y, dtype=np.float64)
    if not np.all(np.isfinite(values)) or np.any(values != np.round(values)):
        raise ValueError(
            "oversample needs integer class labels (binary 0/1 or multiclass codes); got "
            "non-integer values: oversampling does not apply to regression or ranking"
        )
    return values.astype(np.int64)


def _smote_rows(
    numeric: npt.NDArray[np.float32],
    n_new: int,
    k_neighbors: int,
    rng: np.random.Generator,
) -> tuple[npt.NDArray[np.intp], npt.NDArray[np.float32]]:
    """Base row positions and interpolated numeric values of ``n_new`` synthetic rows."""
    n = numeric.shape[0]
    base = rng.integers(0, n, size=n_new)
    if n < 2 or numeric.shape[1] == 0:
        return base, numeric[base].copy()
    values = numeric.astype(np.float64)
    present = np.isfinite(values)
    count = np.maximum(present.sum(axis=0), 1)
    centre = np.where(present, values, 0.0).sum(axis=0) / count
    deviation = np.where(present, values - centre, 0.0)
    scale = np.sqrt((deviation**2).sum(axis=0) / count)
    scale = np.where(scale > 0, scale, 1.0)
    search = deviation / scale
    k = min(k_neighbors, n - 1)
    _, neighbours = NearestNeighbors(n_neighbors=k + 1).fit(search).kneighbors(search)
    partner = neighbours[base, rng.integers(1, k + 1, size=n_new)]
    lam = rng.random((n_new, 1))
    start, end = values[base], values[partner]
    both = np.isfinite(start) & np.isfinite(end)
    rows = np.where(both, start + lam * (end - start), start)
    return base, rows.astype(np.float32)


def oversample(
    encoded: EncodedFeatures,
    y: npt.NDArray[np.generic],
    method: OversampleMethod,
    ratio: float = 1.0,
    seed: int = 0,
    *,
    k_neighbors: int = DEFAULT_SMOTE_NEIGHBORS,
) -> tuple[EncodedFeatures, npt.NDArray[np.generic]]:
    """Add minority-class rows until each class has ``ceil(ratio * majority)`` rows.

    ``random`` duplicates random rows of the class. ``smote`` creates
    ``x = x_i + u * (x_j - x_i)``, ``u ~ U(0, 1)``, between a random row ``i`` of the class and
    one of its ``k_neighbors`` nearest rows ``j`` of the same class (distances on numeric
    features standardised within the class); categorical codes are copied from ``i``, and a
    numeric value missing at either end is copied from ``i``. Added rows follow the originals.

    Args:
        encoded: Encoded training features.
        y: Class labels (binary 0/1 as float or int, or multiclass codes), one per row.
        method: ``none`` returns the inputs unchanged.
        ratio: Target minority/majority ratio in ``(0, 1]``.
        seed: Seed of the rows drawn.
        k_neighbors: SMOTE neighbourhood size.

    Returns:
        The augmented features and labels (labels keep ``y``'s dtype).

    Raises:
        ValueError: Bad ``method``/``ratio``/``k_neighbors``, labels that are not classes, or
            a label count that does not match the feature rows.
    """
    if method not in ("none", "random", "smote"):
        raise ValueError(f"oversample method must be none, random or smote; got {method!r}")
    if not 0.0 < ratio <= 1.0:
        raise ValueError(f"oversample ratio must be in (0, 1]; got {ratio}")
    if k_neighbors < 1:
        raise ValueError(f"k_neighbors must be >= 1; got {k_neighbors}")
    if len(y) != len(encoded):
        raise ValueError(f"oversample got {len(encoded)} feature rows but {len(y)} labels")
    if method == "none":
        return encoded, y
    labels = _class_labels(y)
    classes, counts = np.unique(labels, return_counts=True)
    wanted = math.ceil(ratio * int(counts.max()) - 1e-9)
    rng = np.random.default_rng(seed)
    added_numeric: list[npt.NDArray[np.float32]] = []
    added_categorical: list[npt.NDArray[np.int64]] = []
    added_labels: list[npt.NDArray[np.generic]] = []
    for label, count in zip(classes.tolist(), counts.tolist(), strict=True):
        extra = wanted - count
        if extra <= 0:
            continue
        rows = np.flatnonzero(labels == label)
        if method == "random":
            picked = rows[rng.integers(0, len(rows), size=extra)]
            numeric = encoded.numeric[picked]
            base = picked
        else:
            local, numeric = _smote_rows(encoded.numeric[rows], extra, k_neighbors, rng)
            base = rows[local]
            if len(rows) < 2:
                logger.info("oversample: class %s has one row; SMOTE duplicates it", label)
        added_numeric.append(numeric)
        added_categorical.append(encoded.categorical[base])
        added_labels.append(y[base])
        logger.info(
            "oversample (%s): added %d rows of class %s (%d -> %d)",
            method,
            extra,
            label,
            count,
            count + extra,
        )
    total = sum(len(part) for part in added_labels)
    logger.info(
        "oversample (%s): added %d rows in total (%d -> %d)", method, total, len(y), len(y) + total
    )
    if total == 0:
        return encoded, y
    out = type(encoded)(
        numeric=np.concatenate([encoded.numeric, *added_numeric]).astype(np.float32),
        categorical=np.concatenate([encoded.categorical, *added_categorical]),
    )
    return out, np.concatenate([y, *added_labels])


@dataclass(frozen=True)
class AugmentedBatch:
    """A training batch after ``BatchAugment``.

    With mixup (``perm`` set), row ``i`` of ``numeric`` is
    ``lam * x[i] + (1 - lam) * x[perm[i]]`` and keeps row ``i``'s categorical codes; its loss is
    ``lam * loss(y) + (1 - lam) * loss(y[perm])`` (``combine`` computes it for any loss).

    Attributes:
        numeric: ``(N, n_numeric)`` standardised, augmented numeric features.
        categorical: ``(N, n_categorical)`` codes, unchanged.
        y: Targets, unchanged.
        perm: ``(N,)`` mixing partner of each row, or ``None`` without mixup.
        lam: Mixing weight of the row itself (1.0 without mixup).
    """

    numeric: Tensor
    categorical: Tensor
    y: Tensor
    perm: Tensor | None = None
    lam: float = 1.0

    @property
    def y_perm(self) -> Tensor | None:
        """Targets of the mixing partners, or ``None`` without mixup."""
        return None if self.perm is None else self.y[self.perm]

    def combine(self, loss_of: Callable[[Tensor], Tensor]) -> Tensor:
        """``lam * loss_of(y) + (1 - lam) * loss_of(y[perm])``; ``loss_of(y)`` without mixup.

        Args:
            loss_of: Loss of the batch's predictions against a target tensor.
        """
        if self.perm is None:
            return loss_of(self.y)
        return self.lam * loss_of(self.y) + (1.0 - self.lam) * loss_of(self.y[self.perm])


class BatchAugment(nn.Module):
    """Gaussian noise and mixup on a batch of standardised numeric features (training only).

    Noise: ``x + noise_std * N(0, 1)``, so ``noise_std`` is in units of the feature's std.
    Mixup (Zhang et al., 2018, "mixup: Beyond Empirical Risk Minimization"): one
    ``lam ~ Beta(mixup_alpha, mixup_alpha)`` per batch and a random permutation ``perm``;
    numeric rows are mixed, categorical codes and targets are returned unchanged with ``perm``
    and ``lam`` so the loss can be mixed (see ``AugmentedBatch.combine``). In eval mode, or
    with both options 0, the batch passes through unchanged.

    Args:
        noise_std: Noise std in feature-std units; 0 disables.
        mixup_alpha: Beta concentration; 0 disables mixup.
    """

    def __init__(self, noise_std: float = 0.0, mixup_alpha: float = 0.0) -> None:
        super().__init__()
        if not (noise_std >= 0.0 and math.isfinite(noise_std)):
            raise ValueError(f"noise_std must be a finite number >= 0; got {noise_std}")
        if not (mixup_alpha >= 0.0 and math.isfinite(mixup_alpha)):
            raise ValueError(f"mixup_alpha must be a finite number >= 0; got {mixup_alpha}")
        self.noise_std = float(noise_std)
        self.mixup_alpha = float(mixup_alpha)
        concentration = torch.tensor(self.mixup_alpha or 1.0, dtype=torch.float64)
        self._beta = torch.distributions.Beta(concentration, concentration)

    @classmethod
    def from_config(cls, cfg: AugmentConfig) -> BatchAugment:
        """The batch augmentation of ``cfg`` (its noise and mixup settings)."""
        return cls(noise_std=cfg.noise_std, mixup_alpha=cfg.mixup_alpha)

    @property
    def active(self) -> bool:
        """Whether any batch augmentation is configured."""
        return self.noise_std > 0.0 or self.mixup_alpha > 0.0

    def forward(self, numeric: Tensor, categorical: Tensor, y: Tensor) -> AugmentedBatch:
        """Augment one batch.

        Args:
            numeric: ``(N, n_numeric)`` standardised floats.
            categorical: ``(N, n_categorical)`` integer codes.
            y: ``(N, ...)`` targets.
        """
        if numeric.ndim != 2:
            raise ValueError(f"numeric must be (N, n_numeric); got shape {tuple(numeric.shape)}")
        if not (categorical.shape[0] == y.shape[0] == numeric.shape[0]):
            raise ValueError(
                "numeric, categorical and y must have the same batch size; got "
                f"{numeric.shape[0]}, {categorical.shape[0]} and {y.shape[0]}"
            )
        if not self.training or not self.active:
            return AugmentedBatch(numeric=numeric, categorical=categorical, y=y)
        if self.noise_std > 0.0:
            numeric = numeric + self.noise_std * torch.randn_like(numeric)
        if self.mixup_alpha <= 0.0:
            return AugmentedBatch(numeric=numeric, categorical=categorical, y=y)
        lam = float(self._beta.sample())
        perm = torch.randperm(numeric.shape[0], device=numeric.device)
        mixed = lam * numeric + (1.0 - lam) * numeric[perm]
        return AugmentedBatch(numeric=mixed, categorical=categorical, y=y, perm=perm, lam=lam)

    def extra_repr(self) -> str:
        return f"noise_std={self.noise_std}, mixup_alpha={self.mixup_alpha}"


class ImageAugment(nn.Module):
    """Random affine (rotation + scale) and optional horizontal flip of image batches.

    Uses ``kornia.augmentation``; each transform is applied per image with probability
    ``cfg.p``. Apply it to raw pixel intensities, where 0 is the background that fills the
    corners a rotation exposes. In eval mode images pass through unchanged.

    Args:
        cfg: The transforms.

    Shape:
        - Input: ``(N, C, H, W)`` float, e.g. ``(N, 1, 8, 8)`` for digits.
        - Output: same shape and dtype.
    """

    def __init__(self, cfg: ImageAugmentConfig) -> None:
        super().__init__()
        self.cfg = cfg
        transforms: list[nn.Module] = []
        if cfg.rotation_degrees > 0.0 or cfg.scale != (1.0, 1.0):
            transforms.append(
                K.RandomAffine(
                    degrees=cfg.rotation_degrees,
                    scale=cfg.scale,
                    padding_mode="zeros",
                    p=cfg.p,
                )
            )
        if cfg.hflip:
            transforms.append(K.RandomHorizontalFlip(p=cfg.p))
        self.transforms = nn.Sequential(*transforms)

    def forward(self, images: Tensor) -> Tensor:
        """Transform a batch of images (training mode only)."""
        if images.ndim != 4:
            raise ValueError(f"images must be (N, C, H, W); got shape {tuple(images.shape)}")
        if not images.is_floating_point():
            raise ValueError(f"images must be floating point; got dtype {images.dtype}")
        if not self.training or len(self.transforms) == 0:
            return images
        out: Tensor = self.transforms(images)
        return out
