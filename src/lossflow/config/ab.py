"""The A/B analysis's configuration (``lossflow ab``, the ``ab_analysis`` flow).

``data_dir`` and ``tracking`` come from the project (``configs/project/<name>.yaml``);
``configs/ab/<name>.yaml`` holds the rest (``ab=<name>`` picks it, default ``default``), then the
project's ``ab`` section.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator

from lossflow.config.common import (
    Duration,
    LogLocation,
    ScheduleConfig,
    Section,
    TrackingConfig,
    WritableDir,
)
from lossflow.config.loader import DEFAULT_CONFIG_DIR, ConfigKind, load

PrimaryMetric = Literal[
    "log_loss", "brier", "accuracy", "expected_cost", "mse", "mae", "pinball", "ndcg_10", "ndcg_5"
]


class SrmConfig(Section):
    """The sample-ratio gate."""

    alpha: float = Field(0.001, gt=0.0, lt=1.0, description="anytime-valid p below it: invalid")
    concentration: float = Field(100.0, gt=0.0, description="Dirichlet prior concentration")


class GuardrailsConfig(Section):
    """What a challenger must not make worse (non-inferiority margins, per-unit means)."""

    latency_ms: float | None = Field(5.0, gt=0.0, description="mean latency may rise by at most")
    error_rate: float | None = Field(
        0.01, gt=0.0, description="the share of failed requests may rise by at most"
    )
    positive_rate: float | None = Field(
        0.1, gt=0.0, description="binary: the share predicted positive may move by at most"
    )
    calibration: float | None = Field(
        0.02, gt=0.0, description="|mean(probability - label)| may grow by at most"
    )
    coverage_alpha: float = Field(
        0.001, gt=0.0, lt=1.0, description="labels reaching one arm less often: flagged below"
    )


class AbConfig(Section):
    """How loss A/B tests are decided."""

    data_dir: WritableDir = Path("data")
    tracking: TrackingConfig = TrackingConfig()
    project: str | None = Field(
        None, description="the project (configs/project/<name>.yaml) it was read with"
    )
    serving: str = Field(
        "default",
        min_length=1,
        description="configs/serving/<name>.yaml of the service under test: its variants, "
        "routing experiment, weights and log",
    )
    log: LogLocation | None = Field(None, description="None: the serving config's log")
    experiment: str | None = Field(
        None, description="None: the shared routing's experiment, else the serving config's"
    )
    champion: str = Field("champion", min_length=1, description="the control variant")
    challengers: list[str] | None = Field(None, description="None: every other variant")
    since: Duration = Field("30d", description="rows of the experiment from this long ago")
    primary_metric: PrimaryMetric | None = Field(
        None, description="None: log_loss (classification), mse (regression), ndcg_10 (ranking)"
    )
    fn_cost: float | None = Field(None, gt=0.0, description="expected_cost: false negative")
    fp_cost: float | None = Field(None, gt=0.0, description="expected_cost: false positive")
    quantile: float | None = Field(None, gt=0.0, lt=1.0, description="pinball: the quantile")
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="error rate under continuous looks")
    phi: float = Field(
        100.0,
        gt=0.0,
        description="mixture prior of the sequential test: effects of about sd/sqrt(phi) are "
        "found soonest (any value keeps the error rate)",
    )
    min_effect: float = Field(
        0.002, gt=0.0, description="futility: an interval within +/- this rejects the challenger"
    )
    min_units: int = Field(500, ge=2, description="labelled units per arm before deciding")
    min_duration: Duration = Field("24h", description="traffic span before deciding")
    srm: SrmConfig = SrmConfig()
    guardrails: GuardrailsConfig = GuardrailsConfig()
    lock_ttl: Duration = Field("10m", description="lease held while aliases move")
    schedule: ScheduleConfig = ScheduleConfig(cron="30 * * * *")

    @model_validator(mode="after")
    def _costs(self) -> AbConfig:
        if self.primary_metric == "expected_cost" and (
            self.fn_cost is None or self.fp_cost is None
        ):
            raise ValueError("primary_metric: expected_cost needs fn_cost and fp_cost")
        if self.primary_metric == "pinball" and self.quantile is None:
            raise ValueError("primary_metric: pinball needs quantile")
        if self.challengers is not None and self.champion in self.challengers:
            raise ValueError(f"challengers: the champion {self.champion!r} cannot challenge itself")
        return self


AB: ConfigKind[AbConfig] = ConfigKind(
    name="lossflow ab",
    model=AbConfig,
    folder="ab",
    default="default",
    inherit=("data_dir", "tracking"),
    example="min_units=2000",
    section="ab",
)


def load_ab_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> AbConfig:
    """Read the A/B analysis's configuration.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    return load(AB, overrides, config_dir)
