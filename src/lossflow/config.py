"""The one reader of configuration: YAML files + group choices + overlays + ``a.b=c`` overrides.

Layout of a config directory::

    base.yaml           # every section, plus ``defaults: {data: flights, loss: focal}``
    data/<name>.yaml    # the ``data`` section for one dataset
    loss/<name>.yaml    # the ``loss`` section: one file per loss choice (an A/B arm later)
    experiment/*.yaml   # overlays listing only what differs (may switch groups in ``defaults``)
    serving/<name>.yaml # the inference service (``load_serving_config``)

Resolution order: base, then the chosen group files, then the experiment overlay, then dotted
command-line overrides. ``loss=focal`` picks a group file, ``experiment=digits_cnn`` an overlay,
``loss.gamma=3`` sets one key (the value is parsed as YAML). Choosing a group replaces that
section whole, so options of the previous loss cannot leak into the new one.

Every error names where the bad value came from (file or command line), the dotted key and what
was expected.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from lossflow.data.schema import DataConfig
from lossflow.losses import LossSpec, RegularizerSpec, check_task

GROUPS: tuple[str, ...] = ("data", "loss")
DEFAULT_CONFIG_DIR = Path("configs")


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message says where and why."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelConfig(_Section):
    """Network architecture (the ``model`` section)."""

    kind: Literal["mlp", "cnn"] = Field("mlp", description="mlp for tables, cnn for 8x8 images")
    hidden: list[int] = Field([128, 64], description="hidden layer widths (mlp)")
    activation: Literal["relu", "gelu", "silu"] = "relu"
    dropout: float = Field(0.1, ge=0.0, lt=1.0)
    embedding_dim: int | None = Field(
        None, ge=1, description="embedding width per categorical column; None: min(16, (n+1)//2)"
    )
    channels: list[int] = Field([16, 32], description="conv channels (cnn)")

    @model_validator(mode="after")
    def _check_widths(self) -> ModelConfig:
        for key in ("hidden", "channels"):
            widths = getattr(self, key)
            if not widths or min(widths) < 1:
                raise ValueError(f"{key} must list at least one positive width; got {widths}")
        return self


class OptimizerConfig(_Section):
    """Optimizer by name (the ``optimizer`` section)."""

    name: Literal["sgd", "adam", "adamw", "rmsprop", "adagrad"] = "adamw"
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(0.0, ge=0.0, description="optimizer decay, not a loss penalty")
    momentum: float = Field(0.9, ge=0.0, lt=1.0, description="sgd and rmsprop only")


class SchedulerConfig(_Section):
    """Learning-rate schedule (the ``scheduler`` section)."""

    name: Literal["none", "cosine", "step", "plateau"] = "none"
    step_size: int = Field(10, ge=1, description="epochs between decays (step)")
    gamma: float = Field(0.5, gt=0.0, le=1.0, description="decay factor (step, plateau)")
    patience: int = Field(2, ge=0, description="epochs without improvement (plateau)")


class EarlyStoppingConfig(_Section):
    """Stop when a validation metric stops improving."""

    monitor: str = "val/loss"
    mode: Literal["min", "max"] = "min"
    patience: int = Field(3, ge=1)
    min_delta: float = Field(0.0, ge=0.0)


class TrainerConfig(_Section):
    """Training loop (the ``trainer`` section)."""

    max_epochs: int = Field(5, ge=1)
    batch_size: int = Field(1024, ge=1)
    seed: int = 42
    accelerator: Literal["auto", "cpu", "gpu"] = "auto"
    devices: int = Field(1, ge=1)
    strategy: Literal["auto", "ddp"] = "auto"
    precision: Literal["32-true", "bf16-mixed", "16-mixed"] = "32-true"
    gradient_clip_val: float | None = Field(None, gt=0.0)
    gradient_clip_algorithm: Literal["norm", "value"] = "norm"
    early_stopping: EarlyStoppingConfig | None = EarlyStoppingConfig()
    log_every_n_steps: int = Field(50, ge=1)
    deterministic: bool = False
    limit_train_batches: int | None = Field(None, ge=1, description="cap batches per epoch")


class EvaluationConfig(_Section):
    """How the binary decision threshold is chosen on the validation split."""

    threshold: Literal["f1", "cost"] = "f1"
    fn_cost: float | None = Field(None, gt=0.0, description="cost of a false negative")
    fp_cost: float | None = Field(None, gt=0.0, description="cost of a false positive")

    @model_validator(mode="after")
    def _costs(self) -> EvaluationConfig:
        if self.threshold == "cost" and (self.fn_cost is None or self.fp_cost is None):
            raise ValueError("threshold 'cost' needs both fn_cost and fp_cost")
        return self


class TrackingConfig(_Section):
    """MLflow tracking and registry (the ``tracking`` section)."""

    tracking_uri: str | None = Field(
        None, description="None: MLFLOW_TRACKING_URI, else sqlite under data_dir"
    )
    experiment: str = "lossflow"
    registered_model: str = "lossflow-flights"


class ExportConfig(_Section):
    """ONNX export and its parity gate."""

    parity_atol: float = Field(1e-5, gt=0.0)


class ScheduleConfig(_Section):
    """When ``lossflow schedule`` runs the training flow."""

    cron: str = "0 3 * * 1"
    timezone: str = "UTC"


class ModelSource(_Section):
    """Where a served model comes from: a registry alias, a registry version or a local file."""

    alias: str | None = Field(None, description="registry alias, e.g. champion")
    version: str | None = Field(None, description="registry version number, e.g. '3'")
    path: Path | None = Field(None, description="local .onnx file (air-gapped serving)")

    @field_validator("version", mode="before")
    @classmethod
    def _version_text(cls, value: Any) -> Any:
        # YAML reads `version: 3` as an int; registry versions are numbers written as text.
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        given = [k for k in ("alias", "version", "path") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of alias, version or path (got {', '.join(given) or 'none'})"
            )
        if self.version is not None and not self.version.isdigit():
            raise ValueError(f"version must be a registry version number; got {self.version!r}")
        return self

    def describe(self) -> str:
        """``alias:champion``, ``version:3`` or ``path:/models/x.onnx``."""
        if self.alias is not None:
            return f"alias:{self.alias}"
        if self.version is not None:
            return f"version:{self.version}"
        return f"path:{self.path}"


class VariantConfig(ModelSource):
    """A served variant: its model and its share of traffic."""

    weight: float = Field(50.0, ge=0.0, allow_inf_nan=False)


class PredictionLogConfig(_Section):
    """Where and how predictions are logged (the service's ``log`` section)."""

    enabled: bool = Field(True, description="false only for benchmarks: nothing is logged")
    url: str | None = Field(
        None, description="SQLAlchemy URL; None: sqlite:///<data_dir>/predictions.db"
    )
    db_schema: str | None = Field(None, description="PostgreSQL schema (default search path)")
    max_batch: int = Field(256, ge=1, description="most records per write transaction")
    max_delay_s: float = Field(0.05, ge=0.0, description="longest wait before a batch is written")
    max_queue: int = Field(100_000, ge=1, description="backlog at which /predict answers 503")
    drain_timeout_s: float = Field(30.0, gt=0.0, description="shutdown wait for the backlog")


class ServingLimits(_Section):
    """Request limits of ``/predict``."""

    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger bodies get 413")
    max_records: int = Field(1000, ge=1, description="more records per request get 422")


class ServingConfig(_Section):
    """The inference service: variants, traffic, prediction log, limits, bind address."""

    data_dir: Path = Path("data")
    tracking: TrackingConfig = TrackingConfig()
    experiment: str = Field(
        "loss-ab", min_length=1, description="names the A/B assignment; a new name reshuffles units"
    )
    variants: dict[str, VariantConfig] = Field(
        {},
        description="empty: champion 50 / challenger 50 when both aliases exist, else champion 100",
    )
    shadow: ModelSource | None = Field(None, description="scored and logged, never returned")
    watch_registry_s: float | None = Field(
        None,
        gt=0.0,
        description="poll the aliases (and local files) this often and reload when they move",
    )
    log: PredictionLogConfig = PredictionLogConfig()
    limits: ServingLimits = ServingLimits()
    admin_token_env: str = Field(
        "LOSSFLOW_ADMIN_TOKEN", description="environment variable holding the admin bearer token"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    access_log: bool = Field(False, description="one JSON log line per request")

    @model_validator(mode="after")
    def _check_variants(self) -> ServingConfig:
        for name in self.variants:
            if not name or name == "shadow" or not name.replace("-", "").replace("_", "").isalnum():
                raise ValueError(
                    f"variant name {name!r} must be letters, digits, '-' or '_' and not 'shadow'"
                )
        if self.variants and sum(v.weight for v in self.variants.values()) <= 0:
            raise ValueError("at least one variant needs a positive weight")
        return self


class LossflowConfig(_Section):
    """The whole resolved configuration of a training run."""

    data_dir: Path = Field(Path("data"), description="project data: MLflow store, artifacts")
    data: DataConfig
    loss: LossSpec
    regularizers: list[RegularizerSpec] = []
    model: ModelConfig = ModelConfig()
    optimizer: OptimizerConfig = OptimizerConfig()
    scheduler: SchedulerConfig = SchedulerConfig()
    trainer: TrainerConfig = TrainerConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    tracking: TrackingConfig = TrackingConfig()
    export: ExportConfig = ExportConfig()
    schedule: ScheduleConfig = ScheduleConfig()

    @model_validator(mode="after")
    def _loss_fits_task(self) -> LossflowConfig:
        check_task(self.loss, self.data.task)
        if self.model.kind == "cnn" and self.data.source != "digits":
            raise ValueError("model.kind 'cnn' needs 8x8 images: use it with data 'digits'")
        return self


# --- reading ---------------------------------------------------------------------------------

Provenance = dict[tuple[str, ...], str]


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: must hold a mapping, got {type(data).__name__}")
    return data


def _record(prov: Provenance, prefix: tuple[str, ...], value: Any, source: str) -> None:
    prov[prefix] = source
    if isinstance(value, Mapping):
        for key, sub in value.items():
            _record(prov, (*prefix, str(key)), sub, source)


def _merge(
    dst: dict[str, Any], src: Mapping[str, Any], source: str, prov: Provenance, at: tuple[str, ...]
) -> None:
    for key, value in src.items():
        path = (*at, str(key))
        if isinstance(value, Mapping) and isinstance(dst.get(key), dict):
            _merge(dst[key], value, source, prov, path)
        else:
            dst[key] = copy.deepcopy(value)
            _record(prov, path, value, source)


def _group_file(config_dir: Path, group: str, choice: str) -> Path:
    path = config_dir / group / f"{choice}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in (config_dir / group).glob("*.yaml"))
        raise ConfigError(
            f"no {group} config named '{choice}' (looked for {path}); available: {', '.join(known)}"
        )
    return path


def _parse_overrides(overrides: Sequence[str]) -> tuple[dict[str, str], list[tuple[str, Any]]]:
    choices: dict[str, str] = {}
    sets: list[tuple[str, Any]] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(
                f"override {item!r} must look like key=value (e.g. loss=focal, loss.gamma=3)"
            )
        if key in (*GROUPS, "experiment"):
            choices[key] = raw.strip()
            continue
        sets.append((key, _override_value(item, raw)))
    return choices, sets


def _override_value(item: str, raw: str) -> Any:
    try:
        return yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError as err:
        raise ConfigError(f"override {item!r}: value is not valid YAML: {err}") from err


def _set_dotted(cfg: dict[str, Any], key: str, value: Any, prov: Provenance) -> None:
    parts = key.split(".")
    node = cfg
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:  # a missing or null section is created by the override
            child = node[part] = {}
            prov[tuple(parts[: i + 1])] = "command line"
        if not isinstance(child, dict):
            raise ConfigError(
                f"command line: cannot set '{key}': '{'.'.join(parts[: i + 1])}' is a value, "
                "not a section"
            )
        node = child
    node[parts[-1]] = value
    _record(prov, tuple(parts), value, "command line")


def _where(loc: tuple[str | int, ...], prov: Provenance) -> str:
    path = tuple(str(p) for p in loc)
    while path:
        if path in prov:
            return prov[path]
        path = path[:-1]
    return "defaults"


def _explain(err: ValidationError, prov: Provenance) -> ConfigError:
    lines = []
    for e in err.errors(include_url=False):
        loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        key = ".".join(str(p) for p in loc) or "(top level)"
        got = f" (got {e['input']!r})" if e["type"] not in ("missing",) and "input" in e else ""
        message = str(e["msg"]).removeprefix("Value error, ")
        lines.append(f"{_where(loc, prov)}: {key}: {message}{got}")
    return ConfigError("invalid configuration:\n  " + "\n  ".join(lines))


def resolve_config_dict(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> tuple[dict[str, Any], Provenance]:
    """Merge the YAML files and overrides into one mapping, with where each key came from."""
    base_path = config_dir / "base.yaml"
    if not base_path.is_file():
        raise ConfigError(
            f"no base config at {base_path}; run from the project root or pass --config-dir"
        )
    base = _read_yaml(base_path)
    choices, sets = _parse_overrides(overrides)

    experiment: dict[str, Any] = {}
    experiment_path: Path | None = None
    if choices.get("experiment"):
        experiment_path = _group_file(config_dir, "experiment", choices["experiment"])
        experiment = _read_yaml(experiment_path)

    defaults = dict(base.pop("defaults", {}) or {})
    defaults.update(experiment.pop("defaults", {}) or {})
    defaults.update({g: c for g, c in choices.items() if g in GROUPS})
    unknown_groups = sorted(set(defaults) - set(GROUPS))
    if unknown_groups:
        raise ConfigError(
            f"defaults name unknown groups {unknown_groups}; groups: {', '.join(GROUPS)}"
        )

    prov: Provenance = {}
    cfg: dict[str, Any] = {}
    _merge(cfg, base, str(base_path), prov, ())
    for group in GROUPS:
        if group in defaults:
            path = _group_file(config_dir, group, str(defaults[group]))
            cfg[group] = {}
            prov[(group,)] = str(path)
            _merge(cfg[group], _read_yaml(path), str(path), prov, (group,))
    if experiment_path is not None:
        _merge(cfg, experiment, str(experiment_path), prov, ())
    for key, value in sets:
        _set_dotted(cfg, key, value, prov)
    return cfg, prov


def load_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> LossflowConfig:
    """Read, merge and validate the configuration.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    cfg, prov = resolve_config_dict(overrides, config_dir)
    try:
        return LossflowConfig.model_validate(cfg)
    except ValidationError as err:
        raise _explain(err, prov) from None


def load_serving_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> ServingConfig:
    """Read the service's configuration: ``data_dir`` and ``tracking`` from ``base.yaml``, then
    ``serving/<name>.yaml`` (``serving=<name>`` picks it; default ``default``), then dotted
    overrides such as ``port=8001`` or ``variants.champion.weight=90``.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    base_path = config_dir / "base.yaml"
    if not base_path.is_file():
        raise ConfigError(
            f"no base config at {base_path}; run from the project root or pass --config-dir"
        )
    base = _read_yaml(base_path)
    choice = "default"
    sets: list[tuple[str, Any]] = []
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like key=value (e.g. port=8001)")
        if key == "serving":
            choice = raw.strip()
        elif key in GROUPS:
            raise ConfigError(
                f"command line: {item!r} picks a training group; the service reads only "
                "serving=<name> and dotted keys such as port=8001"
            )
        else:
            sets.append((key, _override_value(item, raw)))
    prov: Provenance = {}
    cfg: dict[str, Any] = {}
    inherited: dict[str, Any] = {k: base[k] for k in ("data_dir", "tracking") if k in base}
    _merge(cfg, inherited, str(base_path), prov, ())
    path = _group_file(config_dir, "serving", choice)
    _merge(cfg, _read_yaml(path), str(path), prov, ())
    for key, value in sets:
        _set_dotted(cfg, key, value, prov)
    try:
        return ServingConfig.model_validate(cfg)
    except ValidationError as err:
        raise _explain(err, prov) from None


def config_to_dict(cfg: LossflowConfig) -> dict[str, Any]:
    """The resolved configuration as plain JSON-able data (for MLflow and reproduction)."""
    return cfg.model_dump(mode="json")
