"""The ``lossflow`` command line.

Every command shows a user's mistake (:class:`~lossflow.errors.UserError`) as one message and
exits 2, with the traceback in the log file (``--debug`` prints it instead); any other exception
is a bug and keeps its traceback. Commands import what they need when they run, so ``lossflow
serve`` works where only the serving dependencies are installed.

One module per command group (:mod:`lossflow.cli.training`, ``compare``, ``orchestration``,
``serving``, ``monitoring``, ``ab``, ``rehearsal``); this module builds the app from them.
"""

from __future__ import annotations

import os
import warnings
from typing import Annotated

import typer

from lossflow import terminal
from lossflow.cli import ab, compare, monitoring, orchestration, rehearsal, serving, training
from lossflow.cli.common import ENVIRONMENT, PROJECT

app = typer.Typer(
    name="lossflow",
    help="lossflow: the loss function as a first-class production decision.\n\n"
    "Where settings come from: the project (configs/project/NAME.yaml, chosen with --project "
    "or LOSSFLOW_PROJECT; flights by default) sets data_dir, the tracking/registry URI, the "
    "registered model and the experiment names for every command and flow; "
    "configs/<process>/*.yaml and the project's section of that process set each process; "
    "KEY=VALUE arguments override them for one command (for every flow of schedule, deploy, "
    "worker, rehearse; --set FLOW:KEY=VALUE for one flow). `lossflow init FILE` starts a "
    "project from a data file.",
    no_args_is_help=True,
    add_completion=False,
)


@app.callback()
def main(
    debug: Annotated[
        bool, typer.Option("--debug", help="print the traceback of a user error too")
    ] = False,
    project: Annotated[
        str | None,
        typer.Option(
            "--project",
            envvar="LOSSFLOW_PROJECT",
            help="the project (configs/project/NAME.yaml) every command and flow reads: its "
            "data_dir, tracking URI, registered model and experiment names; default: base.yaml's "
            "(flights)",
        ),
    ] = None,
) -> None:
    """lossflow command line (the app's help says where settings come from)."""
    for key, value in ENVIRONMENT.items():
        os.environ.setdefault(key, value)
    PROJECT[:] = [] if project is None else [f"project={project}"]
    if debug:
        os.environ[terminal.DEBUG_ENV] = "1"
    # lightning 2.6 on torch 2.13 warns about its own use of a deprecated torch API.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated")


for command in (
    training.losses,
    training.train,
    training.init,
    compare.compare,
    orchestration.ui,
    orchestration.schedule,
    orchestration.deploy,
    orchestration.worker,
    serving.serve,
    serving.traffic,
    monitoring.monitor,
    rehearsal.rehearse,
    rehearsal.demo,
):
    app.command()(command)
app.command("hpo-worker")(compare.hpo_worker)
app.command("dead-letters")(serving.dead_letters)
app.add_typer(ab.ab_app, name="ab")
