"""The training process's configuration (``lossflow train``, the ``training`` flow).

Values that parse but cannot work are rejected here, before any data is read: a loss that does
not fit the task, a task the pipeline cannot train yet, an early-stopping metric the task never
logs (or watched in the wrong direction), an unknown optimizer or scheduler (with the closest
name), a data directory that cannot be written, a schedule that is not a cron expression.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

from pydantic import Field, ValidationError, field_validator, model_validator

from lossflow.config.common import ScheduleConfig, Section, TrackingConfig, WritableDir
from lossflow.config.data import DataConfig, PoolConfig
from lossflow.config.loader import DEFAULT_CONFIG_DIR, ConfigKind, explain, load
from lossflow.losses import (
    LossConfigError,
    LossSpec,
    LossSpecBase,
    RegularizerSpec,
    TaskType,
    check_task,
)
from lossflow.registry import unknown_name

# Tasks the training pipeline (data -> model -> metrics -> ONNX -> service) runs end to end.
TRAINED_TASKS: tuple[TaskType, ...] = ("binary", "multiclass", "regression", "ranking")
DEFAULT_RANKING_K: tuple[int, ...] = (5, 10)

Direction = Literal["min", "max"]
# What the validation epoch logs per task (as ``val/<name>``), and which way is better.
VALIDATION_METRICS: dict[str, dict[str, Direction]] = {
    "binary": {"auc": "max", "pr_auc": "max", "log_loss": "min"},
    "multiclass": {"accuracy": "max", "macro_f1": "max", "log_loss": "min"},
    "regression": {"rmse": "min", "mae": "min", "r2": "max"},
    # ndcg_<k> for every k of evaluation.ranking_k (5 and 10 by default).
    "ranking": {"mrr": "max", "map": "max", "pairwise_accuracy": "max"},
}
QUANTILE_METRIC = "pinball"  # regression with a ``quantile`` loss also logs ``val/pinball``
# What early stopping watches when the config names no metric.
PRIMARY_METRICS: dict[str, str] = {
    "binary": "val/auc",
    "multiclass": "val/accuracy",
    "regression": "val/rmse",
    "ranking": "val/ndcg_10",  # the largest k of evaluation.ranking_k
}

# Optimizers and schedulers by name. The names are declared here (no torch); their builders
# register under exactly these names in lossflow.models.optim, which refuses any other.
OptimizerName = Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"]
SchedulerName = Literal["none", "cosine", "step", "plateau"]
OPTIMIZER_NAMES: tuple[OptimizerName, ...] = get_args(OptimizerName)
SCHEDULER_NAMES: tuple[SchedulerName, ...] = get_args(SchedulerName)


def _declared(kind: str, name: object, names: tuple[str, ...]) -> object:
    """``name`` if it is one of ``names``; else the unknown-name error with the closest one."""
    if isinstance(name, str) and name not in names:
        raise ValueError(unknown_name(kind, name, names))
    return name


class ModelConfig(Section):
    """Network architecture (the ``model`` section)."""

    kind: Literal["mlp", "cnn"] = Field("mlp", description="mlp for tables, cnn for 8x8 images")
    hidden: list[int] = Field([128, 64], description="hidden layer widths (mlp)")
    activation: Literal["relu", "gelu", "silu"] = "relu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    embedding_dim: int | None = Field(
        None, ge=1, description="embedding width per categorical column; None: min(16, (n+1)//2)"
    )
    channels: list[int] = Field([16, 32], description="conv channels (cnn)")
    scale_target: bool = Field(
        True,
        description="regression: the output layer starts at the training target's mean and "
        "standard deviation (inside the ONNX graph), so a target in its own unit (hundreds, "
        "thousands) trains like a standardised one; the loss sees the target's unit",
    )

    @model_validator(mode="after")
    def _check_widths(self) -> ModelConfig:
        for key in ("hidden", "channels"):
            widths = getattr(self, key)
            if not widths or min(widths) < 1:
                raise ValueError(f"{key} must list at least one positive width; got {widths}")
        return self


class OptimizerConfig(Section):
    """Optimizer by name (the ``optimizer`` section)."""

    name: OptimizerName = Field("adamw", description=", ".join(OPTIMIZER_NAMES))
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0, description="optimizer decay, not a loss penalty")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop only")

    @field_validator("name", mode="before")
    @classmethod
    def _known(cls, name: object) -> object:
        return _declared("optimizer", name, OPTIMIZER_NAMES)


class SchedulerConfig(Section):
    """Learning-rate schedule (the ``scheduler`` section)."""

    name: SchedulerName = Field("none", description=", ".join(SCHEDULER_NAMES))
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="decay factor (step, plateau)")
    patience: int = Field(2, ge=0, description="epochs without improvement (plateau)")

    @field_validator("name", mode="before")
    @classmethod
    def _known(cls, name: object) -> object:
        return _declared("scheduler", name, SCHEDULER_NAMES)


class EarlyStoppingConfig(Section):
    """Stop when a validation metric stops improving (the best checkpoint follows it too)."""

    monitor: str | None = Field(
        None,
        description="a val/ metric the run logs; None: the task's primary one (val/auc, "
        "val/accuracy, val/rmse, or val/pinball for a quantile loss)",
    )
    mode: Direction | None = Field(None, description="None: the metric's own direction")
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0.0)


class TrainerConfig(Section):
    """Training loop (the ``trainer`` section)."""

    max_epochs: int = Field(5, ge=1)
    batch_size: int = Field(1024, ge=1)
    seed: int = 42
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(1, ge=1, description="processes per node (one per GPU) with ddp")
    num_nodes: int = Field(1, ge=1, description="machines of a ddp run (MASTER_ADDR etc. set)")
    strategy: Literal["auto", "ddp"] = Field(
        "auto", description="ddp: data-parallel over devices x num_nodes processes"
    )
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    gradient_clip_val: float | None = Field(None, gt=0.0)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    early_stopping: EarlyStoppingConfig | None = EarlyStoppingConfig()
    log_every_n_steps: int = Field(50, ge=1)
    deterministic: bool = False
    limit_train_batches: int | None = Field(None, ge=1, description="cap batches per epoch")

    @model_validator(mode="after")
    def _parallel_needs_ddp(self) -> TrainerConfig:
        if self.strategy != "ddp" and (self.devices > 1 or self.num_nodes > 1):
            raise ValueError(
                f"trainer.devices={self.devices}, trainer.num_nodes={self.num_nodes}: more than "
                "one training process needs trainer.strategy: ddp"
            )
        return self


class EvaluationConfig(Section):
    """How the binary decision threshold is chosen on the validation split, and what ranking
    metrics are computed."""

    threshold: Literal["f1", "cost"] = "f1"
    fn_cost: float | None = Field(None, gt=0.0, description="cost of a false negative")
    fp_cost: float | None = Field(None, gt=0.0, description="cost of a false positive")
    ranking_k: list[int] = Field(
        list(DEFAULT_RANKING_K),
        description="cut-offs k of NDCG@k (ranking); the largest is "
        "early stopping's default metric",
    )
    relevant_at: float | None = Field(
        None,
        description="ranking: an item is relevant (MRR, MAP) iff its relevance is >= this; "
        "None: iff it is > 0",
    )

    @field_validator("ranking_k")
    @classmethod
    def _cutoffs(cls, ks: list[int]) -> list[int]:
        if not ks or min(ks) < 1:
            raise ValueError(f"ranking_k must list at least one cut-off >= 1; got {ks}")
        return sorted(set(ks))

    @model_validator(mode="after")
    def _costs(self) -> EvaluationConfig:
        if self.threshold == "cost" and (self.fn_cost is None or self.fp_cost is None):
            raise ValueError("threshold 'cost' needs both fn_cost and fp_cost")
        return self


class ExportConfig(Section):
    """ONNX export and its parity gate: every test output of onnxruntime must lie within
    ``parity_atol + parity_rtol * |torch|`` of torch's (``numpy.allclose``'s rule)."""

    parity_atol: float = Field(1e-5, ge=0.0, description="absolute part of the tolerance")
    parity_rtol: float = Field(
        1e-5,
        ge=0.0,
        description="relative part (of the torch value): float32 keeps ~7 significant digits, "
        "so outputs in the hundreds or thousands (a target in its unit) differ by more than an "
        "absolute 1e-5 from rounding alone",
    )


def quantile_of(loss: LossSpecBase) -> float | None:
    """The quantile a ``quantile`` loss targets (its pinball metric is then reported)."""
    value = getattr(loss, "quantile", None) if loss.name == "quantile" else None
    return None if value is None else float(value)


def monitored_metrics(
    task: TaskType,
    loss: LossSpecBase,
    regularizers: Sequence[RegularizerSpec],
    ranking_k: Sequence[int] = DEFAULT_RANKING_K,
) -> dict[str, Direction]:
    """Every ``val/...`` value the validation epoch logs for this run, and which way is better."""
    metrics: dict[str, Direction] = {"val/loss": "min", "val/data_loss": "min"}
    for term in getattr(loss, "terms", {}) or {}:
        metrics[f"val/term/{term}"] = "min"
    for i, reg in enumerate(regularizers):
        metrics[f"val/reg/{i}_{reg.name}"] = "min"
    if task == "ranking":
        metrics.update({f"val/ndcg_{k}": "max" for k in ranking_k})
    metrics.update({f"val/{k}": v for k, v in VALIDATION_METRICS.get(task, {}).items()})
    if task == "regression" and quantile_of(loss) is not None:
        metrics[f"val/{QUANTILE_METRIC}"] = "min"
    return metrics


def primary_metric(
    task: TaskType, loss: LossSpecBase, ranking_k: Sequence[int] = DEFAULT_RANKING_K
) -> str:
    """The validation metric early stopping watches when none is configured (ranking: NDCG at
    the largest cut-off)."""
    if task == "regression" and quantile_of(loss) is not None:
        return f"val/{QUANTILE_METRIC}"
    if task == "ranking":
        return f"val/ndcg_{max(ranking_k)}"
    return PRIMARY_METRICS[task]


class TrainingConfig(Section):
    """The whole resolved configuration of a training run."""

    project: str | None = Field(
        None, description="the project (configs/project/<name>.yaml) it was read with"
    )
    data_dir: WritableDir = Field(Path("data"), description="MLflow store, runs, artifacts")
    data: DataConfig
    pool: PoolConfig | None = Field(
        None, description="set by a retrain: the rows it trained on (see PoolConfig)"
    )
    loss: LossSpec
    regularizers: list[RegularizerSpec] = Field(default_factory=list)
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trainer: TrainerConfig = TrainerConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _fits_together(self) -> TrainingConfig:
        task = self.data.task
        if task not in TRAINED_TASKS:
            raise ValueError(
                f"data.task: the training pipeline runs {', '.join(TRAINED_TASKS)} tasks; "
                f"{task!r} has losses in the library (lossflow losses --task {task}) but no "
                "pipeline yet"
            )
        try:
            check_task(self.loss, task)
        except LossConfigError as err:
            raise ValueError(f"loss: {err}") from None
        path = self.data.path
        if path is not None and not path.is_file():
            raise ValueError(
                f"data.path: {self.data.source} file {path} does not exist (resolved: "
                f"{path.resolve()}); set data.path to an existing file"
            )
        if self.pool is not None and not self.pool.path.is_file():
            raise ValueError(
                f"pool.path: the retrain's pool {self.pool.path} does not exist; it is written "
                "by the retrain flow and kept under its data_dir"
            )
        if self.model.kind == "cnn" and self.data.source != "digits":
            raise ValueError("model.kind: 'cnn' needs 8x8 images; use it with data=digits")
        if self.evaluation.threshold == "cost" and task != "binary":
            raise ValueError(
                f"evaluation.threshold: a cost-optimal threshold applies to binary tasks, not "
                f"{task}; use threshold: f1 (ignored for {task})"
            )
        stopping = self.trainer.early_stopping
        if stopping is not None:
            ks = self.evaluation.ranking_k
            logged = monitored_metrics(task, self.loss, self.regularizers, ks)
            monitor = stopping.monitor or primary_metric(task, self.loss, ks)
            direction = logged.get(monitor)
            if direction is None:
                raise ValueError(
                    f"trainer.early_stopping.monitor: {monitor!r} is not logged by a {task} "
                    f"run; choose one of {', '.join(logged)}"
                )
            if stopping.mode is not None and direction != stopping.mode:
                better = "higher" if direction == "max" else "lower"
                raise ValueError(
                    f"trainer.early_stopping.mode: {monitor} is better when {better}; set "
                    f"mode: {direction} (or leave mode out)"
                )
        return self

    def early_stopping(self) -> EarlyStoppingConfig | None:
        """``trainer.early_stopping`` with its metric and direction filled in."""
        stopping = self.trainer.early_stopping
        if stopping is None:
            return None
        ks = self.evaluation.ranking_k
        monitor = stopping.monitor or primary_metric(self.data.task, self.loss, ks)
        direction = monitored_metrics(self.data.task, self.loss, self.regularizers, ks)[monitor]
        return stopping.model_copy(update={"monitor": monitor, "mode": direction})


TRAINING: ConfigKind[TrainingConfig] = ConfigKind(
    name="lossflow train",
    model=TrainingConfig,
    folder="experiment",
    default=None,
    groups=("data", "loss"),
    example="loss.gamma=3",
    section="training",
)


def load_training_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> TrainingConfig:
    """Read, merge and validate the training configuration.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    return load(TRAINING, overrides, config_dir)


def config_to_dict(cfg: TrainingConfig) -> dict[str, Any]:
    """The resolved configuration as plain JSON-able data (for MLflow and reproduction)."""
    return cfg.model_dump(mode="json")


def config_from_dict(data: Mapping[str, Any]) -> TrainingConfig:
    """A resolved configuration from its JSON form (:func:`config_to_dict`, perhaps changed),
    validated again.

    Raises:
        ConfigError: the values do not make a valid configuration, naming the key.
    """
    try:
        return TrainingConfig.model_validate(dict(data))
    except ValidationError as err:
        raise explain(err, {}, TrainingConfig) from None
