"""Deployments: the flows on schedules from config (``lossflow schedule``)."""

from __future__ import annotations

from pathlib import Path

from prefect.deployments.runner import RunnerDeployment
from prefect.schedules import Cron

from lossflow.config.training import TrainingConfig
from pipelines.training import training


def training_deployment(
    cfg: TrainingConfig, overrides: list[str], config_dir: Path
) -> RunnerDeployment:
    """The ``training`` flow as a deployment on ``cfg.schedule``'s cron, with these overrides."""
    deployment = training.to_deployment(
        name=f"training-{cfg.loss.name}",
        schedule=Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone),
        parameters={"overrides": list(overrides), "config_dir": str(config_dir)},
        tags=["lossflow", f"loss:{cfg.loss.name}"],
    )
    if not isinstance(deployment, RunnerDeployment):
        raise TypeError("training_deployment is synchronous: call it outside an event loop")
    return deployment
