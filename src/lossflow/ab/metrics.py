"""What each variant of an A/B test measured, per randomisation unit, from the prediction log.

A request's metric is the mean over its labelled records of the per-record loss (log loss,
Brier, error, cost...), or for a ranked list (``/rank``: outputs with a ``score``) the list's
NDCG@k against the graded relevance fed back; a unit's outcome is the mean over its requests.
Units, not requests, are independent (the router assigns units), so every test compares
per-unit outcomes.

Guardrails are per-unit means too: latency (every request), positive rate (the share of
records predicted positive) and calibration (``probability - label`` on labelled records).

Beside each arm, the champion's trivial baseline (its training prior, mean or median, answering
every record the same) is scored on the same labelled records by the same metric, so the status
shows an arm that does not beat it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import numpy as np
import numpy.typing as npt

from lossflow.predlog.reader import OutcomeChunk

FloatArray = npt.NDArray[np.float64]
_EPS = 1e-15
RANKING_METRICS = ("ndcg_10", "ndcg_5")
HIGHER_IS_BETTER = frozenset({"accuracy", *RANKING_METRICS})


def list_ndcg(metric: str, outputs: list[dict[str, Any]], labels: list[Any]) -> float:
    """NDCG@k (``metric`` = ``ndcg_<k>``) of one ranked list: its items' ``score`` outputs
    against their graded relevance (``sklearn.metrics.ndcg_score``; 0 if nothing is relevant).

    Raises:
        ValueError: ``metric`` is not ``ndcg_<k>`` or the outputs hold no score.
    """
    if not metric.startswith("ndcg_") or not metric[5:].isdigit():
        raise ValueError(f"metric {metric!r} does not apply to ranked lists; use ndcg_<k>")
    if not outputs or "score" not in outputs[0]:
        raise ValueError(f"metric {metric!r} needs ranked lists (outputs with a score)")
    from lossflow.evaluation.metrics import list_ndcg as ndcg_of_lists

    scores = [float(o["score"]) for o in outputs]
    return float(ndcg_of_lists(scores, labels, np.zeros(len(scores)), int(metric[5:]))[0])


def record_loss(
    metric: str,
    output: dict[str, Any],
    label: Any,
    *,
    fn_cost: float | None = None,
    fp_cost: float | None = None,
    quantile: float | None = None,
) -> float:
    """One record's value of ``metric`` (``label``: 0/1, a class name, or a number)."""
    if "probability" in output:
        p = min(max(float(output["probability"]), _EPS), 1 - _EPS)
        y = float(label)
        if metric == "log_loss":
            return -(y * math.log(p) + (1 - y) * math.log(1 - p))
        if metric == "brier":
            return (p - y) ** 2
        predicted = int(output["label"])
        if metric == "accuracy":
            return float(predicted == int(y))
        if metric == "expected_cost" and fn_cost is not None and fp_cost is not None:
            return fn_cost * (predicted == 0 and y == 1) + fp_cost * (predicted == 1 and y == 0)
    elif "probabilities" in output:
        if metric == "log_loss":
            return -math.log(max(float(output["probabilities"].get(str(label), 0.0)), _EPS))
        if metric == "accuracy":
            return float(str(output["label"]) == str(label))
    elif "value" in output:
        err = float(label) - float(output["value"])
        if metric == "mse":
            return err * err
        if metric == "mae":
            return abs(err)
        if metric == "pinball" and quantile is not None:
            return max(quantile * err, (quantile - 1) * err)
    raise ValueError(f"metric {metric!r} does not apply to output {sorted(output)}")


@dataclass
class _Unit:
    """Running sums of one unit's requests."""

    requests: int = 0
    failed: int = 0
    latency: float = 0.0
    metric: float = 0.0
    labelled: int = 0
    positive: float = 0.0
    scored: int = 0
    residual: float = 0.0
    calibrated: int = 0
    baseline: float = 0.0
    baselined: int = 0


@dataclass(frozen=True)
class VariantMetrics:
    """One variant of an A/B test, measured per unit.

    Attributes:
        variant: the variant.
        units: distinct units routed to it (answered or failed).
        requests: requests answered.
        failed: requests it failed to answer.
        labelled_units: units with at least one labelled request.
        coverage: ``labelled_units / units``.
        outcome: per labelled unit, the mean of the primary metric.
        latency_ms: per answered unit, the mean latency.
        error_rate: per unit, the share of its requests that failed.
        positive_rate: per unit, the share predicted positive (binary).
        calibration: per labelled unit, the mean of ``probability - label`` (binary).
        p99_latency_ms: the 99th percentile of every request's latency.
        first: the earliest answer.
        last: the latest answer.
        baseline: per labelled unit, the trivial baseline's mean metric on its records (empty
            when none was given, or for ranked lists).
    """

    variant: str
    units: int
    requests: int
    failed: int
    labelled_units: int
    coverage: float
    outcome: FloatArray
    latency_ms: FloatArray
    error_rate: FloatArray
    positive_rate: FloatArray
    calibration: FloatArray
    p99_latency_ms: float
    first: datetime | None
    last: datetime | None
    baseline: FloatArray = field(default_factory=lambda: np.zeros(0))

    @property
    def mean(self) -> float:
        """The mean per-unit outcome (NaN without labelled units)."""
        return float(self.outcome.mean()) if self.outcome.size else float("nan")

    @property
    def baseline_mean(self) -> float | None:
        """The trivial baseline's mean per-unit outcome on the same units (None: not scored)."""
        return float(self.baseline.mean()) if self.baseline.size else None

    def beats_baseline(self, higher_is_better: bool) -> bool | None:
        """Whether the arm's mean beats the baseline's (None: nothing to compare)."""
        base = self.baseline_mean
        if base is None or math.isnan(self.mean):
            return None
        return self.mean > base if higher_is_better else self.mean < base

    def summary(self) -> dict[str, Any]:
        """JSON-able numbers (no per-unit arrays)."""
        return {
            "variant": self.variant,
            "units": self.units,
            "requests": self.requests,
            "failed": self.failed,
            "labelled_units": self.labelled_units,
            "coverage": self.coverage,
            "metric_mean": None if math.isnan(self.mean) else self.mean,
            "latency_ms_mean": float(self.latency_ms.mean()) if self.latency_ms.size else None,
            "p99_latency_ms": None if math.isnan(self.p99_latency_ms) else self.p99_latency_ms,
            "error_rate": self.failed / max(self.requests + self.failed, 1),
            "positive_rate": float(self.positive_rate.mean()) if self.positive_rate.size else None,
            "baseline_mean": self.baseline_mean,
            "first": None if self.first is None else self.first.isoformat(),
            "last": None if self.last is None else self.last.isoformat(),
        }


def variant_metrics(
    chunks: Iterable[OutcomeChunk],
    metric: str,
    *,
    failures: Iterable[tuple[str, str, datetime]] = (),
    fn_cost: float | None = None,
    fp_cost: float | None = None,
    quantile: float | None = None,
    baseline: dict[str, Any] | None = None,
) -> dict[str, VariantMetrics]:
    """Per variant, the per-unit outcomes and guardrails of the requests in ``chunks`` and the
    ``failures`` (``(unit_id, variant, ts)`` of requests a variant failed to answer);
    ``baseline``: the trivial baseline's answer to every record, scored beside each arm.

    Raises:
        ValueError: ``metric`` does not apply to the logged outputs.
    """
    units: dict[str, dict[str, _Unit]] = defaultdict(dict)
    latencies: dict[str, list[npt.NDArray[np.float64]]] = defaultdict(list)
    span: dict[str, list[datetime]] = {}

    def seen(variant: str, ts: datetime) -> None:
        first_last = span.setdefault(variant, [ts, ts])
        first_last[0] = min(first_last[0], ts)
        first_last[1] = max(first_last[1], ts)

    for chunk in chunks:
        for variant in set(chunk.variant):
            mask = np.fromiter((v == variant for v in chunk.variant), bool, len(chunk.variant))
            latencies[variant].append(chunk.latency_ms[mask])
        for i, variant in enumerate(chunk.variant):
            unit = units[variant].get(chunk.unit_id[i])
            if unit is None:
                unit = units[variant][chunk.unit_id[i]] = _Unit()
            unit.requests += 1
            unit.latency += float(chunk.latency_ms[i])
            outputs, labels = chunk.outputs[i], chunk.labels[i]
            binary = bool(outputs) and "probability" in outputs[0]
            if binary:
                unit.positive += sum(int(o["label"]) for o in outputs) / len(outputs)
                unit.scored += 1
            if labels is not None and outputs and "score" in outputs[0]:
                unit.metric += list_ndcg(metric, outputs, labels)
                unit.labelled += 1
            elif labels is not None and outputs:
                pairs = list(zip(outputs, labels, strict=True))
                options = {"fn_cost": fn_cost, "fp_cost": fp_cost, "quantile": quantile}
                unit.metric += sum(record_loss(metric, o, y, **options) for o, y in pairs) / len(
                    pairs
                )
                if baseline is not None:
                    unit.baseline += sum(
                        record_loss(metric, baseline, y, **options) for _, y in pairs
                    ) / len(pairs)
                    unit.baselined += 1
                unit.labelled += 1
                if binary:
                    unit.residual += sum(
                        float(o["probability"]) - float(y) for o, y in pairs
                    ) / len(pairs)
                    unit.calibrated += 1
            seen(variant, chunk.ts[i])
    for unit_id, variant, ts in failures:
        unit = units[variant].setdefault(unit_id, _Unit())
        unit.failed += 1
        seen(variant, ts)
    out = {}
    for variant, by_unit in units.items():
        every = list(by_unit.values())
        labelled = [u for u in every if u.labelled]
        answered = [u for u in every if u.requests]
        first, last = span[variant]
        latency = np.concatenate(latencies[variant]) if latencies[variant] else np.zeros(0)
        out[variant] = VariantMetrics(
            variant=variant,
            units=len(every),
            requests=sum(u.requests for u in every),
            failed=sum(u.failed for u in every),
            labelled_units=len(labelled),
            coverage=len(labelled) / len(every),
            outcome=np.array([u.metric / u.labelled for u in labelled]),
            latency_ms=np.array([u.latency / u.requests for u in answered]),
            error_rate=np.array([u.failed / (u.failed + u.requests) for u in every]),
            positive_rate=np.array([u.positive / u.scored for u in every if u.scored]),
            calibration=np.array([u.residual / u.calibrated for u in every if u.calibrated]),
            p99_latency_ms=float(np.percentile(latency, 99)) if latency.size else float("nan"),
            first=first,
            last=last,
            baseline=np.array([u.baseline / u.baselined for u in labelled if u.baselined]),
        )
    return out
