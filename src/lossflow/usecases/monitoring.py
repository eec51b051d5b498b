"""The monitoring flow's steps, each one call the ``monitoring`` flow makes as a task.

``plan`` finds which model version each variant served in the window; for each, ``reference``
gets its profile, ``read`` summarises the window, ``judge`` analyses it and decides, ``record``
logs the MLflow run. A step that cannot judge a variant (no profile, records that do not fit,
no rows) returns an "insufficient data" outcome instead of failing, so one bad variant never
hides the others and nothing is retrained on it.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from lossflow import predlog
from lossflow.config.common import duration_seconds
from lossflow.config.monitoring import MonitoringConfig
from lossflow.contract import SHADOW
from lossflow.errors import UserError
from lossflow.monitoring.analysis import (
    Analysis,
    analyse,
    costs_of,
    drift_methods,
    evidence_without_window,
)
from lossflow.monitoring.decision import Decision, Policy, decide
from lossflow.monitoring.drift import evidently_report
from lossflow.monitoring.profile import SCORE, ReferenceProfile
from lossflow.monitoring.record import past_requests, record_run, scratch_dir
from lossflow.monitoring.references import ReferenceStore
from lossflow.monitoring.window import WindowSummary, summarise_window
from lossflow.predlog import PredictionLog
from lossflow.predlog.reader import versions_in_window
from lossflow.predlog.state import check_log_owner
from lossflow.tracking import ModelRegistry, Runs, open_registry, open_runs
from lossflow.usecases.ab import under_test

ANY_VARIANT = "*"


@dataclass(frozen=True)
class Window:
    """``[start, end)`` in UTC."""

    start: datetime
    end: datetime

    def describe(self) -> str:
        """``2013-09-01 00:00 -> 2013-10-01 00:00 UTC``."""
        return f"{self.start:%Y-%m-%d %H:%M} -> {self.end:%Y-%m-%d %H:%M} UTC"


def resolve_window(
    cfg: MonitoringConfig,
    since: str | None = None,
    start: datetime | None = None,
    end: datetime | None = None,
    now: datetime | None = None,
) -> Window:
    """The window: ``[start, end)``; ``end`` defaults to now, ``start`` to ``end - since``
    (``since`` defaulting to the config's ``window``).

    Raises:
        UserError: naive times, a start after the end, or both ``since`` and ``start``.
    """
    if since is not None and start is not None:
        raise WindowSpecError("give either --since or --start, not both")
    for name, value in (("start", start), ("end", end)):
        if value is not None and value.tzinfo is None:
            raise WindowSpecError(f"--{name} {value.isoformat()} has no time zone; add +00:00")
    stop = (end or now or datetime.now(UTC)).astimezone(UTC)
    begin = start.astimezone(UTC) if start is not None else None
    if begin is None:
        try:
            seconds = duration_seconds(since or cfg.window)
        except ValueError as err:
            raise WindowSpecError(str(err)) from None
        begin = stop - timedelta(seconds=seconds)
    if begin >= stop:
        raise WindowSpecError(
            f"the window is empty: start {begin.isoformat()} is not before end {stop.isoformat()}"
        )
    return Window(begin, stop)


class WindowSpecError(UserError):
    """The requested window is not a window; the message says why."""


@dataclass(frozen=True)
class Target:
    """One variant's model version to judge, and what else the variant served in the window."""

    variant: str
    model_version: str
    loss_id: str
    requests: int
    other_versions: dict[str, int]


def open_log(cfg: MonitoringConfig) -> PredictionLog:
    """The prediction log the service writes (``log.url``, else the embedded SQLite file).

    Raises:
        LogNotFoundError: the embedded log file does not exist (nothing was served yet).
    """
    return predlog.open_log(cfg.log.url, cfg.log.db_schema, cfg.data_dir, existing=True)


def plan(cfg: MonitoringConfig, window: Window, variants: list[str] | None = None) -> list[Target]:
    """Per variant (all, or ``variants``, or the config's), the model version it serves now.

    Raises:
        LogUnreachableError: the log cannot be read.
        LogOwnerError: the log holds another model's predictions.
    """
    log = open_log(cfg)
    try:
        with predlog.reading(log, "check log.url (and that the service has written to it)"):
            check_log_owner(log, cfg.tracking.registered_model)
            rows = versions_in_window(log, window.start, window.end, cfg.experiment)
    finally:
        log.dispose()
    wanted = variants or cfg.variants
    targets = []
    for variant in sorted({r.variant for r in rows}):
        if variant == SHADOW and not wanted:
            continue
        if wanted and variant not in wanted:
            continue
        mine = [r for r in rows if r.variant == variant]
        current = max(mine, key=lambda r: r.last_ts)
        others = {r.model_version: r.requests for r in mine if r is not current}
        targets.append(
            Target(variant, current.model_version, current.loss_id, current.requests, others)
        )
    for variant in wanted or []:
        if variant not in {t.variant for t in targets}:
            targets.append(Target(variant, "none", "", 0, {}))
    if not targets:  # an empty window is judged too: "insufficient data", recorded
        targets.append(Target(ANY_VARIANT, "none", "", 0, {}))
    return targets


def runs_of(cfg: MonitoringConfig) -> Runs:
    """The monitoring experiment's runs."""
    return open_runs(cfg.tracking, cfg.data_dir, "monitoring")


def registry_of(cfg: MonitoringConfig) -> ModelRegistry:
    """The model registry as monitoring reads it (the aliases)."""
    return open_registry(cfg.tracking, cfg.data_dir)


def reference(cfg: MonitoringConfig, target: Target) -> ReferenceProfile:
    """The target version's reference profile.

    Raises:
        lossflow.monitoring.profile.ProfileError: none exists and none can be built.
    """
    store = ReferenceStore(
        open_registry(cfg.tracking, cfg.data_dir, writable=True),
        runs_of(cfg),
        cfg.tracking.registered_model,
        cfg.data_dir,
        costs_of(cfg),
    )
    return store.get(target.model_version)


def read(
    cfg: MonitoringConfig, profile: ReferenceProfile, target: Target, window: Window
) -> WindowSummary:
    """Summarise what the target served in the window.

    Raises:
        lossflow.monitoring.window.WindowError: the records do not fit the model.
    """
    log = open_log(cfg)
    try:
        return summarise_window(
            log,
            profile,
            target.variant,
            window.start,
            window.end,
            experiment=cfg.experiment,
            max_labelled=cfg.performance.max_labelled,
            sample_rows=cfg.report.sample_rows,
            seed=cfg.seed,
        )
    finally:
        log.dispose()


def policy(cfg: MonitoringConfig) -> Policy:
    """The decision policy of the config."""
    d = cfg.decision
    return Policy(
        min_rows=d.min_rows,
        cooldown_s=duration_seconds(d.cooldown),
        retrain_on_dataset_drift=d.retrain_on_dataset_drift,
        retrain_on_prediction_drift=d.retrain_on_prediction_drift,
        retrain_on_decay=d.retrain_on_decay,
        retrain_on_prior_shift=d.retrain_on_prior_shift,
        rare_positive_share=d.rare_positive_share,
        tail_kurtosis_increase=d.tail_kurtosis_increase,
    )


@dataclass(frozen=True)
class Judgement:
    """The analysis (``None`` when the window could not be judged) and the decision."""

    analysis: Analysis | None
    decision: Decision


def judge(
    cfg: MonitoringConfig,
    target: Target,
    window: Window,
    profile: ReferenceProfile | None,
    summary: WindowSummary | None,
    problem: str | None,
    now: datetime | None = None,
) -> Judgement:
    """Analyse the window against the profile and decide (``problem``: why it cannot be)."""
    now = now or datetime.now(UTC)
    history = past_requests(runs_of(cfg), cfg.tracking.registered_model)
    log = open_log(cfg)
    try:
        testing = under_test(
            registry_of(cfg), log, cfg.tracking.registered_model, window.start, window.end
        )
    finally:
        log.dispose()
    if profile is None or summary is None or problem is not None:
        evidence = evidence_without_window(
            profile,
            cfg.tracking.registered_model,
            target.model_version,
            window.start,
            window.end,
            target.requests if summary is None else summary.rows,
            problem or "nothing to judge",
        )
        return Judgement(None, decide(evidence, policy(cfg), history, now, testing))
    analysis = analyse(profile, summary, cfg)
    return Judgement(analysis, decide(analysis.evidence, policy(cfg), history, now, testing))


def report_html(
    cfg: MonitoringConfig, profile: ReferenceProfile, summary: WindowSummary, directory: Path
) -> tuple[Path | None, list[str]]:
    """Evidently's HTML report of the two bounded samples (``None`` when disabled or empty),
    and the features it leaves out: those without a value in either sample, which Evidently
    refuses (lossflow's own drift judgement covers every feature)."""
    if not cfg.report.evidently or summary.sample.empty or not profile.sample:
        return None, []
    reference_frame = profile.sample_frame()
    current = summary.sample[list(reference_frame.columns)].copy()
    features = [*profile.numeric, *profile.categorical]
    left_out = [c for c in features if current[c].isna().all() or reference_frame[c].isna().all()]
    target = str(profile.metadata.preprocessor.get("target"))
    # The quality part needs a label on every row of both samples: with delayed labels still
    # missing, the report shows drift only (the measured metrics are in the run's metrics).
    # Evidently has no quality preset for a ranked list's items scored one by one, nor for
    # multiclass probabilities here: those show drift only too.
    quality = profile.task in ("binary", "regression") and bool(current[target].notna().all())
    if quality and profile.task == "binary":
        for frame in (reference_frame, current):
            frame[target] = frame[target].astype(int)
    path = evidently_report(
        reference_frame,
        current,
        drift_methods(cfg),
        [c for c in profile.numeric if c not in left_out],
        [c for c in profile.categorical if c not in left_out],
        directory / "evidently.html",
        target=target if quality else None,
        prediction=SCORE if quality else None,
        task=profile.task,
    )
    return path, left_out


def record(
    cfg: MonitoringConfig,
    target: Target,
    judgement: Judgement,
    profile: ReferenceProfile | None,
    summary: WindowSummary | None,
) -> str:
    """Log the monitoring run (metrics, decision, analysis, Evidently report); return its id."""
    directory = scratch_dir()
    try:
        html: Path | None = None
        left_out: list[str] = []
        if profile is not None and summary is not None and judgement.analysis is not None:
            html, left_out = report_html(cfg, profile, summary, directory)
        return record_run(
            runs_of(cfg),
            model_name=cfg.tracking.registered_model,
            variant=target.variant,
            loss_id=target.loss_id,
            analysis=judgement.analysis,
            decision=judgement.decision,
            rows=target.requests if summary is None else summary.rows,
            report_html=html,
            report_left_out=left_out,
        )
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def retrain_event(cfg: MonitoringConfig, decision: Decision, run_id: str) -> dict[str, Any]:
    """The payload of the ``lossflow.retrain.requested`` event."""
    return {
        "model_name": cfg.tracking.registered_model,
        "model_version": decision.model_version,
        "reasons": [r.code for r in decision.reasons],
        "messages": [r.message for r in decision.reasons],
        "candidate_losses": decision.candidate_losses,
        "window": list(decision.window),
        "dedup_key": decision.dedup_key,
        "monitoring_run_id": run_id,
        "prior": decision.evidence.get("prior"),
    }
