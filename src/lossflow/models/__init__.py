"""Networks (plain ``nn.Module``) and the one LightningModule that trains them."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from lossflow.config import ModelConfig
from lossflow.losses import LossSpecBase, TaskType
from lossflow.losses.composite import leaf_losses
from lossflow.models.nets import InferenceModel, SmallCNN, TabularMLP

__all__ = ["InferenceModel", "OutputSpec", "SmallCNN", "TabularMLP", "build_network", "output_spec"]


@dataclass(frozen=True)
class OutputSpec:
    """Width of the network's output and the transform that turns it into a prediction."""

    dim: int
    transform: str


def output_spec(loss: LossSpecBase, task: TaskType, n_classes: int) -> OutputSpec:
    """What the network must output for ``loss`` on ``task`` and how to read it.

    A Gaussian NLL needs a mean and a log-variance (the prediction is the mean); a Poisson NLL
    takes a log-rate (the prediction is its exponential); classification outputs logits that
    become probabilities.
    """
    names = leaf_losses(loss)
    if task == "binary" or task == "multilabel":
        return OutputSpec(1, "sigmoid")
    if task == "multiclass":
        return OutputSpec(n_classes, "softmax")
    if task == "regression":
        if "gaussian_nll" in names:
            if names != {"gaussian_nll"}:
                raise ValueError("gaussian_nll outputs (mean, log-variance): it cannot be combined")
            return OutputSpec(2, "first")
        if "poisson_nll" in names:
            if names != {"poisson_nll"}:
                raise ValueError("poisson_nll outputs a log-rate: it cannot be combined")
            return OutputSpec(1, "exp")
        return OutputSpec(1, "identity")
    return OutputSpec(1, "identity")


def build_network(
    cfg: ModelConfig,
    preprocess: nn.Module,
    n_numeric: int,
    cardinalities: list[int],
    out_dim: int,
    *,
    image_side: int | None = None,
) -> nn.Module:
    """The configured network with the fitted preprocessing layer in front."""
    if cfg.kind == "cnn":
        if image_side is None or image_side * image_side != n_numeric or cardinalities:
            raise ValueError(
                "model.kind 'cnn' needs square single-channel images as numeric pixel columns"
            )
        return SmallCNN(preprocess, image_side, cfg.channels, out_dim, dropout=cfg.dropout)
    return TabularMLP(
        preprocess,
        n_numeric,
        cardinalities,
        cfg.hidden,
        out_dim,
        activation=cfg.activation,
        dropout=cfg.dropout,
        embedding_dim=cfg.embedding_dim,
    )
