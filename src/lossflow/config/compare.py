"""The offline comparison's configuration (``lossflow compare``, the ``compare_losses`` flow).

A comparison is a list of **arms** (a loss file of ``configs/loss/``, optionally with its own
regularisers and training overrides) trained on the same cross-validation folds, plus how the
folds are drawn, which metric decides, the hyper-parameter search, and what the report shows.
``configs/compare/<name>.yaml`` holds it (``compare=<name>`` picks the file; default
``default``); the project gives ``data_dir`` and ``tracking`` (the arms' too). Each arm is a
whole training configuration, resolved by the training loader from the project's training
files (or, with ``version``, from that registered version's recipe), the arm's loss file, the
overrides every arm shares (``overrides``: the file's, then the command line's) and the arm's
own overrides.

On the command line, ``loss=focal,bce`` names one arm per loss file; keys of this model
(``cv.folds=10``, ``hpo.enabled=true``) set the comparison; every other ``key=value``
(``trainer.max_epochs=3``, ``experiment=flights_cost``) is a training override for every arm.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from lossflow.config.common import Section, TrackingConfig, WritableDir
from lossflow.config.loader import DEFAULT_CONFIG_DIR, ConfigKind, load
from lossflow.losses import RegularizerSpec

ARM_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
CVKind = Literal["auto", "stratified", "kfold", "time"]
SamplerName = Literal["tpe", "random", "grid"]
COMPARE_FOLDER = "compare"


class ArmConfig(Section):
    """One arm: a loss file and what this arm changes besides it."""

    loss: str = Field(description="a file of configs/loss/ (without .yaml)")
    overrides: list[str] = Field(
        [], description="training overrides of this arm only, e.g. ['trainer.seed=7']"
    )
    regularizers: list[RegularizerSpec] | None = Field(
        None, description="replaces the regularisers of the training config for this arm"
    )


class CVConfig(Section):
    """How the folds are drawn: the same folds for every arm."""

    kind: CVKind = Field(
        "auto",
        description="auto: time (forward chaining) for a time-split dataset, stratified for "
        "classification, kfold otherwise",
    )
    folds: int = Field(5, description="folds per repeat (time: forward-chaining steps)")
    repeats: int = Field(1, description="repeats with fresh shuffles (not for time folds)")
    seed: int = 0
    val_fraction: float = Field(
        0.15,
        gt=0.0,
        lt=0.5,
        description="share of each fold's training rows held out for early stopping and the "
        "threshold (the latest rows for time folds)",
    )

    @field_validator("folds")
    @classmethod
    def _two_folds(cls, folds: int) -> int:
        if folds < 2:
            raise ValueError(
                f"cv.folds: cross-validation needs at least 2 folds; got {folds} (e.g. --folds 5)"
            )
        return folds

    @field_validator("repeats")
    @classmethod
    def _one_repeat(cls, repeats: int) -> int:
        if repeats < 1:
            raise ValueError(f"cv.repeats: needs at least 1 repeat; got {repeats}")
        return repeats

    @model_validator(mode="after")
    def _time_is_deterministic(self) -> CVConfig:
        if self.kind == "time" and self.repeats > 1:
            raise ValueError(
                f"cv.repeats: forward-chaining time folds are the same on every repeat; set "
                f"repeats: 1 (got {self.repeats}) or use kind: stratified"
            )
        return self


class ParamRange(Section):
    """A searched float parameter: uniform on ``[low, high]`` or log-uniform with ``log``."""

    low: float
    high: float
    log: bool = False

    @model_validator(mode="after")
    def _ordered(self) -> ParamRange:
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.low < self.high):
            raise ValueError(f"a range needs finite low < high; got [{self.low}, {self.high}]")
        if self.log and self.low <= 0:
            raise ValueError(f"a log range needs low > 0; got {self.low}")
        return self


class HPOConfig(Section):
    """Hyper-parameter search with Optuna: the arm (its loss) is a categorical dimension, its
    parameters are searched only when it is chosen."""

    enabled: bool = False
    sampler: SamplerName = Field("tpe", description="tpe (Bayesian), random, or grid")
    n_trials: int | None = Field(
        None, ge=1, description="None: 20 for tpe/random, every grid point for grid"
    )
    grid_points: int = Field(3, ge=2, description="grid: values per searched parameter")
    seed: int = 0
    arms: list[str] | None = Field(None, description="arms the search chooses from; None: all")
    loss_params: dict[str, dict[str, ParamRange]] | None = Field(
        None,
        description="loss name -> option -> range; None: focal.gamma, logit_adjusted.tau, "
        "huber.delta, quantile.quantile, class_balanced.beta",
    )
    lr: ParamRange | None = Field(
        ParamRange(low=1e-4, high=1e-2, log=True), description="optimizer.lr; None: not searched"
    )
    regularizer_strength: ParamRange | None = Field(
        ParamRange(low=1e-7, high=1e-3, log=True),
        description="strength of each regulariser the chosen arm has; None: not searched",
    )
    metric: str | None = Field(
        None, description="a val/ metric the trials log; None: the task's primary one"
    )
    pruner: Literal["median", "none"] = "median"
    pruner_startup_trials: int = Field(2, ge=0, description="trials before any is pruned")
    pruner_warmup_epochs: int = Field(1, ge=0, description="epochs before a trial is pruned")
    storage: str | None = Field(
        None,
        description="Optuna RDB URL; None: sqlite:///<data_dir>/optuna.db. PostgreSQL "
        "(postgresql+psycopg://user@host/db) shares one study between workers and machines",
    )
    study_name: str | None = Field(None, description="None: compare-<parent run id>")
    workers: int = Field(1, ge=1, description="processes running trials of the one study")


class LandscapeConfig(Section):
    """Loss along filter-normalised random directions around each arm's trained weights."""

    enabled: bool = True
    points_1d: int = Field(21, ge=3)
    points_2d: int = Field(11, ge=3)
    span: float = Field(1.0, gt=0.0, description="steps from -span to +span along a direction")
    rows: int = Field(2048, ge=1, description="training rows the loss is averaged over")
    seed: int = 0


class RobustnessConfig(Section):
    """Per-slice metrics and the later (production) months."""

    slices: list[str] | None = Field(
        None,
        description="columns to slice by ('hour_band' from hour, 'class' = the target); None: "
        "carrier, origin, month, hour_band for flights, class for digits, none otherwise",
    )
    min_rows: int = Field(
        50, ge=1, description="fewer rows in a slice of a fold: reported as too small"
    )
    later: bool = Field(True, description="score each held-out month (or part) too")


class ImportanceConfig(Section):
    """Permutation feature importance of each arm's fold models on the test split."""

    enabled: bool = True
    repeats: int = Field(3, ge=1, description="shuffles per feature")
    rows: int | None = Field(5000, ge=1, description="test rows used; None: all")
    seed: int = 0


class CompareConfig(Section):
    """The whole configuration of an offline comparison."""

    loss: list[str] | None = Field(
        None, description="shorthand for arms: one arm per loss file, named after it"
    )
    arms: dict[str, ArmConfig] = Field({}, description="arm name -> arm")
    overrides: list[str] = Field([], description="training overrides every arm takes")
    cv: CVConfig = CVConfig()
    metric: str | None = Field(
        None,
        description="the fold score that decides (roc_auc, expected_cost, accuracy, rmse...); "
        "None: the task's primary one",
    )
    alpha: float = Field(0.05, gt=0.0, lt=1.0, description="family-wise error rate (Holm)")
    power: float = Field(0.8, gt=0.0, lt=1.0, description="for the smallest detectable effect")
    workers: int | None = Field(
        None, ge=1, description="processes training arm x fold units; None: the CPU count"
    )
    ablation: bool = Field(
        True, description="also compare each arm without each composite term and regulariser"
    )
    hpo: HPOConfig = HPOConfig()
    landscape: LandscapeConfig = LandscapeConfig()
    robustness: RobustnessConfig = RobustnessConfig()
    importance: ImportanceConfig = ImportanceConfig()
    project: str | None = Field(
        None, description="the project (configs/project/<name>.yaml) it was read with"
    )
    data_dir: WritableDir = Path("data")
    tracking: TrackingConfig = TrackingConfig()
    version: str | None = Field(
        None,
        description="start every arm from this registered version's recipe (the project's "
        "model) instead of the config files; the arm changes the loss",
    )

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="before")
    @classmethod
    def _arms_from_losses(cls, data: Any) -> Any:
        if not isinstance(data, dict) or data.get("loss") is None:
            return data
        losses = data["loss"]
        if isinstance(losses, str):
            losses = [part.strip() for part in losses.split(",") if part.strip()]
        if not isinstance(losses, list) or not all(isinstance(x, str) for x in losses):
            raise ValueError("loss: give loss files separated by commas, e.g. loss=focal,bce")
        if data.get("arms"):
            raise ValueError(
                "loss: give the arms either as loss=... or as arms in the compare file, not "
                "both; an arm with its own regularisers or overrides needs the arms form"
            )
        twice = sorted({name for name in losses if losses.count(name) > 1})
        if twice:
            raise ValueError(
                f"loss: {', '.join(twice)} listed twice; arms need distinct names: list the "
                "variants as arms in a compare file (e.g. with overrides: [trainer.seed=7])"
            )
        return {**data, "loss": losses, "arms": {name: {"loss": name} for name in losses}}

    @model_validator(mode="after")
    def _enough_arms(self) -> CompareConfig:
        bad = [name for name in self.arms if not ARM_NAME.match(name)]
        if bad:
            raise ValueError(
                f"arms: names {', '.join(map(repr, bad))} must be letters, digits, '_', '-' "
                "or '.' (they name runs and files)"
            )
        if len(self.arms) < 2:
            have = ", ".join(self.arms) or "none"
            raise ValueError(
                f"arms: a comparison needs at least 2 arms (got {len(self.arms)}: {have}); "
                "name more with loss=focal,bce or as arms in configs/compare/<file>.yaml"
            )
        unknown = sorted(set(self.hpo.arms or ()) - set(self.arms))
        if unknown:
            raise ValueError(
                f"hpo.arms: {', '.join(unknown)} are not arms of this comparison; arms: "
                f"{', '.join(self.arms)}"
            )
        return self


COMPARE: ConfigKind[CompareConfig] = ConfigKind(
    name="lossflow compare",
    model=CompareConfig,
    folder=COMPARE_FOLDER,
    default="default",
    inherit=("data_dir", "tracking"),
    example="cv.folds=10",
    section="compare",
)


def split_overrides(overrides: Sequence[str]) -> tuple[list[str], list[str]]:
    """``(comparison overrides, training overrides)``: an override whose first key is a field of
    :class:`CompareConfig` (or ``compare=<file>``) sets the comparison; any other is a training
    override for every arm."""
    own = {*CompareConfig.model_fields, COMPARE_FOLDER}
    mine: list[str] = []
    training: list[str] = []
    for item in overrides:
        key = item.partition("=")[0].strip()
        first = key.split(".", 1)[0]
        # ``loss=focal,bce`` names the arms; ``loss.gamma=3`` sets an option of every arm's loss.
        ours = first in own and not (first == "loss" and key != "loss")
        (mine if ours else training).append(item)
    return mine, training


def _arms_given(overrides: Sequence[str]) -> tuple[bool, bool]:
    keys = [item.partition("=")[0].strip() for item in overrides]
    return "loss" in keys, any(k == "arms" or k.startswith("arms.") for k in keys)


def load_compare_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> CompareConfig:
    """Read the comparison: ``compare/<name>.yaml`` (``compare=<name>``, default ``default``),
    then the comparison's overrides; the training overrides of the command line are appended to
    the file's ``overrides``. Arms given on the command line (``loss=...`` or ``arms=...``)
    replace the file's arms.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    mine, training = split_overrides(overrides)
    # Arms named on the command line replace the file's, in whichever form the file has them.
    by_losses, by_arms = _arms_given(mine)
    if by_losses and not by_arms:
        mine = ["arms={}", *mine]
    elif by_arms and not by_losses:
        mine = ["loss=null", *mine]
    cfg = load(COMPARE, mine, config_dir)
    return cfg.model_copy(update={"overrides": [*cfg.overrides, *training]})
