"""Commands of the service: ``serve``, ``traffic`` (the replay client) and ``dead-letters``."""

from __future__ import annotations

import dataclasses
import json
import math
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossflow import terminal
from lossflow.cli.common import (
    ConfigDir,
    settings,
    stderr,
    user_errors,
)
from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.serving import ServingConfig, load_serving_config


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
    cfg: ServingConfig = load_serving_config(settings([*(overrides or []), *flags]), config_dir)
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
            timeout_keep_alive=cfg.keep_alive_s,
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
        str | None,
        typer.Option(help="timestamp column (default: the one the training run's data names)"),
    ] = None,
    units: Annotated[int, typer.Option(help="number of distinct unit ids")] = 5000,
    delay: Annotated[float, typer.Option(help="seconds from an answer to its feedback")] = 5.0,
    label_fraction: Annotated[float, typer.Option(help="share of requests labelled")] = 1.0,
    concurrency: Annotated[int, typer.Option(help="most requests in flight")] = 16,
    records_per_request: Annotated[int, typer.Option(help="rows per request")] = 1,
    seed: Annotated[int, typer.Option(help="picks which requests are labelled")] = 0,
    replay_clock: Annotated[
        bool,
        typer.Option(
            help="send each row's time (the time column) as the request's time; the service "
            "must run with replay_clock=true"
        ),
    ] = False,
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
    from lossflow.replay.rows import default_time_column

    err_console = stderr()
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
        path = data or find_production_data(load_serving_config(settings([]), config_dir).data_dir)
        frame = production_rows(path, months=months, time_column=time_column, limit=limit)
        if replay_clock:
            clock = time_column or default_time_column(frame, path)
            if clock is None:
                raise ValueError("--replay-clock: the rows have no known time column; name it")
            options = dataclasses.replace(options, clock=clock)
        err_console.print(f"replaying {len(frame)} rows of {path} against {url}")
        report = run_traffic(frame, url, options)
    except (FileNotFoundError, ValueError) as err:
        err_console.print(f"[red]lossflow traffic:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    Console(width=None if sys.stdout.isatty() else 170).print(summary_table(report))
    if json_path is not None:
        json_path.write_text(json.dumps(report.summary(), indent=2))
    if report.answered == 0:
        raise typer.Exit(1)


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
    from lossflow.predlog import open_log

    cfg = load_serving_config(settings(overrides), config_dir)
    log = open_log(cfg.log.url, cfg.log.db_schema, cfg.data_dir)
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
