"""Loss landscapes around trained weights and loss functions against the margin.

The landscape follows Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of
Neural Nets" (NeurIPS 2018): a random Gaussian direction ``d`` of the same shape as the weights
is **filter-normalised** -- each filter ``d_i`` (a row of a linear or embedding weight, an output
channel of a convolution kernel) is rescaled to the norm of the trained filter ``θ_i``,
``d_i <- d_i / ||d_i|| * ||θ_i||`` -- and biases and other one-dimensional parameters get a zero
direction (the paper's ``ignore biasbn``), so the scale of the plot is comparable across
networks and losses. The loss is then evaluated at ``θ + α d`` (a line) and ``θ + α d + β e``
(a surface, with a second direction ``e``).

The margin curves show how each loss weighs easy and hard examples: the loss of one example and
the size of its gradient as its margin goes from very wrong to very right.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
from torch import Tensor, nn

FloatArray = npt.NDArray[np.float64]


def filter_normalized_direction(net: nn.Module, generator: torch.Generator) -> list[Tensor]:
    """A random direction in ``net``'s parameter space, filter-normalised (Li et al. 2018).

    Returns one tensor per parameter of ``net.parameters()``, in that order: zero for
    parameters with fewer than two dimensions; otherwise Gaussian, with each filter (slice along
    the first dimension) scaled to the norm of the same filter of the weights.
    """
    directions: list[Tensor] = []
    for param in net.parameters():
        weights = param.detach()
        noise = torch.randn(weights.shape, generator=generator, dtype=weights.dtype)
        if weights.dim() < 2:
            directions.append(torch.zeros_like(weights))
            continue
        flat_noise = noise.reshape(noise.shape[0], -1)
        flat_weights = weights.reshape(weights.shape[0], -1)
        scale = flat_weights.norm(dim=1, keepdim=True) / flat_noise.norm(
            dim=1, keepdim=True
        ).clamp_min(torch.finfo(weights.dtype).tiny)
        directions.append((flat_noise * scale).reshape(weights.shape))
    return directions


@dataclass(frozen=True)
class Landscape:
    """The loss along one direction and over the plane of two.

    Attributes:
        steps: the step sizes ``α`` of the line (``-span .. span``).
        line: the loss at ``θ + α d`` for each step.
        grid: the step sizes of each axis of the plane.
        surface: ``surface[j, i]`` is the loss at ``θ + grid[i] d + grid[j] e``.
        center: the loss at the trained weights ``θ``.
    """

    steps: FloatArray
    line: FloatArray
    grid: FloatArray
    surface: FloatArray
    center: float


def loss_landscape(
    objective: Callable[[], float],
    net: nn.Module,
    *,
    points_1d: int,
    points_2d: int,
    span: float,
    seed: int,
) -> Landscape:
    """Evaluate ``objective`` around ``net``'s current weights along filter-normalised
    directions; the weights are restored afterwards.

    Args:
        objective: the loss at the network's current weights (e.g. the training objective on a
            fixed batch, in eval mode).
        net: the network whose parameters are moved.
        points_1d: points on the line.
        points_2d: points per axis of the plane.
        span: the steps go from ``-span`` to ``span``.
        seed: seed of the two directions (the same for every arm, so each arm's plot uses the
            same random draw, normalised to its own weights).
    """
    params = list(net.parameters())
    trained = [p.detach().clone() for p in params]
    generator = torch.Generator().manual_seed(seed)
    first = filter_normalized_direction(net, generator)
    second = filter_normalized_direction(net, generator)

    def at(alpha: float, beta: float) -> float:
        with torch.no_grad():
            for p, theta, d, e in zip(params, trained, first, second, strict=True):
                p.copy_(theta + alpha * d + beta * e)
        return float(objective())

    steps = np.linspace(-span, span, points_1d)
    grid = np.linspace(-span, span, points_2d)
    try:
        line = np.array([at(float(a), 0.0) for a in steps])
        surface = np.array([[at(float(a), float(b)) for a in grid] for b in grid])
        center = at(0.0, 0.0)
    finally:
        with torch.no_grad():
            for p, theta in zip(params, trained, strict=True):
                p.copy_(theta)
    return Landscape(steps, line, grid, surface, center)


@dataclass(frozen=True)
class MarginCurve:
    """One loss of one example, and the size of its gradient, against the example's margin.

    Attributes:
        margins: the margins (binary: the logit signed so that positive is right; multiclass:
            the true class's logit minus the others'; regression: prediction minus target).
        losses: a curve per case (``y=1``, ``y=0`` for binary; ``true class``; ``residual``).
        gradients: ``|dℓ/dz|`` per case, at the same margins.
        xlabel: what the margin axis means.
    """

    margins: FloatArray
    losses: dict[str, FloatArray]
    gradients: dict[str, FloatArray]
    xlabel: str


def _curve(
    loss: nn.Module, margins: FloatArray, make: Callable[[Tensor], tuple[Tensor, Tensor]]
) -> tuple[FloatArray, FloatArray]:
    values, grads = [], []
    for m in margins:
        z = torch.tensor(float(m), dtype=torch.float32, requires_grad=True)
        output, target = make(z)
        value = loss(output, target)
        (grad,) = torch.autograd.grad(value, z)
        values.append(float(value.detach()))
        grads.append(abs(float(grad)))
    return np.array(values), np.array(grads)


def loss_vs_margin(
    loss: nn.Module, task: str, *, n_classes: int, span: float, points: int = 121
) -> MarginCurve | None:
    """The per-example loss of ``loss`` and its gradient size from margin ``-span`` to ``span``.

    Args:
        loss: a loss module taking raw outputs (logits) and targets.
        task: ``binary``, ``multiclass`` or ``regression`` (a point-prediction loss).
        n_classes: classes of a multiclass task.
        span: the largest margin (a residual in target units for regression).
        points: points on the curve.

    Returns:
        The curves, or None for a task without a margin.
    """
    margins = np.linspace(-span, span, points)
    cases: dict[str, Callable[[Tensor], tuple[Tensor, Tensor]]]
    if task == "binary":
        cases = {
            "y=1": lambda z: (z.reshape(1), torch.ones(1)),
            "y=0": lambda z: ((-z).reshape(1), torch.zeros(1)),
        }
        xlabel = "margin (logit, signed: > 0 is right)"
    elif task == "multiclass":

        def true_class(z: Tensor) -> tuple[Tensor, Tensor]:
            logits = torch.cat([z.reshape(1), torch.zeros(n_classes - 1)]).reshape(1, -1)
            return logits, torch.zeros(1, dtype=torch.long)

        cases = {"true class": true_class}
        xlabel = "margin (true-class logit minus the others)"
    elif task == "regression":
        cases = {"residual": lambda z: (z.reshape(1), torch.zeros(1))}
        xlabel = "residual (prediction - target)"
    else:
        return None
    losses: dict[str, FloatArray] = {}
    gradients: dict[str, FloatArray] = {}
    for name, make in cases.items():
        losses[name], gradients[name] = _curve(loss, margins, make)
    return MarginCurve(margins, losses, gradients, xlabel)
