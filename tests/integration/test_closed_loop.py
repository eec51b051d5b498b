"""The closed loop on a real Prefect server: ``prefect server start`` on loopback (restarted
mid-loop), the four deployments registered by ``lossflow deploy`` for a process work pool, a
``prefect worker`` process running them, ``lossflow serve`` following the registry, the real
MLflow store and SQLite prediction log.

Winter traffic (November–December) drifts from the January–June training data; the monitoring
flow's retrain event starts exactly one retrain flow run through the deployment's trigger; the
same event sent again starts runs that retrain nothing; the challenger is A/B-tested on the
following traffic and the aliases end as the recorded decision says.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pandas as pd
import pytest
from typer.testing import CliRunner

from lossflow.cli import app
from lossflow.contract import CHALLENGER, CHAMPION, PREVIOUS
from lossflow.data.sources import load_flights
from lossflow.flows import server
from lossflow.processes import stop_group
from lossflow.telemetry import TELEMETRY_OFF
from lossflow.tracking import ModelRegistry, Runs, WritableModelRegistry, default_tracking_uri

from .serving_models import (
    CONFIG_DIR,
    Registry,
    copy_registry,
    live_service,
    replay_all,
    wait_for,
)

pytestmark = pytest.mark.slow
POOL = "lossflow-test"
TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _api(api_url: str, path: str, body: dict[str, Any]) -> list[dict[str, Any]]:
    response = httpx.post(f"{api_url}/{path}", json=body, timeout=30)
    response.raise_for_status()
    result: list[dict[str, Any]] = response.json()
    return result


def _retrain_runs(api_url: str, model: str = "lossflow-flights") -> list[dict[str, Any]]:
    body = {"flows": {"name": {"any_": ["retrain"]}}, "deployments": {"name": {"any_": [model]}},
            "sort": "EXPECTED_START_TIME_ASC"}  # fmt: skip
    return _api(api_url, "flow_runs/filter", body)


def _served(url: str) -> dict[str, str]:
    info = httpx.get(f"{url}/info", timeout=10).json()
    return {name: v["model_version"] for name, v in info["variants"].items()}


def _replay(url: str, rows: pd.DataFrame, seed: int) -> None:
    replay_all(url, rows, rate=400, concurrency=8, delay_s=0.05, units=50_000, seed=seed)


def _worker(home: Path, api_url: str, log: Path) -> Any:
    """``prefect worker start`` for the pool, as an operator runs it."""
    env = {**server.server_env(home, api_url), **TELEMETRY_OFF}
    env.pop("PREFECT_API_DATABASE_CONNECTION_URL")
    command = [str(Path(sys.executable).parent / "prefect"), "worker", "start", "--pool", POOL]
    return server.child(command, log, env)


@contextmanager
def _prefect(home: Path, port: int) -> Iterator[server.PrefectServer]:
    """A real Prefect server on loopback for the block (``PREFECT_API_URL`` points at it)."""
    from prefect.events.worker import EventsWorker
    from prefect.settings import PREFECT_API_URL, temporary_settings

    started = server.start(home, port)
    try:
        with temporary_settings({PREFECT_API_URL: started.api_url}):
            # Prefect's events worker is one per process, bound to the API URL it first saw (the
            # session's test harness, when one ran before): start a fresh one for this server.
            EventsWorker.drain_all()
            try:
                yield started
            finally:
                EventsWorker.drain_all()
    finally:
        stop_group(started.process)


def test_a_drift_event_retrains_once_and_the_ab_test_settles_the_aliases(
    built_registry: Registry, tmp_path: Path
) -> None:
    from prefect.events import emit_event

    from lossflow.flows.ab_analysis import ab_analysis
    from lossflow.flows.monitoring import RETRAIN_EVENT, monitoring

    registry = copy_registry(built_registry, tmp_path / "data")
    data_dir, model = registry.data_dir, registry.model_name
    tracker = Runs(default_tracking_uri(data_dir), "lossflow-retrain")
    # The focal champion serves alone at first.
    WritableModelRegistry(tracker.tracking_uri).delete_alias(model, CHALLENGER)
    home, port = tmp_path / "prefect", server.free_port()
    sets = [f"retrain:data_dir={data_dir}", "retrain:cooldown=1s",
            "retrain:training=[data.subsample=3000, trainer.max_epochs=1]",
            "retrain:candidates.extra=[{name: bce}]"]  # fmt: skip
    with _prefect(home, port):
        deployed = CliRunner().invoke(
            app, ["deploy", "--work-pool", POOL, "--config-dir", str(CONFIG_DIR),
                  *(x for s in sets for x in ("--set", s))],
        )  # fmt: skip
        assert deployed.exit_code == 0, deployed.output
        assert "start a worker: prefect worker start --pool lossflow-test" in deployed.output
        assert "registered deployment 'retrain/lossflow-flights'" in deployed.output
    # The server restarts: deployments, schedules and the trigger live in its database.
    with _prefect(home, port) as prefect, _worker(home, prefect.api_url, tmp_path / "w.log") as w:
        api = prefect.api_url
        flows = {f["id"]: f["name"] for f in _api(api, "flows/filter", {})}
        names = {flows[d["flow_id"]]: d for d in _api(api, "deployments/filter", {})}
        assert set(names) >= {"training", "monitoring", "ab_analysis", "retrain"}
        assert {d["name"] for d in names.values()} == {"lossflow-flights"}
        assert names["monitoring"]["schedules"][0]["schedule"]["cron"] == "0 * * * *"
        automations = _api(api, "automations/filter", {})
        assert [a for a in automations if RETRAIN_EVENT in a["trigger"]["expect"]], automations
        _loop(api, data_dir, model, tracker, w, monitoring, ab_analysis, emit_event, RETRAIN_EVENT)


def _loop(
    api: str,
    data_dir: Path,
    model: str,
    tracker: Runs,
    worker: subprocess.Popen[bytes],
    monitoring: Any,
    ab_analysis: Any,
    emit_event: Any,
    event: str,
) -> None:
    registry = ModelRegistry(tracker.tracking_uri)
    flights = load_flights("binary")
    winter = flights[flights["scheduled_departure"].dt.month.isin([11, 12])]
    with live_service(data_dir, "watch_registry_s=0.5", "log.max_delay_s=0.01") as url:
        start = datetime.now(UTC)
        _replay(url, winter.sample(n=1500, random_state=1), seed=1)
        end = datetime.now(UTC) + timedelta(seconds=1)
        outcome = monitoring(start=start, end=end, variants=[CHAMPION],
                             overrides=[f"data_dir={data_dir}", "decision.min_rows=500",
                                        "report.sample_rows=500"],
                             config_dir=str(CONFIG_DIR))  # fmt: skip
        (judged,) = outcome.variants
        decision = judged.decision
        assert decision["status"] == "retrain", decision
        # Exactly one retrain flow run for the event, tagged with the reasons.
        runs = wait_for(lambda: [r for r in _retrain_runs(api) if r["state_type"] in TERMINAL],
                     "the triggered retrain run", 600)  # fmt: skip
        assert worker.poll() is None
        (run,) = runs
        assert run["state_type"] == "COMPLETED", run
        assert f"reason:{decision['reasons'][0]['code']}" in run["tags"]
        [parent] = tracker.runs_with_tags({"lossflow.dedup_key": decision["dedup_key"]})
        assert parent.tags["lossflow.retrain.monitoring_run"] == judged.run_id
        result = parent.tags["lossflow.retrain.outcome"]
        assert result in ("challenger", "no_challenger")
        versions_before = len(tracker.client.search_model_versions(f"name='{model}'"))

        # The same event twice more: the runs queue (one at a time) and retrain nothing.
        payload = {**_payload_of(decision, model), "monitoring_run_id": judged.run_id}
        for _ in range(2):
            emit_event(event=event, resource={"prefect.resource.id": f"lossflow.model.{model}"},
                       payload=payload)  # fmt: skip
        wait_for(lambda: len([r for r in _retrain_runs(api) if r["state_type"] in TERMINAL]) == 3,
              "the repeated events' runs", 600)  # fmt: skip
        skipped = [
            r for r in tracker.runs_with_tags({"lossflow.dedup_key": decision["dedup_key"]})
            if r.tags.get("lossflow.retrain.outcome") == "skipped"
        ]  # fmt: skip
        assert len(skipped) == 2
        assert len(tracker.client.search_model_versions(f"name='{model}'")) == versions_before
        if result == "no_challenger":
            assert CHALLENGER not in registry.aliases(model)
            return
        version = parent.tags["lossflow.retrain.challenger_version"]
        tags = registry.version_tags(model, version)
        assert tags["lossflow.retrain.run"] == parent.run_id
        assert tags["lossflow.retrain.reasons"] == ",".join(r["code"] for r in decision["reasons"])
        wait_for(lambda: _served(url).get(CHALLENGER) == version, "the service to load it", 120)
        _replay(url, winter.sample(n=3000, random_state=2), seed=2)
        rules = ["min_units=300", "min_duration=1s", "guardrails.positive_rate=null"]
        ab = ab_analysis(overrides=[f"data_dir={data_dir}", *rules], config_dir=str(CONFIG_DIR))
    verdict = ab.report["decision"]["verdict"]
    aliases = registry.aliases(model)
    if verdict == "promote":
        assert aliases == {CHAMPION: version, PREVIOUS: "1"}
    elif verdict == "reject":
        assert aliases == {CHAMPION: "1"}
    else:
        assert aliases == {CHAMPION: "1", CHALLENGER: version}
    audit = Runs(tracker.tracking_uri, "lossflow-ab").client.get_run(ab.run_id)
    assert audit.data.tags["lossflow.ab.verdict"] == verdict


def _payload_of(decision: dict[str, Any], model: str) -> dict[str, Any]:
    return {
        "model_name": model,
        "model_version": decision["model_version"],
        "reasons": [r["code"] for r in decision["reasons"]],
        "messages": [r["message"] for r in decision["reasons"]],
        "candidate_losses": decision["candidate_losses"],
        "window": decision["window"],
        "dedup_key": decision["dedup_key"],
        "prior": decision["evidence"].get("prior"),
    }
