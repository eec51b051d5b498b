"""The flows as deployments, with schedules, triggers and parameters from config.

- ``training`` on ``schedule`` of the training config;
- ``monitoring`` on ``schedule`` of ``configs/monitoring/`` (hourly), over its ``window``;
- ``ab-analysis`` on ``schedule`` of ``configs/ab/`` (hourly, at half past);
- ``retrain``, triggered by the ``lossflow.retrain.requested`` event of the registered model (the
  monitoring flow emits it), the event's payload as its ``request``, at most
  ``trigger.concurrency_limit`` runs at once (the others wait: none is dropped).

Each deployment is named after the project's registered model (``retrain/<model>``), so the
loops of several projects share one Prefect server. Overrides given to every flow (``shared``:
the project choice, ``data_dir=...``) must apply to each of them: one that a flow's configuration
cannot take is refused with the flow's name, never applied to some flows only.

``served`` builds them for ``lossflow schedule`` (one process runs them all); ``deploy`` registers
them with the server at ``PREFECT_API_URL`` on a process work pool whose workers run them from
the project root (``lossflow deploy``, ``lossflow worker``: the production topology).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy
from prefect.deployments.runner import RunnerDeployment
from prefect.events import DeploymentEventTrigger
from prefect.schedules import Cron, Schedule

from lossflow.config.ab import load_ab_config
from lossflow.config.common import ScheduleConfig
from lossflow.config.loader import ConfigError
from lossflow.config.monitoring import load_monitoring_config
from lossflow.config.retrain import RetrainConfig, load_retrain_config
from lossflow.config.training import load_training_config
from lossflow.errors import UserError

FLOWS: Final = ("training", "monitoring", "ab-analysis", "retrain")
# Module paths: a worker imports the flows from the installed lossflow, in the project's directory.
ENTRYPOINTS: Final = {
    "training": "lossflow.flows.training.training",
    "monitoring": "lossflow.flows.monitoring.monitoring",
    "ab-analysis": "lossflow.flows.ab_analysis.ab_analysis",
    "retrain": "lossflow.flows.retrain.retrain",
}


class DeploymentSpecError(UserError):
    """A ``--set FLOW:KEY=VALUE`` names no flow, or an override for every flow does not apply
    to one of them; the message says which and what to do."""


class SourceError(UserError, FileNotFoundError):
    """The configuration directory the deployments would read does not exist."""


def split_overrides(items: Sequence[str], extra: Sequence[str] = ()) -> dict[str, list[str]]:
    """``["training:loss=bce", "retrain:cooldown=1h"]`` -> per flow, its overrides (``extra``:
    other processes that may take some, such as ``serving`` in a rehearsal).

    Raises:
        DeploymentSpecError: an item is not ``FLOW:KEY=VALUE`` for a known flow.
    """
    out: dict[str, list[str]] = {name: [] for name in (*FLOWS, *extra)}
    for item in items:
        name, sep, override = item.partition(":")
        if not sep or name not in out or "=" not in override:
            raise DeploymentSpecError(
                f"--set {item!r}: write FLOW:KEY=VALUE with FLOW one of {', '.join(out)} "
                "(e.g. --set training:loss=bce)"
            )
        out[name].append(override)
    return out


def _cron(schedule: ScheduleConfig) -> Schedule:
    return Cron(schedule.cron, timezone=schedule.timezone)


def retrain_trigger(cfg: RetrainConfig) -> DeploymentEventTrigger:
    """The trigger of the ``retrain`` deployment: the event of this registered model, its
    payload passed whole as ``request``."""
    return DeploymentEventTrigger(
        name=f"retrain {cfg.tracking.registered_model} on {cfg.trigger.event}",
        enabled=cfg.trigger.enabled,
        expect={cfg.trigger.event},
        match={"prefect.resource.id": f"lossflow.model.{cfg.tracking.registered_model}"},
        parameters={
            "request": {
                "__prefect_kind": "json",
                "value": {"__prefect_kind": "jinja", "template": "{{ event.payload | tojson }}"},
            }
        },
    )


@dataclass(frozen=True)
class Spec:
    """One deployment: flow name, deployment name, schedule or trigger, parameters."""

    flow: str
    name: str
    parameters: dict[str, Any]
    cron: Schedule | None = None
    triggers: list[Any] = field(default_factory=list)
    concurrency: ConcurrencyLimitConfig | None = None
    tags: list[str] = field(default_factory=list)


def _load(name: str, shared: Sequence[str], own: Sequence[str], config_dir: Path) -> Any:
    """The configuration of flow ``name``: the overrides for every flow, then its own.

    Raises:
        DeploymentSpecError: an override for every flow does not apply to this one.
        ConfigError: its own overrides or files are wrong.
    """
    loaders = {"training": load_training_config, "monitoring": load_monitoring_config,
               "ab-analysis": load_ab_config, "retrain": load_retrain_config}  # fmt: skip
    if shared:
        try:
            loaders[name](list(shared), config_dir)
        except ConfigError as err:
            raise DeploymentSpecError(
                f"{' '.join(shared)}: overrides given without --set apply to every flow this "
                f"command runs, and the {name} flow cannot take them ({err}); give a flow its "
                "own with --set FLOW:KEY=VALUE (e.g. --set training:loss=bce), or choose the "
                "flows with --flow"
            ) from None
    return loaders[name]([*shared, *own], config_dir)


def specs(
    config_dir: Path,
    overrides: Mapping[str, list[str]] | None = None,
    shared: Sequence[str] = (),
    flows: Sequence[str] = FLOWS,
) -> list[Spec]:
    """The deployments of ``flows`` from the configs: ``shared`` overrides go to every one of
    them, ``overrides`` per flow (as ``split_overrides``) after them.

    Raises:
        DeploymentSpecError: a shared override does not apply to one of the flows.
        ConfigError: a config does not load.
    """
    given = {name: [*shared, *(overrides or {}).get(name, [])] for name in FLOWS}
    directory = str(config_dir.resolve())
    loaded = {name: _load(name, shared, (overrides or {}).get(name, []), config_dir)
              for name in flows}  # fmt: skip
    model = next(iter(loaded.values())).tracking.registered_model
    common = ["lossflow", f"model:{model}"]
    out: list[Spec] = []
    for name, cfg in loaded.items():
        if cfg.tracking.registered_model != model:
            raise DeploymentSpecError(
                f"the {name} flow would serve model {cfg.tracking.registered_model!r}, the others "
                f"{model!r}: one project's flows share its model; set it in the project, not "
                "per flow"
            )
        params = {"overrides": given[name], "config_dir": directory}
        if name == "training":
            out.append(Spec(name, model, params, cron=_cron(cfg.schedule),
                            tags=[*common, f"loss:{cfg.loss.name}"]))  # fmt: skip
        elif name == "monitoring":
            out.append(Spec(name, model, {"since": cfg.window, **params},
                            cron=_cron(cfg.schedule), tags=common))  # fmt: skip
        elif name == "ab-analysis":
            out.append(Spec(name, model, params, cron=_cron(cfg.schedule), tags=common))
        else:
            limit = ConcurrencyLimitConfig(
                limit=cfg.trigger.concurrency_limit,
                collision_strategy=ConcurrencyLimitStrategy.ENQUEUE,
            )
            out.append(Spec(name, model, params, triggers=[retrain_trigger(cfg)],
                            concurrency=limit, tags=common))  # fmt: skip
    return out


def _flow(name: str) -> Any:
    if name == "training":
        from lossflow.flows.training import training

        return training
    if name == "monitoring":
        from lossflow.flows.monitoring import monitoring

        return monitoring
    if name == "ab-analysis":
        from lossflow.flows.ab_analysis import ab_analysis

        return ab_analysis
    from lossflow.flows.retrain import retrain

    return retrain


def served(
    config_dir: Path,
    overrides: Mapping[str, list[str]] | None = None,
    shared: Sequence[str] = (),
    flows: Sequence[str] = FLOWS,
) -> list[RunnerDeployment]:
    """The deployments of ``flows`` for ``prefect.serve`` (``lossflow schedule``)."""
    out = []
    for spec in specs(config_dir, overrides, shared, flows):
        deployment = _flow(spec.flow).to_deployment(
            name=spec.name,
            schedule=spec.cron,
            triggers=spec.triggers or None,
            parameters=spec.parameters,
            concurrency_limit=spec.concurrency,
            tags=spec.tags,
        )
        if not isinstance(deployment, RunnerDeployment):
            raise TypeError("served() is synchronous: call it outside an event loop")
        out.append(deployment)
    return out


def deploy(
    config_dir: Path,
    work_pool: str,
    overrides: Mapping[str, list[str]] | None = None,
    source: Path | None = None,
    *,
    schedule: bool = True,
    shared: Sequence[str] = (),
) -> list[tuple[str, str]]:
    """Register the deployments with the server at ``PREFECT_API_URL`` on ``work_pool`` (a
    process pool, created when missing). A worker of the pool runs them in ``source`` (the
    project's directory; ``None``: the parent of ``config_dir``; in the images: /app), importing
    the flows from the installed lossflow; the configs are ``config_dir`` as seen from here,
    and a relative ``data_dir`` is pinned to where it is from here, so a worker in any directory
    reads and writes the project's stores. The crons apply unless ``schedule`` is false (the retrain
    trigger always does). Registering again updates them in place.

    Returns:
        ``(flow/deployment name, id)`` per deployment.

    Raises:
        SourceError: the config directory does not exist.
    """
    from prefect import Flow
    from prefect import flow as prefect_flow

    configs = config_dir.absolute()
    if not configs.is_dir():
        raise SourceError(
            f"{configs} does not exist: run `lossflow deploy` from the project root (in the "
            "images: /app), where configs/ is, or pass --config-dir"
        )
    data_dir = load_training_config(list(shared), configs).data_dir
    if not data_dir.is_absolute():
        shared = [*shared, f"data_dir={data_dir.absolute()}"]
    ensure_process_pool(work_pool)
    out = []
    for spec in specs(configs, overrides, shared):
        loaded = prefect_flow.from_source(
            source=str(source or configs.parent), entrypoint=ENTRYPOINTS[spec.flow]
        )
        if not isinstance(loaded, Flow):
            raise TypeError("deploy() is synchronous: call it outside an event loop")
        deployment_id = loaded.deploy(
            name=spec.name,
            work_pool_name=work_pool,
            schedule=spec.cron if schedule else None,
            triggers=spec.triggers or None,
            parameters=spec.parameters,
            concurrency_limit=spec.concurrency,
            tags=spec.tags,
            build=False,
            push=False,
            print_next_steps=False,
        )
        out.append((f"{loaded.name}/{spec.name}", str(deployment_id)))
    return out


def ensure_process_pool(name: str) -> bool:
    """Create the process work pool ``name`` unless it exists; True when it was created."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists
    from prefect.workers.process import ProcessWorker

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
