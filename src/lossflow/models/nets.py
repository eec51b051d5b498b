"""Plain ``nn.Module`` networks. They take raw numeric features (NaN allowed) and categorical
codes; the fitted preprocessing layer is their first layer, so it is exported with them."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from lossflow.data.preprocessing import Preprocessor

_ACTIVATIONS: dict[str, type[nn.Module]] = {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU}


class Standardize(nn.Module):
    """Impute missing numerics with the training fill value, then standardise.

    ``y = (where(isnan(x), fill, x) - mean) / std``, column-wise; all three statistics come from
    the training split. Built by ``Standardize.of(preprocessor)``; exported with the network.

    Args:
        fill: ``(n_numeric,)`` value replacing NaN.
        mean: ``(n_numeric,)`` training mean (of the imputed column).
        std: ``(n_numeric,)`` training standard deviation; must be positive.

    Shape:
        - Input: ``(N, n_numeric)`` float.
        - Output: same shape and dtype.
    """

    fill: Tensor
    mean: Tensor
    std: Tensor

    def __init__(self, fill: Tensor, mean: Tensor, std: Tensor) -> None:
        super().__init__()
        shapes = {tuple(fill.shape), tuple(mean.shape), tuple(std.shape)}
        if len(shapes) != 1 or fill.ndim != 1:
            raise ValueError(
                "Standardize needs fill, mean and std of the same 1-D shape; got "
                f"{tuple(fill.shape)}, {tuple(mean.shape)} and {tuple(std.shape)}"
            )
        if not bool(torch.all(std > 0)):
            raise ValueError("Standardize needs std > 0 in every column")
        self.register_buffer("fill", fill.detach().clone().float())
        self.register_buffer("mean", mean.detach().clone().float())
        self.register_buffer("std", std.detach().clone().float())

    def forward(self, x: Tensor) -> Tensor:
        """Impute then standardise ``x``."""
        fill = self.fill.to(x.dtype)
        filled = torch.where(torch.isnan(x), fill, x)
        return (filled - self.mean.to(x.dtype)) / self.std.to(x.dtype)

    @classmethod
    def of(cls, pre: Preprocessor) -> Standardize:
        """The imputation and scaling fitted in ``pre`` (float32 buffers)."""
        return cls(
            fill=torch.tensor(pre.fill, dtype=torch.float32).reshape(-1),
            mean=torch.tensor(pre.mean, dtype=torch.float32).reshape(-1),
            std=torch.tensor(pre.std, dtype=torch.float32).reshape(-1),
        )


def embedding_width(cardinality: int, configured: int | None) -> int:
    """Embedding width of a categorical column: configured, else ``min(16, (n + 1) // 2)``."""
    return configured if configured is not None else max(1, min(16, (cardinality + 1) // 2))


def _mlp(widths: Sequence[int], out_dim: int, activation: str, dropout: float) -> nn.Sequential:
    if activation not in _ACTIVATIONS:
        raise ValueError(f"activation must be one of {', '.join(_ACTIVATIONS)}; got {activation!r}")
    layers: list[nn.Module] = []
    for w_in, w_out in itertools.pairwise(widths):
        layers += [nn.Linear(w_in, w_out), _ACTIVATIONS[activation]()]
        if dropout > 0:
            layers.append(nn.Dropout(dropout))
    layers.append(nn.Linear(widths[-1], out_dim))
    return nn.Sequential(*layers)


class TabularMLP(nn.Module):
    """MLP over standardised numeric features and one embedding per categorical column.

    Args:
        preprocess: maps raw numeric features ``(N, F)`` (NaN allowed) to standardised ones.
        n_numeric: ``F``.
        cardinalities: per categorical column, the number of codes (code 0 = unknown).
        hidden: hidden layer widths.
        out_dim: output width (1 for binary/regression, C for multiclass, 2 for mean+log-variance).
        embedding_dim: width of every embedding; None: ``min(16, (n + 1) // 2)`` per column.
    """

    def __init__(
        self,
        preprocess: nn.Module,
        n_numeric: int,
        cardinalities: Sequence[int],
        hidden: Sequence[int],
        out_dim: int,
        *,
        activation: str = "relu",
        dropout: float = 0.0,
        embedding_dim: int | None = None,
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        widths = [embedding_width(n, embedding_dim) for n in cardinalities]
        self.embeddings = nn.ModuleList(
            nn.Embedding(n, w) for n, w in zip(cardinalities, widths, strict=True)
        )
        width = n_numeric + sum(widths)
        if width == 0:
            raise ValueError("the network has no input features")
        self.body = _mlp([width, *hidden], out_dim, activation, dropout)

    def forward(self, numeric: Tensor, categorical: Tensor | None = None) -> Tensor:
        parts = [self.preprocess(numeric)]
        if categorical is not None:
            parts += [emb(categorical[:, i]) for i, emb in enumerate(self.embeddings)]
        out: Tensor = self.body(torch.cat(parts, dim=1) if len(parts) > 1 else parts[0])
        return out


class SmallCNN(nn.Module):
    """Convolutional net for square single-channel images given as flat pixel rows.

    Args:
        preprocess: maps raw pixels ``(N, side*side)`` to standardised pixels.
        side: image side (8 for scikit-learn's digits).
        channels: output channels of each conv block (conv 3x3, ReLU, 2x2 max-pool).
        out_dim: number of classes.
    """

    def __init__(
        self,
        preprocess: nn.Module,
        side: int,
        channels: Sequence[int],
        out_dim: int,
        *,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.preprocess = preprocess
        self.side = side
        blocks: list[nn.Module] = []
        c_in, size = 1, side
        for c_out in channels:
            blocks += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
            if size >= 4:
                blocks.append(nn.MaxPool2d(2))
                size //= 2
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.head = nn.Sequential(
            nn.Flatten(), nn.Dropout(dropout), nn.Linear(c_in * size * size, out_dim)
        )

    def forward(self, numeric: Tensor) -> Tensor:
        x = self.preprocess(numeric).reshape(-1, 1, self.side, self.side)
        out: Tensor = self.head(self.features(x))
        return out


class TargetScale(nn.Module):
    """The output layer of a regression network in the target's own unit.

    ``y = mean + std * z`` of the network's output ``z`` (its first column for a mean/log-
    variance output, whose log-variance gains ``2 log std``; a Poisson log-rate gains
    ``log mean``), with the training target's mean and standard deviation: an untrained network
    (``z`` near 0) predicts about the mean, and a unit of ``z`` is a standard deviation of the
    target, so a target in the hundreds trains in as few steps as a standardised one, while the
    loss (and every scale parameter of it, such as Huber's ``delta``) sees the target's unit.
    Exported with the network.

    Args:
        net: The network.
        output: Its output transform (``identity``, ``first`` or ``exp``).
        mean: Training target mean.
        std: Training target standard deviation (> 0).
    """

    mean: Tensor
    std: Tensor

    def __init__(self, net: nn.Module, output: str, mean: float, std: float) -> None:
        super().__init__()
        if not std > 0:
            raise ValueError(f"TargetScale needs std > 0; got {std}")
        if output == "exp" and not mean > 0:
            raise ValueError(f"TargetScale of a Poisson log-rate needs a positive mean; got {mean}")
        self.net = net
        self.output = output
        self.register_buffer("mean", torch.tensor(float(mean)))
        self.register_buffer("std", torch.tensor(float(std)))

    def forward(self, numeric: Tensor, categorical: Tensor | None = None) -> Tensor:
        out: Tensor = self.net(numeric) if categorical is None else self.net(numeric, categorical)
        mean, std = self.mean.to(out.dtype), self.std.to(out.dtype)
        if self.output == "exp":
            return out + torch.log(mean)
        if self.output == "first":
            return torch.cat([mean + std * out[..., :1], out[..., 1:] + 2 * torch.log(std)], -1)
        return mean + std * out


class InferenceModel(nn.Module):
    """What is exported and served: the network followed by its output transform.

    ``output``: ``sigmoid`` (binary probability, shape ``(N,)``), ``softmax`` (class
    probabilities), ``exp`` (Poisson rate from a log-rate), ``first`` (the mean column of a
    mean/log-variance output) or ``identity``.
    """

    OUTPUTS = ("sigmoid", "softmax", "exp", "first", "identity")

    def __init__(self, net: nn.Module, output: str) -> None:
        super().__init__()
        if output not in self.OUTPUTS:
            raise ValueError(f"output must be one of {', '.join(self.OUTPUTS)}; got {output!r}")
        self.net = net
        self.output = output

    def forward(self, numeric: Tensor, categorical: Tensor | None = None) -> Tensor:
        out: Tensor = self.net(numeric) if categorical is None else self.net(numeric, categorical)
        if self.output == "sigmoid":
            return torch.sigmoid(out.squeeze(-1))
        if self.output == "softmax":
            return torch.softmax(out, dim=-1)
        if self.output == "exp":
            return torch.exp(out.squeeze(-1))
        if self.output == "first":
            return out[..., 0]
        return out.squeeze(-1) if out.shape[-1] == 1 else out
