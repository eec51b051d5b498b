"""``lossflow demo``: the closed loop on real data, September to December 2013, in minutes.

1. A Prefect server on loopback (unless ``PREFECT_API_URL`` names one), with its database in
   ``<data_dir>/prefect``; the ``retrain`` deployment served by ``lossflow schedule --flow
   retrain`` in a child process, waiting for ``lossflow.retrain.requested`` events.
2. The champion: the training flow on January–June (a subsample, a few epochs).
3. ``lossflow serve`` in a child process with ``replay_clock: true``: each replayed request
   carries its flight's scheduled departure as its time, and its feedback that time plus the
   delay, so the log holds the months as they happened while the replay takes seconds. Only a
   service started with that setting takes a request's time; the default never does.
4. Each production month in turn: its flights replayed with delayed labels; the ``monitoring``
   flow judges the champion's month, and when it asks for a retrain its event starts the
   ``retrain`` deployment, whose challenger the service picks up for the next month's traffic
   (while a challenger is under test, monitoring defers: one change in flight at a time); if a
   challenger served this month, the ``ab_analysis`` flow decides it on every month it served
   (promote or reject: the aliases move and the service follows).
5. A timeline, printed as it happens and written as JSON, and a figure of the monitored metrics
   over the months (drift share, each variant's log loss with its interval, the A/B verdicts),
   logged to MLflow (experiment ``lossflow-demo``).
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

import httpx

from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.contract import CHALLENGER, CHAMPION
from lossflow.errors import UserError
from lossflow.replay.client import run_traffic
from lossflow.replay.requests import TrafficOptions
from lossflow.replay.rows import production_rows
from lossflow.tracking import Tracker, default_tracking_uri
from pipelines import server

MONTHS: Final = (9, 10, 11, 12)
CLOCK: Final = "scheduled_departure"
READY_TIMEOUT_S: Final = 180.0
RETRAIN_TIMEOUT_S: Final = 900.0
BIN: Final = Path(sys.executable).parent
UNITS: Final = 100_000
NAMES: Final = {9: "September", 10: "October", 11: "November", 12: "December"}


class DemoError(UserError):
    """The demo cannot go on; the message says which step failed and where its log is."""


@dataclass
class Event:
    """One step of the timeline.

    Attributes:
        wall: when it happened (ISO, UTC).
        clock: the replay's time it concerns (a month), or ``None``.
        kind: ``trained``, ``served``, ``replayed``, ``monitored``, ``retrain_requested``,
            ``retrained``, ``ab_decision``, ``finished``.
        summary: one line for people.
        details: run ids, versions, loss ids, decision and evidence.
        elapsed_s: seconds since the demo started.
    """

    wall: str
    clock: str | None
    kind: str
    summary: str
    details: dict[str, Any] = field(default_factory=dict)
    elapsed_s: float = 0.0


@dataclass
class Timeline:
    """The demo's events, printed as they happen."""

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


def _env(api_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "PREFECT_API_URL": api_url,
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "ORT_DISABLE_TELEMETRY": "1",
    }


def _wait(check: Callable[[], bool], what: str, timeout_s: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            tail = f"; see {log}" if log is not None else ""
            raise DemoError(f"timed out after {timeout_s:.0f} s waiting for {what}{tail}")
        time.sleep(0.5)


def _served(url: str) -> dict[str, str]:
    try:
        info = httpx.get(f"{url}/info", timeout=10.0).json()
    except (httpx.HTTPError, ValueError):
        return {}
    return {name: str(v["model_version"]) for name, v in info.get("variants", {}).items()}


def _deployment_ready(api_url: str, name: str) -> bool:
    try:
        response = httpx.post(
            f"{api_url}/deployments/filter",
            json={"deployments": {"name": {"any_": [name]}}},
            timeout=10.0,
        )
    except httpx.HTTPError:
        return False
    return response.status_code == 200 and bool(response.json())


def _flow_runs(api_url: str, deployment: str, since: datetime) -> list[dict[str, Any]]:
    response = httpx.post(
        f"{api_url}/flow_runs/filter",
        json={
            "deployments": {"name": {"any_": [deployment]}},
            "flow_runs": {"expected_start_time": {"after_": since.isoformat()}},
        },
        timeout=10.0,
    )
    response.raise_for_status()
    runs: list[dict[str, Any]] = response.json()
    return runs


TERMINAL: Final = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _month_window(month: int) -> tuple[datetime, datetime]:
    start = datetime(2013, month, 1, tzinfo=UTC)
    end = datetime(2013 + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return start, end


def run_demo(
    data_dir: Path,
    config_dir: Path = DEFAULT_CONFIG_DIR,
    *,
    months: tuple[int, ...] = MONTHS,
    rows_per_month: int = 6000,
    subsample: int = 30000,
    epochs: int = 3,
    rate: float = 400.0,
    json_path: Path | None = None,
    echo: Callable[[str], None] = print,
) -> Timeline:
    """Run the demo in ``data_dir`` (emptied first) and return its timeline (see the module).

    Raises:
        DemoError: a step failed; the message names it and its log.
    """
    from prefect.settings import PREFECT_API_URL

    if data_dir.exists():
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    timeline = Timeline(echo=echo)
    given = PREFECT_API_URL.value()
    if given:
        _loop(data_dir, config_dir, str(given), timeline, months, rows_per_month, subsample,
              epochs, rate)  # fmt: skip
    else:
        with server.running(data_dir / "prefect") as local:
            timeline.add("prefect", None, f"Prefect server on {local.ui_url} (UI)")
            _loop(data_dir, config_dir, local.api_url, timeline, months, rows_per_month,
                  subsample, epochs, rate)  # fmt: skip
    if json_path is not None:
        json_path.parent.mkdir(parents=True, exist_ok=True)
        json_path.write_text(json.dumps(timeline.to_json(), indent=2, default=str))
    return timeline


def _loop(
    data_dir: Path,
    config_dir: Path,
    api_url: str,
    timeline: Timeline,
    months: tuple[int, ...],
    rows_per_month: int,
    subsample: int,
    epochs: int,
    rate: float,
) -> None:
    from pipelines.ab_analysis import ab_analysis
    from pipelines.monitoring import monitoring
    from pipelines.training import training

    base = [f"data_dir={data_dir}"]
    small = [f"data.subsample={subsample}", f"trainer.max_epochs={epochs}"]
    trained = training(overrides=[*base, *small], config_dir=str(config_dir))
    timeline.add(
        "trained", None,
        f"champion v{trained.model_version} ({trained.loss_id}) on January-June: test ROC-AUC "
        f"{trained.metrics.get('test/roc_auc', float('nan')):.3f}",
        run_id=trained.run_id, version=trained.model_version, loss_id=trained.loss_id,
        metrics=trained.metrics,
    )  # fmt: skip
    env = _env(api_url)
    retrain_set = [
        f"retrain:data_dir={data_dir}",
        "retrain:cooldown=1s",
        f"retrain:training=[data.subsample={subsample}, trainer.max_epochs={epochs}]",
    ]
    runner_cmd = [str(BIN / "lossflow"), "schedule", "--flow", "retrain", "--config-dir",
                  str(config_dir), *(x for s in retrain_set for x in ("--set", s))]  # fmt: skip
    port = server.free_port()
    url = f"http://127.0.0.1:{port}"
    serve_cmd = [str(BIN / "lossflow"), "serve", "--config-dir", str(config_dir), *base,
                 "replay_clock=true", "watch_registry_s=1", "log.max_delay_s=0.01",
                 "--host", "127.0.0.1", "--port", str(port)]  # fmt: skip
    runner_log, service_log = data_dir / "retrain-runner.log", data_dir / "service.log"
    with server.child(runner_cmd, runner_log, env), server.child(serve_cmd, service_log, env):
        _wait(lambda: _deployment_ready(api_url, "retrain"), "the retrain deployment",
              READY_TIMEOUT_S, runner_log)  # fmt: skip
        _wait(lambda: bool(_served(url)), "the service", READY_TIMEOUT_S, service_log)
        timeline.add("served", None, f"service on {url} serving {_served(url)}; retrain "
                     "deployment waiting for lossflow.retrain.requested")  # fmt: skip
        production = next(data_dir.glob(f"runs/{trained.run_id}/prepared/production.parquet"))
        registry = Tracker(default_tracking_uri(data_dir), "lossflow-retrain", None)
        model = trained.model_name
        for month in months:
            clock = f"2013-{month:02d}"
            rows = production_rows(production, months=[month], time_column=CLOCK)
            rows = rows.sample(n=min(rows_per_month, len(rows)), random_state=month).sort_values(
                CLOCK, kind="stable"
            )
            # One unit per flight (most of them): the A/B test's units are independent.
            options = TrafficOptions(
                rate=rate, concurrency=8, delay_s=0.05, clock=CLOCK, units=UNITS
            )
            report = run_traffic(rows, url, options)
            served = dict(report.answered_by_variant)
            failed = (f"; {report.failed} failed {dict(report.failed_by_status)}, e.g. "
                      f"{report.errors[0]}" if report.failed else "")  # fmt: skip
            timeline.add("replayed", clock, f"{NAMES[month]}: {report.answered} requests "
                         f"answered ({served}), {report.feedback_posted} labels{failed}",
                         by_variant=served, failed=report.failed)  # fmt: skip
            testing = CHALLENGER in _served(url)
            _monitor(monitoring, base, config_dir, timeline, month, api_url, registry, url, model)
            if testing:
                _ab(ab_analysis, base, config_dir, timeline, clock, url, registry, model)
        timeline.add("finished", None, f"aliases {registry.aliases(model)}; served "
                     f"{_served(url)}", aliases=registry.aliases(model))  # fmt: skip
    _figure(data_dir, timeline)


def _ab(
    ab_analysis: Any,
    base: list[str],
    config_dir: Path,
    timeline: Timeline,
    clock: str,
    url: str,
    registry: Tracker,
    model: str,
) -> None:
    # The replay's clock is 2013: the test may look back that far. Positive rates differ
    # between a champion and a retrained challenger by design, so that guardrail is off here.
    outcome = ab_analysis(
        overrides=[*base, "since=20000d", "min_units=300", "guardrails.positive_rate=null"],
        config_dir=str(config_dir),
    )
    report = outcome.report
    decision, action = report["decision"], report["action"]
    compared = decision["comparisons"][0] if decision["comparisons"] else {}
    effect = (
        f"log loss {compared['estimate']:+.4f} [{compared['ci_low']:+.4f}, "
        f"{compared['ci_high']:+.4f}]"
        if compared
        else "no comparison"
    )
    timeline.add(
        "ab_decision", clock, f"A/B: {decision['verdict'].upper()} ({effect}); {action['message']}",
        run_id=outcome.run_id, decision=decision, action=action, arms=report["arms"],
    )  # fmt: skip
    if action["applied"]:
        wanted = registry.aliases(model)
        _wait(lambda: _served(url) == {CHAMPION: wanted[CHAMPION]}, "the service to follow",
              120.0)  # fmt: skip


def _monitor(
    monitoring: Any,
    base: list[str],
    config_dir: Path,
    timeline: Timeline,
    month: int,
    api_url: str,
    registry: Tracker,
    url: str,
    model: str,
) -> None:
    start, end = _month_window(month)
    clock = f"2013-{month:02d}"
    asked = datetime.now(UTC)
    outcome = monitoring(
        start=start, end=end, variants=[CHAMPION],
        overrides=[*base, "decision.cooldown=1s", "report.sample_rows=1000"],
        config_dir=str(config_dir),
    )  # fmt: skip
    (variant,) = outcome.variants
    decision, analysis = variant.decision, variant.analysis
    drift = analysis.get("drift") or {}
    prior = analysis.get("prior") or {}
    perf = (analysis.get("performance") or {}).get("measured", {}).get("log_loss")
    timeline.add(
        "monitored", clock,
        f"{NAMES[month]}: {len(drift.get('drifted', []))} of {len(drift.get('columns', []))} "
        f"features drifted, delay rate {(prior.get('observed') or [0, float('nan')])[-1]:.3f} "
        f"(training {(prior.get('reference') or [0, float('nan')])[-1]:.3f}) -> "
        f"{decision['status']}",
        run_id=variant.run_id, version=variant.target.model_version, decision=decision,
        drift_share=drift.get("drifted_share"), log_loss=perf,
    )  # fmt: skip
    if decision["status"] != "retrain":
        return
    timeline.add("retrain_requested", clock, "lossflow.retrain.requested: " + ", ".join(
        r["code"] for r in decision["reasons"]), candidate_losses=decision["candidate_losses"],
        dedup_key=decision["dedup_key"])  # fmt: skip
    done: list[dict[str, Any]] = []

    def finished() -> bool:
        runs = _flow_runs(api_url, "retrain", asked)
        done[:] = [r for r in runs if r["state_type"] in TERMINAL]
        return bool(done)

    _wait(finished, "the triggered retrain flow run", RETRAIN_TIMEOUT_S)
    run = done[0]
    found = registry.runs_with_tags({"lossflow.dedup_key": str(decision["dedup_key"])})
    tags = found[0].tags if found else {}
    version = tags.get("lossflow.retrain.challenger_version", "none")
    timeline.add(
        "retrained", clock,
        f"retrain flow run {run['name']} {run['state_type'].lower()}: "
        f"{tags.get('lossflow.retrain.outcome', 'failed')} "
        f"({tags.get('lossflow.retrain.why', run['state_name'])})",
        flow_run=run["id"], mlflow_run=found[0].run_id if found else None,
        outcome=tags.get("lossflow.retrain.outcome"), challenger_version=version,
    )  # fmt: skip
    if version != "none":
        _wait(lambda: _served(url).get(CHALLENGER) == version, "the service to load the "
              "challenger", 120.0)  # fmt: skip


def _figure(data_dir: Path, timeline: Timeline) -> None:
    """The monitored metrics over the months, with the A/B verdicts, logged to MLflow."""
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
    top.set_title("lossflow demo: the champion month by month")
    for e in retrained:
        version = e.details.get("challenger_version")
        label = f"retrain: v{version}" if version not in (None, "none") else "retrain: none"
        top.annotate(label, (e.clock, 0.08), xycoords=("data", "axes fraction"), fontsize=8)
    top.legend(loc="upper left", fontsize="small")
    values = [(e.details.get("log_loss") or {}) for e in monitored]
    mids = [v.get("value", float("nan")) for v in values]
    lows = [m - v.get("low", m) for m, v in zip(mids, values, strict=True)]
    highs = [v.get("high", m) - m for m, v in zip(mids, values, strict=True)]
    bottom.errorbar(x, mids, yerr=[lows, highs], marker="o", capsize=4, label="champion")
    for e in decided:
        arms = e.details.get("arms", {})
        challenger = arms.get(CHALLENGER, {}).get("metric_mean")
        if challenger is not None:
            bottom.scatter([e.clock], [challenger], marker="s", label=f"challenger ({e.clock})")
        verdict = e.details["decision"]["verdict"]
        for axis in (top, bottom):
            axis.axvline(e.clock, color="grey", linestyle=":")
        bottom.annotate(f"A/B: {verdict}", (e.clock, 0.92), xycoords=("data", "axes fraction"),
                        xytext=(4, 0), textcoords="offset points", fontsize=8)  # fmt: skip
    bottom.set_ylabel("log loss (labelled, 95% interval)")
    bottom.legend(loc="best", fontsize="small")
    figure.tight_layout()
    tracker = Tracker(default_tracking_uri(data_dir), "lossflow-demo", None)
    with tracker.start_run("demo", {"lossflow.demo": "timeline"}) as run_id:
        tracker.log_figure(run_id, figure, "timeline.png")
        tracker.log_dict(run_id, {"events": timeline.to_json()}, "timeline.json")
    plt.close(figure)
    timeline.add("figure", None, f"timeline figure and JSON in MLflow run {run_id} "
                 "(experiment lossflow-demo)", run_id=run_id)  # fmt: skip
