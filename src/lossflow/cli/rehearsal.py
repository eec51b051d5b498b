"""``rehearse`` and ``demo``: the closed loop on a project's own history."""

from __future__ import annotations

import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from lossflow import terminal
from lossflow.cli.common import (
    PROJECT,
    ConfigDir,
    needs,
    quiet_prefect,
    settings,
    user_errors,
)
from lossflow.config import DEFAULT_CONFIG_DIR

RehearsalOverrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="overrides for EVERY flow of the rehearsal (data_dir=...: it runs in "
        "<data_dir>/rehearsal); one a flow cannot take is refused: give it to one flow with --set"
    ),
]
RehearsalSet = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="FLOW:KEY=VALUE for one flow (training, monitoring, ab-analysis, retrain, serving), "
        "e.g. --set monitoring:decision.min_rows=300; repeat for more",
    ),
]


def _rehearse(
    overrides: list[str] | None,
    set_: list[str] | None,
    config_dir: Path,
    *,
    periods: int | None,
    period: str = "month",
    rows_per_period: int,
    subsample: int | None,
    epochs: int | None,
    json_path: Path | None,
    name: str,
) -> None:
    needs("train")
    from lossflow.flows.deployments import split_overrides
    from lossflow.rehearsal import run_rehearsal

    sets = split_overrides(set_ or [], extra=("serving",))
    console = Console(width=None if sys.stdout.isatty() else 170)
    quiet_prefect()
    terminal.quiet_console("prefect", "lightning.pytorch", "mlflow")  # the timeline is the output
    started = datetime.now(UTC)
    timeline = run_rehearsal(
        settings(overrides), sets, config_dir.resolve(), periods=periods, period=period,
        rows_per_period=rows_per_period, subsample=subsample, epochs=epochs,
        json_path=json_path, echo=lambda line: console.print(escape(line)),
    )  # fmt: skip
    minutes = (datetime.now(UTC) - started).total_seconds() / 60
    console.print(f"{name} finished in {minutes:.1f} min; {len(timeline.events)} events"
                  + (f", timeline in {json_path}" if json_path else ""))  # fmt: skip


RowsPerPeriod = Annotated[int, typer.Option(help="rows replayed per period (at most)")]
Subsample = Annotated[int | None, typer.Option(help="training rows per split part")]
Epochs = Annotated[int | None, typer.Option(help="training epochs (champion and candidates)")]
TimelineJson = Annotated[Path | None, typer.Option("--json", help="write the timeline here")]


@user_errors
def rehearse(
    overrides: RehearsalOverrides = None,
    set_: RehearsalSet = None,
    periods: Annotated[
        int | None, typer.Option(help="replay only the first N periods of production")
    ] = None,
    period: Annotated[
        str, typer.Option(help="a period is a week, month, quarter or year of the time column")
    ] = "month",
    rows_per_period: RowsPerPeriod = 6000,
    subsample: Subsample = None,
    epochs: Epochs = None,
    json_path: TimelineJson = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """The closed loop on the project's own history: train on the early periods, then period by
    period serve, replay with labels, monitor, retrain on the event, A/B-test and promote or
    reject; prints the timeline (any project whose data has a time column)."""
    _rehearse(
        overrides, set_, config_dir, periods=periods, period=period,
        rows_per_period=rows_per_period, subsample=subsample, epochs=epochs,
        json_path=json_path, name="rehearsal",
    )  # fmt: skip


@user_errors
def demo(
    overrides: RehearsalOverrides = None,
    set_: RehearsalSet = None,
    rows_per_month: RowsPerPeriod = 6000,
    subsample: Subsample = 30000,
    epochs: Epochs = 3,
    json_path: TimelineJson = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """The flights rehearsal: September to December 2013 (= lossflow --project flights
    rehearse --periods 4 --subsample 30000 --epochs 3), in <data_dir>/rehearsal; with
    --project, the first four months of that project's production."""
    PROJECT[:] = PROJECT or ["project=flights"]
    _rehearse(overrides, set_, config_dir, periods=4, rows_per_period=rows_per_month,
              subsample=subsample, epochs=epochs, json_path=json_path, name="demo")  # fmt: skip
