"""``lossflow rehearse``: the closed loop on a project's own history, period by period, in minutes.

Any project whose data has a time column can rehearse: the champion trains on the periods before
the data's production part (its split's ``test_end``), then each later period (a week, month,
quarter or year) is replayed as live traffic with its labels, judged by monitoring, retrained
on the event, and A/B tested, exactly as in production but in compressed time. ``lossflow demo``
is the rehearsal of the flights project over September to December 2013.

1. A directory of its own, ``<data_dir>/rehearsal`` (emptied first): every flow gets
   ``data_dir`` there, so the rehearsal never touches the project's registry, log or runs.
2. A Prefect server on loopback (unless ``PREFECT_API_URL`` names one), with its database in
   that directory; the ``retrain`` deployment served by ``lossflow schedule --flow retrain`` in
   a child process, waiting for ``lossflow.retrain.requested`` events of the project's model.
3. The champion: the training flow (optionally on a subsample, with fewer epochs).
4. ``lossflow serve`` in a child process with ``replay_clock: true``: each replayed request
   carries its row's time, and its feedback that time plus the delay, so the log holds the
   periods as they happened while the replay takes seconds. A ranking model's rows are replayed
   as one ``/rank`` list per query.
5. Each period in turn: its rows replayed with labels; the ``monitoring`` flow judges the
   champion's period, and when it asks for a retrain its event starts the ``retrain``
   deployment (from the champion's recipe), whose challenger the service picks up for the next
   period's traffic (while a challenger is under test, monitoring defers); if a challenger served
   this period, the ``ab_analysis`` flow decides it (promote or reject: the aliases move and the
   service follows).
6. A timeline, printed as it happens and written as JSON, and a figure of the monitored metric
   over the periods, logged to MLflow (the project's ``rehearsal`` experiment).

The rehearsal's own settings (a 1 s retrain cooldown, the minimum rows and units scaled to the
periods' sizes) are printed at its start and recorded in the timeline; ``--set FLOW:KEY=VALUE``
changes any flow's configuration.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx
import pandas as pd

from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.training import load_training_config
from lossflow.contract import CHALLENGER, CHAMPION
from lossflow.data.sources import resolve_columns
from lossflow.errors import UserError
from lossflow.flows import server
from lossflow.predlog.store import default_log_url
from lossflow.replay.client import run_traffic
from lossflow.replay.requests import TrafficOptions
from lossflow.replay.rows import production_rows
from lossflow.tracking import TRACKING_URI_ENV, ModelRegistry, Runs, default_tracking_uri

READY_TIMEOUT_S: Final = 180.0
RETRAIN_TIMEOUT_S: Final = 900.0
BIN: Final = Path(sys.executable).parent
UNITS: Final = 100_000
TERMINAL: Final = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
# A period with fewer production rows (a month the data barely reaches) is left out, and said.
MIN_PERIOD_ROWS: Final = 100
# The metric of the monitored performance shown per period, by task, first found.
SHOWN_METRICS: Final = ("log_loss", "rmse", "mae", "ndcg_10", "accuracy")


class RehearsalError(UserError):
    """The rehearsal cannot go on; the message says which step failed and where its log is."""


@dataclass
class Event:
    """One step of the timeline.

    Attributes:
        wall: when it happened (ISO, UTC).
        clock: the period it concerns (``2017-05``), or ``None``.
        kind: ``settings``, ``trained``, ``served``, ``replayed``, ``monitored``,
            ``retrain_requested``, ``retrained``, ``ab_decision``, ``finished``, ``figure``.
        summary: one line for people.
        details: run ids, versions, loss ids, decision and evidence.
        elapsed_s: seconds since the rehearsal started.
    """

    wall: str
    clock: str | None
    kind: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0


@dataclass
class Timeline:
    """The rehearsal's events, printed as they happen."""

    started: float = field(default_factory=time.monotonic)
    events: list[Event] = field(default_factory=list)
    echo: Callable[[str], None] = print

    def add(self, kind: str, clock: str | None, summary: str, **details: Any) -> Event:
        """Record (and print) an event."""
        elapsed = time.monotonic() - self.started
        event = Event(datetime.now(UTC).isoformat(), clock, kind, summary, details, elapsed)
        self.events.append(event)
        when = f"[{clock}] " if clock else ""
        self.echo(f"{elapsed:6.0f}s  {kind:<18} {when}{summary}")
        return event

    def to_json(self) -> list[dict[str, Any]]:
        """JSON-able events."""
        return [asdict(e) for e in self.events]


@dataclass(frozen=True)
class Period:
    """One replayed period: ``[start, end)`` in UTC, named as pandas names it (``2013-09``,
    ``2013Q3``, ``1985``, a week's ``2013-09-02/2013-09-08``)."""

    name: str
    start: datetime
    end: datetime

    def rows(self, times: pd.Series) -> pd.Series:
        """Which of ``times`` (naive UTC, as the data holds them) fall in the period."""
        start, end = self.start.replace(tzinfo=None), self.end.replace(tzinfo=None)
        return (times >= start) & (times < end)


@dataclass(frozen=True)
class Plan:
    """What the rehearsal replays and with which settings (see the module).

    Attributes:
        root: its directory (``<data_dir>/rehearsal``), holding every store it writes.
        model: the project's registered model.
        experiment: the project's ``rehearsal`` MLflow experiment (the timeline's run).
        retrain_experiment: the project's ``retrain`` experiment (where retrains are found).
        time: the time column.
        group: a ranking model's query column.
        shared: the overrides of every flow: the project, then its stores moved to ``root``.
        sets: per flow, the user's own overrides.
        log: the ``log.url`` of the rehearsal's prediction log (in ``root``).
        training: overrides of every training (champion and candidates).
    """

    root: Path
    model: str
    experiment: str
    retrain_experiment: str
    time: str
    group: str | None
    shared: list[str]
    sets: dict[str, list[str]]
    log: str
    training: list[str]

    @property
    def tracking_uri(self) -> str:
        """The rehearsal's own MLflow store."""
        return default_tracking_uri(self.root)


PERIODS: Final = {"week": "W", "month": "M", "quarter": "Q", "year": "Y"}


def periods_of(times: pd.Series, limit: int | None = None, every: str = "month") -> list[Period]:
    """The calendar periods (``week``, ``month``, ``quarter`` or ``year``) the production rows
    span, in order (the first ``limit``)."""
    freq = PERIODS[every]
    first, last = pd.Timestamp(times.min()), pd.Timestamp(times.max())
    spans = pd.period_range(first.to_period(freq), last.to_period(freq), freq=freq)
    out = []
    for span in spans[: limit or len(spans)]:
        start = span.start_time.to_pydatetime().replace(tzinfo=UTC)
        end = (span + 1).start_time.to_pydatetime().replace(tzinfo=UTC)
        out.append(Period(str(span), start, end))
    return out


def _wait(
    check: Callable[[], bool],
    what: str,
    timeout_s: float,
    log: Path | None = None,
    children: Mapping[str, subprocess.Popen[bytes]] | None = None,
) -> None:
    """Wait until ``check()``; fail at the timeout, or as soon as one of ``children`` (the
    service, the retrain runner, by name) has exited."""
    deadline = time.monotonic() + timeout_s
    tail = f"; see {log}" if log is not None else ""
    while not check():
        gone = [(name, c) for name, c in (children or {}).items() if c.poll() is not None]
        if gone:
            name, process = gone[0]
            raise RehearsalError(
                f"{name} exited ({process.returncode}) while waiting for {what}{tail}"
            )
        if time.monotonic() > deadline:
            raise RehearsalError(f"timed out after {timeout_s:.0f} s waiting for {what}{tail}")
        time.sleep(0.5)


def _served(url: str) -> dict[str, str]:
    try:
        info = httpx.get(f"{url}/info", timeout=10.0).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {name: str(v["model_version"]) for name, v in info.get("variants", {}).items()}


def _deployment_ready(model: str) -> bool:
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    try:
        with get_client(sync_client=True) as client:
            client.read_deployment_by_name(f"retrain/{model}")
    except (ObjectNotFound, httpx.HTTPError):
        return False
    return True


def _retrain_runs(model: str, since: datetime) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterName,
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterExpectedStartTime,
    )

    with get_client(sync_client=True) as client:
        runs: list[Any] = client.read_flow_runs(
            flow_filter=FlowFilter(name=FlowFilterName(any_=["retrain"])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[model])),
            flow_run_filter=FlowRunFilter(
                expected_start_time=FlowRunFilterExpectedStartTime(after_=since)
            ),
        )
    return runs


def plan_rehearsal(
    shared: Sequence[str],
    sets: dict[str, list[str]],
    config_dir: Path,
    *,
    subsample: int | None,
    epochs: int | None,
) -> Plan:
    """The rehearsal's directory and settings for the project the overrides choose.

    Raises:
        RehearsalError: the data has no time column to replay by.
        ConfigError: an override does not apply.
    """
    cfg = load_training_config([*shared, *sets.get("training", [])], config_dir)
    columns = resolve_columns(cfg.data)
    if columns.time is None:
        raise RehearsalError(
            f"project {cfg.project}: the data has no time column, so it has no later periods "
            "to replay; give data.columns.time (lossflow init --time-column) to rehearse"
        )
    root = (cfg.data_dir / "rehearsal").absolute()
    small = [*([f"data.subsample={subsample}"] if subsample else []),
             *([f"trainer.max_epochs={epochs}"] if epochs else [])]  # fmt: skip
    # Every store in the rehearsal's directory, whatever the project points at in production.
    stores = [f"data_dir={root}", f"tracking.tracking_uri={default_tracking_uri(root)}"]
    return Plan(
        root=root,
        model=cfg.tracking.registered_model,
        experiment=cfg.tracking.experiment_of("rehearsal"),
        retrain_experiment=cfg.tracking.experiment_of("retrain"),
        time=columns.time,
        group=columns.group,
        shared=[*shared, *stores],
        sets=sets,
        log=default_log_url(root),
        training=small,
    )


def run_rehearsal(
    shared: Sequence[str] = (),
    sets: dict[str, list[str]] | None = None,
    config_dir: Path = DEFAULT_CONFIG_DIR,
    *,
    periods: int | None = None,
    period: str = "month",
    rows_per_period: int = 6000,
    subsample: int | None = None,
    epochs: int | None = None,
    rate: float = 400.0,
    json_path: Path | None = None,
    echo: Callable[[str], None] = print,
) -> Timeline:
    """Rehearse the project's loop (see the module) and return its timeline.

    Args:
        shared: overrides of every flow (``project=...`` first).
        sets: per flow, its own overrides (``training``, ``serving``, ``monitoring``,
            ``ab-analysis``, ``retrain``).
        config_dir: the configuration directory.
        periods: replay only the first this many periods of production.
        period: how long a period is: ``week``, ``month``, ``quarter`` or ``year``.
        rows_per_period: the most rows (ranking: of whole lists) replayed per period.
        subsample: training rows per split part (champion and candidates).
        epochs: training epochs (champion and candidates).
        rate: requests per second of the replay.
        json_path: also write the timeline here.
        echo: prints each event.

    Raises:
        RehearsalError: a step failed; the message names it and its log.
    """
    from prefect.settings import PREFECT_API_URL

    if period not in PERIODS:
        raise RehearsalError(f"period {period!r}: choose one of {', '.join(PERIODS)}")
    sets = {k: list(v) for k, v in (sets or {}).items()}
    plan = plan_rehearsal(shared, sets, config_dir, subsample=subsample, epochs=epochs)
    if plan.root.exists():
        shutil.rmtree(plan.root)
    plan.root.mkdir(parents=True)
    timeline = Timeline(echo=echo)
    given = PREFECT_API_URL.value()
    # Every store is the rehearsal's own: a production $MLFLOW_TRACKING_URI would win over the
    # pinned tracking URI in this process's flows and in its children.
    pinned = os.environ.pop(TRACKING_URI_ENV, None)
    try:
        _rehearse(plan, config_dir, str(given or ""), timeline, periods, period,
                  rows_per_period, rate)  # fmt: skip
    finally:
        if pinned is not None:
            os.environ[TRACKING_URI_ENV] = pinned
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(timeline.to_json(), indent=2, default=str))
    return timeline


def _rehearse(
    plan: Plan,
    config_dir: Path,
    given: str,
    timeline: Timeline,
    periods: int | None,
    period: str,
    rows_per_period: int,
    rate: float,
) -> None:
    """The loop, on the Prefect server at ``given``, else on a local one of its own."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if given:
        _loop(plan, config_dir, str(given), timeline, periods, period, rows_per_period, rate)
    else:
        with (
            server.running(plan.root / "prefect") as local,
            temporary_settings({PREFECT_API_URL: local.api_url}),
        ):
            timeline.add("prefect", None, f"Prefect server on {local.ui_url} (UI)")
            _loop(plan, config_dir, local.api_url, timeline, periods, period, rows_per_period, rate)


def _sample(rows: pd.DataFrame, plan: Plan, most: int, seed: int) -> pd.DataFrame:
    if len(rows) <= most:
        return rows
    if plan.group is None:
        picked = rows.sample(n=most, random_state=seed)
    else:  # whole lists, until the rows would exceed ``most``
        groups = rows[plan.group].drop_duplicates().sample(frac=1.0, random_state=seed)
        sizes = rows.groupby(plan.group).size()
        kept = groups[sizes.reindex(groups).cumsum().to_numpy() <= most]
        picked = rows[rows[plan.group].isin(kept)]
    return picked.sort_values(plan.time, kind="stable")


def _loop(
    plan: Plan,
    config_dir: Path,
    api_url: str,
    timeline: Timeline,
    periods: int | None,
    period_kind: str,
    rows_per_period: int,
    rate: float,
) -> None:
    from lossflow.flows.ab_analysis import ab_analysis
    from lossflow.flows.monitoring import monitoring
    from lossflow.flows.training import training

    trained = training(overrides=[*plan.shared, *plan.training, *plan.sets.get("training", [])],
                       config_dir=str(config_dir))  # fmt: skip
    shown = {k: round(v, 4) for k, v in trained.metrics.items() if k.startswith("test/")}
    timeline.add(
        "trained", None,
        f"champion v{trained.model_version} ({trained.loss_id}) on the periods before "
        f"production: {trained.baseline or shown}",
        run_id=trained.run_id, version=trained.model_version, loss_id=trained.loss_id,
        metrics=trained.metrics,
    )  # fmt: skip
    production = plan.root / "runs" / trained.run_id / "prepared" / "production.parquet"
    rows = production_rows(production, time_column=plan.time)
    if rows.empty:
        raise RehearsalError(
            f"the data has no production rows after its test period ({production}); move "
            "data.split.test_end earlier so later periods are left to replay"
        )
    chosen: list[tuple[Period, int]] = []
    skipped: list[tuple[Period, int]] = []
    for period in periods_of(rows[plan.time], periods, period_kind):
        count = int(period.rows(rows[plan.time]).sum())
        (chosen if count >= MIN_PERIOD_ROWS else skipped).append((period, count))
    if not chosen:
        raise RehearsalError(
            f"no production period has {MIN_PERIOD_ROWS} rows to replay; move "
            "data.split.test_end earlier"
        )
    per_period = [count for _, count in chosen]
    min_rows = max(100, min(1000, min(*per_period, rows_per_period) // 4))
    monitoring_sets = [
        f"log.url={plan.log}",
        "decision.cooldown=1s",
        "report.sample_rows=1000",
        f"decision.min_rows={min_rows}",
        *plan.sets.get("monitoring", []),
    ]
    retrain_sets = [
        f"log.url={plan.log}",
        "cooldown=1s",
        "training=[" + ", ".join(plan.training) + "]",
        *plan.sets.get("retrain", []),
    ]
    left_out = "".join(f"; {p.name} left out ({n} rows)" for p, n in skipped)
    timeline.add(
        "settings", None,
        f"{len(chosen)} periods ({', '.join(p.name for p, _ in chosen)}), "
        f"{', '.join(map(str, per_period))} production rows{left_out}; rehearsal settings: "
        f"monitoring {' '.join(monitoring_sets)}; retrain {' '.join(retrain_sets)}",
        periods=[p.name for p, _ in chosen], rows=per_period, monitoring=monitoring_sets,
        retrain=retrain_sets, left_out={p.name: n for p, n in skipped},
    )  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": api_url}  # children are lossflow commands
    runner_cmd = [str(BIN / "lossflow"), "schedule", "--flow", "retrain", "--config-dir",
                  str(config_dir), *plan.shared,
                  *(x for s in retrain_sets for x in ("--set", f"retrain:{s}"))]  # fmt: skip
    port = server.free_port()
    url = f"http://127.0.0.1:{port}"
    serve_cmd = [str(BIN / "lossflow"), "serve", "--config-dir", str(config_dir), *plan.shared,
                 f"log.url={plan.log}", "replay_clock=true", "watch_registry_s=1",
                 "log.max_delay_s=0.01", *plan.sets.get("serving", []),
                 "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    runner_log, service_log = plan.root / "retrain-runner.log", plan.root / "service.log"
    with (
        server.child(runner_cmd, runner_log, env) as runner,
        server.child(serve_cmd, service_log, env) as service,
    ):
        children = {
            f"the retrain runner (log {runner_log})": runner,
            f"the service (log {service_log})": service,
        }
        _wait(lambda: _deployment_ready(plan.model), "the retrain deployment", READY_TIMEOUT_S,
              runner_log, children)  # fmt: skip
        _wait(lambda: bool(_served(url)), "the service", READY_TIMEOUT_S, service_log, children)
        waiting = f"retrain/{plan.model} waiting for lossflow.retrain.requested"
        timeline.add("served", None, f"service on {url} serving {_served(url)}; {waiting}")
        registry = ModelRegistry(plan.tracking_uri)
        retrains = Runs(plan.tracking_uri, plan.retrain_experiment)
        for k, (period, _) in enumerate(chosen):
            replayed = _sample(rows[period.rows(rows[plan.time])], plan, rows_per_period, seed=k)
            # One unit per request (most of them): the A/B test's units are independent.
            options = TrafficOptions(rate=rate, concurrency=8, delay_s=0.05, clock=plan.time,
                                     units=UNITS)  # fmt: skip
            report = run_traffic(replayed, url, options)
            served = dict(report.answered_by_variant)
            failed = (f"; {report.failed} failed {dict(report.failed_by_status)}, e.g. "
                      f"{report.errors[0]}" if report.failed else "")  # fmt: skip
            timeline.add("replayed", period.name, f"{report.answered} requests answered "
                         f"({served}) of {len(replayed)} rows, {report.feedback_posted} "
                         f"labelled{failed}", by_variant=served, failed=report.failed)  # fmt: skip
            testing = CHALLENGER in _served(url)
            _monitor(monitoring, plan, config_dir, timeline, period, monitoring_sets, retrains,
                     url, children)  # fmt: skip
            if testing:
                units = max(30, min(300, report.answered // 6))
                _ab(ab_analysis, plan, config_dir, timeline, period, url, registry, units,
                    children)  # fmt: skip
        aliases = registry.aliases(plan.model)
        timeline.add("finished", None, f"aliases {aliases}; served {_served(url)}",
                     aliases=aliases)  # fmt: skip
    _figure(plan, timeline)


def _ab(
    ab_analysis: Any,
    plan: Plan,
    config_dir: Path,
    timeline: Timeline,
    period: Period,
    url: str,
    registry: ModelRegistry,
    units: int,
    children: Mapping[str, subprocess.Popen[bytes]],
) -> None:
    # The replay's clock is in the past: the test may look back that far. A retrained
    # challenger's positive rate differs from the champion's by design: that guardrail is off.
    rules = [f"log.url={plan.log}", "since=20000d", f"min_units={units}",
             "guardrails.positive_rate=null"]  # fmt: skip
    outcome = ab_analysis(overrides=[*plan.shared, *rules, *plan.sets.get("ab-analysis", [])],
                          config_dir=str(config_dir))  # fmt: skip
    report = outcome.report
    decision, action = report["decision"], report["action"]
    compared = decision["comparisons"][0] if decision["comparisons"] else {}
    effect = (
        f"{report.get('metric', 'metric')} {compared['estimate']:+.4g} "
        f"[{compared['ci_low']:+.4g}, {compared['ci_high']:+.4g}]"
        if compared
        else "no comparison"
    )
    timeline.add(
        "ab_decision", period.name,
        f"A/B: {decision['verdict'].upper()} ({effect}; min_units={units}); {action['message']}",
        run_id=outcome.run_id, decision=decision, action=action, arms=report["arms"],
    )  # fmt: skip
    if action["applied"]:
        wanted = registry.aliases(plan.model)
        _wait(lambda: _served(url) == {CHAMPION: wanted[CHAMPION]}, "the service to follow",
              120.0, None, children)  # fmt: skip


def _shown_metric(analysis: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    measured = (analysis.get("performance") or {}).get("measured", {})
    for name in SHOWN_METRICS:
        if name in measured:
            return name, measured[name]
    return None, {}


def _monitor(
    monitoring: Any,
    plan: Plan,
    config_dir: Path,
    timeline: Timeline,
    period: Period,
    monitoring_sets: list[str],
    retrains: Runs,
    url: str,
    children: Mapping[str, subprocess.Popen[bytes]],
) -> None:
    asked = datetime.now(UTC)
    outcome = monitoring(
        start=period.start, end=period.end, variants=[CHAMPION],
        overrides=[*plan.shared, *monitoring_sets], config_dir=str(config_dir),
    )  # fmt: skip
    (variant,) = outcome.variants
    decision, analysis = variant.decision, variant.analysis
    drift = analysis.get("drift") or {}
    metric, value = _shown_metric(analysis)
    measured = f", {metric} {value.get('value', float('nan')):.4g}" if metric else ""
    codes = ", ".join(r["code"] for r in decision["reasons"])
    timeline.add(
        "monitored", period.name,
        f"{len(drift.get('drifted', []))} of {len(drift.get('columns', []))} features drifted"
        f"{measured} -> {decision['status']}" + (f" ({codes})" if codes else ""),
        run_id=variant.run_id, version=variant.target.model_version, decision=decision,
        drift_share=drift.get("drifted_share"), metric=metric, value=value,
    )  # fmt: skip
    if decision["status"] != "retrain":
        return
    timeline.add("retrain_requested", period.name, "lossflow.retrain.requested: candidates "
                 + ", ".join(str(c.get("name")) for c in decision["candidate_losses"]),
                 candidate_losses=decision["candidate_losses"],
                 dedup_key=decision["dedup_key"])  # fmt: skip
    done: list[Any] = []

    def finished() -> bool:
        done[:] = [r for r in _retrain_runs(plan.model, asked) if r.state_type.value in TERMINAL]
        return bool(done)

    _wait(finished, "the triggered retrain flow run", RETRAIN_TIMEOUT_S,
          plan.root / "retrain-runner.log", children)  # fmt: skip
    run = done[0]
    found = retrains.runs_with_tags({"lossflow.dedup_key": str(decision["dedup_key"])})
    tags = found[0].tags if found else {}
    version = tags.get("lossflow.retrain.challenger_version", "none")
    timeline.add(
        "retrained", period.name,
        f"retrain flow run {run.name} {run.state_type.value.lower()}: "
        f"{tags.get('lossflow.retrain.outcome', 'failed')} "
        f"({tags.get('lossflow.retrain.why', run.state_name)})",
        flow_run=str(run.id), mlflow_run=found[0].run_id if found else None,
        outcome=tags.get("lossflow.retrain.outcome"), challenger_version=version,
    )  # fmt: skip
    if version != "none":
        _wait(lambda: _served(url).get(CHALLENGER) == version, "the service to load the "
              "challenger", 120.0, None, children)  # fmt: skip


def _figure(plan: Plan, timeline: Timeline) -> None:
    """The monitored metric over the periods, with the A/B verdicts, logged to MLflow."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    monitored = [e for e in timeline.events if e.kind == "monitored"]
    decided = [e for e in timeline.events if e.kind == "ab_decision"]
    retrained = [e for e in timeline.events if e.kind == "retrained"]
    figure, (top, bottom) = plt.subplots(2, 1, figsize=(8, 6), sharex=True)
    x = [e.clock for e in monitored]
    top.plot(x, [e.details.get("drift_share") or 0.0 for e in monitored], marker="o",
             label="share of features drifted")  # fmt: skip
    top.axhline(0.5, color="grey", linestyle="--", linewidth=0.8, label="dataset drift threshold")
    top.set_ylim(0.0, 1.05)
    top.set_title(f"lossflow rehearsal of {plan.model}: the champion period by period")
    for e in retrained:
        version = e.details.get("challenger_version")
        label = f"retrain: v{version}" if version not in (None, "none") else "retrain: none"
        top.annotate(label, (e.clock, 0.08), xycoords=("data", "axes fraction"), fontsize=8)
    top.legend(loc="upper left", fontsize="small")
    metric = next((e.details.get("metric") for e in monitored if e.details.get("metric")), None)
    values = [(e.details.get("value") or {}) for e in monitored]
    mids = [v.get("value", float("nan")) for v in values]
    lows = [m - v.get("low", m) for m, v in zip(mids, values, strict=True)]
    highs = [v.get("high", m) - m for m, v in zip(mids, values, strict=True)]
    bottom.errorbar(x, mids, yerr=[lows, highs], marker="o", capsize=4, label="champion")
    for e in decided:
        verdict = e.details["decision"]["verdict"]
        for axis in (top, bottom):
            axis.axvline(e.clock, color="grey", linestyle=":")
        bottom.annotate(f"A/B: {verdict}", (e.clock, 0.92), xycoords=("data", "axes fraction"),
                        xytext=(4, 0), textcoords="offset points", fontsize=8)  # fmt: skip
    bottom.set_ylabel(f"{metric or 'metric'} (labelled, 95% interval)")
    bottom.legend(loc="best", fontsize="small")
    figure.tight_layout()
    runs = Runs(plan.tracking_uri, plan.experiment)
    with runs.start_run("rehearsal", {"lossflow.rehearsal": "timeline"}) as run_id:
        runs.log_figure(run_id, figure, "timeline.png")
        runs.log_dict(run_id, {"events": timeline.to_json()}, "timeline.json")
    plt.close(figure)
    timeline.add("figure", None, f"timeline figure and JSON in MLflow run {run_id} "
                 f"(experiment {plan.experiment})", run_id=run_id)  # fmt: skip
