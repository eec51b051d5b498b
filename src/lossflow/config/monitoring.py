"""The monitoring process's configuration (``lossflow monitor``, the ``monitoring`` flow).

``data_dir`` and ``tracking`` come from the project (``configs/project/<name>.yaml``);
``configs/monitoring/<name>.yaml`` holds the rest (``monitoring=<name>`` picks it, default
``default``), and the project's ``monitoring`` section what differs for its model. The drift
methods are pinned here, never chosen by sample size.
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


class DriftConfig(Section):
    """Per-column drift: an effect over its threshold and a test significant after
    Benjamini–Hochberg at ``alpha``; the dataset drifts when ``dataset_share`` of features do."""

    numeric_effect: Literal["wasserstein", "psi"] = Field(
        "wasserstein", description="normed Wasserstein distance, or PSI"
    )
    numeric_threshold: float = Field(0.1, gt=0.0)
    categorical_effect: Literal["jensenshannon", "psi"] = Field(
        "jensenshannon", description="Jensen-Shannon distance (natural log), or PSI"
    )
    categorical_threshold: float = Field(0.1, gt=0.0)
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="false discovery rate across columns")
    dataset_share: float = Field(0.5, gt=0.0, le=1.0)


class PriorConfig(Section):
    """Label-prior shift: observed on labels, estimated (BBSE) before them."""

    alpha: float = Field(0.01, gt=0.0, lt=1.0)
    tolerance: float = Field(0.03, ge=0.0, lt=1.0, description="smallest class-share change")
    min_labels: int = Field(200, ge=1)
    resamples: int = Field(500, ge=10)


class PerformanceConfig(Section):
    """Quality on delayed labels."""

    min_labels: int = Field(200, ge=1, description="fewer: 'insufficient labels'")
    tolerance: float = Field(0.01, ge=0.0, description="decay beyond the interval by more than")
    resamples: int = Field(200, ge=10, description="bootstrap resamples")
    confidence: float = Field(0.95, gt=0.5, lt=1.0)
    max_labelled: int = Field(20_000, ge=100, description="rows the intervals are computed on")
    fn_cost: float | None = Field(None, gt=0.0, description="binary: cost of a false negative")
    fp_cost: float | None = Field(None, gt=0.0, description="binary: cost of a false positive")

    @model_validator(mode="after")
    def _both_costs(self) -> PerformanceConfig:
        if (self.fn_cost is None) != (self.fp_cost is None):
            raise ValueError("performance: give both fn_cost and fp_cost, or neither")
        return self


class DecisionConfig(Section):
    """When a retrain is asked for."""

    min_rows: int = Field(1000, ge=1, description="fewer rows: 'insufficient data'")
    cooldown: Duration = Field("24h", description="no second retrain request within it")
    retrain_on_dataset_drift: bool = True
    retrain_on_prediction_drift: bool = False
    retrain_on_decay: bool = True
    retrain_on_prior_shift: bool = True
    rare_positive_share: float = Field(0.1, gt=0.0, lt=1.0)
    tail_kurtosis_increase: float = Field(2.0, gt=0.0)


class ReportConfig(Section):
    """The human-readable Evidently report logged with each run."""

    evidently: bool = True
    sample_rows: int = Field(5000, ge=100, description="rows per side in the report")


class MonitoringConfig(Section):
    """The monitoring of served traffic."""

    data_dir: WritableDir = Path("data")
    tracking: TrackingConfig = TrackingConfig()
    project: str | None = Field(
        None, description="the project (configs/project/<name>.yaml) it was read with"
    )
    log: LogLocation = LogLocation()
    experiment: str | None = Field(
        None, description="routing experiment whose rows count; None: every experiment"
    )
    variants: list[str] | None = Field(None, description="None: every variant in the window")
    window: Duration = Field("24h", description="the window ends now and lasts this long")
    drift: DriftConfig = DriftConfig()
    prior: PriorConfig = PriorConfig()
    performance: PerformanceConfig = PerformanceConfig()
    decision: DecisionConfig = DecisionConfig()
    report: ReportConfig = ReportConfig()
    schedule: ScheduleConfig = ScheduleConfig(cron="0 * * * *")
    seed: int = 0


MONITORING: ConfigKind[MonitoringConfig] = ConfigKind(
    name="lossflow monitor",
    model=MonitoringConfig,
    folder="monitoring",
    default="default",
    inherit=("data_dir", "tracking"),
    example="drift.alpha=0.01",
    section="monitoring",
)


def load_monitoring_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> MonitoringConfig:
    """Read the monitoring configuration (base's ``data_dir`` and ``tracking``, then
    ``monitoring/<name>.yaml``, then dotted overrides).

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    return load(MONITORING, overrides, config_dir)
