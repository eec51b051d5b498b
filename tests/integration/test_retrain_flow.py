"""The ``retrain`` flow on real components: a champion trained by the training flow (its
prepared data on disk), a real SQLite prediction log holding September 2013's flights as the
champion answered them with their labels (a strong label-prior shift: 13.7% delayed against
25% in training), a real MLflow registry, the Prefect test harness.

The verdicts below are on these fixed, seeded rows; the pre-screen's error rate (a 95% paired
interval at alpha / k) is checked by simulation in ``tests/unit/test_stats_paired.py``."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lossflow.config.retrain import load_retrain_config
from lossflow.contract import CHALLENGER, CHAMPION
from lossflow.data.sources import load_flights
from lossflow.flows.retrain import retrain
from lossflow.flows.training import training
from lossflow.predlog import PredictionLog, PredictionRecord
from lossflow.replay.rows import records_of
from lossflow.retrain.request import RetrainRequest
from lossflow.serving.predictor import OnnxPredictor, logged_output
from lossflow.tracking import Runs, WritableModelRegistry, default_tracking_uri
from lossflow.usecases import retrain as steps

from .serving_models import CONFIG_DIR

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
SMALL = ["data.subsample=3000", "trainer.max_epochs=1", "trainer.batch_size=512"]
SEPTEMBER = ["2013-09-01T00:00:00+00:00", "2013-10-01T00:00:00+00:00"]


def _payload(key: str, reasons: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "model_name": "lossflow-flights",
        "model_version": "1",
        "reasons": reasons,
        "candidate_losses": [{"name": "logit_adjusted", "tau": 1.0}, {"name": "class_balanced"}],
        "window": SEPTEMBER,
        "dedup_key": key,
        "monitoring_run_id": "monitoring-run-for-the-test",
        "prior": {"classes": ["0", "1"], "reference": [0.75, 0.25], "basis": "labels",
                  "observed": [0.863, 0.137], "estimated": None},
        **extra,
    }  # fmt: skip


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A champion (v1) from the training flow and September's labelled traffic in the log."""
    root = tmp_path_factory.mktemp("retrain")
    outcome = training(overrides=[f"data_dir={root}", *SMALL], config_dir=str(CONFIG_DIR))
    flights = load_flights("binary")
    rows = flights[flights["scheduled_departure"].dt.month == 9].sample(n=1500, random_state=0)
    predictor = OnnxPredictor.from_path(outcome.onnx_path)
    records = records_of(rows, predictor.feature_columns)
    answers = predictor.predict(records)
    log = PredictionLog(f"sqlite:///{root / 'predictions.db'}")
    log.create_schema()
    logged = [
        PredictionRecord(f"r{i}", f"unit-{i % 900}", ts.tz_localize("UTC").to_pydatetime(),
                         "loss-ab", CHAMPION, "1", predictor.loss_id, [record],
                         [logged_output(answer, predictor.label_names)], 1.0)
        for i, (record, answer, ts) in enumerate(
            zip(records, answers, rows["scheduled_departure"], strict=True))
    ]  # fmt: skip
    log.write_batch(logged)
    for i, label in enumerate(rows["delayed"].tolist()):
        log.record_feedback(f"r{i}", [int(label)])
    log.dispose()
    return root


def _run(data_dir: Path, payload: dict[str, Any], *extra: str) -> Any:
    overrides = [f"data_dir={data_dir}", f"training=[{', '.join(SMALL)}]", *extra]
    return retrain(request=payload, overrides=overrides, config_dir=str(CONFIG_DIR))


def _registry(data_dir: Path) -> WritableModelRegistry:
    return WritableModelRegistry(default_tracking_uri(data_dir))


def _runs(data_dir: Path) -> Runs:
    return Runs(default_tracking_uri(data_dir), "lossflow-retrain")


def test_a_prior_shift_retrain_registers_a_challenger_with_its_lineage(data_dir: Path) -> None:
    outcome = _run(data_dir, _payload("prior-1", ["prior_shift"]))
    assert outcome.outcome == "challenger", outcome.why
    names = [c["name"] for c in outcome.candidates]
    # The decision's candidates, the champion's own loss, and the post-hoc adjusted champion.
    assert names == ["logit_adjusted", "class_balanced", "focal", "posthoc"]
    chosen = next(c for c in outcome.candidates if c["name"] == outcome.chosen)
    assert chosen["verdict"] in ("better", "not_worse")
    assert chosen["difference"] < 0
    assert all(c["units"] == 900 for c in outcome.candidates), "paired per unit"
    registry = _registry(data_dir)
    aliases = registry.aliases("lossflow-flights")
    assert aliases[CHALLENGER] == outcome.challenger_version
    assert aliases[CHAMPION] == "1"
    tags = registry.version_tags("lossflow-flights", outcome.challenger_version)
    assert tags["lossflow.retrain.run"] == outcome.run_id
    assert tags["lossflow.retrain.reasons"] == "prior_shift"
    assert tags["lossflow.retrain.monitoring_run"] == "monitoring-run-for-the-test"
    assert tags["lossflow.retrain.candidate"] == outcome.chosen
    assert "lossflow.reference_profile" in tags, "monitoring can judge the challenger"
    run = registry.client.get_run(outcome.run_id)
    assert run.data.tags["lossflow.retrain.outcome"] == "challenger"
    assert run.data.params["data.prescreen_rows"] == "1500"
    children = _runs(data_dir).child_runs(outcome.run_id)
    assert len(children) == 4, "one nested run per candidate"
    # The same causes again: skipped, nothing registered.
    again = _run(data_dir, _payload("prior-1", ["prior_shift"]))
    assert again.outcome == "skipped"
    assert again.why.startswith("duplicate")
    # Other causes inside the cooldown: skipped.
    later = _run(data_dir, _payload("drift-2", ["dataset_drift"]))
    assert later.outcome == "skipped"
    assert later.why.startswith("cooldown")
    # Once the service routes traffic to the challenger, an A/B test is deciding it: deferred.
    log = PredictionLog(f"sqlite:///{data_dir / 'predictions.db'}")
    log.write_batch([PredictionRecord("served-by-challenger", "u", datetime.now(UTC), "loss-ab",
                                      CHALLENGER, str(outcome.challenger_version), "x", [{}],
                                      [{"probability": 0.2, "label": 0}], 1.0)])  # fmt: skip
    log.dispose()
    deferred = _run(data_dir, _payload("drift-3", ["dataset_drift"]), "cooldown=1s")
    assert deferred.why.startswith(f"deferred: challenger version {outcome.challenger_version}")
    assert registry.aliases("lossflow-flights") == aliases
    # Evidence about a version that is no longer the champion is stale.
    stale = _run(data_dir, {**_payload("old-4", ["dataset_drift"]), "model_version": "7"},
                 "cooldown=1s")  # fmt: skip
    assert stale.why.startswith("stale: version 7 was judged")


def test_a_retrain_that_crashes_moves_no_alias(data_dir: Path) -> None:
    registry = _registry(data_dir)
    registry.delete_alias("lossflow-flights", CHALLENGER)  # no A/B test is running
    before = registry.aliases("lossflow-flights")
    # A parity gate no export can pass: the first candidate's export fails.
    strict = ("training=[data.subsample=3000, trainer.max_epochs=1, export.parity_atol=1e-30, "
              "export.parity_rtol=0]")  # fmt: skip
    with pytest.raises(Exception, match="onnxruntime output differs from torch"):
        _run(data_dir, _payload("crash-3", ["dataset_drift"]), "cooldown=1s", strict)
    assert registry.aliases("lossflow-flights") == before
    [failed] = _runs(data_dir).runs_with_tags({"lossflow.dedup_key": "crash-3"})
    run = registry.client.get_run(failed.run_id)
    assert run.info.status == "FAILED"
    assert "arity" in run.data.tags["lossflow.error"]


def test_the_sliding_pool_keeps_the_last_months_and_the_log_rows_before_the_window(
    data_dir: Path, tmp_path: Path
) -> None:
    cfg = load_retrain_config(
        [f"data_dir={data_dir}", "data.policy=sliding", "data.months=2"], CONFIG_DIR
    )
    october = _payload("k", ["dataset_drift"], window=["2013-10-01T00:00:00+00:00",
                                                       "2013-11-01T00:00:00+00:00"])  # fmt: skip
    request = RetrainRequest.from_payload(october)
    best = steps.champion(cfg, request, tmp_path / "champion")
    pool = steps.build_data(cfg, request, tmp_path, best, CONFIG_DIR)
    frame = pd.read_parquet(pool.pool)
    months = set(pd.to_datetime(frame["scheduled_departure"]).dt.month)
    assert months == {8, 9}, "two months before October: August's history, September's log"
    assert pool.log_rows == 1500
    assert len(pool.prescreen) == 0, "nothing was served in October"
    expanding = steps.build_data(
        load_retrain_config([f"data_dir={data_dir}"], CONFIG_DIR), request, tmp_path / "all",
        best, CONFIG_DIR,
    )  # fmt: skip
    assert expanding.history_rows > pool.history_rows
    assert set(pd.to_datetime(pd.read_parquet(expanding.pool)["scheduled_departure"]).dt.month) \
        == set(range(1, 10))  # fmt: skip
