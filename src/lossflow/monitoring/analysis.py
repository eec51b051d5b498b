"""One model version over one window: drift, prior shift and performance, as the evidence a
decision reads. Pure given the two summaries (the profile and the window)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
from scipy import stats as scipy_stats

from lossflow.config.monitoring import MonitoringConfig
from lossflow.monitoring.decision import Evidence
from lossflow.monitoring.distributions import NumericSummary
from lossflow.monitoring.drift import ColumnDrift, DriftMethods, DriftReport, drift_report
from lossflow.monitoring.performance import (
    LIST_K,
    Costs,
    PerformanceReport,
    decay,
    estimated_binary_metrics,
    measured_list_metrics,
    measured_metrics,
)
from lossflow.monitoring.prior import PriorShift, prior_shift
from lossflow.monitoring.profile import SCORE, ReferenceProfile
from lossflow.monitoring.window import WindowSummary


def drift_methods(cfg: MonitoringConfig) -> DriftMethods:
    """The pinned drift methods of the config."""
    d = cfg.drift
    return DriftMethods(
        numeric_effect=d.numeric_effect,
        numeric_threshold=d.numeric_threshold,
        categorical_effect=d.categorical_effect,
        categorical_threshold=d.categorical_threshold,
        alpha=d.alpha,
        dataset_share=d.dataset_share,
    )


def costs_of(cfg: MonitoringConfig) -> Costs | None:
    """The binary cost matrix, when configured."""
    p = cfg.performance
    return None if p.fn_cost is None or p.fp_cost is None else Costs(p.fn_cost, p.fp_cost)


@dataclass(frozen=True)
class Analysis:
    """Everything one monitoring run measured of one model version."""

    drift: DriftReport
    prediction: ColumnDrift | None
    prior: PriorShift | None
    performance: PerformanceReport
    evidence: Evidence


def analyse(profile: ReferenceProfile, window: WindowSummary, cfg: MonitoringConfig) -> Analysis:
    """Judge ``window`` against ``profile`` with ``cfg``'s methods and thresholds."""
    methods = drift_methods(cfg)
    features = [*profile.numeric, *profile.categorical]
    drift = drift_report(profile.features, window.features, methods, features)
    scored = drift_report({SCORE: profile.scores}, {SCORE: window.scores}, methods)
    prediction = scored.columns[0] if scored.columns else None
    prior = None
    if profile.classes:
        prior = prior_shift(
            profile.classes,
            profile.prior,
            window.label_counts,
            profile.confusion,
            window.predicted,
            min_labels=cfg.prior.min_labels,
            alpha=cfg.prior.alpha,
            tolerance=cfg.prior.tolerance,
            resamples=cfg.prior.resamples,
            seed=cfg.seed,
        )
    performance = _performance(profile, window, cfg)
    kurtosis = None
    if profile.task == "regression" and window.labelled >= cfg.performance.min_labels:
        kurtosis = float(scipy_stats.kurtosis(window.labels - window.outputs))
    evidence = Evidence(
        model_name=profile.model_name,
        model_version=profile.model_version,
        loss_spec=dict(profile.metadata.loss_spec),
        task=profile.task,
        window_start=window.start.astimezone(UTC).isoformat(),
        window_end=window.end.astimezone(UTC).isoformat(),
        rows=window.rows,
        drift=drift,
        prediction_drift=bool(prediction is not None and prediction.drifted),
        prior=prior,
        performance=performance,
        residual_kurtosis=kurtosis,
        reference_residual_kurtosis=profile.residual_kurtosis,
    )
    return Analysis(drift, prediction, prior, performance, evidence)


def _performance(
    profile: ReferenceProfile, window: WindowSummary, cfg: MonitoringConfig
) -> PerformanceReport:
    p = cfg.performance
    delays = window.label_delays_s[np.isfinite(window.label_delays_s)]
    delay = (
        {"median": float(np.median(delays)), "p90": float(np.percentile(delays, 90))}
        if delays.size
        else {}
    )
    estimated: dict[str, float] = {}
    scores = window.scores
    if profile.task == "binary" and isinstance(scores, NumericSummary) and scores.present > 0:
        estimated = estimated_binary_metrics(
            scores.values, scores.counts, profile.metadata.threshold or 0.5
        )
    measured = {}
    insufficient = None
    usable = window.labels if profile.task != "multiclass" else window.labels[window.labels >= 0]
    if len(usable) < p.min_labels:
        insufficient = (
            f"insufficient labels: {window.labelled} labelled of {window.rows} rows; "
            f"the policy needs {p.min_labels} (performance.min_labels)"
        )
    elif profile.task == "ranking":
        measured = measured_list_metrics(
            window.list_ndcg, f"ndcg_{LIST_K}", resamples=p.resamples, confidence=p.confidence,
            seed=cfg.seed,
        )  # fmt: skip
    else:
        try:
            measured = measured_metrics(
                profile.task,
                window.labels,
                window.outputs,
                profile.metadata.threshold,
                costs=costs_of(cfg),
                quantile=_quantile(profile),
                resamples=p.resamples,
                confidence=p.confidence,
                max_rows=p.max_labelled,
                seed=cfg.seed,
            )
        except ValueError as err:  # e.g. labels of one class only: AUC undefined
            insufficient = f"performance not measurable on this window: {err}"
    reference = {name: m.value for name, m in profile.test_metrics.items()}
    return PerformanceReport(
        rows=window.rows,
        labelled=window.labelled,
        coverage=window.labelled / window.rows if window.rows else 0.0,
        label_delay_s=delay,
        measured=measured,
        insufficient=insufficient,
        estimated=estimated,
        decay=decay(measured, reference, p.tolerance),
    )


def _quantile(profile: ReferenceProfile) -> float | None:
    spec = profile.metadata.loss_spec
    return float(spec["quantile"]) if spec.get("name") == "quantile" else None


def evidence_without_window(
    profile: ReferenceProfile | None,
    model_name: str,
    model_version: str,
    start: datetime,
    end: datetime,
    rows: int,
    problem: str,
) -> Evidence:
    """The evidence of a window that cannot be judged (no profile, no rows, records that do not
    fit the model): the decision is then "insufficient data"."""
    return Evidence(
        model_name=model_name,
        model_version=model_version,
        loss_spec={} if profile is None else dict(profile.metadata.loss_spec),
        task="" if profile is None else profile.task,
        window_start=start.astimezone(UTC).isoformat(),
        window_end=end.astimezone(UTC).isoformat(),
        rows=rows,
        problem=problem,
    )
