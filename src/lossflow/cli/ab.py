"""``ab status|decide|rollback``: the A/B analysis of loss variants."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from lossflow.cli.common import (
    ConfigDir,
    needs,
    quiet_prefect,
    settings,
    user_errors,
)
from lossflow.config import DEFAULT_CONFIG_DIR

ab_app = typer.Typer(
    help="A/B analysis of loss variants: status, decide (promote/reject), rollback.",
    no_args_is_help=True,
)

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
    needs("train")
    from lossflow.config.ab import load_ab_config
    from lossflow.flows.ab_analysis import ab_analysis

    overrides = settings(overrides)
    load_ab_config(overrides, config_dir)  # a config mistake before Prefect starts
    quiet_prefect()
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
            steps.audit_trail(cfg), cfg.tracking.registered_model, action, steps.actor()
        )
        experiment = cfg.tracking.experiment_of("ab")
        Console().print(f"audit run: {run_id} (MLflow experiment {experiment})")
    if not action.applied and not dry_run:
        raise typer.Exit(1)
