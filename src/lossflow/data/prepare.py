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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from lossflow.config.training import TrainingConfig
from lossflow.data.preprocessing import EncodedFeatures, Preprocessor
from lossflow.data.sources import load_frame, resolve_columns
from lossflow.data.splits import split_frame
from lossflow.data.validation import check_split_classes, validate_frame

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
ORIGINAL = "_original"  # train_original.npz: the training split before oversampling


@dataclass(frozen=True)
class PreparedData:
    """The encoded splits on disk and what describes them."""

    directory: Path
    fingerprint: str
    sizes: dict[str, int]
    class_counts: list[int] | None

    def preprocessor(self) -> Preprocessor:
        """The preprocessing fitted on the training split."""
        return Preprocessor.from_dict(
            json.loads((self.directory / "preprocessor.json").read_text())
        )

    def arrays(self, part: str, *, original: bool = False) -> tuple[EncodedFeatures, np.ndarray]:
        """Encoded features and targets of ``train``, ``val`` or ``test``.

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

    def raw(self, part: str) -> pd.DataFrame:
        """Raw rows of ``test`` or ``production``, as a service would receive them."""
        return pd.read_parquet(self.directory / f"{part}.parquet")


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of a frame (values, columns and dtypes; not the row index)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_data(cfg: TrainingConfig, directory: Path) -> PreparedData:
    """Load, validate, split, fit preprocessing on train, encode and (optionally) oversample."""
    data_cfg = cfg.data
    columns = resolve_columns(data_cfg)
    frame = load_frame(data_cfg)
    validate_frame(frame, columns, data_cfg.task, split=data_cfg.split)
    splits = split_frame(frame, data_cfg, columns)
    hint = (
        "move data.split.train_end, val_end or test_end"
        if data_cfg.split.kind == "time"
        else "use a stratified split or more rows"
    )
    check_split_classes(splits.parts(), columns.target, data_cfg.task, hint)
    pre = Preprocessor.fit(splits.train, columns, data_cfg.impute_numeric, task=data_cfg.task)

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor.json").write_text(json.dumps(pre.to_dict()))
    sizes: dict[str, int] = {}
    class_counts: list[int] | None = None
    for part in PARTS:
        df = splits.parts()[part]
        encoded = pre.encode(df)
        target: np.ndarray = pre.encode_target(df)
        if part == "train":
            if data_cfg.task in ("binary", "multiclass"):
                n_classes = 2 if data_cfg.task == "binary" else len(pre.label_names or ())
                class_counts = np.bincount(target.astype(np.int64), minlength=n_classes).tolist()
            if data_cfg.augment.oversample != "none":
                # imported here: reading prepared data (monitoring) must not load torch
                from lossflow.data.augment import oversample

                np.savez(
                    directory / f"{part}{ORIGINAL}.npz",
                    numeric=encoded.numeric,
                    categorical=encoded.categorical,
                    target=target,
                )
                before = len(encoded)
                encoded, target = oversample(
                    encoded,
                    target,
                    data_cfg.augment.oversample,
                    data_cfg.augment.oversample_ratio,
                    data_cfg.seed,
                )
                log.info("oversampling added %d training rows", len(encoded) - before)
        np.savez(
            directory / f"{part}.npz",
            numeric=encoded.numeric,
            categorical=encoded.categorical,
            target=target,
        )
        sizes[part] = len(encoded)
    for part in ("test", "production"):
        splits.parts()[part].to_parquet(directory / f"{part}.parquet", index=False)
    sizes["production"] = len(splits.production)
    return PreparedData(directory, dataset_fingerprint(frame), sizes, class_counts)
