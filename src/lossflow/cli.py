"""The ``lossflow`` command line."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.console import Console
from rich.table import Table

from lossflow.config import (
    DEFAULT_CONFIG_DIR,
    ConfigError,
    LossflowConfig,
    ServingConfig,
    load_config,
    load_serving_config,
)
from lossflow.losses import TaskType, available_losses
from lossflow.tracking import resolve_tracking_uri, ui_command

app = typer.Typer(
    name="lossflow",
    help="lossflow: the loss function as a first-class production decision.",
    no_args_is_help=True,
    add_completion=False,
)


# Telemetry stays off; Prefect's temporary local server gets time to start on a busy machine.
ENVIRONMENT = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "ORT_DISABLE_TELEMETRY": "1",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}


@app.callback()
def main() -> None:
    """lossflow command line."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    # lightning 2.6 on torch 2.13 warns about its own use of a deprecated torch API.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@app.command()
def losses(
    task: Annotated[
        str | None, typer.Option(help=f"only losses for this task: {', '.join(get_args(TaskType))}")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the catalogue as JSON")] = False,
) -> None:
    """Print the loss catalogue: names, task types, options with defaults, references."""
    known = get_args(TaskType)
    if task is not None and task not in known:
        raise typer.BadParameter(
            f"unknown task {task!r}; known: {', '.join(known)}", param_hint="--task"
        )
    catalogue = [info for info in available_losses() if task is None or task in info.tasks]
    if as_json:
        typer.echo(json.dumps([asdict(info) for info in catalogue], indent=2, default=str))
        return
    table = Table(title=f"lossflow losses ({len(catalogue)})", show_lines=True)
    table.add_column("name", style="bold")
    table.add_column("tasks")
    table.add_column("options (default)")
    table.add_column("what it is")
    table.add_column("tested against")
    for info in catalogue:
        options = "\n".join(
            f"{p.name}=" + ("(required)" if p.required else repr(p.default))
            for p in info.parameters
        )
        table.add_row(info.name, ", ".join(info.tasks), options, info.summary, info.reference)
    # Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else 170).print(table)


ConfigDir = Annotated[Path, typer.Option("--config-dir", help="configuration directory")]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="config overrides: loss=focal loss.gamma=3 trainer.max_epochs=5"),
]


def _config_or_exit(overrides: list[str], config_dir: Path) -> LossflowConfig:
    try:
        return load_config(overrides, config_dir)
    except ConfigError as err:
        Console(stderr=True).print(f"[red]configuration error:[/red] {err}")
        raise typer.Exit(2) from None


def _serving_config_or_exit(overrides: list[str], config_dir: Path) -> ServingConfig:
    try:
        return load_serving_config(overrides, config_dir)
    except ConfigError as err:
        Console(stderr=True).print(f"[red]configuration error:[/red] {err}")
        raise typer.Exit(2) from None


@app.command()
def train(
    overrides: Overrides = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    resume: Annotated[
        str | None, typer.Option(help="continue from this run's last checkpoint")
    ] = None,
) -> None:
    """Run the training flow: prepare → train → evaluate → export + parity → register."""
    from pipelines.training import training

    cfg = _config_or_exit(overrides or [], config_dir)
    console = Console()
    console.print(
        f"training [bold]{cfg.data.source}[/bold] ({cfg.data.task}) with loss "
        f"[bold]{cfg.loss.name}[/bold] for up to {cfg.trainer.max_epochs} epochs"
    )
    outcome = training(
        overrides=overrides or [],
        config_dir=str(config_dir),
        resume_run=resume,
        progress_bar=sys.stdout.isatty(),
    )
    table = Table(title="test metrics", show_header=False)
    for key, value in sorted(outcome.metrics.items()):
        table.add_row(key, f"{value:.4f}")
    console.print(table)
    console.print(f"run id:        {outcome.run_id}")
    console.print(f"loss id:       {outcome.loss_id}")
    console.print(
        f"model version: {outcome.model_name} v{outcome.model_version} "
        f"(aliases: {', '.join(outcome.aliases)})"
    )
    console.print(f"ONNX file:     {outcome.onnx_path}")
    console.print(f"open the UI:   lossflow ui   (tracking store {outcome.tracking_uri})")


@app.command()
def ui(
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Open the MLflow UI on the project's tracking store."""
    cfg = _config_or_exit([], config_dir)
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.data_dir)
    command = ui_command(uri, port=port)
    Console().print(f"MLflow UI on http://127.0.0.1:{port} for {uri}")
    raise typer.Exit(subprocess.call(command))


@app.command()
def schedule(
    overrides: Overrides = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Serve the training flow as a deployment on the configured cron schedule."""
    from pipelines.deployments import training_deployment
    from prefect import serve

    cfg = _config_or_exit(overrides or [], config_dir)
    deployment = training_deployment(cfg, overrides or [], config_dir)
    Console().print(
        f"serving deployment '{deployment.name}' on cron '{cfg.schedule.cron}' "
        f"({cfg.schedule.timezone}); Ctrl-C stops it"
    )
    serve(deployment)


@app.command()
def serve(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="service overrides: serving=<file in configs/serving> port=8001 "
            "variants.champion.weight=90 log.url=postgresql://..."
        ),
    ] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Serve the registered ONNX models over HTTP: A/B split, prediction log, feedback."""
    import uvicorn

    from lossflow.serving.app import create_app
    from lossflow.serving.jsonlog import configure_json_logging

    cfg = _serving_config_or_exit(overrides or [], config_dir)
    configure_json_logging()
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(cfg),
            host=cfg.host,
            port=cfg.port,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(cfg.log.drain_timeout_s),
        )
    )
    server.run()
    if not server.started:
        # uvicorn logged why (e.g. a model that cannot be loaded, a port in use).
        raise typer.Exit(3)


@app.command()
def traffic(
    url: Annotated[str, typer.Option(help="base URL of the running service")] = (
        "http://127.0.0.1:8000"
    ),
    rate: Annotated[float, typer.Option(help="requests per second (open loop)")] = 20.0,
    limit: Annotated[int | None, typer.Option(help="replay only the first N rows")] = None,
    months: Annotated[
        list[int] | None,
        typer.Option("--months", help="keep this month (1-12); repeat: --months 9 --months 10"),
    ] = None,
    data: Annotated[
        Path | None,
        typer.Option(help="parquet/CSV of raw rows; default: the newest production.parquet"),
    ] = None,
    time_column: Annotated[
        str | None, typer.Option(help="timestamp column (default: the flights one)")
    ] = None,
    units: Annotated[int, typer.Option(help="number of distinct unit ids")] = 5000,
    delay: Annotated[float, typer.Option(help="seconds from an answer to its feedback")] = 5.0,
    label_fraction: Annotated[float, typer.Option(help="share of requests labelled")] = 1.0,
    concurrency: Annotated[int, typer.Option(help="most requests in flight")] = 16,
    records_per_request: Annotated[int, typer.Option(help="rows per request")] = 1,
    seed: Annotated[int, typer.Option(help="picks which requests are labelled")] = 0,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Replay production rows against a running service and post delayed feedback."""
    from lossflow.serving.traffic import (
        TrafficError,
        TrafficOptions,
        find_production_data,
        production_rows,
        run_traffic,
        summary_table,
    )

    err_console = Console(stderr=True, soft_wrap=True)
    try:
        options = TrafficOptions(
            rate=rate,
            concurrency=concurrency,
            records_per_request=records_per_request,
            units=units,
            delay_s=delay,
            fraction=label_fraction,
            seed=seed,
        )
        path = data or find_production_data(_config_or_exit([], config_dir).data_dir)
        frame = production_rows(path, months=months, time_column=time_column, limit=limit)
        err_console.print(f"replaying {len(frame)} rows of {path} against {url}")
        report = run_traffic(frame, url, options)
    except (FileNotFoundError, ValueError, TrafficError) as err:
        err_console.print(f"[red]traffic error:[/red] {err}")
        raise typer.Exit(2) from None
    Console(width=None if sys.stdout.isatty() else 170).print(summary_table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report.summary(), indent=2))
    if report.answered == 0:
        raise typer.Exit(1)
