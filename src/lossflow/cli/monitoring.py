"""``monitor``: one monitoring run on the logged traffic."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from lossflow.cli.common import (
    ConfigDir,
    needs,
    quiet_prefect,
    settings,
    user_errors,
    utc_option,
)
from lossflow.config import DEFAULT_CONFIG_DIR


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
    needs("train")
    from lossflow.config.monitoring import load_monitoring_config
    from lossflow.flows.monitoring import monitoring
    from lossflow.monitoring.console import outcome_tables

    overrides = settings(overrides)
    load_monitoring_config(overrides, config_dir)  # a config mistake before Prefect starts
    quiet_prefect()
    outcome = monitoring(
        since=since,
        start=utc_option(start, "--start"),
        end=utc_option(end, "--end"),
        variants=variant,
        overrides=overrides,
        config_dir=str(config_dir),
    )
    console = Console(width=None if sys.stdout.isatty() else 170)
    for table in outcome_tables(outcome):
        console.print(table)
    if json_path is not None:
        json_path.write_text(json.dumps(asdict(outcome), indent=2, default=str))
