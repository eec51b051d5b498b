"""What every process's configuration shares: the section base class, tracking, checked paths."""

from __future__ import annotations

import tempfile
from datetime import datetime
from pathlib import Path
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field


class Section(BaseModel):
    """A config section: unknown keys are errors, values never change after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def writable_directory(path: Path) -> Path:
    """Check that ``path`` is, or can be created as, a directory this process can write to.

    Nothing is created: the nearest existing ancestor must be a directory that accepts a file
    (a temporary one, removed at once).

    Raises:
        ValueError: naming the part of the path that is not a writable directory.
    """
    existing = path.expanduser()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"{path} cannot be a directory: {existing} is a file")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        reason = err.strerror or type(err).__name__
        raise ValueError(
            f"{path} is not writable ({existing}: {reason}); choose a directory this user can "
            "write to"
        ) from None
    return path


WritableDir = Annotated[Path, AfterValidator(writable_directory)]
"""A directory lossflow writes to (MLflow store, runs, prediction log): checked when loaded."""


def cron_expression(expression: str) -> str:
    """Check a five-field cron expression (``minute hour day month weekday``).

    Raises:
        ValueError: the expression does not parse, with the parser's reason.
    """
    from cronsim import CronSim, CronSimError

    if len(expression.split()) != 5 and not expression.startswith("@"):
        raise ValueError(
            f"{expression!r} is not a cron expression: give five fields, minute hour day month "
            "weekday, e.g. '0 3 * * 1' (Mondays at 03:00)"
        )
    try:
        CronSim(expression, datetime(2000, 1, 1))
    except CronSimError as err:
        raise ValueError(f"{expression!r} is not a valid cron expression: {err}") from None
    return expression


def timezone_name(name: str) -> str:
    """Check an IANA time zone name such as ``UTC`` or ``Europe/Paris``.

    Raises:
        ValueError: the zone is unknown.
    """
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}; use an IANA name such as UTC") from None
    return name


Cron = Annotated[str, AfterValidator(cron_expression)]
TimeZone = Annotated[str, AfterValidator(timezone_name)]


Process = Literal["monitoring", "retrain", "ab", "compare", "rehearsal"]


class ExperimentNames(Section):
    """The MLflow experiment of each process but training (``tracking.experiments``); a name
    left out is ``<registered_model>-<process>``."""

    monitoring: str | None = Field(None, min_length=1, description="monitoring runs")
    retrain: str | None = Field(None, min_length=1, description="retrain runs (and candidates)")
    ab: str | None = Field(None, min_length=1, description="A/B analyses and alias moves")
    compare: str | None = Field(None, min_length=1, description="offline comparisons")
    rehearsal: str | None = Field(None, min_length=1, description="lossflow rehearse timelines")


class TrackingConfig(Section):
    """MLflow tracking and registry (the ``tracking`` section): one project's model and
    experiments, shared by every process (set in ``configs/project/<name>.yaml``)."""

    tracking_uri: str | None = Field(
        None, description="None: MLFLOW_TRACKING_URI, else sqlite under data_dir"
    )
    experiment: str = Field("lossflow", min_length=1, description="training runs")
    registered_model: str = Field("lossflow-flights", min_length=1)
    experiments: ExperimentNames = ExperimentNames()

    def experiment_of(self, process: Process) -> str:
        """The MLflow experiment of ``process`` (``tracking.experiments``)."""
        return getattr(self.experiments, process) or f"{self.registered_model}-{process}"


class LogLocation(Section):
    """Where the prediction log lives (the service writes it; monitoring and A/B read it)."""

    url: str | None = Field(
        None, description="SQLAlchemy URL; None: sqlite:///<data_dir>/predictions.db"
    )
    db_schema: str | None = Field(None, description="PostgreSQL schema (default search path)")


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 604_800}


def duration_seconds(text: str) -> float:
    """Seconds of a duration written ``90s``, ``30m``, ``24h``, ``7d`` or ``2w``.

    Raises:
        ValueError: not such a duration.

    Example:
        >>> duration_seconds("24h"), duration_seconds("90s")
        (86400.0, 90.0)
    """
    value, unit = text.strip()[:-1], text.strip()[-1:].lower()
    try:
        number = float(value)
    except ValueError:
        number = float("nan")
    if unit not in _UNITS or not number > 0 or number == float("inf"):
        raise ValueError(
            f"{text!r} is not a duration; write a positive number and a unit: 90s, 30m, 24h, 7d"
        )
    return number * _UNITS[unit]


def _duration(text: str) -> str:
    duration_seconds(text)
    return text


Duration = Annotated[str, AfterValidator(_duration)]


class ScheduleConfig(Section):
    """When a flow runs on its own (``lossflow schedule``)."""

    cron: Cron = "0 3 * * 1"
    timezone: TimeZone = "UTC"
