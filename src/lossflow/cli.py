"""The ``lossflow`` command line.

Every command shows a user's mistake (:class:`~lossflow.errors.UserError`) as one message and
exits 2, with the traceback in the log file (``--debug`` prints it instead); any other exception
is a bug and keeps its traceback. Commands import what they need when they run, so ``lossflow
serve`` works where only the serving dependencies are installed.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import warnings
from collections.abc import Callable
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar, get_args

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossflow import terminal
from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.serving import ServingConfig, load_serving_config
from lossflow.config.training import load_training_config
from lossflow.errors import UserError
from lossflow.losses import TaskType
from lossflow.processes import run_attached

if TYPE_CHECKING:
    from lossflow.comparison.summary import ArmSummary as ComparisonArm
    from lossflow.flows.compare_losses import CompareOutcome as CompareOutcomeView

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

# Commands of sub-apps, as the user types them.
_COMMAND_NAMES = {"ab_status": "ab status", "ab_decide": "ab decide", "ab_rollback": "ab rollback"}

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
            name = _COMMAND_NAMES.get(command.__name__, command.__name__.replace("_", "-"))
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


# The project every command of this invocation reads (``lossflow --project NAME ...``).
_PROJECT: list[str] = []


def settings(overrides: list[str] | None) -> list[str]:
    """A command's overrides after the chosen project (``project=NAME``), so every command and
    every flow it starts reads the same project settings; an explicit ``project=`` among the
    overrides comes later and wins."""
    return [*_PROJECT, *(overrides or [])]


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
    _PROJECT[:] = [] if project is None else [f"project={project}"]
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
    typer.Argument(
        help="overrides of this command's config, after the project's: loss=focal "
        "loss.gamma=3 trainer.max_epochs=5"
    ),
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
    overrides = settings(overrides)
    cfg = load_training_config(overrides, config_dir)
    from lossflow.evaluation.baseline import BEATS_METRIC, beats
    from lossflow.flows.training import training

    console = Console()
    console.print(
        f"training [bold]{cfg.data.source}[/bold] ({cfg.data.task}) with loss "
        f"[bold]{cfg.loss.name}[/bold] for up to {cfg.trainer.max_epochs} epochs"
    )
    _quiet_prefect()
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


@app.command()
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


def _interval_cell(arm: ComparisonArm, metric: str) -> str:
    interval = arm.metrics.get(metric)
    if interval is None:
        return "-"
    return f"{interval.mean:.4f} [{interval.low:.4f}, {interval.high:.4f}]"


def _comparison_tables(outcome: CompareOutcomeView, console: Console) -> None:
    comparison = outcome.comparison
    metric = comparison.metric
    ok = [a for a in comparison.arms if a.ok]
    others = [m for m in (next(iter(ok)).metrics if ok else {}) if m != metric][:3]
    better = "higher" if comparison.better == "max" else "lower"
    table = Table(
        title=f"{metric} ({better} is better): {comparison.kind} CV, {comparison.folds} folds x "
        f"{comparison.repeats}, mean [{1 - comparison.alpha:.0%} corrected interval]"
    )
    for column in ("arm", "status", metric, *others, "baseline", "epochs to 95%", "wall s"):
        table.add_column(column)
    for arm in (*comparison.arms, *comparison.ablations):
        name = arm.name if arm.ablation_of is None else f"{arm.name} (ablation)"
        if not arm.ok:
            table.add_row(name, "[red]failed[/red]", "-", *("-" for _ in others), "-", "-", "-")
            continue
        converged = "-" if arm.epochs_to_95 is None else f"{arm.epochs_to_95:.1f}"
        base = arm.baseline
        baseline = (
            "-"
            if base is None
            else f"{base.metric} {base.baseline:.4g}"
            + ("" if base.beats else " [red](not beaten)[/red]")
        )
        table.add_row(
            name,
            "ok",
            _interval_cell(arm, metric),
            *(f"{arm.metrics[m].mean:.4f}" for m in others),
            baseline,
            converged,
            f"{arm.wall_s:.0f}",
        )
    console.print(table)
    tests = Table(title=f"corrected resampled t-tests on {metric} (Holm across pairs)")
    for column in ("pair", "mean difference [CI]", "p", "naive p", "Holm p", "result"):
        tests.add_column(column)
    for pair in (*comparison.pairs, *comparison.ablation_tests):
        t = pair.test
        tests.add_row(
            f"{pair.first} - {pair.second}",
            f"{t.mean_difference:+.4f} [{t.ci_low:+.4f}, {t.ci_high:+.4f}]",
            f"{t.p_value:.3g}",
            f"{t.naive_p_value:.3g}",
            f"{pair.p_holm:.3g}",
            f"{pair.better} better" if pair.better else "no detectable difference",
        )
    console.print(tests)
    for arm in (*comparison.arms, *comparison.ablations):
        if not arm.ok:
            console.print(f"[red]{escape(arm.name)} failed:[/red] {escape(str(arm.error))}")
    console.print(f"[bold]verdict:[/bold] {escape(comparison.verdict.text)}")
    console.print(
        f"wall time {comparison.elapsed_s:.0f} s on {comparison.workers} worker(s), parallel "
        f"efficiency {comparison.efficiency:.0%}"
    )
    study = outcome.study
    if study is not None:
        best = study.best
        finished = len(study.finished())
        if best is not None:
            params = ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in best.params.items()
            )
            console.print(
                f"search: {finished} trials of study {study.name}; best trial {best.number}: "
                f"{escape(params)} -> {study.metric} {best.value:.4f}"
            )
        if outcome.overlay is not None:
            console.print(
                f"best trial as an overlay: {outcome.overlay} (copy it to configs/experiment/ "
                f"and run: lossflow train experiment={outcome.overlay.stem})"
            )


@app.command()
@user_errors
def compare(
    overrides: Annotated[
        list[str] | None,
        typer.Argument(
            help="loss=focal,bce,... (one arm per loss file) or compare=<file in "
            "configs/compare>; comparison keys (cv.folds=10, hpo.enabled=true); any other "
            "key=value is a training override for every arm"
        ),
    ] = None,
    folds: Annotated[int | None, typer.Option(help="folds per repeat (cv.folds)")] = None,
    repeats: Annotated[int | None, typer.Option(help="repeats of the folds (cv.repeats)")] = None,
    workers: Annotated[
        int | None, typer.Option(help="processes training arm x fold units (workers)")
    ] = None,
    trials: Annotated[
        int | None, typer.Option(help="also search losses with Optuna, this many trials")
    ] = None,
    version: Annotated[
        str | None,
        typer.Option(
            help="start every arm from this registered version's recipe (its data, model and "
            "settings; the arm changes the loss) instead of the config files (version=...)"
        ),
    ] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Compare losses offline: same folds, corrected tests, ablations, search, report."""
    _needs("train")
    from lossflow.config.compare import load_compare_config

    flags = [f"version={version}"] if version is not None else []
    flags += [f"cv.folds={folds}"] if folds is not None else []
    flags += [f"cv.repeats={repeats}"] if repeats is not None else []
    flags += [f"workers={workers}"] if workers is not None else []
    flags += ["hpo.enabled=true", f"hpo.n_trials={trials}"] if trials is not None else []
    every = settings([*(overrides or []), *flags])
    chosen = load_compare_config(every, config_dir)
    from lossflow.comparison.plan import plan_comparison

    plan = plan_comparison(chosen, config_dir)
    console = Console(width=None if sys.stdout.isatty() else 200)
    reference = plan.reference
    start = f" from {plan.recipe.source}" if plan.recipe is not None else ""
    console.print(
        f"comparing {len(plan.arms)} arms ({', '.join(a.name for a in plan.arms)}) "
        f"+ {len(plan.ablations)} ablation variants on [bold]{reference.data.source}[/bold] "
        f"({reference.data.task}){escape(start)} by {plan.metric}: {plan.cv_kind} folds, "
        f"{chosen.cv.folds} x {chosen.cv.repeats}, up to {plan.workers} worker(s)"
    )
    for arm in plan.arms:
        if arm.error is not None:
            console.print(f"[red]{escape(arm.name)} cannot be trained:[/red] {escape(arm.error)}")
    _quiet_prefect()
    from lossflow.flows.compare_losses import compare_losses

    outcome = compare_losses(overrides=every, config_dir=str(config_dir))
    _comparison_tables(outcome, console)
    console.print(
        f"MLflow: experiment {outcome.experiment}, parent run {outcome.run_id} with a nested "
        f"run per arm x fold{' and per trial' if outcome.study else ''}; report.html there and "
        f"at {outcome.report}"
    )
    console.print(f"open the UI:   lossflow ui   (tracking store {outcome.tracking_uri})")


@app.command("hpo-worker")
@user_errors
def hpo_worker(
    study: Annotated[str, typer.Argument(help="the Optuna study to join")],
    storage: Annotated[
        str, typer.Option(help="the study's storage, e.g. postgresql://user@host/db")
    ],
    work_dir: Annotated[
        Path, typer.Option(help="where this worker prepares data and writes checkpoints")
    ] = Path("data/hpo-worker"),
    worker: Annotated[int, typer.Option(help="this worker's index (seeds its sampler)")] = 1,
) -> None:
    """Run trials of a comparison's search until none is left (scale the search out)."""
    _needs("train")
    from lossflow.comparison.hpo import run_worker

    ran = run_worker(storage, study, work_dir, worker)
    Console().print(f"ran {ran} trials of study {study}")


@app.command()
@user_errors
def ui(
    overrides: Annotated[
        list[str] | None, typer.Argument(help="data_dir=data/demo or tracking.tracking_uri=...")
    ] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
    port: Annotated[int, typer.Option(help="port on 127.0.0.1")] = 5000,
) -> None:
    """Open the MLflow UI on the project's tracking store."""
    from lossflow.tracking import resolve_tracking_uri, ui_command

    cfg = load_serving_config(settings(overrides), config_dir)
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.data_dir)
    try:
        command = ui_command(uri, port=port)
    except (ValueError, FileNotFoundError) as err:
        _stderr().print(f"[red]lossflow ui:[/red] {escape(str(err))}")
        raise typer.Exit(2) from None
    Console().print(f"MLflow UI on http://127.0.0.1:{port} for {uri}")
    raise typer.Exit(run_attached(command))


SetOption = Annotated[
    list[str] | None,
    typer.Option(
        "--set",
        help="FLOW:KEY=VALUE override of one flow's config (training, monitoring, ab-analysis, "
        "retrain), e.g. --set retrain:cooldown=6h; repeat for more",
    ),
]
FlowOption = Annotated[
    list[str] | None,
    typer.Option("--flow", help="only this flow (repeat for more); default: all four"),
]
FlowOverrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="overrides for EVERY flow this command runs (data_dir=..., tracking.tracking_uri="
        "...); one a flow cannot take is refused with its name: give it to one flow with --set"
    ),
]


def _flows(flow: list[str] | None) -> list[str]:
    from lossflow.flows import deployments

    unknown = sorted(set(flow or []) - set(deployments.FLOWS))
    if unknown:
        raise deployments.DeploymentSpecError(
            f"--flow {', '.join(unknown)}: the flows are {', '.join(deployments.FLOWS)}"
        )
    return [name for name in deployments.FLOWS if not flow or name in flow]


@app.command()
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
    _needs("train")
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
    _quiet_prefect(strip_only=True)  # a failed scheduled run is reported; the next one runs
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


@app.command()
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
    _needs("train")
    from lossflow.flows import deployments

    shared = settings(overrides)
    per_flow = deployments.split_overrides(set_ or [])
    _needs_prefect_server("deploy")
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


@app.command()
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


def _needs_prefect_server(command: str) -> None:
    """Exit with a hint when PREFECT_API_URL names no server (deployments need one)."""
    from prefect.settings import PREFECT_API_URL

    if not str(PREFECT_API_URL.value() or "").strip():
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
    from lossflow.config.monitoring import load_monitoring_config
    from lossflow.flows.monitoring import monitoring
    from lossflow.monitoring.console import outcome_tables

    overrides = settings(overrides)
    load_monitoring_config(overrides, config_dir)  # a config mistake before Prefect starts
    _quiet_prefect()
    outcome = monitoring(
        since=since,
        start=_utc(start, "--start"),
        end=_utc(end, "--end"),
        variants=variant,
        overrides=overrides,
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


ab_app = typer.Typer(
    help="A/B analysis of loss variants: status, decide (promote/reject), rollback.",
    no_args_is_help=True,
)
app.add_typer(ab_app, name="ab")

DryRun = Annotated[
    bool, typer.Option("--dry-run", help="report what would be done; change nothing")
]
AbOverrides = Annotated[
    list[str] | None,
    typer.Argument(help="A/B overrides: min_units=2000 primary_metric=brier serving=prod"),
]


def _print_analysis(analysis: Any, action: dict[str, Any] | None = None) -> None:
    from lossflow.ab.console import arms_table, comparisons_table, decision_lines

    console = Console(width=None if sys.stdout.isatty() else 170)
    console.print(arms_table(analysis.setup, analysis.measured, analysis.metric))
    compared = comparisons_table(analysis.decision, analysis.metric)
    if compared is not None:
        console.print(compared)
    for line in decision_lines(analysis.decision, action):
        console.print(escape(line))


@ab_app.command("status")
@user_errors
def ab_status(
    overrides: AbOverrides = None,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the analysis here as JSON")
    ] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Per variant: units, labels, metric, guardrails; the decision now (changes nothing)."""
    from lossflow.ab import promotion
    from lossflow.ab.record import decision_json
    from lossflow.config.ab import load_ab_config
    from lossflow.usecases import ab as steps

    cfg = load_ab_config(settings(overrides), config_dir)
    analysis = steps.analyse(cfg, config_dir=config_dir)
    action = promotion.planned(analysis.setup, analysis.decision)
    would = promotion.Action(action.kind, False, True, f"would: {action.message}", action.moves)
    _print_analysis(analysis, would.to_json())
    if json_path is not None:
        report = decision_json(
            analysis.setup, analysis.measured, analysis.decision, would, steps.actor(),
            analysis.metric,
        )  # fmt: skip
        json_path.write_text(json.dumps(report, indent=2, default=str))


@ab_app.command("decide")
@user_errors
def ab_decide(
    overrides: AbOverrides = None,
    dry_run: DryRun = False,
    json_path: Annotated[
        Path | None, typer.Option("--json", help="write the decision here as JSON")
    ] = None,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Run the ab_analysis flow: decide, move the aliases (promote/reject), record the audit run."""
    _needs("train")
    from lossflow.config.ab import load_ab_config
    from lossflow.flows.ab_analysis import ab_analysis

    overrides = settings(overrides)
    load_ab_config(overrides, config_dir)  # a config mistake before Prefect starts
    _quiet_prefect()
    outcome = ab_analysis(dry_run=dry_run, overrides=overrides, config_dir=str(config_dir))
    report = outcome.report
    console = Console(width=None if sys.stdout.isatty() else 170)
    decision = report["decision"]
    console.print(f"decision: {decision['verdict'].upper()}")
    for reason in decision["reasons"]:
        console.print(escape(f"  - {reason}"))
    console.print(escape(f"action: {report['action']['message']}"))
    if outcome.run_id is not None:
        console.print(f"audit run: {outcome.run_id} (MLflow experiment lossflow-ab)")
    if json_path is not None:
        json_path.write_text(json.dumps({"run_id": outcome.run_id, **report}, indent=2))


@ab_app.command("rollback")
@user_errors
def ab_rollback(
    overrides: AbOverrides = None,
    dry_run: DryRun = False,
    config_dir: ConfigDir = DEFAULT_CONFIG_DIR,
) -> None:
    """Move the champion alias back to the previous champion (kept by the last promotion)."""
    from lossflow.ab.record import record_rollback
    from lossflow.config.ab import load_ab_config
    from lossflow.usecases import ab as steps

    cfg = load_ab_config(settings(overrides), config_dir)
    action = steps.rollback(cfg, dry_run=dry_run, config_dir=config_dir)
    Console().print(
        escape(
            action.message if action.applied or dry_run else f"not rolled back: {action.message}"
        )
    )
    if not dry_run:
        run_id = record_rollback(
            steps.tracker(cfg), cfg.tracking.registered_model, action, steps.actor()
        )
        experiment = cfg.tracking.experiment_of("ab")
        Console().print(f"audit run: {run_id} (MLflow experiment {experiment})")
    if not action.applied and not dry_run:
        raise typer.Exit(1)


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
    _needs("train")
    from lossflow.flows.deployments import split_overrides
    from lossflow.rehearsal import run_rehearsal

    sets = split_overrides(set_ or [], extra=("serving",))
    console = Console(width=None if sys.stdout.isatty() else 170)
    _quiet_prefect()
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


@app.command()
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


@app.command()
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
    _PROJECT[:] = _PROJECT or ["project=flights"]
    _rehearse(overrides, set_, config_dir, periods=4, rows_per_period=rows_per_month,
              subsample=subsample, epochs=epochs, json_path=json_path, name="demo")  # fmt: skip
