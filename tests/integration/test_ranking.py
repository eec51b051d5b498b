"""Ranking end to end on real data: train with each list-level loss on whole lists, report NDCG
beside the popularity baseline in a real MLflow store, export to ONNX (parity gate), register,
and rank a list over HTTP (`lossflow serve` under uvicorn on loopback; ``/rank`` and the Open
Inference Protocol's ``/v2/models/{name}/infer``) with the scores that onnxruntime gives
directly; the list is one row of the prediction log, its feedback graded."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from lossflow.config.training import TrainingConfig, load_training_config
from lossflow.contract import CHAMPION
from lossflow.data.prepare import PreparedData, prepare_data
from lossflow.onnx_runner import OnnxRunner
from lossflow.predlog import PredictionLog
from lossflow.replay.rows import records_of
from lossflow.usecases import training as steps

from .test_service_live import Service

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
MODEL = "lossflow-modechoice"
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")


@dataclass(frozen=True)
class Trained:
    cfg: TrainingConfig
    prepared: PreparedData
    run_id: str
    onnx_path: Path
    version: str


def _train(data_dir: Path, *overrides: str) -> Trained:
    """The training flow's steps, in order, against a real MLflow store under ``data_dir``."""
    cfg = load_training_config(
        [
            "data=modechoice",
            "loss=listnet",
            f"data_dir={data_dir}",
            "trainer.max_epochs=4",
            "trainer.batch_size=16",
            "optimizer.lr=0.01",
            f"tracking.registered_model={MODEL}",
            "tracking.experiment=lossflow-modechoice",
            *overrides,
        ],
        CONFIG_DIR,
    )
    tracker = steps.runs_of(cfg)
    with tracker.start_run(cfg.loss.name, {"lossflow.task": "ranking"}) as run_id:
        work = data_dir / "runs" / run_id
        prepared = prepare_data(cfg, work / "prepared")
        lid = steps.log_run_inputs(cfg, prepared, tracker, run_id)
        trained = steps.train_model(cfg, prepared, work / "checkpoints", run_id=run_id)
        evaluation = steps.evaluate_model(cfg, prepared, trained, run_id=run_id)
        exported = steps.export_model(cfg, prepared, trained, evaluation, lid, work / "model")
        name, version = steps.register_version(cfg, prepared, exported, run_id)
        steps.store_reference_profile(cfg, prepared, exported, run_id, name, version)
        steps.assign_aliases(cfg, name, version)
    return Trained(cfg, prepared, run_id, exported.onnx_path, version)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> Trained:
    return _train(tmp_path_factory.mktemp("ranking") / "data")


def test_a_ranking_run_reports_ndcg_beside_the_popularity_baseline(trained: Trained) -> None:
    client = steps.runs_of(trained.cfg).client
    run = client.get_run(trained.run_id)
    metrics = run.data.metrics
    for key in ("ndcg_5", "ndcg_10", "mrr", "map", "pairwise_accuracy"):
        assert 0.0 <= metrics[f"test/{key}"] <= 1.0, key
        assert f"test/popularity_{key}" in metrics, key
    assert metrics["test/beats_popularity"] == float(
        metrics["test/ndcg_10"] > metrics["test/popularity_ndcg_10"]
    )
    assert run.data.tags[steps.BEATS_POPULARITY_TAG] in ("true", "false")
    history = client.get_metric_history(trained.run_id, "val/ndcg_10")
    assert [m.step for m in history] == list(range(len(history)))
    assert len(history) >= 2
    assert "val/pairwise_accuracy" in metrics
    assert metrics["export/parity_max_abs_diff"] < 1e-4  # the gate passed, and logged it
    # 210 travellers, 20% each to validation and test: whole lists of 4 modes.
    assert trained.prepared.sizes["test"] == 4 * 42
    version = client.get_model_version_by_alias(MODEL, CHAMPION)
    assert str(version.version) == trained.version


@pytest.mark.parametrize("loss", ["ranknet", "listmle", "margin_ranking"])
def test_every_ranking_loss_trains_on_whole_lists(loss: str, tmp_path: Path) -> None:
    cfg = load_training_config(
        ["data=modechoice", f"loss={loss}", f"data_dir={tmp_path}", "trainer.max_epochs=2",
         "trainer.batch_size=16"],
        CONFIG_DIR,
    )  # fmt: skip
    prepared = prepare_data(cfg, tmp_path / "prepared")
    result = steps.train_model(cfg, prepared, tmp_path / "checkpoints")
    history = json_history(result.history_path)
    assert len(history["val/ndcg_10"]) == 2
    assert all(np.isfinite(history["train/loss"]))
    report = steps.evaluate_model(cfg, prepared, result)
    assert 0.0 < report.metrics["test/ndcg_10"] <= 1.0


def test_a_composite_of_ranking_losses_logs_each_term(tmp_path: Path) -> None:
    terms = "{listnet: {loss: {name: listnet}}, ranknet: {loss: {name: ranknet}, weight: 0.5}}"
    cfg = load_training_config(
        ["data=modechoice", "loss=composite_focal_bce", f"loss.terms={terms}",
         f"data_dir={tmp_path}", "trainer.max_epochs=1", "trainer.batch_size=16"],
        CONFIG_DIR,
    )  # fmt: skip
    prepared = prepare_data(cfg, tmp_path / "prepared")
    history = json_history(steps.train_model(cfg, prepared, tmp_path / "ckpt").history_path)
    assert {"train/term/listnet", "train/term/ranknet", "val/term/ranknet"} <= set(history)


def json_history(path: Path) -> dict[str, list[float]]:
    import json

    history: dict[str, list[float]] = json.loads(path.read_text())
    return history


def _test_list(trained: Trained) -> tuple[list[dict[str, Any]], np.ndarray, list[float]]:
    """The first test list as request items, onnxruntime's scores of them, their relevance."""
    raw = trained.prepared.raw("test")
    group = trained.prepared.preprocessor().group
    assert group is not None
    first = raw.loc[raw[group] == raw[group].iloc[0]]
    pre = trained.prepared.preprocessor()
    items = records_of(first, pre.feature_columns)
    direct = OnnxRunner(trained.onnx_path).run(pre.model_inputs(pre.encode(first)))
    return items, np.asarray(direct, dtype=np.float64), first[pre.target].astype(float).tolist()


def test_the_served_model_ranks_a_list_with_the_scores_of_onnxruntime(trained: Trained) -> None:
    items, direct, relevance = _test_list(trained)
    data_dir = trained.cfg.data_dir
    with (
        Service(data_dir, f"tracking.registered_model={MODEL}") as service,
        httpx.Client(base_url=service.url, timeout=30) as client,
    ):
        answer = client.post("/rank", json={"unit_id": "traveller-1", "items": items})
        assert answer.status_code == 200, answer.text
        body = answer.json()
        assert body["scores"] == pytest.approx(direct.tolist(), abs=1e-6)
        assert body["order"] == np.argsort(-direct, kind="stable").tolist()
        assert body["model_version"] == trained.version
        same = client.post("/predict", json={"unit_id": "traveller-1", "records": items})
        assert [p["value"] for p in same.json()["predictions"]] == pytest.approx(body["scores"])
        # The Open Inference Protocol: one request is one list, as /rank; one tensor per column.
        numeric = set(trained.prepared.preprocessor().numeric_columns)
        tensors = [
            {
                "name": name,
                "shape": [len(items)],
                "datatype": "FP64" if name in numeric else "BYTES",
                "data": [item[name] for item in items],
            }
            for name in items[0]
        ]
        v2 = client.post(
            f"/v2/models/{MODEL}/infer",
            json={"parameters": {"unit_id": "traveller-1"}, "inputs": tensors},
        )
        assert v2.status_code == 200, v2.text
        outputs = {o["name"]: o["data"] for o in v2.json()["outputs"]}
        assert outputs["score"] == pytest.approx(body["scores"])
        assert outputs["rank"] == [body["order"].index(i) + 1 for i in range(len(items))]
        v2_id = v2.json()["parameters"]["request_id"]
        bad = client.post("/rank", json={"unit_id": "u", "items": [{**items[0], "ttme": "x"}]})
        assert bad.status_code == 422
        assert bad.json()["detail"][0]["loc"] == ["body", "items", 0, "ttme"]
        negative = client.post(
            "/feedback", json={"request_id": body["request_id"], "labels": [-1.0] * len(items)}
        )
        assert negative.status_code == 422
        assert "graded relevances" in negative.text
        feedback = client.post(
            "/feedback", json={"request_id": body["request_id"], "labels": relevance}
        )
        assert feedback.status_code == 201, feedback.text
    log = PredictionLog(f"sqlite:///{data_dir / 'predictions.db'}")
    try:
        now = datetime.now(UTC)
        frame = log.read(now - timedelta(hours=1), now + timedelta(hours=1))
    finally:
        log.dispose()
    rows = frame.loc[frame["request_id"] == body["request_id"]]
    assert len(rows) == 1, "one row per list"
    assert len(frame.loc[frame["request_id"] == v2_id]) == 1, "a V2 list is one row too"
    row = rows.iloc[0]
    assert row["features"] == items
    assert [o["score"] for o in row["outputs"]] == pytest.approx(body["scores"])
    assert sorted(o["rank"] for o in row["outputs"]) == list(range(1, len(items) + 1))
    assert row["labels"] == relevance


def test_movielens_trains_on_a_sample_of_users_and_compares_with_popularity(
    tmp_path: Path,
) -> None:
    cfg = load_training_config(
        ["experiment=movielens_listnet", f"data_dir={tmp_path}", "data.subsample=3000",
         "trainer.max_epochs=2"],
        CONFIG_DIR,
    )  # fmt: skip
    prepared = prepare_data(cfg, tmp_path / "prepared")
    for part in ("train", "val", "test"):
        lists = prepared.lists(part)
        assert np.bincount(lists).min() >= cfg.data.lists.min_items, part
        assert np.bincount(lists).max() <= cfg.data.lists.max_items, part
    trained = steps.train_model(cfg, prepared, tmp_path / "checkpoints")
    metrics = steps.evaluate_model(cfg, prepared, trained).metrics
    assert 0.0 < metrics["test/ndcg_10"] <= 1.0
    assert 0.0 < metrics["test/popularity_ndcg_10"] <= 1.0
    assert metrics["test/beats_popularity"] in (0.0, 1.0)


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_lossflow_train_movielens_runs_the_whole_flow(tmp_path: Path) -> None:
    from lossflow.flows.training import training

    outcome = training(
        overrides=["experiment=movielens_listmle", f"data_dir={tmp_path}",
                   "data.subsample=5000", "trainer.max_epochs=2"],
        config_dir=str(CONFIG_DIR),
    )  # fmt: skip
    assert {"test/ndcg_10", "test/popularity_ndcg_10"} <= set(outcome.metrics)
    assert outcome.model_name == "lossflow-movielens"
    assert set(outcome.aliases) == {"champion", "challenger"}
    assert outcome.loss_id.startswith("listmle-")
    assert outcome.onnx_path.is_file()
