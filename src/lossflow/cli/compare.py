"""``compare`` (the offline comparison of losses, with its tables) and ``hpo-worker``."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from lossflow.config import DEFAULT_CONFIG_DIR

if TYPE_CHECKING:
    from lossflow.comparison.summary import ArmSummary as ComparisonArm
    from lossflow.flows.compare_losses import CompareOutcome as CompareOutcomeView


from lossflow.cli.common import (
    ConfigDir,
    needs,
    quiet_prefect,
    settings,
    user_errors,
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
    needs("train")
    from lossflow.config.compare import load_compare_config

    flags = [f"version={version}"] if version is not None else []
    flags += [f"cv.folds={folds}"] if folds is not None else []
    flags += [f"cv.repeats={repeats}"] if repeats is not None else []
    flags += [f"workers={workers}"] if workers is not None else []
    flags += ["hpo.enabled=true", f"hpo.n_trials={trials}"] if trials is not None else []
    every = settings([*(overrides or []), *flags])
    chosen = load_compare_config(every, config_dir)
    from lossflow.usecases.compare import plan_comparison

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
    quiet_prefect()
    from lossflow.flows.compare_losses import compare_losses

    outcome = compare_losses(overrides=every, config_dir=str(config_dir))
    _comparison_tables(outcome, console)
    console.print(
        f"MLflow: experiment {outcome.experiment}, parent run {outcome.run_id} with a nested "
        f"run per arm x fold{' and per trial' if outcome.study else ''}; report.html there and "
        f"at {outcome.report}"
    )
    console.print(f"open the UI:   lossflow ui   (tracking store {outcome.tracking_uri})")


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
    needs("train")
    from lossflow.comparison.hpo_worker import run_worker

    ran = run_worker(storage, study, work_dir, worker)
    Console().print(f"ran {ran} trials of study {study}")
