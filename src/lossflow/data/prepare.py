"""The prepared splits of a run: validated, split, encoded with the preprocessing fitted on the
training split, and written to the run's ``prepared/`` directory.

``prepared/`` holds train/val/test arrays (``.npz``), the raw test and production rows
(``.parquet``, as a service would receive them) and ``preprocessor.json`` — what was fitted on
the training split. Training, evaluation, export, cross-validation and monitoring read it through
:class:`PreparedData`.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lossflow.config.data import ColumnSchema, DataConfig
from lossflow.config.training import TrainingConfig
from lossflow.data.lists import item_popularity, keep_lists, list_ids, popularity_scores
from lossflow.data.preprocessing import EncodedFeatures, Preprocessor
from lossflow.data.sources import load_frame, resolve_columns
from lossflow.data.splits import SplitError, split_frame
from lossflow.data.validation import (
    check_groups_within_parts,
    check_split_classes,
    validate_frame,
)

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
ORIGINAL = "_original"  # train_original.npz: the training split before oversampling


META_FILE = "prepared.json"


@dataclass(frozen=True)
class PreparedData:
    """The encoded splits on disk and what describes them."""

    directory: Path
    fingerprint: str
    sizes: dict[str, int]
    class_counts: list[int] | None

    @classmethod
    def load(cls, directory: Path) -> PreparedData:
        """The prepared splits written to ``directory`` by :func:`write_prepared`."""
        meta = json.loads((directory / META_FILE).read_text())
        return cls(directory, meta["fingerprint"], meta["sizes"], meta["class_counts"])

    def preprocessor(self) -> Preprocessor:
        """The preprocessing fitted on the training split."""
        return Preprocessor.from_dict(
            json.loads((self.directory / "preprocessor.json").read_text())
        )

    def arrays(self, part: str, *, original: bool = False) -> tuple[EncodedFeatures, np.ndarray]:
        """Encoded features and targets of ``train``, ``val``, ``test`` (or an extra part).

        Args:
            part: the split.
            original: the training split as the data has it, before oversampling (what a
                reference profile describes); the other splits are never augmented.
        """
        path = self.directory / f"{part}.npz"
        if original and (self.directory / f"{part}{ORIGINAL}.npz").is_file():
            path = self.directory / f"{part}{ORIGINAL}.npz"
        with np.load(path) as data:
            encoded = EncodedFeatures(numeric=data["numeric"], categorical=data["categorical"])
            return encoded, data["target"]

    def lists(self, part: str) -> np.ndarray:
        """List id of each row of a ranking part (``0 .. Q-1``, in order of first appearance).

        Raises:
            KeyError: the part was not prepared for a ranking task.
        """
        with np.load(self.directory / f"{part}.npz") as data:
            if "lists" not in data:
                raise KeyError(f"{part} was not prepared for a ranking task: it has no lists")
            return np.asarray(data["lists"], dtype=np.int64)

    def popularity(self, part: str) -> np.ndarray | None:
        """The popularity baseline's score of each row of a ranking part (its item's mean
        training relevance), or None when the data names no item column."""
        with np.load(self.directory / f"{part}.npz") as data:
            return np.asarray(data["popularity"]) if "popularity" in data else None

    def raw(self, part: str) -> pd.DataFrame:
        """Raw rows of ``test`` or ``production``, as a service would receive them."""
        return pd.read_parquet(self.directory / f"{part}.parquet")


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of a frame (values, columns and dtypes; not the row index)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def oversampled(
    cfg: TrainingConfig, encoded: EncodedFeatures, target: np.ndarray
) -> tuple[EncodedFeatures, np.ndarray]:
    """The training rows with ``data.augment.oversample`` applied (unchanged when ``none``)."""
    aug = cfg.data.augment
    if aug.oversample == "none":
        return encoded, target
    # imported here: reading prepared data (monitoring) must not load torch
    from lossflow.data.augment import oversample

    before = len(encoded)
    encoded, target = oversample(
        encoded, target, aug.oversample, aug.oversample_ratio, cfg.data.seed
    )
    log.info("oversampling added %d training rows", len(encoded) - before)
    return encoded, target


def write_prepared(
    cfg: TrainingConfig,
    columns: ColumnSchema,
    parts: Mapping[str, pd.DataFrame],
    directory: Path,
    fingerprint: str,
    *,
    raw: Mapping[str, pd.DataFrame] | None = None,
    oversample_train: bool = True,
    dropped: int = 0,
) -> PreparedData:
    """Fit the preprocessing on ``parts["train"]``, encode every part and write them.

    Args:
        cfg: the training configuration (task, imputation, oversampling).
        columns: column roles of the frames.
        parts: ``train``, ``val``, ``test`` and any extra part, as raw frames to encode.
        directory: where the ``.npz`` files, ``preprocessor.json`` and the raw rows go.
        fingerprint: the content hash of the source frame.
        raw: frames written as raw ``.parquet`` rows (``test``, ``production``), as a service
            would receive them.
        oversample_train: apply ``data.augment.oversample`` to the encoded training rows.
        dropped: rows without a label left out of the source (counted in ``sizes``).
    """
    pre = Preprocessor.fit(
        parts["train"],
        columns,
        cfg.data.impute_numeric,
        task=cfg.data.task,
        positive_class=cfg.data.positive_class,
    )
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor.json").write_text(json.dumps(pre.to_dict()))
    sizes: dict[str, int] = {}
    class_counts: list[int] | None = None
    ranking: dict[str, dict[str, np.ndarray]] = {}
    if cfg.data.task == "ranking" and columns.group is not None:
        train = parts["train"]
        popularity = None
        if columns.item is not None:
            popularity = item_popularity(train, columns.item, columns.target)
            default = float(train[columns.target].mean())
        for part, df in parts.items():
            ranking[part] = {"lists": list_ids(df, columns.group)}
            if popularity is not None and columns.item is not None and part != "train":
                scores = popularity_scores(df, columns.item, popularity, default)
                ranking[part]["popularity"] = scores
    for part, df in parts.items():
        encoded = pre.encode(df)
        target: np.ndarray = pre.encode_target(df)
        if part == "train":
            if cfg.data.task in ("binary", "multiclass"):
                n_classes = 2 if cfg.data.task == "binary" else len(pre.label_names or ())
                class_counts = np.bincount(target.astype(np.int64), minlength=n_classes).tolist()
            if oversample_train and cfg.data.augment.oversample != "none":
                np.savez(
                    directory / f"{part}{ORIGINAL}.npz",
                    numeric=encoded.numeric,
                    categorical=encoded.categorical,
                    target=target,
                )
                encoded, target = oversampled(cfg, encoded, target)
        arrays: dict[str, np.ndarray] = {
            "numeric": encoded.numeric,
            "categorical": encoded.categorical,
            "target": target,
            **ranking.get(part, {}),
        }
        # numpy's stub types **kwds as if they could be its allow_pickle flag
        np.savez(directory / f"{part}.npz", **arrays)  # type: ignore[arg-type]
        sizes[part] = len(encoded)
    for part, df in (raw or {}).items():
        df.to_parquet(directory / f"{part}.parquet", index=False)
        sizes.setdefault(part, len(df))
    if dropped:
        sizes[DROPPED_MISSING_TARGET] = dropped
    # The raw rows' time column, so a replay of production.parquet knows its clock.
    meta = {"fingerprint": fingerprint, "sizes": sizes, "class_counts": class_counts,
            "time": columns.time}  # fmt: skip
    (directory / META_FILE).write_text(json.dumps(meta))
    return PreparedData(directory, fingerprint, sizes, class_counts)


DROPPED_MISSING_TARGET = "dropped_missing_target"


def split_data(cfg: TrainingConfig) -> DataConfig:
    """``cfg.data`` as it is split: with the pool's fractions when a retrain set one."""
    if cfg.pool is None:
        return cfg.data
    grouped = resolve_columns(cfg.data).group is not None
    return cfg.data.model_copy(update={"split": cfg.pool.split(cfg.data.task, grouped)})


def load_checked(cfg: TrainingConfig) -> tuple[pd.DataFrame, ColumnSchema, int]:
    """The frame ``cfg`` trains on (the source of ``cfg.data``, or a retrain's pool) and its
    columns, validated against its schema and task, and how many rows without a label were
    dropped (``data.missing_target: drop``)."""
    data_cfg = split_data(cfg)
    columns = resolve_columns(data_cfg)
    frame = load_frame(data_cfg) if cfg.pool is None else pd.read_parquet(cfg.pool.path)
    dropped = 0
    if data_cfg.missing_target == "drop" and columns.target in frame.columns:
        labelled = frame[columns.target].notna().to_numpy()
        dropped = int((~labelled).sum())
        if dropped:
            log.info("dropped %d of %d rows without a label (%s)", dropped, len(frame),
                     columns.target)  # fmt: skip
            frame = frame.loc[labelled].reset_index(drop=True)
    validate_frame(
        frame,
        columns,
        data_cfg.task,
        split=data_cfg.split,
        positive_class=data_cfg.positive_class,
        nonnegative_for=cfg.loss.name if cfg.loss.nonnegative_target else None,
    )
    return frame, columns, dropped


def ranking_parts(
    cfg: TrainingConfig, columns: ColumnSchema, parts: Mapping[str, pd.DataFrame], hint: str
) -> dict[str, pd.DataFrame]:
    """Each part's rows as ranking lists (:func:`lossflow.data.lists.keep_lists`).

    Raises:
        DataValidationError: a split by group put one group into two parts.
        SplitError: a part is left without a list.
    """
    data_cfg = split_data(cfg)
    if columns.group is None:
        raise SplitError("a ranking task needs data.columns.group")
    if data_cfg.split.kind != "time":
        check_groups_within_parts(dict(parts), columns.group)
    kept: dict[str, pd.DataFrame] = {}
    for i, (part, frame) in enumerate(parts.items()):
        kept[part] = keep_lists(frame, columns, data_cfg.lists, data_cfg.seed + i, part)
        if kept[part].empty:
            raise SplitError(
                f"the {part} split has no list of at least {data_cfg.lists.min_items} items with "
                f"a relevant one ({len(frame)} rows); {hint}, or lower data.lists.min_items"
            )
    return kept


def prepare_data(
    cfg: TrainingConfig, directory: Path, *, oversample_train: bool = True
) -> PreparedData:
    """Load, validate, split, fit preprocessing on train, encode and (optionally) oversample.

    With ``oversample_train=False`` the training rows are written as they are, for callers that
    apply each configuration's own oversampling (:func:`oversampled`) when they train.
    """
    data_cfg = split_data(cfg)
    frame, columns, dropped = load_checked(cfg)
    splits = split_frame(frame, data_cfg, columns)
    hint = (
        "move data.split.train_end, val_end or test_end"
        if data_cfg.split.kind == "time"
        else "use a stratified split or more rows"
    )
    check_split_classes(splits.parts(), columns.target, data_cfg.task, hint)
    parts = {part: splits.parts()[part] for part in PARTS}
    if data_cfg.task == "ranking":
        parts = ranking_parts(cfg, columns, parts, hint)
    raw = {"test": parts["test"], "production": splits.production}
    return write_prepared(
        cfg,
        columns,
        parts,
        directory,
        dataset_fingerprint(frame),
        raw=raw,
        oversample_train=oversample_train,
        dropped=dropped,
    )
