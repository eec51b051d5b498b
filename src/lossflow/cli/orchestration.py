"""Commands of the orchestration: ``ui`` (MLflow), ``schedule`` (the flows in one process),
``deploy`` and ``worker`` (a Prefect server's work pool)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lossflow.cli.common import (
    ConfigDir,
    FlowOption,
    FlowOverrides,
    SetOption,
    needs,
    needs_prefect_server,
    quiet_prefect,
    settings,
    stderr,
    user_errors,
)
from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.serving import load_serving_config
from lossflow.processes import run_attached


@user_errors
def ui(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="data_dir=data/demo or tracking.tracking_uri=...")
    ] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Open the MLflow UI on the project's tracking store, with a link to each of the project's
    experiments that opens on its runs."""
    from lossflow.tracking import (
        experiment_page,
        project_experiments,
        resolve_tracking_uri,
        ui_command,
    )

    cfg = load_serving_config(settings(overrides), config_dir)
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.data_dir)
    try:
        command = ui_command(uri, port=port)
    except (ValueError, FileNotFoundError) as err:
        stderr().print(f"[red]lossflow ui:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    address = f"http://127.0.0.1:{port}"
    console = Console(soft_wrap=True)
    console.print(f"MLflow UI on {address} for {uri}")
    for name, experiment_id in project_experiments(cfg.tracking, cfg.data_dir).items():
        console.print(f"  {escape(name)}: {experiment_page(address, experiment_id)}")
    raise typer.Exit(run_attached(command))


def _flows(flow: list[str] | None) -> list[str]:
    from lossflow.flows import deployments

    unknown = sorted(set(flow or []) - set(deployments.FLOWS))
    if unknown:
        raise deployments.DeploymentSpecError(
            f"--flow {', '.join(unknown)}: the flows are {', '.join(deployments.FLOWS)}"
        )
    return [name for name in deployments.FLOWS if not flow or name in flow]


@user_errors
def schedule(
    overrides: FlowOverrides = None,
    set_: SetOption = None,
    flow: FlowOption = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Run the flows on one machine: training, monitoring and A/B analysis on their crons,
    retraining on the monitoring's retrain events (a local Prefect server unless
    PREFECT_API_URL names one)."""
    needs("train")
    from prefect import serve as serve_deployments
    from prefect.settings import PREFECT_API_URL

    from lossflow.flows import deployments, server

    shared = settings(overrides)
    per_flow = deployments.split_overrides(set_ or [])
    chosen = deployments.served(config_dir, per_flow, shared, _flows(flow))
    console = Console()
    for d in chosen:
        cron = getattr(d.schedules[0].schedule, "cron", None) if d.schedules else None
        when = f"on cron {cron}" if cron else "on its event trigger"
        console.print(f"deployment [bold]{d.flow_name}/{d.name}[/bold] {when}")
    quiet_prefect(strip_only=True)  # a failed scheduled run is reported; the next one runs
    if PREFECT_API_URL.value():
        console.print(f"Prefect server: {PREFECT_API_URL.value()}; Ctrl-C stops serving")
        serve_deployments(*chosen)
        return
    data_dir = load_serving_config(shared, config_dir).data_dir
    with server.running(data_dir / "prefect", port=4200) as local:
        console.print(
            f"Prefect server started: UI {local.ui_url} (database {local.home}); Ctrl-C stops "
            "serving and the server"
        )
        serve_deployments(*chosen)


WorkPool = Annotated[
    str,
    typer.Option(
        "--work-pool", envvar="LOSSFLOW_WORK_POOL", help="Prefect work pool (a process pool)"
    ),
]


@user_errors
def deploy(
    overrides: FlowOverrides = None,
    set_: SetOption = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    work_pool: WorkPool = "lossflow",
    no_schedule: Annotated[
        bool, typer.Option("--no-schedule", help="crons off: run only when triggered")
    ] = False,
) -> None:
    """Register the four deployments (training, monitoring, ab-analysis on their crons; retrain
    on its event), named after the project's model, on a Prefect server's work pool
    (PREFECT_API_URL); workers run them from this directory (the project root)."""
    needs("train")
    from lossflow.flows import deployments

    shared = settings(overrides)
    per_flow = deployments.split_overrides(set_ or [])
    needs_prefect_server("deploy")
    registered = deployments.deploy(
        config_dir, work_pool, per_flow, Path.cwd(), schedule=not no_schedule, shared=shared
    )
    console = Console()
    for name, deployment_id in registered:
        console.print(
            f"registered deployment '{name}' on work pool '{work_pool}' ({deployment_id})"
        )
    console.print(
        f"start a worker: prefect worker start --pool {work_pool}  (or: lossflow worker); run "
        f"training now: prefect deployment run '{registered[0][0]}'"
    )


@user_errors
def worker(
    overrides: FlowOverrides = None,
    set_: SetOption = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    work_pool: WorkPool = "lossflow",
) -> None:
    """Register the deployments (as `lossflow deploy`), then run a process worker of the pool."""
    deploy(overrides, set_, config_dir, work_pool)
    command = [str(Path(sys.executable).parent / "prefect"), "worker", "start"]
    command += ["--pool", work_pool, "--type", "process"]
    Console().print(f"starting: {' '.join(command[1:])}")
    raise typer.Exit(run_attached(command))
