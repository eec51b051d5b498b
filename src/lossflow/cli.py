"""The ``lossflow`` command line.

Every command shows a user's mistake (:class:`~lossflow.errors.UserError`) as one message and
exits 2, with the traceback in the log file (``--debug`` prints it instead); any other exception
is a bug and keeps its traceback. Commands import what they need when they run, so ``lossflow
serve`` works where only the serving dependencies are installed.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossflow import terminal
from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.serving import ServingConfig, load_serving_config
from lossflow.config.training import TrainingConfig, load_training_config
from lossflow.errors import UserError
from lossflow.losses import TaskType

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
# What a command needs beyond the serving set, by the extra that installs it.
EXTRAS = {"train": ("torch", "lightning", "prefect", "matplotlib", "sklearn")}

P = ParamSpec("P")
R = TypeVar("R")


def _stderr() -> Console:
    return Console(stderr=True, soft_wrap=True)


def user_errors(command: Callable[P, R]) -> Callable[P, R]:
    """Show a :class:`UserError` raised by ``command`` as its message and exit 2."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except UserError as err:
            if terminal.debug_enabled():
                raise
            name = command.__name__.replace("_", "-")
            path = terminal.report(err, name)
            console = _stderr()
            console.print(f"[red]lossflow {name}:[/red] {escape(str(err))}")
            where = f"traceback in {path}; " if path is not None else ""
            console.print(f"[dim]({where}--debug prints it here)[/dim]")
            raise typer.Exit(2) from None

    return run


def _needs(extra: str) -> None:
    """Exit with a one-line install hint when the modules of ``extra`` are missing."""
    import importlib.util

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        _stderr().print(
            f"[red]this command needs the {extra} dependencies[/red] (missing: "
            f"{', '.join(missing)}); install them with: "
            + escape(f"pip install 'lossflow[{extra}]'")
        )
        raise typer.Exit(2)


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="print the traceback of a user error too")
    ] = False,
) -> None:
    """lossflow command line."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    if debug:
        os.environ[terminal.DEBUG_ENV] = "1"
    # lightning 2.6 on torch 2.13 warns about its own use of a deprecated torch API.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


@app.command()
def losses(
    task: Annotated[
        str | None, typer.Option(help=f"only losses for this task: {', '.join(get_args(TaskType))}")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the catalogue as JSON")] = False,
) -> None:
    """Print the loss catalogue (and the weight penalties): tasks, options, references."""
    _needs("train")
    from lossflow.losses import available_losses

    known = get_args(TaskType)
    if task is not None and task not in known:
        raise typer.BadParameter(
            f"unknown task {task!r}; known: {', '.join(known)}", param_hint="--task"
        )
    catalogue = [info for info in available_losses() if task is None or task in info.tasks]
    if as_json:
        typer.echo(json.dumps([asdict(info) for info in catalogue], indent=2, default=str))
        return
    table = Table(title=f"lossflow losses and penalties ({len(catalogue)})", show_lines=True)
    table.add_column("name", style="bold")
    table.add_column("kind")
    table.add_column("tasks")
    table.add_column("options (default)")
    table.add_column("what it is")
    table.add_column("tested against")
    for info in catalogue:
        options = "\n".join(
            f"{p.name}=" + ("(required)" if p.required else repr(p.default))
            for p in info.parameters
        )
        tasks = "any" if info.kind == "penalty" else ", ".join(info.tasks)
        kind = "penalty (regularizers: [...])" if info.kind == "penalty" else "loss"
        table.add_row(info.name, kind, tasks, options, info.summary, info.reference)
    # Piped output (CI logs, files) gets a wide table instead of rich's 80-column default.
    Console(width=None if sys.stdout.isatty() else 170).print(table)


ConfigDir = Annotated[Path, typer.Option("--config-dir", help="configuration directory")]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(help="config overrides: loss=focal loss.gamma=3 trainer.max_epochs=5"),
]


def _quiet_prefect(*, strip_only: bool = False) -> None:
    """Prefect's console shows a user error not at all (the command prints it once), or, with
    ``strip_only``, in Prefect's own lines without the traceback."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    terminal.quiet_user_errors(strip_only=strip_only)


@app.command()
@user_errors
def train(
    overrides: Overrides = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    resume: Annotated[
        str | None, typer.Option(help="continue from this run's last checkpoint")
    ] = None,
) -> None:
    """Run the training flow: prepare → train → evaluate → export + parity → register."""
    _needs("train")
    cfg = load_training_config(overrides or [], config_dir)
    from pipelines.training import training

    console = Console()
    console.print(
        f"training [bold]{cfg.data.source}[/bold] ({cfg.data.task}) with loss "
        f"[bold]{cfg.loss.name}[/bold] for up to {cfg.trainer.max_epochs} epochs"
    )
    _quiet_prefect()
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
@user_errors
def ui(
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Open the MLflow UI on the project's tracking store."""
    from lossflow.tracking import resolve_tracking_uri, ui_command

    cfg = load_serving_config([], config_dir)
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.data_dir)
    try:
        command = ui_command(uri, port=port)
    except (ValueError, FileNotFoundError) as err:
        _stderr().print(f"[red]lossflow ui:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    Console().print(f"MLflow UI on http://127.0.0.1:{port} for {uri}")
    raise typer.Exit(subprocess.call(command))


@app.command()
@user_errors
def schedule(
    overrides: Overrides = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Serve the training flow as a deployment on the configured cron schedule."""
    _needs("train")
    cfg: TrainingConfig = load_training_config(overrides or [], config_dir)
    from pipelines.deployments import training_deployment
    from prefect import serve as serve_deployments

    deployment = training_deployment(cfg, overrides or [], config_dir)
    Console().print(
        f"serving deployment '{deployment.name}' on cron '{cfg.schedule.cron}' "
        f"({cfg.schedule.timezone}); Ctrl-C stops it"
    )
    _quiet_prefect(strip_only=True)  # a failed scheduled run is reported; the next one runs
    serve_deployments(deployment)


WorkPool = Annotated[
    str,
    typer.Option(
        "--work-pool", envvar="LOSSFLOW_WORK_POOL", help="Prefect work pool (a process pool)"
    ),
]


@app.command()
@user_errors
def deploy(
    overrides: Overrides = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    work_pool: WorkPool = "lossflow",
    no_schedule: Annotated[
        bool, typer.Option("--no-schedule", help="run only when triggered, not on the cron")
    ] = False,
) -> None:
    """Register the training flow on a Prefect server's work pool (PREFECT_API_URL); workers
    run it from this directory (the project root)."""
    _needs("train")
    cfg: TrainingConfig = load_training_config(overrides or [], config_dir)
    _needs_prefect_server("deploy")
    from pipelines.deployments import register_training

    name, _ = register_training(
        cfg, overrides or [], config_dir, work_pool, Path.cwd(), schedule=not no_schedule
    )
    when = "when triggered" if no_schedule else f"on cron '{cfg.schedule.cron}'"
    Console().print(
        f"registered deployment 'training/{name}' on work pool '{work_pool}' ({when}); run it "
        f"now with: prefect deployment run 'training/{name}'"
    )


@app.command()
@user_errors
def worker(
    overrides: Overrides = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    work_pool: WorkPool = "lossflow",
) -> None:
    """Register the deployments (as `lossflow deploy`), then run a process worker of the pool."""
    deploy(overrides, config_dir, work_pool)
    command = [str(Path(sys.executable).parent / "prefect"), "worker", "start"]
    command += ["--pool", work_pool, "--type", "process"]
    Console().print(f"starting: {' '.join(command[1:])}")
    raise typer.Exit(subprocess.call(command))


def _needs_prefect_server(command: str) -> None:
    """Exit with a hint when PREFECT_API_URL names no server (deployments need one)."""
    if not os.environ.get("PREFECT_API_URL", "").strip():
        _stderr().print(
            f"[red]lossflow {command}:[/red] set PREFECT_API_URL to the Prefect server's API, "
            "e.g. http://127.0.0.1:4200/api (a temporary local server keeps no deployments)"
        )
        raise typer.Exit(2)


@app.command()
@user_errors
def serve(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="service overrides: serving=<file in configs/serving> port=8001 "
            "variants.champion.weight=90 log.url=postgresql://..."
        ),
    ] = None,
    host: Annotated[
        str | None,
        typer.Option(
            envvar="LOSSFLOW_HOST", help="bind address (same as host=...); default 127.0.0.1"
        ),
    ] = None,
    port: Annotated[
        int | None,
        typer.Option(envvar="LOSSFLOW_PORT", help="port (same as port=...); default 8000"),
    ] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Serve the registered ONNX models over HTTP: A/B split, prediction log, feedback."""
    import uvicorn

    from lossflow.serving.app import create_app
    from lossflow.serving.jsonlog import configure_json_logging

    flags = [f"host={host}"] if host is not None else []
    flags += [f"port={port}"] if port is not None else []
    cfg: ServingConfig = load_serving_config([*(overrides or []), *flags], config_dir)
    configure_json_logging()
    terminal.quiet_user_errors()
    app_ = create_app(cfg)
    server = uvicorn.Server(
        uvicorn.Config(
            app_,
            host=cfg.host,
            port=cfg.port,
            loop="uvloop",
            http="httptools",
            log_config=None,
            access_log=False,
            timeout_graceful_shutdown=math.ceil(cfg.log.drain_timeout_s),
        )
    )
    try:
        server.run()
    except SystemExit:  # uvicorn exits 3 when the app cannot start
        startup_error = app_.state.service.startup_error
        if startup_error is not None:
            raise startup_error from None
        raise
    if not server.started:
        raise typer.Exit(3)  # uvicorn logged why (e.g. the port is in use)


@app.command()
@user_errors
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
    from lossflow.replay import (
        TrafficOptions,
        find_production_data,
        production_rows,
        run_traffic,
        summary_table,
    )

    err_console = _stderr()
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
        path = data or find_production_data(load_serving_config([], config_dir).data_dir)
        frame = production_rows(path, months=months, time_column=time_column, limit=limit)
    except (FileNotFoundError, ValueError) as err:
        err_console.print(f"[red]lossflow traffic:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    err_console.print(f"replaying {len(frame)} rows of {path} against {url}")
    report = run_traffic(frame, url, options)
    Console(width=None if sys.stdout.isatty() else 170).print(summary_table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report.summary(), indent=2))
    if report.answered == 0:
        raise typer.Exit(1)


def _utc(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO date or time (2013-11-01, 2013-11-01T06:00)", param_hint=option
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


@app.command()
@user_errors
def monitor(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="monitoring overrides: drift.alpha=0.01 decision.min_rows=5000"),
    ] = None,
    since: Annotated[
        str | None, typer.Option(help="window length ending now: 24h, 7d (default: config)")
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="window start, ISO (UTC unless it says otherwise)")
    ] = None,
    end: Annotated[str | None, typer.Option(help="window end (exclusive); default now")] = None,
    variant: Annotated[
        list[str] | None, typer.Option("--variant", help="only this variant (repeat for more)")
    ] = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="write the outcome here")] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Judge served traffic: drift, prior shift, delayed-label quality, and the retrain decision."""
    _needs("train")
    from pipelines.monitoring import monitoring

    from lossflow.config.monitoring import load_monitoring_config
    from lossflow.monitoring.console import outcome_tables

    load_monitoring_config(overrides or [], config_dir)  # a config mistake before Prefect starts
    _quiet_prefect()
    outcome = monitoring(
        since=since,
        start=_utc(start, "--start"),
        end=_utc(end, "--end"),
        variants=variant,
        overrides=overrides or [],
        config_dir=str(config_dir),
    )
    console = Console(width=None if sys.stdout.isatty() else 170)
    for table in outcome_tables(outcome):
        console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(outcome), indent=2, default=str))


@app.command("dead-letters")
@user_errors
def dead_letters(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(help="service overrides naming the log: log.url=postgresql://..."),
    ] = None,
    replay: Annotated[
        bool, typer.Option(help="write them to the log again (after fixing the cause)")
    ] = False,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """List the predictions the log database refused for good, or replay them."""
    from lossflow.predlog import PredictionLog, default_log_url

    cfg = load_serving_config(overrides or [], config_dir)
    log = PredictionLog(cfg.log.url or default_log_url(cfg.data_dir), cfg.log.db_schema)
    try:
        log.create_schema()
        if replay:
            replayed, failing = log.replay_dead_letters()
            Console().print(f"replayed {replayed}; still refused: {failing}")
            return
        letters = log.read_dead_letters()
    finally:
        log.dispose()
    table = Table(title=f"prediction dead letters ({len(letters)})")
    for column in ("id", "request_id", "ts", "error"):
        table.add_column(column)
    for row in letters.itertuples(index=False):
        table.add_row(str(row.id), row.request_id, str(row.ts), row.error)
    Console(width=None if sys.stdout.isatty() else 170).print(table)
