"""What every command shares: the environment, user errors as one message, the dependency check,
the project's settings and the common options."""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ParamSpec, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from lossflow import terminal
from lossflow.errors import UserError
from lossflow.telemetry import TELEMETRY_OFF

# Telemetry stays off; Prefect's temporary local server gets time to start on a busy machine.
ENVIRONMENT = {
    **TELEMETRY_OFF,
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
}
# What a command needs beyond the serving set, by the extra that installs it.
EXTRAS = {"train": ("torch", "lightning", "prefect", "matplotlib", "sklearn")}

# Commands of sub-apps, as the user types them.
COMMAND_NAMES = {"ab_status": "ab status", "ab_decide": "ab decide", "ab_rollback": "ab rollback"}

P = ParamSpec("P")
R = TypeVar("R")


def stderr() -> Console:
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
            name = COMMAND_NAMES.get(command.__name__, command.__name__.replace("_", "-"))
            path = terminal.report(err, name)
            console = stderr()
            console.print(f"[red]lossflow {name}:[/red] {escape(str(err))}")
            where = f"traceback in {path}; " if path is not None else ""
            console.print(f"[dim]({where}--debug prints it here)[/dim]")
            raise typer.Exit(2) from None

    return run


def needs(extra: str) -> None:
    """Exit with a one-line install hint when the modules of ``extra`` are missing."""
    import importlib.util

    missing = [m for m in EXTRAS[extra] if importlib.util.find_spec(m) is None]
    if missing:
        stderr().print(
            f"[red]this command needs the {extra} dependencies[/red] (missing: "
            f"{', '.join(missing)}); install them with: "
            + escape(f"pip install 'lossflow[{extra}]'")
        )
        raise typer.Exit(2)


# The project every command of this invocation reads (``lossflow --project NAME ...``).
PROJECT: list[str] = []


def settings(overrides: list[str] | None) -> list[str]:
    """A command's overrides after the chosen project (``project=NAME``), so every command and
    every flow it starts reads the same project settings; an explicit ``project=`` among the
    overrides comes later and wins."""
    return [*PROJECT, *(overrides or [])]


ConfigDir = Annotated[Path, typer.Option("--config-dir", help="configuration directory")]
Overrides = Annotated[
    list[str] | None,
    typer.Argument(
        help="overrides of this command's config, after the project's: loss=focal "
        "loss.gamma=3 trainer.max_epochs=5"
    ),
]


def quiet_prefect(*, strip_only: bool = False) -> None:
    """Prefect's console shows a user error not at all (the command prints it once), or, with
    ``strip_only``, in Prefect's own lines without the traceback."""
    from prefect.logging.configuration import setup_logging

    setup_logging()
    terminal.quiet_user_errors(strip_only=strip_only)


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


def needs_prefect_server(command: str) -> None:
    """Exit with a hint when PREFECT_API_URL names no server (deployments need one)."""
    from prefect.settings import PREFECT_API_URL

    if not str(PREFECT_API_URL.value() or "").strip():
        stderr().print(
            f"[red]lossflow {command}:[/red] set PREFECT_API_URL to the Prefect server's API, "
            "e.g. http://127.0.0.1:4200/api (a temporary local server keeps no deployments)"
        )
        raise typer.Exit(2)


def utc_option(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise typer.BadParameter(
            f"{text!r} is not an ISO date or time (2013-11-01, 2013-11-01T06:00)", param_hint=option
        ) from None
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)
