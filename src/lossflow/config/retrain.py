"""The retraining flow's configuration (``retrain``, triggered by ``lossflow.retrain.requested``).

``data_dir`` and ``tracking`` come from the project (``configs/project/<name>.yaml``);
``configs/retrain/<name>.yaml`` holds the rest (``retrain=<name>`` picks it, default
``default``), then the project's ``retrain`` section. Each candidate is the champion's recipe
(:mod:`lossflow.recipe`) with its loss, the pool this file's ``data`` policy builds and the
``training`` overrides applied.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from lossflow.config.common import Duration, LogLocation, Section, TrackingConfig, WritableDir
from lossflow.config.loader import DEFAULT_CONFIG_DIR, ConfigKind, load


class RetrainData(Section):
    """Which rows a retrain trains on.

    ``expanding``: the source's history (everything before its production period) plus the
    labelled production rows the log holds before the evidence window; ``sliding``: of those,
    the last ``months`` months before the window. The evidence window's own labelled rows are
    never trained on: they are the pre-screen's.
    """

    policy: Literal["expanding", "sliding"] = "expanding"
    months: int = Field(6, ge=1, le=120, description="sliding: months before the window")
    include_log: bool = Field(True, description="add the log's labelled production rows")
    val_fraction: float = Field(0.1, gt=0.0, lt=0.5)
    test_fraction: float = Field(0.1, gt=0.0, lt=0.5)


class Candidates(Section):
    """The losses a retrain tries."""

    include_champion_loss: bool = Field(True, description="the champion's loss on the new data")
    extra: list[dict[str, Any]] = Field(
        [], description="loss specs always tried, e.g. [{name: bce}]"
    )
    max: int = Field(4, ge=1, le=10, description="at most this many trainings")


class Prescreen(Section):
    """The pre-screen of each candidate against the champion on the evidence window."""

    metric: Literal["log_loss", "brier", "mse", "mae", "ndcg_5", "ndcg_10"] | None = Field(
        None,
        description="per-record loss compared; None: log_loss (classification), mse "
        "(regression), ndcg_10 (ranking: 1 - NDCG@k of each logged list)",
    )
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="intervals at alpha / candidates")
    require: Literal["not_worse", "better"] = Field(
        "not_worse",
        description="not_worse: better on average and not significantly worse (the A/B test "
        "decides); better: significantly better",
    )
    min_rows: int = Field(200, ge=10, description="fewer labelled rows: no pre-screen possible")
    allow_below_baseline: bool = Field(
        False,
        description="choose a candidate that does not beat its trivial baseline (training "
        "prior, mean or median; popularity for ranking) all the same, saying so; false: never",
    )


class Posthoc(Section):
    """The cheaper move under pure label-prior shift."""

    enabled: bool = Field(
        True,
        description="also offer the champion with the log-prior correction of the new prior "
        "added to its logits (no retraining)",
    )


class Trigger(Section):
    """How the ``retrain`` deployment is started."""

    event: str = Field("lossflow.retrain.requested", min_length=1)
    enabled: bool = True
    concurrency_limit: int = Field(1, ge=1, description="retrain runs at once (more: queued)")


class RetrainConfig(Section):
    """Retraining on a monitoring decision, candidates pre-screened, the best as challenger."""

    data_dir: WritableDir = Path("data")
    tracking: TrackingConfig = TrackingConfig()
    project: str | None = Field(
        None, description="the project (configs/project/<name>.yaml) it was read with"
    )
    log: LogLocation = LogLocation()
    training: list[str] = Field(
        [], description="overrides of the training config for every candidate"
    )
    data: RetrainData = RetrainData()
    candidates: Candidates = Candidates()
    prescreen: Prescreen = Prescreen()
    posthoc: Posthoc = Posthoc()
    cooldown: Duration = Field("24h", description="no second retrain of a model within it")
    seed: int | None = Field(
        None, description="trainer.seed of every candidate; None: the champion's recipe's"
    )
    trigger: Trigger = Trigger()

    @model_validator(mode="after")
    def _fractions(self) -> RetrainConfig:
        if self.data.val_fraction + self.data.test_fraction >= 0.6:
            raise ValueError("data: val_fraction + test_fraction must leave most rows to train")
        return self


RETRAIN: ConfigKind[RetrainConfig] = ConfigKind(
    name="retrain",
    model=RetrainConfig,
    folder="retrain",
    default="default",
    inherit=("data_dir", "tracking"),
    example="data.policy=sliding",
    section="retrain",
)


def load_retrain_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> RetrainConfig:
    """Read the retraining configuration.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    return load(RETRAIN, overrides, config_dir)
