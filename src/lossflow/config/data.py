"""The ``data`` section: sources, columns, splits and augmentation.

These models are what the config loader produces; every library function in ``lossflow.data``
takes them (or plain arguments) so a unit test needs no YAML. Nothing here imports torch,
kornia or scikit-learn: the augmentation code lives in ``lossflow.data.augment``.
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from lossflow.losses import TaskType

SourceName = Literal["flights", "digits", "movielens", "modechoice", "csv", "parquet"]
SplitKind = Literal["time", "stratified", "random"]
ImputeStrategy = Literal["median", "mean", "zero"]
OversampleMethod = Literal["none", "random", "smote"]
LongListPolicy = Literal["sample", "first"]
ParamValue = str | int | float | bool

BUILTIN_SOURCES: frozenset[str] = frozenset({"flights", "digits", "movielens", "modechoice"})
FILE_SOURCES: frozenset[str] = frozenset({"csv", "parquet"})
BUILTIN_TASKS: dict[str, tuple[TaskType, ...]] = {
    "flights": ("binary", "regression"),
    "digits": ("multiclass",),
    "movielens": ("ranking",),
    "modechoice": ("ranking",),
}
DEFAULT_TASKS: dict[str, TaskType] = {
    "flights": "binary",
    "digits": "multiclass",
    "movielens": "ranking",
    "modechoice": "ranking",
}
DEFAULT_VAL_FRACTION = 0.15
DEFAULT_TEST_FRACTION = 0.15


class ImageAugmentConfig(BaseModel):
    """Random geometric transforms of ``(N, C, H, W)`` images (the digits source).

    Attributes:
        rotation_degrees: Rotation drawn uniformly from ``[-rotation_degrees, rotation_degrees]``.
        scale: Zoom factor drawn uniformly from ``[scale[0], scale[1]]``.
        hflip: Also flip horizontally (with probability ``p``).
        p: Probability that each transform is applied to an image.
    """

    model_config = ConfigDict(extra="forbid")

    rotation_degrees: float = Field(default=10.0, ge=0.0, le=180.0)
    scale: tuple[float, float] = (0.9, 1.1)
    hflip: bool = False
    p: float = Field(default=0.5, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _check_scale(self) -> Self:
        low, high = self.scale
        if not 0.0 < low <= high:
            raise ValueError(f"augment.image.scale must satisfy 0 < low <= high; got {self.scale}")
        return self

    def to_params(self, prefix: str = "data.augment.image") -> dict[str, ParamValue]:
        """Flat ``{name: value}`` parameters for experiment tracking."""
        return {
            f"{prefix}.rotation_degrees": self.rotation_degrees,
            f"{prefix}.scale": f"{self.scale[0]:g},{self.scale[1]:g}",
            f"{prefix}.hflip": self.hflip,
            f"{prefix}.p": self.p,
        }


class AugmentConfig(BaseModel):
    """Augmentation of the training split.

    Attributes:
        noise_std: Std of Gaussian noise added to STANDARDISED numeric features, i.e. in units
            of each feature's training std; 0 disables.
        mixup_alpha: Mixup ``lambda ~ Beta(alpha, alpha)`` per batch; 0 disables.
        oversample: Minority oversampling of the training split (classification only).
        oversample_ratio: Target ``minority / majority`` row ratio after oversampling.
        image: Image transforms (digits only); ``None`` disables.
    """

    model_config = ConfigDict(extra="forbid")

    noise_std: float = Field(default=0.0, ge=0.0)
    mixup_alpha: float = Field(default=0.0, ge=0.0)
    oversample: OversampleMethod = "none"
    oversample_ratio: float = Field(default=1.0, gt=0.0, le=1.0)
    image: ImageAugmentConfig | None = None

    def to_params(self, prefix: str = "data.augment") -> dict[str, ParamValue]:
        """Flat ``{name: value}`` parameters for experiment tracking."""
        params: dict[str, ParamValue] = {
            f"{prefix}.noise_std": self.noise_std,
            f"{prefix}.mixup_alpha": self.mixup_alpha,
            f"{prefix}.oversample": self.oversample,
            f"{prefix}.oversample_ratio": self.oversample_ratio,
        }
        if self.image is None:
            params[f"{prefix}.image"] = "none"
        else:
            params.update(self.image.to_params(f"{prefix}.image"))
        return params


class ColumnSchema(BaseModel):
    """Which columns of a frame are features, the target, the time axis and the query group.

    Attributes:
        numeric: Numeric feature columns, in the order the network sees them.
        categorical: String-valued feature columns, in the order the network sees them.
        target: The label column.
        time: Timestamp column used by the time split; not a feature.
        group: Query/group id column for ranking; not a feature.
        item: Item id column of a ranking task, the key of the popularity baseline (items
            ranked by their mean training relevance); it may also be a feature column.
        ignore: Columns of the file that play no role (row numbers, identifiers, free text):
            dropped when the file is read. Every column of a file is named somewhere, so a
            column nobody listed is an error, never silently unused.
    """

    model_config = ConfigDict(extra="forbid")

    numeric: list[str]
    categorical: list[str]
    target: str
    time: str | None = None
    group: str | None = None
    item: str | None = None
    ignore: list[str] = Field(default_factory=list)

    @model_validator(mode="after")
    def _check_columns(self) -> Self:
        if not self.numeric and not self.categorical:
            raise ValueError(
                "columns: no feature columns; list at least one column under numeric or categorical"
            )
        names = [name for name in self.all_columns() if name != self.item or name in self.features]
        # One column may be both the time and the group: a list per point in time (a day).
        if self.item is not None and self.item in (self.target, self.time, self.group):
            raise ValueError(
                f"columns.item: {self.item!r} is also the target, time or group column; the item "
                "id must be its own column (or a feature)"
            )
        used = sorted(set(self.ignore) & {*names, *(n for n in (self.item,) if n)})
        if used:
            raise ValueError(
                f"columns.ignore: {', '.join(map(repr, used))} also play a role; a column is "
                "either used (numeric, categorical, target, time, group, item) or ignored"
            )
        names = [*names, *self.ignore]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ValueError(
                f"columns: {', '.join(map(repr, duplicates))} listed more than once; each column "
                "must have exactly one role (numeric, categorical, target, time, group or ignore)"
            )
        return self

    @property
    def features(self) -> list[str]:
        """Numeric then categorical feature columns."""
        return [*self.numeric, *self.categorical]

    def all_columns(self) -> list[str]:
        """Every column the schema names: features, target, then time, group and item when set
        (the item once, when it is not a feature)."""
        extra = [name for name in dict.fromkeys((self.time, self.group)) if name is not None]
        if self.item is not None and self.item not in self.features:
            extra.append(self.item)
        return [*self.numeric, *self.categorical, self.target, *extra]


class ListConfig(BaseModel):
    """How a ranking task's rows become lists (one per group and split part).

    A list is the rows of one group in one part (with a time split a user's earlier ratings
    train and their later ones are validated and tested). Lists with fewer than ``min_items``
    items, or whose items all have relevance 0, carry no ranking signal: they are dropped from
    that part and the count is logged. A list longer than ``max_items`` keeps ``max_items`` of
    its items: ``sample`` a seeded uniform random subset (the same in every run, in the order of
    the data), ``first`` the first ``max_items`` in the order of the data (the earliest, with a
    time split). The kept rows are the part's rows everywhere: training, metrics, export parity.

    Attributes:
        max_items: The most items a list keeps (the padded list length ``L``).
        min_items: The fewest items a list needs to be kept (2: one pair).
        long_lists: Which items a list longer than ``max_items`` keeps.
    """

    model_config = ConfigDict(extra="forbid")

    max_items: int = Field(default=100, ge=2)
    min_items: int = Field(default=2, ge=2)
    long_lists: LongListPolicy = "sample"

    @model_validator(mode="after")
    def _check_sizes(self) -> Self:
        if self.min_items > self.max_items:
            raise ValueError(
                f"lists: min_items={self.min_items} exceeds max_items={self.max_items}; no list "
                "could be kept"
            )
        return self

    def to_params(self, prefix: str = "data.lists") -> dict[str, ParamValue]:
        """Flat ``{name: value}`` parameters for experiment tracking."""
        return {
            f"{prefix}.max_items": self.max_items,
            f"{prefix}.min_items": self.min_items,
            f"{prefix}.long_lists": self.long_lists,
        }


class SplitConfig(BaseModel):
    """How a frame is cut into train, validation, test and production parts.

    ``kind="time"`` uses date boundaries: train is ``time < train_end``, validation
    ``[train_end, val_end)``, test ``[val_end, test_end)`` and production ``time >= test_end``.
    ``kind="stratified"``/``"random"`` draw seeded fractions of the rows (stratified on the
    target); each fraction is a share of all rows, training gets the rest, and production may be 0.
    """

    model_config = ConfigDict(extra="forbid")

    kind: SplitKind
    train_end: date | None = None
    val_end: date | None = None
    test_end: date | None = None
    val_fraction: float | None = Field(default=None, gt=0.0, lt=1.0)
    test_fraction: float | None = Field(default=None, gt=0.0, lt=1.0)
    production_fraction: float | None = Field(default=None, ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _check_kind_fields(self) -> Self:
        dates = {"train_end": self.train_end, "val_end": self.val_end, "test_end": self.test_end}
        fractions = {
            "val_fraction": self.val_fraction,
            "test_fraction": self.test_fraction,
            "production_fraction": self.production_fraction,
        }
        if self.kind == "time":
            given = [name for name, value in fractions.items() if value is not None]
            if given:
                raise ValueError(
                    f"split: {', '.join(given)} only apply to stratified/random splits; a time "
                    "split is set by train_end, val_end and test_end"
                )
            missing = [name for name, value in dates.items() if value is None]
            if missing:
                raise ValueError(f"split: a time split needs {', '.join(missing)} (dates)")
            train_end, val_end, test_end = self.boundaries()
            if not train_end < val_end < test_end:
                raise ValueError(
                    "split: boundaries must increase: train_end < val_end < test_end; got "
                    f"train_end={train_end}, val_end={val_end}, test_end={test_end}"
                )
            return self
        given = [name for name, value in dates.items() if value is not None]
        if given:
            raise ValueError(
                f"split: {', '.join(given)} only apply to time splits; a {self.kind} split is set "
                "by val_fraction, test_fraction and production_fraction"
            )
        if self.val_fraction is None:
            self.val_fraction = DEFAULT_VAL_FRACTION
        if self.test_fraction is None:
            self.test_fraction = DEFAULT_TEST_FRACTION
        if self.production_fraction is None:
            self.production_fraction = 0.0
        total = self.val_fraction + self.test_fraction + self.production_fraction
        if total >= 1.0:
            raise ValueError(
                "split: val_fraction + test_fraction + production_fraction must be below 1 so "
                f"training keeps some rows; got {total:g}"
            )
        return self

    def boundaries(self) -> tuple[date, date, date]:
        """``(train_end, val_end, test_end)`` of a time split.

        Raises:
            ValueError: The split is not a time split.
        """
        if self.train_end is None or self.val_end is None or self.test_end is None:
            raise ValueError(f"split: a {self.kind} split has no date boundaries")
        return self.train_end, self.val_end, self.test_end

    def fractions(self) -> tuple[float, float, float]:
        """``(val_fraction, test_fraction, production_fraction)`` of a stratified/random split.

        Raises:
            ValueError: The split is a time split.
        """
        if (
            self.val_fraction is None
            or self.test_fraction is None
            or self.production_fraction is None
        ):
            raise ValueError(f"split: a {self.kind} split has no fractions")
        return self.val_fraction, self.test_fraction, self.production_fraction

    def n_parts(self) -> int:
        """How many non-empty parts the split is required to produce (production counts if > 0)."""
        if self.kind == "time":
            return 3
        return 3 + (1 if self.fractions()[2] > 0 else 0)

    def to_params(self, prefix: str = "data.split") -> dict[str, ParamValue]:
        """Flat ``{name: value}`` parameters for experiment tracking."""
        params: dict[str, ParamValue] = {f"{prefix}.kind": self.kind}
        if self.kind == "time":
            for name, value in zip(
                ("train_end", "val_end", "test_end"), self.boundaries(), strict=True
            ):
                params[f"{prefix}.{name}"] = value.isoformat()
        else:
            for name, fraction in zip(
                ("val_fraction", "test_fraction", "production_fraction"),
                self.fractions(),
                strict=True,
            ):
                params[f"{prefix}.{name}"] = fraction
        return params


class PoolConfig(BaseModel):
    """What a retrain trained on: set by the ``retrain`` flow (never by hand), part of the
    retrained version's recipe beside the ``data`` section it came from.

    The pool is the source's history (its rows before its production period) and the prediction
    log's labelled rows answered before ``until`` (and at or after ``since`` with a sliding
    window), written once as a Parquet file with the source's columns and split by seeded
    fractions (stratified for classification). A retrain of a retrained version builds a new
    pool from its ``data`` section and the log, never from this one, so no row counts twice.

    Attributes:
        path: the pool's Parquet file.
        policy: ``expanding`` (all the history) or ``sliding`` (its last months).
        until: the evidence window's start: nothing from it on is trained on.
        since: a sliding window's start (``None``: the whole history).
        history_rows: rows from the source.
        log_rows: labelled rows from the prediction log.
        val_fraction: share of the pool validated on.
        test_fraction: share of the pool tested on.
    """

    model_config = ConfigDict(extra="forbid")

    path: Path
    policy: Literal["expanding", "sliding"]
    until: datetime
    since: datetime | None = None
    history_rows: int = Field(ge=0)
    log_rows: int = Field(ge=0)
    val_fraction: float = Field(gt=0.0, lt=0.5)
    test_fraction: float = Field(gt=0.0, lt=0.5)

    def split(self, task: TaskType, grouped: bool) -> SplitConfig:
        """How the pool is split: stratified fractions for classification, else random (which
        keeps each group of a ranking task in one part)."""
        kind: SplitKind = (
            "stratified" if task in ("binary", "multiclass") and not grouped else ("random")
        )
        return SplitConfig(
            kind=kind, val_fraction=self.val_fraction, test_fraction=self.test_fraction
        )


class DataConfig(BaseModel):
    """The ``data:`` section of a run config.

    Attributes:
        source: ``flights`` and ``digits`` are bundled datasets with fixed columns; ``csv`` and
            ``parquet`` read ``path`` with the schema given in ``columns``.
        task: Learning task; flights supports ``binary`` (arrival delayed > 15 min, the
            default) and ``regression`` (arrival delay in minutes), digits ``multiclass`` (the
            default); csv/parquet sources must state it.
        path: File to read for csv/parquet sources.
        columns: Column roles for csv/parquet; builtin sources define their own.
        split: How rows are divided into train/val/test/production.
        subsample: If set, a seeded random sample of at most this many rows of EACH split part,
            taken after splitting (for fast runs and tests).
        impute_numeric: Fill value for missing numeric features, computed on the training split.
        augment: Training-split augmentation.
        lists: How a ranking task's groups become lists (ranking only).
        seed: Seed of the split, the subsample and dataset-level augmentation.
        positive_class: Binary: the target value whose probability the model gives (the other
            value is the negative class). ``None``: inferred where that is unambiguous (1 of
            0/1, True of False/True, yes of no/yes in any case); any other pair of values
            (good/bad) needs it.
        missing_target: ``error``: a row without a label is refused (the default); ``drop``:
            such rows are dropped and counted (the run's ``data.rows.dropped_missing_target``
            parameter), for sources where some rows are never labelled.
    """

    model_config = ConfigDict(extra="forbid")

    source: SourceName
    task: TaskType = "binary"
    path: Path | None = None
    columns: ColumnSchema | None = None
    positive_class: str | int | float | bool | None = None
    missing_target: Literal["error", "drop"] = "error"
    split: SplitConfig
    subsample: int | None = Field(default=None, gt=0)
    impute_numeric: ImputeStrategy = "median"
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    lists: ListConfig = Field(default_factory=ListConfig)
    seed: int = 0

    @model_validator(mode="before")
    @classmethod
    def _default_task(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "task" in data:
            return data
        source = data.get("source")
        if source in DEFAULT_TASKS:
            return {**data, "task": DEFAULT_TASKS[str(source)]}
        if source in FILE_SOURCES:
            raise ValueError(
                f"data.task: a {source} source must state its task "
                "(regression, binary, multiclass, multilabel or ranking)"
            )
        return data

    @field_validator("path")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        # Relative to where the command runs; kept absolute in the run's recipe, so a retrain
        # (from a worker in another directory) reads the same file or names the one it misses.
        return None if path is None else path.expanduser().absolute()

    @model_validator(mode="after")
    def _check_source(self) -> Self:
        if self.source in BUILTIN_SOURCES:
            self._check_builtin()
        else:
            self._check_file_source()
        self._check_split()
        self._check_augment()
        if self.positive_class is not None and self.task != "binary":
            raise ValueError(
                f"data.positive_class: only a binary task has a positive class; task is "
                f"{self.task!r} (remove positive_class)"
            )
        return self

    def _check_builtin(self) -> None:
        tasks = BUILTIN_TASKS[self.source]
        if self.task not in tasks:
            raise ValueError(
                f"data.task: source {self.source!r} supports task {' or '.join(tasks)}; "
                f"got {self.task!r}"
            )
        if self.columns is not None:
            raise ValueError(
                f"data.columns: source {self.source!r} has fixed columns; remove data.columns "
                "(it is only for csv/parquet sources)"
            )
        if self.path is not None:
            raise ValueError(
                f"data.path: source {self.source!r} is bundled with lossflow; remove data.path "
                "(it is only for csv/parquet sources)"
            )

    def _check_file_source(self) -> None:
        if self.path is None:
            raise ValueError(f"data.path: a {self.source} source needs the path of the file")
        if self.columns is None:
            raise ValueError(
                f"data.columns: a {self.source} source needs a column schema "
                "(numeric, categorical, target, and optionally time and group)"
            )
        if self.task == "ranking" and self.columns.group is None:
            raise ValueError(
                "data.columns.group: a ranking task needs the query/group id column; set "
                "data.columns.group"
            )

    def _check_split(self) -> None:
        if self.source == "movielens" and self.split.kind != "time":
            raise ValueError(
                "data.split.kind: movielens computes its rating statistics from the training "
                "period, which needs a time split; set data.split.kind: time with train_end, "
                "val_end and test_end"
            )
        if self.split.kind == "time":
            if self.source in ("digits", "modechoice"):
                raise ValueError(
                    f"data.split.kind: {self.source} has no time column; use a "
                    f"{'stratified' if self.source == 'digits' else 'random'} split"
                )
            if self.columns is not None and self.columns.time is None:
                raise ValueError(
                    "data.split.kind: a time split needs a time column; set data.columns.time "
                    "or use a stratified/random split"
                )
        if self.split.kind == "stratified":
            if self.task not in ("binary", "multiclass"):
                raise ValueError(
                    f"data.split.kind: stratification needs class labels but task is "
                    f"{self.task!r}; use a random or time split"
                )
            if self.columns is not None and self.columns.group is not None:
                raise ValueError(
                    "data.split.kind: with a group column use a random split, which keeps each "
                    "group in one part"
                )

    def _check_augment(self) -> None:
        if self.augment.image is not None and self.source != "digits":
            raise ValueError(
                f"data.augment.image: image augmentation needs image data (source digits); "
                f"source is {self.source!r}"
            )
        if self.augment.oversample != "none" and self.task not in ("binary", "multiclass"):
            raise ValueError(
                f"data.augment.oversample: oversampling needs class labels but task is "
                f"{self.task!r}; set oversample to 'none'"
            )
        if self.task == "ranking" and (self.augment.noise_std or self.augment.mixup_alpha):
            raise ValueError(
                "data.augment: noise and mixup mix rows across lists, which a ranking task "
                "cannot use; set noise_std and mixup_alpha to 0"
            )

    def to_params(self) -> dict[str, ParamValue]:
        """Flat ``{name: value}`` parameters of the whole data section for experiment tracking."""
        params: dict[str, ParamValue] = {
            "data.source": self.source,
            "data.task": self.task,
            "data.subsample": "none" if self.subsample is None else self.subsample,
            "data.impute_numeric": self.impute_numeric,
            "data.seed": self.seed,
        }
        if self.path is not None:
            params["data.path"] = str(self.path)
        if self.positive_class is not None:
            params["data.positive_class"] = self.positive_class
        params["data.missing_target"] = self.missing_target
        params.update(self.split.to_params())
        params.update(self.augment.to_params())
        if self.task == "ranking":
            params.update(self.lists.to_params())
        return params
