"""The reference a registered model is judged against: what it was trained on, summarised.

A :class:`ReferenceProfile` holds, for one model version:

- per feature of the training split, the summary the drift tests need (distinct values and
  counts, or a quantile sketch, for numeric features; category counts for categorical ones;
  missing counts) — built before any oversampling, so it describes the data, not the augmented
  batches;
- the model's scores on the training split (binary: probability of the positive class;
  regression: the prediction; multiclass: the predicted class), for prediction drift;
- the class counts (or, for regression, the target summary) of the train, validation and test
  splits, and the validation confusion counts ``(predicted, true)`` for black-box shift
  estimation;
- the test metrics with bootstrap intervals (the reference for decay) and, for regression, the
  excess kurtosis of the test residuals;
- a bounded random sample of training rows (features, target, score) for the human-readable
  Evidently report.

It is written at registration by the training flow (an MLflow artifact of the run, tagged on the
model version) and cached under ``<data_dir>/reference-cache/<model>/<version>/``; for a version
registered before profiles existed it is built on demand from its run's prepared data and ONNX
file. Computing drift never needs the training rows again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final

import numpy as np
import pandas as pd
from scipy import stats as scipy_stats

from lossflow.contract import ModelMetadata
from lossflow.data.prepare import PreparedData
from lossflow.data.preprocessing import EncodedFeatures, Preprocessor
from lossflow.errors import UserError
from lossflow.evaluation.metrics import list_ndcg
from lossflow.monitoring.distributions import (
    CategoricalSummary,
    NumericSummary,
    Summary,
    summary_from_json,
)
from lossflow.monitoring.performance import (
    LIST_K,
    Costs,
    MetricEstimate,
    measured_list_metrics,
    measured_metrics,
)
from lossflow.onnx_runner import OnnxRunner

FORMAT: Final = "lossflow.reference_profile"
VERSION: Final = 1
ARTIFACT: Final = "reference/profile.json"
TAG: Final = "lossflow.reference_profile"
SCORE: Final = "score"
SAMPLE_ROWS: Final = 5000
_BATCH: Final = 65_536


class ProfileError(UserError):
    """No reference profile can be found or built for a model version; the message says why."""


@dataclass(frozen=True)
class ReferenceProfile:
    """What a model version was trained on, summarised (see the module).

    Attributes:
        model_name: registered model.
        model_version: registry version.
        run_id: the training run.
        metadata: the ONNX file's metadata (loss, task, preprocessing, threshold, classes).
        numeric: numeric feature names (model input order).
        categorical: categorical feature names.
        features: per feature, its training-split summary.
        scores: the model's training-split scores (numeric, or categorical for multiclass).
        classes: class names (``["0", "1"]`` for binary; empty for regression).
        class_counts: per split (``train``, ``val``, ``test``), rows per class.
        target: regression only: the training target's summary.
        confusion: validation ``(predicted, true)`` counts (classification).
        test_metrics: metrics on the test split with bootstrap intervals.
        residual_kurtosis: regression: excess kurtosis of the test residuals.
        sample: up to ``SAMPLE_ROWS`` training rows (features, target, score).
    """

    model_name: str
    model_version: str
    run_id: str
    metadata: ModelMetadata
    numeric: list[str]
    categorical: list[str]
    features: dict[str, Summary]
    scores: Summary
    classes: list[str]
    class_counts: dict[str, list[int]]
    target: NumericSummary | None
    confusion: list[list[int]] | None
    test_metrics: dict[str, MetricEstimate]
    residual_kurtosis: float | None
    sample: list[dict[str, Any]] = field(repr=False)

    @property
    def task(self) -> str:
        """The model's task."""
        return self.metadata.task

    @property
    def prior(self) -> list[float]:
        """The training split's class shares."""
        counts = np.asarray(self.class_counts.get("train", []), dtype=np.float64)
        return (counts / counts.sum()).tolist() if counts.size and counts.sum() else []

    def sample_frame(self) -> pd.DataFrame:
        """The bounded training sample as a frame (features, target, score)."""
        return pd.DataFrame(self.sample)

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "format": FORMAT,
            "version": VERSION,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "run_id": self.run_id,
            "metadata": self.metadata.to_props(),
            "numeric": self.numeric,
            "categorical": self.categorical,
            "features": {k: v.to_json() for k, v in self.features.items()},
            "scores": self.scores.to_json(),
            "classes": self.classes,
            "class_counts": self.class_counts,
            "target": None if self.target is None else self.target.to_json(),
            "confusion": self.confusion,
            "test_metrics": {k: v.to_json() for k, v in self.test_metrics.items()},
            "residual_kurtosis": self.residual_kurtosis,
            "sample": self.sample,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any], source: str) -> ReferenceProfile:
        """Read a profile written by :meth:`to_json`.

        Raises:
            ProfileError: not a profile, or a newer format than this lossflow reads.
        """
        if data.get("format") != FORMAT:
            raise ProfileError(f"{source} is not a lossflow reference profile")
        if int(data.get("version", 0)) > VERSION:
            raise ProfileError(
                f"{source}: reference profile format {data.get('version')} is newer than this "
                f"lossflow reads ({VERSION}); upgrade lossflow"
            )
        target = data.get("target")
        return cls(
            model_name=str(data["model_name"]),
            model_version=str(data["model_version"]),
            run_id=str(data["run_id"]),
            metadata=ModelMetadata.from_props(data["metadata"], source),
            numeric=list(data["numeric"]),
            categorical=list(data["categorical"]),
            features={k: summary_from_json(v) for k, v in data["features"].items()},
            scores=summary_from_json(data["scores"]),
            classes=list(data["classes"]),
            class_counts={k: list(v) for k, v in data["class_counts"].items()},
            target=None if target is None else NumericSummary.from_json(target),
            confusion=data.get("confusion"),
            test_metrics={k: MetricEstimate.from_json(v) for k, v in data["test_metrics"].items()},
            residual_kurtosis=data.get("residual_kurtosis"),
            sample=list(data.get("sample", [])),
        )

    def save(self, path: Path) -> Path:
        """Write the profile as JSON (through a temporary file: never half-written)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(".tmp")
        staging.write_text(json.dumps(self.to_json()))
        staging.replace(path)
        return path

    @classmethod
    def load(cls, path: Path) -> ReferenceProfile:
        """Read a profile file.

        Raises:
            ProfileError: the file is missing or not a profile.
        """
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ProfileError(f"cannot read the reference profile {path}: {err}") from err
        return cls.from_json(data, str(path))


# --- building --------------------------------------------------------------------------------


def decode_categorical(pre: Preprocessor, encoded: EncodedFeatures) -> dict[str, list[str | None]]:
    """The categorical values of encoded rows (code 0, unknown or missing, as ``None``)."""
    out: dict[str, list[str | None]] = {}
    for j, name in enumerate(pre.categorical_columns):
        vocabulary: list[str | None] = [None, *pre.vocabularies[name]]
        out[name] = [vocabulary[code] for code in encoded.categorical[:, j].tolist()]
    return out


def feature_summaries(pre: Preprocessor, encoded: EncodedFeatures) -> dict[str, Summary]:
    """One summary per feature of encoded rows."""
    features: dict[str, Summary] = {
        name: NumericSummary.of(encoded.numeric[:, j]) for j, name in enumerate(pre.numeric_columns)
    }
    for name, values in decode_categorical(pre, encoded).items():
        features[name] = CategoricalSummary.of(values)
    return features


def score_outputs(runner: OnnxRunner, pre: Preprocessor, encoded: EncodedFeatures) -> np.ndarray:
    """The ONNX model's outputs on encoded rows, in batches."""
    inputs = pre.model_inputs(encoded)
    rows = len(encoded)
    parts = [
        runner.run({k: v[lo : lo + _BATCH] for k, v in inputs.items()})
        for lo in range(0, rows, _BATCH)
    ]
    return np.asarray(np.concatenate(parts) if parts else np.zeros(0))


def score_summary(task: str, outputs: np.ndarray, classes: list[str]) -> Summary:
    """The summary of a model's outputs that prediction drift compares."""
    if task == "multiclass":
        return CategoricalSummary.of(classes[k] for k in outputs.argmax(axis=1).tolist())
    return NumericSummary.of(outputs.reshape(len(outputs), -1)[:, 0])


def predicted_labels(task: str, outputs: np.ndarray, threshold: float | None) -> np.ndarray:
    """Predicted class indices: ``prob >= threshold`` (binary) or the arg-max (multiclass)."""
    if task == "multiclass":
        return np.asarray(outputs.argmax(axis=1), dtype=np.int64)
    return np.asarray(outputs >= (0.5 if threshold is None else threshold), dtype=np.int64)


def build_profile(
    prepared: PreparedData,
    onnx_path: Path,
    *,
    model_name: str,
    model_version: str,
    run_id: str,
    costs: Costs | None = None,
    sample_rows: int = SAMPLE_ROWS,
    resamples: int = 200,
    seed: int = 0,
) -> ReferenceProfile:
    """Summarise a run's prepared data and its exported model (onnxruntime; no torch).

    Raises:
        ProfileError: the prepared data or the ONNX file is missing.
    """
    if not onnx_path.is_file():
        raise ProfileError(f"no ONNX model at {onnx_path} to build the reference profile from")
    if not (prepared.directory / "preprocessor.json").is_file():
        raise ProfileError(
            f"no prepared data at {prepared.directory}: the run's working directory is gone, so "
            "its reference profile cannot be built; retrain to register a version with one"
        )
    runner = OnnxRunner(onnx_path)
    metadata = ModelMetadata.from_props(runner.metadata, onnx_path)
    pre = prepared.preprocessor()
    task = metadata.task
    train_x, train_y = prepared.arrays("train", original=True)
    train_out = score_outputs(runner, pre, train_x)
    classes = _classes(task, metadata)
    class_counts: dict[str, list[int]] = {}
    confusion = None
    target = None
    if task in ("binary", "multiclass"):
        for part in ("train", "val", "test"):
            y = train_y if part == "train" else prepared.arrays(part)[1]
            class_counts[part] = np.bincount(y.astype(np.int64), minlength=len(classes)).tolist()
        val_x, val_y = prepared.arrays("val")
        predicted = predicted_labels(task, score_outputs(runner, pre, val_x), metadata.threshold)
        k = len(classes)
        joint = np.zeros((k, k), dtype=np.int64)
        np.add.at(joint, (predicted, val_y.astype(np.int64)), 1)
        confusion = joint.tolist()
    else:
        target = NumericSummary.of(train_y)
    test_x, test_y = prepared.arrays("test")
    test_out = score_outputs(runner, pre, test_x)
    quantile = (
        metadata.loss_spec.get("quantile") if metadata.loss_spec.get("name") == "quantile" else None
    )
    metric_outputs = test_out if task == "multiclass" else test_out.reshape(len(test_out), -1)[:, 0]
    if task == "ranking":
        per_list = list_ndcg(metric_outputs, test_y, prepared.lists("test"), LIST_K)
        test_metrics = measured_list_metrics(
            per_list, f"ndcg_{LIST_K}", resamples=resamples, seed=seed
        )
    else:
        test_metrics = measured_metrics(
            task,
            test_y,
            metric_outputs,
            metadata.threshold,
            costs=costs,
            quantile=quantile,
            resamples=resamples,
            seed=seed,
        )
    kurtosis = None
    if task == "regression":
        kurtosis = float(scipy_stats.kurtosis(test_y - metric_outputs))
    return ReferenceProfile(
        model_name=model_name,
        model_version=model_version,
        run_id=run_id,
        metadata=metadata,
        numeric=list(pre.numeric_columns),
        categorical=list(pre.categorical_columns),
        features=feature_summaries(pre, train_x),
        scores=score_summary(task, train_out, classes),
        classes=classes,
        class_counts=class_counts,
        target=target,
        confusion=confusion,
        test_metrics=test_metrics,
        residual_kurtosis=kurtosis,
        sample=_sample(pre, train_x, train_y, train_out, task, classes, sample_rows, seed),
    )


def _classes(task: str, metadata: ModelMetadata) -> list[str]:
    if task == "binary":
        return ["0", "1"]
    if task == "multiclass":
        return list(metadata.label_names or [])
    return []


def _sample(
    pre: Preprocessor,
    encoded: EncodedFeatures,
    target: np.ndarray,
    outputs: np.ndarray,
    task: str,
    classes: list[str],
    rows: int,
    seed: int,
) -> list[dict[str, Any]]:
    n = len(encoded)
    picked = np.sort(np.random.default_rng(seed).choice(n, size=min(rows, n), replace=False))
    part = encoded.take(picked)
    frame = pd.DataFrame(part.numeric.astype(np.float64), columns=list(pre.numeric_columns))
    for name, values in decode_categorical(pre, part).items():
        frame[name] = values
    y = target[picked]
    frame[pre.target] = [classes[int(v)] for v in y] if task == "multiclass" else y.tolist()
    out = outputs[picked]
    frame[SCORE] = (
        [classes[k] for k in out.argmax(axis=1).tolist()]
        if task == "multiclass"
        else out.reshape(len(out), -1)[:, 0].tolist()
    )
    records = frame.astype(object).where(frame.notna(), None).to_dict(orient="records")
    return [{str(k): v for k, v in r.items()} for r in records]
