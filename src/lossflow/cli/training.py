"""Commands that build models: ``losses`` (the catalogue), ``train`` and ``init``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossflow.cli.common import (
    ConfigDir,
    Overrides,
    needs,
    quiet_prefect,
    settings,
    user_errors,
)
from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.training import load_training_config
from lossflow.losses import TaskType


def losses(
    task: Annotated[
        str | None, typer.Option(help=f"only losses for this task: {', '.join(get_args(TaskType))}")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the catalogue as JSON")] = False,
) -> None:
    """Print the loss catalogue (and the weight penalties): tasks, options, references."""
    needs("train")
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


@user_errors
def train(
    overrides: Overrides = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    resume: Annotated[
        str | None, typer.Option(help="continue from this run's last checkpoint")
    ] = None,
) -> None:
    """Run the training flow: prepare → train → evaluate → export + parity → register."""
    needs("train")
    overrides = settings(overrides)
    cfg = load_training_config(overrides, config_dir)
    from lossflow.evaluation.baseline import BEATS_METRIC, beats
    from lossflow.flows.training import training

    console = Console()
    console.print(
        f"training [bold]{cfg.data.source}[/bold] ({cfg.data.task}) with loss "
        f"[bold]{cfg.loss.name}[/bold] for up to {cfg.trainer.max_epochs} epochs"
    )
    quiet_prefect()
    outcome = training(
        overrides=overrides,
        config_dir=str(config_dir),
        resume_run=resume,
        progress_bar=sys.stdout.isatty(),
    )
    table = Table(title="test metrics", show_header=False)
    for key, value in sorted(outcome.metrics.items()):
        if key not in (BEATS_METRIC, "test/beats_popularity"):
            table.add_row(key, f"{value:.4f}")
    console.print(table)
    if outcome.baseline:
        flag = "" if beats(outcome.metrics) else "[red]WARNING:[/red] "
        console.print(f"{flag}baseline:      {escape(outcome.baseline)}")
    console.print(f"run id:        {outcome.run_id}")
    console.print(f"loss id:       {outcome.loss_id}")
    console.print(
        f"model version: {outcome.model_name} v{outcome.model_version} "
        f"(aliases: {', '.join(outcome.aliases)})"
    )
    console.print(f"ONNX file:     {outcome.onnx_path}")
    project = f"--project {outcome.project} " if outcome.project else ""
    console.print(f"open the UI:   lossflow {project}ui   (tracking store {outcome.tracking_uri})")


@user_errors
def init(
    path: Annotated[Path, typer.Argument(help="a CSV (.csv, .csv.gz) or Parquet file")],
    name: Annotated[
        str | None, typer.Option(help="the project and registered model name (default: file)")
    ] = None,
    target: Annotated[str | None, typer.Option(help="the column to predict")] = None,
    task: Annotated[
        str | None, typer.Option(help="binary, multiclass, regression or ranking")
    ] = None,
    time_column: Annotated[
        str | None, typer.Option(help="the column that orders rows in time ('none': none)")
    ] = None,
    positive_class: Annotated[
        str | None, typer.Option(help="binary: the class the model gives the probability of")
    ] = None,
    group: Annotated[str | None, typer.Option(help="ranking: the query column")] = None,
    item: Annotated[str | None, typer.Option(help="ranking: the item column")] = None,
    force: Annotated[bool, typer.Option(help="replace the project's files")] = False,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Start a project from a data file: infer columns, task and split, write its config."""
    from lossflow.scaffold import infer_project, write_project

    inferred = infer_project(
        path, name=name, target=target, task=task, time_column=time_column,
        positive_class=positive_class, group=group, item=item,
    )  # fmt: skip
    data_path, project_path = write_project(inferred, config_dir, force=force)
    console = Console(width=None if sys.stdout.isatty() else 170)
    table = Table(title=f"{path.name}: {inferred.rows} rows, task {inferred.task}")
    for column in ("column", "role", "why"):
        table.add_column(column)
    for c in inferred.columns:
        table.add_row(escape(c.name), c.role, escape(c.why))
    console.print(table)
    console.print(escape(f"split:    {inferred.split_why}"))
    console.print(escape(f"training: loss {inferred.loss}; {inferred.trainer_why}"))
    for note in inferred.notes:
        console.print(escape(f"note:     {note}"))
    console.print(f"wrote {data_path} and {project_path}")
    console.print(
        f"next:     lossflow --project {inferred.name} train   (then serve, traffic, monitor; "
        f"compare losses with: lossflow --project {inferred.name} compare loss=...)"
    )
