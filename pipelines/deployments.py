"""Deployments: the flows on schedules from config (``lossflow schedule``), or registered on a
work pool that workers poll (``lossflow deploy``, ``lossflow worker``: the production topology).
"""

from __future__ import annotations

from pathlib import Path
from uuid import UUID

from prefect import Flow
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.deployments.runner import RunnerDeployment
from prefect.exceptions import ObjectAlreadyExists
from prefect.schedules import Cron
from prefect.workers.process import ProcessWorker

from lossflow.config.training import TrainingConfig
from lossflow.errors import UserError
from pipelines.training import training

# The training flow's file, relative to the project root the workers run it from.
TRAINING_ENTRYPOINT = "pipelines/training.py:training"


class SourceError(UserError, FileNotFoundError):
    """The directory a deployment would run from does not hold the flows and configs."""


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


def ensure_process_pool(name: str) -> bool:
    """Create the process work pool ``name`` unless it exists; True when it was created."""
    with get_client(sync_client=True) as client:
        try:
            client.create_work_pool(
                WorkPoolCreate(
                    name=name,
                    type=ProcessWorker.type,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="lossflow flows run by `lossflow worker` (process workers)",
                )
            )
        except ObjectAlreadyExists:
            return False
    return True


def register_training(
    cfg: TrainingConfig,
    overrides: list[str],
    config_dir: Path,
    work_pool: str,
    source: Path,
    *,
    schedule: bool = True,
) -> tuple[str, UUID]:
    """Register the training flow on ``work_pool`` (a process pool, created when missing).

    A worker of the pool runs it from ``source`` (a project checkout or the image's ``/app``),
    on ``cfg.schedule``'s cron unless ``schedule`` is false, or when triggered (``prefect
    deployment run training/<name>``). Registering again updates the deployment in place.

    Returns:
        The deployment's name (``training-<loss>``) and id.

    Raises:
        SourceError: ``source`` has no ``pipelines/training.py`` (or, with a relative
            ``config_dir``, no such directory).
    """
    entry = source / TRAINING_ENTRYPOINT.partition(":")[0]
    configs = config_dir if config_dir.is_absolute() else source / config_dir
    if not entry.is_file() or not configs.is_dir():
        raise SourceError(
            f"{source} has no {entry.relative_to(source)} or no {config_dir}/: run `lossflow "
            "deploy` from the project root (in the images: /app), where pipelines/ and "
            "configs/ are"
        )
    ensure_process_pool(work_pool)
    name = f"training-{cfg.loss.name}"
    flow = training.from_source(source=str(source), entrypoint=TRAINING_ENTRYPOINT)
    if not isinstance(flow, Flow):
        raise TypeError("register_training is synchronous: call it outside an event loop")
    deployment_id = flow.deploy(
        name=name,
        work_pool_name=work_pool,
        schedule=Cron(cfg.schedule.cron, timezone=cfg.schedule.timezone) if schedule else None,
        parameters={"overrides": list(overrides), "config_dir": str(config_dir)},
        tags=["lossflow", f"loss:{cfg.loss.name}"],
        build=False,
        push=False,
        print_next_steps=False,
    )
    if not isinstance(deployment_id, UUID):
        raise TypeError("register_training is synchronous: call it outside an event loop")
    return name, deployment_id


# The monitoring flow (issue: monitoring) registers here beside training once it exists.
