"""A monitoring run in MLflow: one run per model version and window in ``lossflow-monitoring``.

Metrics (one value per run, so the experiment's charts plot them over windows):
``drift/<feature>/effect``, ``drift/<feature>/p_value`` (adjusted), ``drift/<feature>/drifted``,
``drift/share``, ``drift/dataset``, ``prediction/effect``, ``prediction/p_value``,
``prior/<class>/new``, ``perf/<metric>`` with ``perf/<metric>/low`` and ``/high``,
``perf_estimated/<metric>``, ``labels/coverage``, ``labels/delay_median_s``, ``rows``.
Tags: the model, version, loss id, variant, window, the decision's status and dedup key.
Artifacts: ``decision.json``, ``analysis.json`` and the Evidently report (``report/
evidently.html``). :func:`past_requests` reads the retrain requests back for the decision's
cooldown and dedup.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from lossflow.monitoring.analysis import Analysis
from lossflow.monitoring.decision import Decision, PastRequest
from lossflow.tracking import Runs

TAG_MODEL: Final = "lossflow.model"
TAG_VERSION: Final = "lossflow.model_version"
TAG_STATUS: Final = "lossflow.decision"
TAG_KEY: Final = "lossflow.dedup_key"


def _finite(metrics: dict[str, float]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items() if v is not None and math.isfinite(v)}


def run_metrics(analysis: Analysis | None, rows: int) -> dict[str, float]:
    """The run's metrics (see the module)."""
    metrics: dict[str, float] = {"rows": float(rows)}
    if analysis is None:
        return metrics
    for column in analysis.drift.columns:
        prefix = f"drift/{column.column}"
        metrics[f"{prefix}/effect"] = column.effect
        metrics[f"{prefix}/p_value"] = column.p_adjusted
        metrics[f"{prefix}/drifted"] = float(column.drifted)
    metrics["drift/share"] = analysis.drift.drifted_share
    metrics["drift/dataset"] = float(analysis.drift.dataset_drift)
    if analysis.prediction is not None:
        metrics["prediction/effect"] = analysis.prediction.effect
        metrics["prediction/p_value"] = analysis.prediction.p_value
        metrics["prediction/drifted"] = float(analysis.prediction.drifted)
    prior = analysis.prior
    if prior is not None and prior.new_prior is not None:
        for name, share in zip(prior.classes, prior.new_prior, strict=True):
            metrics[f"prior/{name}/new"] = share
        metrics["prior/shifted"] = float(prior.shifted)
    performance = analysis.performance
    for name, estimate in performance.measured.items():
        metrics[f"perf/{name}"] = estimate.value
        metrics[f"perf/{name}/low"] = estimate.low
        metrics[f"perf/{name}/high"] = estimate.high
    for name, value in performance.estimated.items():
        metrics[f"perf_estimated/{name}"] = value
    metrics["labels/coverage"] = performance.coverage
    if "median" in performance.label_delay_s:
        metrics["labels/delay_median_s"] = performance.label_delay_s["median"]
    return _finite(metrics)


def analysis_json(analysis: Analysis | None) -> dict[str, Any]:
    """The analysis as JSON-able data."""
    if analysis is None:
        return {}
    return {
        "drift": analysis.drift.to_json(),
        "prediction": None if analysis.prediction is None else analysis.prediction.to_json(),
        "prior": None if analysis.prior is None else analysis.prior.to_json(),
        "performance": analysis.performance.to_json(),
    }


def record_run(
    runs: Runs,
    *,
    model_name: str,
    variant: str,
    loss_id: str,
    analysis: Analysis | None,
    decision: Decision,
    rows: int,
    report_html: Path | None = None,
    report_left_out: Sequence[str] = (),
) -> str:
    """Log one monitoring run; return its id. ``report_left_out``: features the Evidently
    report could not show (no value in a sample), tagged ``lossflow.report.left_out``."""
    start, end = decision.window
    tags = {
        TAG_MODEL: model_name,
        TAG_VERSION: decision.model_version,
        "lossflow.loss_id": loss_id,
        "lossflow.variant": variant,
        "lossflow.window_start": start,
        "lossflow.window_end": end,
        TAG_STATUS: decision.status,
        "lossflow.reasons": ",".join(r.code for r in decision.reasons) or "none",
    }
    if decision.dedup_key is not None:
        tags[TAG_KEY] = decision.dedup_key
    if report_left_out:
        tags["lossflow.report.left_out"] = ",".join(report_left_out)
    name = f"{variant}-v{decision.model_version}-{end[:16].replace(':', '')}"
    with runs.start_run(name, tags) as run_id:
        runs.log_metrics(run_id, run_metrics(analysis, rows))
        runs.log_dict(run_id, decision.to_json(), "decision.json")
        runs.log_dict(run_id, analysis_json(analysis), "analysis.json")
        if report_html is not None and report_html.is_file():
            runs.log_artifact(run_id, report_html, "report")
    return run_id


def past_requests(runs: Runs, model_name: str) -> list[PastRequest]:
    """The retrains monitoring asked for ``model_name`` (monitoring's ``runs``), newest first."""
    asked = runs.runs_with_tags({TAG_MODEL: model_name, TAG_STATUS: "retrain"})
    return [
        PastRequest(datetime.fromtimestamp(r.start_ms / 1000, tz=UTC), r.tags.get(TAG_KEY, ""))
        for r in asked
    ]


def scratch_dir() -> Path:
    """A temporary directory for a run's files (the caller removes it)."""
    return Path(tempfile.mkdtemp(prefix="lossflow-monitoring-"))
