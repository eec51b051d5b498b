"""A window of served traffic, summarised the way its reference profile is.

:func:`summarise_window` reads the records one variant's model version served in ``[start,
end)`` from the prediction log, chunk by chunk (memory stays bounded), and keeps:

- per feature, the same kind of summary as the reference (:mod:`lossflow.monitoring.distributions`);
- the scores (binary probability, regression prediction, multiclass predicted class) and the
  predicted-label counts;
- the labelled records' labels and outputs (a seeded subsample of at most ``max_labelled`` for
  intervals; the class counts of all of them) and the label delays;
- a seeded sample of at most ``sample_rows`` records for the Evidently report.

Records whose fields do not match the model's features (a model changed underneath the
variant) are refused with a :class:`WindowError`.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd
import pyarrow as pa

from lossflow.errors import UserError
from lossflow.evaluation.metrics import list_ndcg
from lossflow.monitoring.distributions import (
    CategoricalSummary,
    NumericSummary,
    Summary,
    merge,
)
from lossflow.monitoring.performance import LIST_K
from lossflow.monitoring.profile import SCORE, ReferenceProfile
from lossflow.predlog.reader import iter_records, numeric_column
from lossflow.predlog.store import PredictionLog


class WindowError(UserError):
    """A window cannot be judged (its records do not fit the model); the message says why."""


@dataclass(frozen=True)
class WindowSummary:
    """What one variant's model version served in one window (see the module).

    Attributes:
        variant: the variant.
        model_version: the model version.
        start: window start (aware).
        end: window end (aware, exclusive).
        rows: records served.
        features: per feature, its summary.
        scores: the scores' summary.
        predicted: records per predicted class (classification).
        labelled: records with a label.
        label_counts: labelled records per class (classification).
        labels: labels of (a subsample of) the labelled records.
        outputs: the model's outputs for them (probability, class probabilities or value).
        label_delays_s: seconds from answer to label of every labelled record.
        sample: up to ``sample_rows`` records (features, score, label) for the report.
        list_ndcg: ranking: NDCG@``LIST_K`` of every labelled list (one ``/rank`` request),
            the quality a ranking model is judged by.
    """

    variant: str
    model_version: str
    start: datetime
    end: datetime
    rows: int
    features: dict[str, Summary]
    scores: Summary
    predicted: dict[str, int]
    labelled: int
    label_counts: dict[str, int]
    labels: npt.NDArray[Any]
    outputs: npt.NDArray[np.float64]
    label_delays_s: npt.NDArray[np.float64]
    sample: pd.DataFrame = field(repr=False)
    list_ndcg: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(0))


def _output_schema(profile: ReferenceProfile) -> pa.Schema:
    if profile.task == "binary":
        return pa.schema([("probability", pa.float64())])
    if profile.task == "multiclass":
        probs = pa.struct([(c, pa.float64()) for c in profile.classes])
        return pa.schema([("probabilities", probs), ("label", pa.string())])
    if profile.task == "ranking":
        return pa.schema([("score", pa.float64())])
    return pa.schema([("value", pa.float64())])


def _check_fields(chunk_records: bytes, expected: Sequence[str]) -> None:
    """Refuse records whose fields differ from the model's features (first record checked)."""
    import orjson

    first = chunk_records.split(b"\n", 1)[0]
    fields = set(orjson.loads(first)) if first else set(expected)
    missing = sorted(set(expected) - fields)
    extra = sorted(fields - set(expected))
    if missing or extra:
        raise WindowError(
            f"the window's records do not fit the model: missing {missing}, unexpected {extra}; "
            "a model with other features served this variant (judge a window after the change)"
        )


def summarise_window(
    log: PredictionLog,
    profile: ReferenceProfile,
    variant: str,
    start: datetime,
    end: datetime,
    *,
    experiment: str | None = None,
    max_labelled: int = 20_000,
    sample_rows: int = 5000,
    seed: int = 0,
) -> WindowSummary:
    """Summarise what ``variant`` served with ``profile``'s model version in ``[start, end)``.

    Raises:
        WindowError: the records do not fit the model's features.
    """
    rng = np.random.default_rng(seed)
    features: dict[str, Summary] = {}
    scores: Summary | None = None
    predicted: Counter[str] = Counter()
    label_counts: Counter[str] = Counter()
    labels: list[npt.NDArray[Any]] = []
    outputs: list[npt.NDArray[np.float64]] = []
    delays: list[npt.NDArray[np.float64]] = []
    samples: list[pd.DataFrame] = []
    ndcg: list[npt.NDArray[np.float64]] = []
    rows = labelled = 0
    schema = _output_schema(profile)
    threshold = profile.metadata.threshold
    expected = [*profile.numeric, *profile.categorical]
    for chunk in iter_records(
        log, start, end, variant, model_version=profile.model_version, experiment=experiment
    ):
        if rows == 0:
            _check_fields(chunk.records, expected)
        table = chunk.features(profile.numeric, profile.categorical)
        out = chunk.output_table(schema)
        part: dict[str, Summary] = {
            n: NumericSummary.of(numeric_column(table, n)) for n in profile.numeric
        }
        for name in profile.categorical:
            part[name] = CategoricalSummary.of(table[name].to_pylist())
        features = part if not features else {k: merge(features[k], v) for k, v in part.items()}
        score, chunk_outputs, chunk_predicted = _scores(profile, out, threshold)
        scores = score if scores is None else merge(scores, score)
        predicted.update(chunk_predicted)
        has_label = np.array([v is not None for v in chunk.labels], dtype=bool)
        if has_label.any():
            y = _labels(profile, [chunk.labels[i] for i in np.flatnonzero(has_label)])
            if profile.classes:
                label_counts.update(profile.classes[int(v)] for v in y if v >= 0)
            labels.append(y)
            outputs.append(chunk_outputs[has_label])
            delays.append(chunk.label_delay_s[has_label])
            labelled += int(has_label.sum())
            if profile.task == "ranking":
                lists = chunk.requests[has_label]
                ndcg.append(list_ndcg(chunk_outputs[has_label], y, lists, LIST_K))
        samples.append(_sample(profile, table, chunk_outputs, chunk.labels, sample_rows, rng))
        rows += chunk.rows
    if scores is None:
        features = {n: NumericSummary.of(np.zeros(0)) for n in profile.numeric}
        features.update({c: CategoricalSummary.of([]) for c in profile.categorical})
        scores = (
            CategoricalSummary.of([])
            if profile.task == "multiclass"
            else NumericSummary.of(np.zeros(0))
        )
    y_all = np.concatenate(labels) if labels else np.zeros(0)
    out_all = np.concatenate(outputs) if outputs else np.zeros((0,))
    if len(y_all) > max_labelled:
        keep = np.sort(rng.choice(len(y_all), size=max_labelled, replace=False))
        y_all, out_all = y_all[keep], out_all[keep]
    sample = pd.concat(samples, ignore_index=True) if samples else pd.DataFrame()
    if len(sample) > sample_rows:
        sample = sample.sample(n=sample_rows, random_state=seed).reset_index(drop=True)
    return WindowSummary(
        variant=variant,
        model_version=profile.model_version,
        start=start,
        end=end,
        rows=rows,
        features=features,
        scores=scores,
        predicted=dict(predicted),
        labelled=labelled,
        label_counts=dict(label_counts),
        labels=y_all,
        outputs=out_all,
        label_delays_s=np.concatenate(delays) if delays else np.zeros(0),
        sample=sample,
        list_ndcg=np.concatenate(ndcg) if ndcg else np.zeros(0),
    )


def _scores(
    profile: ReferenceProfile, out: pa.Table, threshold: float | None
) -> tuple[Summary, npt.NDArray[np.float64], Counter[str]]:
    if profile.task == "binary":
        p = numeric_column(out, "probability")
        t = 0.5 if threshold is None else threshold
        positive = int((p >= t).sum())
        return NumericSummary.of(p), p, Counter({"1": positive, "0": len(p) - positive})
    if profile.task == "multiclass":
        probs = out["probabilities"].combine_chunks()
        matrix = np.column_stack(
            [numeric_column(pa.table({c: probs.field(c)}), c) for c in profile.classes]
        )
        names = [profile.classes[k] for k in matrix.argmax(axis=1).tolist()]
        return CategoricalSummary.of(names), matrix, Counter(names)
    values = numeric_column(out, "score" if profile.task == "ranking" else "value")
    return NumericSummary.of(values), values, Counter()


def _labels(profile: ReferenceProfile, raw: list[Any]) -> npt.NDArray[Any]:
    if profile.task == "multiclass":
        index = {c: i for i, c in enumerate(profile.classes)}
        return np.array([index.get(str(v), -1) for v in raw], dtype=np.int64)
    return np.array([float(v) for v in raw], dtype=np.float64)


def _sample(
    profile: ReferenceProfile,
    table: pa.Table,
    outputs: npt.NDArray[np.float64],
    labels: list[Any],
    rows: int,
    rng: np.random.Generator,
) -> pd.DataFrame:
    n = table.num_rows
    picked = np.sort(rng.choice(n, size=min(rows, n), replace=False))
    frame = table.take(pa.array(picked)).to_pandas()
    target = profile.metadata.preprocessor.get("target", "target")
    frame[target] = [labels[i] for i in picked.tolist()]
    if profile.task == "multiclass":
        frame[SCORE] = [profile.classes[k] for k in outputs[picked].argmax(axis=1).tolist()]
    else:
        frame[SCORE] = outputs[picked]
    return frame
