"""The inference service's configuration (``lossflow serve``): variants, traffic, log, limits.

``data_dir`` and ``tracking`` come from the project (``configs/project/<name>.yaml``);
``configs/serving/<name>.yaml`` holds the rest (``serving=<name>`` picks it, default
``default``), then the project's ``serving`` section; dotted overrides such as ``port=8001`` or
``variants.champion.weight=90`` come last.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator, model_validator

from lossflow.config.common import LogLocation, Section, TrackingConfig, WritableDir
from lossflow.config.loader import DEFAULT_CONFIG_DIR, ConfigKind, load


class ModelSource(Section):
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


class PredictionLogConfig(LogLocation):
    """Where and how predictions are logged (the service's ``log`` section)."""

    enabled: bool = Field(True, description="false only for benchmarks: nothing is logged")
    max_batch: int = Field(256, ge=1, description="most records per write transaction")
    max_delay_s: float = Field(0.05, ge=0.0, description="longest wait before a batch is written")
    max_queue: int = Field(100_000, ge=1, description="backlog at which /predict answers 503")
    drain_timeout_s: float = Field(30.0, gt=0.0, description="shutdown wait for the backlog")


class ServingLimits(Section):
    """Request limits of ``/predict``."""

    max_body_bytes: int = Field(1_048_576, ge=1024, description="larger bodies get 413")
    max_records: int = Field(1000, ge=1, description="more records per request get 422")


class ServingConfig(Section):
    """The inference service: variants, traffic, prediction log, limits, bind address."""

    data_dir: WritableDir = Path("data")
    tracking: TrackingConfig = TrackingConfig()
    project: str | None = Field(
        None, description="the project (configs/project/<name>.yaml) it was read with"
    )
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
    share_traffic: bool = Field(
        True,
        description="keep the routing (experiment, weights) in the log database: PUT "
        "/admin/traffic on one replica reaches every replica at its next registry check",
    )
    replay_clock: bool = Field(
        False,
        description="accept a 'ts' (ISO 8601 with a zone) in /predict and /feedback bodies and "
        "log it as the time: replaying history in compressed time (lossflow demo); never in "
        "production, where the log's times must be the service's own",
    )
    limits: ServingLimits = ServingLimits()
    admin_token_env: str = Field(
        "LOSSFLOW_ADMIN_TOKEN", description="environment variable holding the admin bearer token"
    )
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    access_log: bool = Field(False, description="one JSON log line per request")
    keep_alive_s: int = Field(
        75,
        ge=1,
        description="how long an idle HTTP connection is kept open; keep it above the idle "
        "timeout of every client pool and proxy in front (httpx 5 s, nginx upstream 60 s, AWS "
        "ALB 60 s): a server that closes first races the client's next request (a reset, a 502)",
    )

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


SERVING: ConfigKind[ServingConfig] = ConfigKind(
    name="lossflow serve",
    model=ServingConfig,
    folder="serving",
    default="default",
    inherit=("data_dir", "tracking"),
    example="port=8001",
    section="serving",
)


def load_serving_config(
    overrides: Sequence[str] = (), config_dir: Path = DEFAULT_CONFIG_DIR
) -> ServingConfig:
    """Read the service's configuration: ``data_dir`` and ``tracking`` from the project, then
    ``serving/<name>.yaml`` (``serving=<name>`` picks it; default ``default``), the project's
    ``serving`` section, then dotted overrides such as ``port=8001`` or
    ``variants.champion.weight=90``.

    Raises:
        ConfigError: naming the file (or command line), the dotted key and what was expected.
    """
    return load(SERVING, overrides, config_dir)
