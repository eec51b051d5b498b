"""The ``monitoring`` flow on real components: models from a real MLflow registry (with the
reference profiles the training steps stored), production rows replayed by ``lossflow
traffic``'s client against ``lossflow serve`` (a subprocess on loopback) into a real SQLite log
with delayed feedback, the Prefect test harness, Evidently's report.

Winter production rows (November–December) drift from the January–June training data; rows of
the training period itself do not."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import sqlalchemy as sa
from rich.console import Console

from lossflow.data.sources import load_flights
from lossflow.flows.monitoring import RETRAIN_EVENT, monitoring
from lossflow.monitoring.console import variant_table
from lossflow.predlog import PredictionLog, PredictionRecord
from lossflow.replay.rows import records_of
from lossflow.tracking import ModelRegistry, Runs, WritableModelRegistry, default_tracking_uri

from .serving_models import CONFIG_DIR, PG_URL, Registry, copy_registry, live_service, replay_all

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
ROWS = 1200
MONITOR = ["decision.min_rows=500", "performance.min_labels=200", "report.sample_rows=500"]


@pytest.fixture(scope="module")
def registry(built_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Registry:
    return copy_registry(built_registry, tmp_path_factory.mktemp("monitoring"))


@pytest.fixture(scope="module")
def flights() -> pd.DataFrame:
    return load_flights("binary")


def _months(frame: pd.DataFrame, months: list[int], n: int, seed: int) -> pd.DataFrame:
    rows = frame[frame["scheduled_departure"].dt.month.isin(months)]
    return rows.sample(n=n, random_state=seed).reset_index(drop=True)


@pytest.fixture(scope="module")
def service(registry: Registry) -> Iterator[str]:
    """``lossflow serve`` (champion only) on the registry, in a subprocess on loopback."""
    with live_service(
        registry.data_dir, "variants.champion.alias=champion", "variants.champion.weight=100",
        "log.max_delay_s=0.01", "watch_registry_s=null",
    ) as url:  # fmt: skip
        yield url


def _serve(service: str, frame: pd.DataFrame, fraction: float = 1.0) -> tuple[datetime, datetime]:
    """Replay ``frame``'s rows against the service with ``lossflow traffic``'s client, labels
    (``fraction`` of them) posted back as delayed feedback."""
    start = datetime.now(UTC)
    replay_all(service, frame, rate=400, concurrency=8, delay_s=0.05, fraction=fraction)
    return start, datetime.now(UTC) + timedelta(milliseconds=1)


def _run(registry: Registry, start: datetime, end: datetime, *extra: str) -> Any:
    return monitoring(
        start=start,
        end=end,
        overrides=[f"data_dir={registry.data_dir}", *MONITOR, *extra],
        config_dir=str(CONFIG_DIR),
    )


def _tracker(registry: Registry) -> Runs:
    return Runs(default_tracking_uri(registry.data_dir), "lossflow-monitoring")


def _events(since: datetime) -> list[dict[str, Any]]:
    """``lossflow.retrain.requested`` events the Prefect server stored since ``since``."""
    from prefect.client.orchestration import get_client

    async def read() -> list[dict[str, Any]]:
        async with get_client() as client:
            response = await client._client.post(
                "/events/filter",
                json={"filter": {"event": {"name": [RETRAIN_EVENT]},
                                 "occurred": {"since": since.isoformat()}}, "limit": 50},
            )  # fmt: skip
            response.raise_for_status()
            return list(response.json()["events"])

    import asyncio

    return asyncio.run(read())


@pytest.fixture(scope="module")
def winter(registry: Registry, service: str, flights: pd.DataFrame) -> tuple[Any, datetime]:
    since = datetime.now(UTC) - timedelta(seconds=1)
    start, end = _serve(service, _months(flights, [11, 12], ROWS, seed=1))
    return _run(registry, start, end), since


def test_winter_traffic_drifts_in_its_weather_and_asks_for_a_retrain(
    winter: tuple[Any, datetime], registry: Registry
) -> None:
    outcome, _ = winter
    (variant,) = outcome.variants
    assert variant.target.variant == "champion"
    drift = variant.analysis["drift"]
    drifted = {c["column"] for c in drift["columns"] if c["drifted"]}
    assert {"temp", "dewp"} <= drifted, drifted
    assert drift["dataset_drift"] or variant.analysis["prior"]["shifted"]
    decision = variant.decision
    assert decision["status"] == "retrain", decision
    assert decision["candidate_losses"], "a retrain names the losses to try"
    performance = variant.analysis["performance"]
    assert performance["labelled"] == ROWS
    auc = performance["measured"]["roc_auc"]
    assert auc["low"] <= auc["value"] <= auc["high"]
    assert performance["estimated"]["roc_auc"] > 0.5


def test_the_run_in_mlflow_holds_metrics_decision_and_the_evidently_report(
    winter: tuple[Any, datetime], registry: Registry, tmp_path: Path
) -> None:
    outcome, _ = winter
    (variant,) = outcome.variants
    tracker = _tracker(registry)
    run = tracker.client.get_run(variant.run_id)
    assert run.data.tags["lossflow.decision"] == "retrain"
    assert run.data.tags["lossflow.model_version"] == variant.target.model_version
    assert run.data.metrics["drift/temp/effect"] > 0.1
    assert run.data.metrics["drift/temp/drifted"] == 1.0
    assert 0.0 <= run.data.metrics["perf/roc_auc/low"] <= run.data.metrics["perf/roc_auc"]
    artifacts = {a.path for a in tracker.client.list_artifacts(variant.run_id)}
    assert {"decision.json", "analysis.json", "report"} <= artifacts
    html = Path(tracker.client.download_artifacts(variant.run_id, "report/evidently.html",
                                                  str(tmp_path)))  # fmt: skip
    assert html.stat().st_size > 10_000
    assert "temp" in html.read_text(errors="ignore")
    decision = json.loads(
        Path(
            tracker.client.download_artifacts(variant.run_id, "decision.json", str(tmp_path))
        ).read_text()
    )
    assert decision["status"] == "retrain"


def test_a_feature_without_a_value_in_the_window_is_judged_and_named_as_left_out_of_the_report(
    registry: Registry, service: str, flights: pd.DataFrame
) -> None:
    # Most hours have no gust reading: a window of only those is a real case Evidently refuses
    # ("An empty column was provided"); the flow still judges every feature and says so.
    calm = flights[flights["wind_gust"].isna()]
    start, end = _serve(service, _months(calm, [7, 8], 600, seed=4))
    (variant,) = _run(registry, start, end).variants
    drift = variant.analysis["drift"]
    assert drift["skipped"] == {"wind_gust": "no value in the window"}
    assert {"temp", "wind_speed"} <= {c["column"] for c in drift["columns"]}
    console = Console(record=True, width=120)
    console.print(variant_table(variant))
    assert "not compared: no value in the window" in console.export_text()
    run = _tracker(registry).client.get_run(variant.run_id)
    assert run.data.tags["lossflow.report.left_out"] == "wind_gust"
    artifacts = {a.path for a in _tracker(registry).client.list_artifacts(variant.run_id)}
    assert "report" in artifacts


def test_a_retrain_decision_emits_one_event_with_its_reasons(
    winter: tuple[Any, datetime],
) -> None:
    outcome, since = winter
    (variant,) = outcome.variants
    deadline = time.monotonic() + 30
    events: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not events:
        events = _events(since)
        time.sleep(0.5)
    assert len(events) == 1, events
    payload = events[0]["payload"]
    assert payload["model_version"] == variant.target.model_version
    assert payload["reasons"] == [r["code"] for r in variant.decision["reasons"]]
    assert payload["candidate_losses"] == variant.decision["candidate_losses"]
    assert payload["monitoring_run_id"] == variant.run_id


def test_the_same_causes_in_an_overlapping_window_do_not_ask_again(
    winter: tuple[Any, datetime], registry: Registry
) -> None:
    outcome, _ = winter
    again = _run(registry, outcome.start - timedelta(seconds=1), outcome.end)
    (variant,) = again.variants
    assert variant.decision["status"] == "duplicate"
    assert variant.decision["candidate_losses"] == []


def test_rows_of_the_training_period_do_not_drift(
    winter: tuple[Any, datetime], registry: Registry, service: str, flights: pd.DataFrame
) -> None:
    start, end = _serve(service, _months(flights, [1, 2, 3, 4, 5, 6], ROWS, seed=2))
    outcome = _run(registry, start, end)
    (variant,) = outcome.variants
    drift = variant.analysis["drift"]
    assert not drift["dataset_drift"], drift["drifted"]
    weather = {"temp", "dewp", "humid", "pressure", "wind_speed", "visib", "precip"}
    assert not weather & set(drift["drifted"]), drift["drifted"]


def test_an_empty_window_is_insufficient_data(registry: Registry) -> None:
    end = datetime(2000, 1, 2, tzinfo=UTC)
    outcome = _run(registry, end - timedelta(days=1), end)
    (variant,) = outcome.variants
    assert variant.decision["status"] == "insufficient_data"
    assert not variant.decision["candidate_losses"]


def test_records_that_do_not_fit_the_model_are_insufficient_data(registry: Registry) -> None:
    log = PredictionLog(f"sqlite:///{registry.data_dir / 'predictions.db'}")
    tracker = ModelRegistry(default_tracking_uri(registry.data_dir))
    version = tracker.alias_version(registry.model_name, "champion")
    now = datetime.now(UTC)
    records = [
        PredictionRecord(f"odd-{i}", "u", now, "loss-ab", "odd", str(version), "x",
                         [{"colour": "blue"}], [{"probability": 0.5, "label": 1}], 1.0)
        for i in range(600)
    ]  # fmt: skip
    log.write_batch(records)
    log.dispose()
    outcome = _run(registry, now - timedelta(seconds=1), now + timedelta(seconds=1),
                   "variants=[odd]")  # fmt: skip
    (variant,) = outcome.variants
    assert variant.decision["status"] == "insufficient_data"
    assert "do not fit the model" in variant.decision["reasons"][0]["message"]


def test_an_unreachable_log_is_one_clear_error(registry: Registry) -> None:
    from lossflow.predlog import LogUnreachableError

    with pytest.raises(LogUnreachableError, match="cannot read the prediction log at postgresql"):
        _run(registry, datetime.now(UTC) - timedelta(hours=1), datetime.now(UTC),
             "log.url=postgresql+psycopg://nobody@127.0.0.1:9/nowhere")  # fmt: skip


def test_too_few_labels_give_insufficient_labels_not_a_noisy_number(
    registry: Registry, service: str, flights: pd.DataFrame
) -> None:
    start, end = _serve(service, _months(flights, [9], 600, seed=3), fraction=0.1)
    outcome = _run(registry, start, end)
    (variant,) = outcome.variants
    performance = variant.analysis["performance"]
    assert performance["measured"] == {}
    assert performance["insufficient"].startswith("insufficient labels: ")
    assert 30 <= performance["labelled"] <= 90, "a tenth of 600 requests labelled"
    with sa.create_engine(f"sqlite:///{registry.data_dir / 'predictions.db'}").connect() as c:
        assert c.execute(sa.text("select count(*) from feedback")).scalar_one() > 0


def test_the_postgresql_log_reads_the_same_window_as_sqlite(
    registry: Registry, flights: pd.DataFrame, tmp_path: Path, pg_schema: str
) -> None:
    from lossflow.monitoring.references import ReferenceStore
    from lossflow.monitoring.window import summarise_window
    from lossflow.serving.predictor import OnnxPredictor

    pg = PredictionLog(PG_URL, schema=pg_schema)
    pg.create_schema()
    lite = PredictionLog(f"sqlite:///{tmp_path / 'p.db'}")
    lite.create_schema()
    uri = default_tracking_uri(registry.data_dir)
    writer, runs = WritableModelRegistry(uri), Runs(uri, "lossflow-monitoring")
    version = str(writer.alias_version(registry.model_name, "champion"))
    profile = ReferenceStore(writer, runs, registry.model_name, registry.data_dir).get(version)
    predictor = OnnxPredictor.from_path(registry.champion)
    frame = _months(flights, [12], 400, seed=4)
    records = records_of(frame, predictor.feature_columns)
    now = datetime.now(UTC)
    rows = []
    for i in range(0, len(records), 2):  # two records per request
        pair = records[i : i + 2]
        outputs = [
            {"probability": p.probability, "label": p.label} for p in predictor.predict(pair)
        ]
        rows.append(PredictionRecord(f"r{i}", f"u{i}", now, "loss-ab", "champion", version,
                                     profile.metadata.loss_id, pair, outputs, 1.0))  # fmt: skip
    try:
        for log in (pg, lite):
            log.write_batch(rows)
            for i, row in enumerate(rows[:100]):
                log.record_feedback(row.request_id, [int(frame["delayed"].iloc[2 * i]), 0])
        window = (now - timedelta(seconds=1), now + timedelta(seconds=1))
        a = summarise_window(pg, profile, "champion", *window, sample_rows=50)
        b = summarise_window(lite, profile, "champion", *window, sample_rows=50)
        assert a.rows == b.rows == 400
        assert a.features == b.features
        assert a.scores == b.scores
        assert a.labelled == b.labelled == 200
        assert a.label_counts == b.label_counts
        assert sorted(a.labels.tolist()) == sorted(b.labels.tolist())
    finally:
        pg.dispose()
        lite.dispose()


def test_a_version_registered_without_a_profile_gets_one_built_on_demand(tmp_path: Path) -> None:
    from lossflow.config.training import load_training_config
    from lossflow.data.prepare import prepare_data
    from lossflow.losses import loss_id
    from lossflow.models.build import resolved_loss_spec
    from lossflow.monitoring.profile import ARTIFACT
    from lossflow.monitoring.references import ReferenceStore
    from lossflow.usecases import training as steps

    from .serving_models import SMALL

    cfg = load_training_config([f"data_dir={tmp_path}", *SMALL], CONFIG_DIR)
    runs, registry = steps.runs_of(cfg), steps.writable_registry_of(cfg)
    with runs.start_run("old", {}) as run_id:  # registered the way lossflow did before
        work = tmp_path / "runs" / run_id
        prepared = prepare_data(cfg, work / "prepared")
        trained = steps.train_model(cfg, prepared, work / "checkpoints")
        evaluation = steps.evaluate_model(cfg, prepared, trained)
        lid = loss_id(resolved_loss_spec(cfg, prepared.class_counts), cfg.regularizers)
        exported = steps.export_model(cfg, prepared, trained, evaluation, lid, work / "model")
        name, version = steps.register_version(cfg, prepared, exported, run_id)
    assert registry.download_run_artifact(run_id, ARTIFACT, tmp_path / "x") is None
    profile = ReferenceStore(registry, runs, name, tmp_path).get(version)
    assert profile.model_version == version
    assert set(profile.features) == {*profile.numeric, *profile.categorical}
    assert profile.test_metrics["roc_auc"].low <= profile.test_metrics["roc_auc"].value
    assert registry.download_run_artifact(run_id, ARTIFACT, tmp_path / "y") is not None, "logged"
    assert registry.version_tags(name, version)["lossflow.reference_profile"] == ARTIFACT


def test_lossflow_monitor_prints_the_verdict_and_writes_json(
    winter: tuple[Any, datetime], registry: Registry, tmp_path: Path
) -> None:
    import os
    import subprocess
    import sys

    outcome, _ = winter
    report = tmp_path / "monitor.json"
    result = subprocess.run(
        [str(Path(sys.executable).parent / "lossflow"), "monitor", "--config-dir",
         str(CONFIG_DIR), "--start", outcome.start.isoformat(), "--end", outcome.end.isoformat(),
         "--json", str(report), f"data_dir={registry.data_dir}", *MONITOR],
        capture_output=True, text=True, timeout=600, check=False,
        env={**os.environ, "COLUMNS": "200"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "champion: version" in out
    assert "drifted features" in out
    assert "temp" in out
    assert "decision" in out
    assert "duplicate" in out or "cooldown" in out, "the winter drift was already sent"
    saved = json.loads(report.read_text())
    assert saved["variants"][0]["decision"]["status"] in ("duplicate", "cooldown")
    missing = subprocess.run(
        [str(Path(sys.executable).parent / "lossflow"), "monitor", "--config-dir",
         str(CONFIG_DIR), f"data_dir={tmp_path / 'nothing'}"],
        capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert missing.returncode == 2
    assert "no prediction log at" in missing.stderr
    assert "Traceback" not in missing.stderr
