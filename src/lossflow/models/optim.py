"""Optimizers and learning-rate schedules by name.

The names are declared in :mod:`lossflow.config.training` (``OPTIMIZER_NAMES``,
``SCHEDULER_NAMES``), where the configuration checks them without importing torch; the builders
register here under exactly those names (the registries refuse any other, and a test checks that
every declared name has a builder). An optimizer builder takes the parameter groups and the
``optimizer`` section; a scheduler builder takes the optimizer, the ``scheduler`` section and the
epoch horizon, and returns what Lightning's ``configure_optimizers`` accepts for it (``None``: no
schedule).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from lossflow.config.training import (
    OPTIMIZER_NAMES,
    SCHEDULER_NAMES,
    OptimizerConfig,
    SchedulerConfig,
)
from lossflow.registry import Registry

ParamGroups = list[dict[str, Any]]
OptimizerBuilder = Callable[[ParamGroups, OptimizerConfig], torch.optim.Optimizer]
SchedulerBuilder = Callable[[torch.optim.Optimizer, SchedulerConfig, int], Any]

OPTIMIZERS: Registry[OptimizerBuilder] = Registry("optimizer", declared=OPTIMIZER_NAMES)
SCHEDULERS: Registry[SchedulerBuilder] = Registry("scheduler", declared=SCHEDULER_NAMES)


@OPTIMIZERS.decorator("sgd")
def sgd(groups: ParamGroups, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """SGD with momentum ``cfg.momentum``."""
    return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum)


@OPTIMIZERS.decorator("adam")
def adam(groups: ParamGroups, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adam; ``weight_decay`` (per group) is an L2 term added to the gradient."""
    return torch.optim.Adam(groups, lr=cfg.lr)


@OPTIMIZERS.decorator("adamw")
def adamw(groups: ParamGroups, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """AdamW; ``weight_decay`` (per group) is decoupled from the gradient."""
    return torch.optim.AdamW(groups, lr=cfg.lr)


@OPTIMIZERS.decorator("rmsprop")
def rmsprop(groups: ParamGroups, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """RMSprop with momentum ``cfg.momentum``."""
    return torch.optim.RMSprop(groups, lr=cfg.lr, momentum=cfg.momentum)


@OPTIMIZERS.decorator("adagrad")
def adagrad(groups: ParamGroups, cfg: OptimizerConfig) -> torch.optim.Optimizer:
    """Adagrad."""
    return torch.optim.Adagrad(groups, lr=cfg.lr)


@SCHEDULERS.decorator("none")
def constant(optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_epochs: int) -> None:
    """A constant learning rate."""
    return None


@SCHEDULERS.decorator("cosine")
def cosine(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Cosine annealing to 0 over ``max_epochs``."""
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max_epochs)


@SCHEDULERS.decorator("step")
def step(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_epochs: int
) -> torch.optim.lr_scheduler.LRScheduler:
    """Multiply the rate by ``gamma`` every ``step_size`` epochs."""
    return torch.optim.lr_scheduler.StepLR(optimizer, step_size=cfg.step_size, gamma=cfg.gamma)


@SCHEDULERS.decorator("plateau")
def plateau(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_epochs: int
) -> dict[str, Any]:
    """Multiply the rate by ``gamma`` after ``patience`` epochs without a lower ``val/loss``."""
    scheduler = torch.optim.lr_scheduler.ReduceLROnPlateau(
        optimizer, mode="min", factor=cfg.gamma, patience=cfg.patience
    )
    return {"scheduler": scheduler, "monitor": "val/loss"}


def build_optimizer(
    cfg: OptimizerConfig, net: torch.nn.Module, extra: list[torch.nn.Parameter]
) -> torch.optim.Optimizer:
    """The configured optimizer; ``weight_decay`` applies to the network, never to loss
    parameters (``extra``, e.g. learned composite weights)."""
    groups: ParamGroups = [
        {
            "params": [p for p in net.parameters() if p.requires_grad],
            "weight_decay": cfg.weight_decay,
        }
    ]
    if extra:
        groups.append({"params": extra, "weight_decay": 0.0})
    return OPTIMIZERS.lookup(cfg.name)(groups, cfg)


def optimizers_and_schedule(
    optimizer: torch.optim.Optimizer, cfg: SchedulerConfig, max_epochs: int
) -> Any:
    """What ``LightningModule.configure_optimizers`` returns for ``optimizer`` under ``cfg``."""
    schedule = SCHEDULERS.lookup(cfg.name)(optimizer, cfg, max_epochs)
    if schedule is None:
        return optimizer
    return {"optimizer": optimizer, "lr_scheduler": schedule}
