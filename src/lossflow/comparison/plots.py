"""Figures of a comparison, from plain data (no pyplot state, as in ``evaluation.plots``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from lossflow.comparison.landscape import Landscape, MarginCurve
from lossflow.evaluation.plots import _figure

_COLS = 3


def _grid(n: int, height: float = 3.2) -> tuple[Figure, list[Axes]]:
    cols = min(_COLS, max(1, n))
    rows = math.ceil(max(1, n) / cols)
    fig = _figure((4.2 * cols, height * rows))
    axes = [fig.add_subplot(rows, cols, i + 1) for i in range(max(1, n))]
    return fig, axes


def plot_fold_scores(
    scores: Mapping[str, Sequence[float]],
    intervals: Mapping[str, tuple[float, float, float]],
    metric: str,
) -> Figure:
    """Each arm's fold scores (dots) with its mean and corrected interval (bar)."""
    fig = _figure((max(5.0, 1.2 * len(scores) + 2.0), 4.0))
    ax = fig.add_subplot()
    rng = np.random.default_rng(0)
    for i, (arm, values) in enumerate(scores.items()):
        x = i + rng.uniform(-0.12, 0.12, size=len(values))
        ax.scatter(x, values, s=14, alpha=0.6, color="grey")
        if arm in intervals:
            mean, low, high = intervals[arm]
            ax.errorbar([i], [mean], yerr=[[mean - low], [high - mean]], fmt="o", capsize=6)
    ax.set_xticks(range(len(scores)), list(scores), rotation=20)
    ax.set(ylabel=metric, title=f"{metric} per fold: mean and corrected interval")
    ax.grid(alpha=0.3)
    return fig


def plot_landscape_lines(landscapes: Mapping[str, Landscape]) -> Figure:
    """The loss along one filter-normalised direction, one panel per arm."""
    fig, axes = _grid(len(landscapes))
    for ax, (arm, land) in zip(axes, landscapes.items(), strict=False):
        ax.plot(land.steps, land.line, marker=".")
        ax.axvline(0.0, color="grey", linestyle="--")
        ax.set(title=arm, xlabel="step along the direction", ylabel="training objective")
        ax.grid(alpha=0.3)
    fig.suptitle("Loss along a filter-normalised random direction (Li et al. 2018)")
    return fig


def plot_landscape_contours(landscapes: Mapping[str, Landscape]) -> Figure:
    """The loss over the plane of two filter-normalised directions, one panel per arm."""
    fig, axes = _grid(len(landscapes), height=3.8)
    for ax, (arm, land) in zip(axes, landscapes.items(), strict=False):
        surface = np.log10(np.maximum(land.surface - land.surface.min(), 0.0) + 1e-3)
        contour = ax.contourf(land.grid, land.grid, surface, levels=20, cmap="viridis")
        ax.plot([0.0], [0.0], marker="x", color="white")
        ax.set(title=arm, xlabel="direction 1", ylabel="direction 2")
        fig.colorbar(contour, ax=ax, label="log10(loss - min + 1e-3)")
    fig.suptitle("Loss surface around the trained weights")
    return fig


def plot_loss_vs_margin(curves: Mapping[str, MarginCurve]) -> Figure:
    """Each arm's per-example loss and gradient size against the margin."""
    fig = _figure((11.0, 4.2))
    loss_ax, grad_ax = fig.subplots(1, 2)
    xlabel = "margin"
    for arm, curve in curves.items():
        xlabel = curve.xlabel
        for j, case in enumerate(curve.losses):
            style = "-" if j == 0 else "--"
            label = arm if len(curve.losses) == 1 else f"{arm} ({case})"
            loss_ax.plot(curve.margins, curve.losses[case], style, label=label)
            grad_ax.plot(curve.margins, curve.gradients[case], style, label=label)
    loss_ax.set(xlabel=xlabel, ylabel="loss of one example", title="Loss against the margin")
    grad_ax.set(xlabel=xlabel, ylabel="|d loss / d output|", title="How hard it pulls")
    grad_ax.set_yscale("log")
    for ax in (loss_ax, grad_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return fig


def plot_importances(importances: Mapping[str, Mapping[str, tuple[float, float]]]) -> Figure:
    """Permutation importances of every arm side by side (mean and std over fold models)."""
    features = sorted(
        {f for table in importances.values() for f in table},
        key=lambda f: -max(t.get(f, (0.0, 0.0))[0] for t in importances.values()),
    )
    fig = _figure((8.0, max(3.0, 0.35 * len(features) * max(1, len(importances)) / 2 + 1.5)))
    ax = fig.add_subplot()
    height = 0.8 / max(1, len(importances))
    y = np.arange(len(features))
    for k, (arm, table) in enumerate(importances.items()):
        means = [table.get(f, (0.0, 0.0))[0] for f in features]
        stds = [table.get(f, (0.0, 0.0))[1] for f in features]
        ax.barh(y + k * height, means, height, xerr=stds, label=arm)
    ax.set_yticks(y + 0.4 - height / 2, features)
    ax.invert_yaxis()
    ax.axvline(0.0, color="grey")
    ax.set(xlabel="score drop when the feature is shuffled", title="Permutation importance")
    ax.legend(fontsize=8)
    return fig


def plot_later(
    later: Mapping[str, Sequence[tuple[str, float, float, float]]], metric: str
) -> Figure:
    """Each arm's score per held-out month (or part): mean and corrected interval."""
    fig = _figure((8.0, 4.0))
    ax = fig.add_subplot()
    for arm, points in later.items():
        if not points:
            continue
        labels = [p[0] for p in points]
        means = np.array([p[1] for p in points])
        ax.plot(labels, means, marker="o", label=arm)
        ax.fill_between(labels, [p[2] for p in points], [p[3] for p in points], alpha=0.15)
    ax.set(xlabel="held-out month (or part)", ylabel=metric, title=f"{metric} after training")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_hpo_history(trials: Sequence[tuple[int, str, float]], metric: str, better: str) -> Figure:
    """Objective of each completed trial (coloured by arm) and the best so far."""
    fig = _figure((8.0, 4.0))
    ax = fig.add_subplot()
    arms = sorted({arm for _, arm, _ in trials})
    for arm in arms:
        mine = [(n, v) for n, a, v in trials if a == arm]
        ax.scatter([n for n, _ in mine], [v for _, v in mine], label=arm, s=22)
    ordered = sorted(trials)
    if ordered:
        values = np.array([v for _, _, v in ordered])
        best = np.maximum.accumulate(values) if better == "max" else np.minimum.accumulate(values)
        ax.step([n for n, _, _ in ordered], best, where="post", color="black", label="best so far")
    ax.set(xlabel="trial", ylabel=metric, title="Optimisation history")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return fig


def plot_hpo_importances(importances: Mapping[str, float]) -> Figure:
    """fANOVA importances of the searched parameters."""
    names = sorted(importances, key=lambda k: importances[k])
    fig = _figure((7.0, max(2.5, 0.4 * len(names) + 1.2)))
    ax = fig.add_subplot()
    ax.barh(names, [importances[n] for n in names])
    ax.set(xlabel="importance (fANOVA, sums to 1)", title="Parameter importances")
    return fig
