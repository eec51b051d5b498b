"""The ``compare_losses`` flow on real flights data with the real Prefect test harness, a real
MLflow store and a real Optuna storage: a cost-sensitive loss against BCE measured by expected
cost (with ablations of their penalty, slices, later months and importances), and a search over
losses whose best trial ``lossflow train`` reproduces from the written overlay."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from lossflow.flows.compare_losses import CompareOutcome, compare_losses
from lossflow.flows.training import training
from lossflow.tracking import PARENT_RUN_TAG, Runs, default_tracking_uri

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def cost(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompareOutcome]:
    data_dir = tmp_path_factory.mktemp("cost")
    outcome = compare_losses(
        overrides=[
            "compare=flights_cost",
            f"data_dir={data_dir}",
            "data.subsample=4000",
            "trainer.max_epochs=2",
            "cv.repeats=1",
            "importance.rows=1000",
            "importance.repeats=1",
            "workers=2",
        ],
        config_dir=str(CONFIG_DIR),
    )
    return data_dir, outcome


def test_cost_sensitive_against_bce_reports_a_direction_and_a_p_value(
    cost: tuple[Path, CompareOutcome],
) -> None:
    data_dir, outcome = cost
    c = outcome.comparison
    assert (c.metric, c.better, c.kind, c.folds) == ("expected_cost", "min", "stratified", 5)
    (pair,) = c.pairs
    assert (pair.first, pair.second) == ("cost_sensitive", "bce")
    assert 0.0 <= pair.test.p_value <= 1.0
    assert pair.test.ci_low <= pair.test.mean_difference <= pair.test.ci_high
    if pair.significant:
        assert c.verdict.winner == pair.better
    else:
        assert c.verdict.text.startswith("no detectable difference")
    record = {
        "mean_difference": pair.test.mean_difference,
        "p_value": pair.test.p_value,
        "p_holm": pair.p_holm,
        "naive_p_value": pair.test.naive_p_value,
        "verdict": c.verdict.text,
    }
    (data_dir / "known_answer.json").write_text(json.dumps(record))
    print("cost_sensitive - bce expected cost:", record)


def test_each_penalty_is_ablated_and_tested_against_its_arm(
    cost: tuple[Path, CompareOutcome],
) -> None:
    c = cost[1].comparison
    assert [(a.name, a.ablation_of, a.removed) for a in c.ablations] == [
        ("cost_sensitive-no-0_l2", "cost_sensitive", "regulariser 0_l2"),
        ("bce-no-0_l2", "bce", "regulariser 0_l2"),
    ]
    assert [(t.first, t.second) for t in c.ablation_tests] == [
        ("cost_sensitive-no-0_l2", "cost_sensitive"),
        ("bce-no-0_l2", "bce"),
    ]


def test_slices_later_months_and_importances_per_arm(cost: tuple[Path, CompareOutcome]) -> None:
    c = cost[1].comparison
    for arm in c.arms:
        assert arm.ok, arm.error
        assert {s.slice for s in arm.slices} == {"carrier", "origin", "month", "hour_band"}
        assert arm.worst_slice is not None
        assert arm.worst_slice.interval is not None
        worst = arm.worst_slice.interval.mean
        assert all(
            s.interval is None or s.interval.mean <= worst for s in arm.slices
        )  # min is better
        months = [s.value for s in arm.later]
        assert months == ["2013-07", "2013-08", "2013-09", "2013-10", "2013-11", "2013-12"]
        assert set(arm.importances) >= {"distance", "carrier", "hour", "temp"}
        assert arm.epochs_to_95 is not None
        assert 1 <= arm.epochs_to_95 <= 2
    assert c.workers == 2
    assert c.efficiency > 0  # reported (its size is the machine's business, not asserted)


def test_the_parent_run_holds_the_nested_runs_and_the_report(
    cost: tuple[Path, CompareOutcome],
) -> None:
    data_dir, outcome = cost
    tracker = Runs(default_tracking_uri(data_dir), "lossflow-compare")
    children = tracker.child_runs(outcome.run_id)
    assert len(children) == 4 * 5  # two arms and two ablation variants, five folds each
    run = tracker.client.get_run(children[0])
    assert run.data.tags[PARENT_RUN_TAG] == outcome.run_id
    metrics = tracker.get_run_metrics(outcome.run_id)
    assert "cv/cost_sensitive/expected_cost" in metrics
    assert "cv/parallel_efficiency" in metrics
    assert outcome.report.read_text().count("<img") >= 5


@pytest.fixture(scope="module")
def search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, CompareOutcome]:
    data_dir = tmp_path_factory.mktemp("search")
    outcome = compare_losses(
        overrides=[
            "compare=flights_hpo",
            f"data_dir={data_dir}",
            "data.subsample=2000",
            "trainer.max_epochs=2",
            "cv.folds=2",
            "hpo.n_trials=4",
            "importance.enabled=false",
            "landscape.enabled=false",
            "workers=1",
        ],
        config_dir=str(CONFIG_DIR),
    )
    return data_dir, outcome


def test_the_search_treats_the_loss_as_a_dimension(search: tuple[Path, CompareOutcome]) -> None:
    data_dir, outcome = search
    study = outcome.study
    assert study is not None
    assert len(study.finished()) == 4
    assert sorted(t.ticket for t in study.trials if t.ticket is not None) == [0, 1, 2, 3]
    for trial in study.trials:
        arm = trial.params["loss"]
        assert arm in ("focal", "bce", "logit_adjusted")
        own = {"focal": {"focal.gamma"}, "logit_adjusted": {"logit_adjusted.tau"}}.get(arm, set())
        assert set(trial.params) == {"loss", "optimizer.lr"} | own
    tracker = Runs(default_tracking_uri(data_dir), "lossflow-compare")
    kinds = [
        tracker.client.get_run(r).data.tags["lossflow.kind"]
        for r in tracker.child_runs(outcome.run_id)
    ]
    assert kinds.count("trial") == 4
    assert kinds.count("fold") == 3 * 2
    plots = {a.path for a in tracker.client.list_artifacts(outcome.run_id, "plots")}
    assert "plots/hpo_history.png" in plots
    assert {a.path for a in tracker.client.list_artifacts(outcome.run_id, "hpo")} == {
        "hpo/hpo_best.yaml"
    }


def test_lossflow_train_reproduces_the_best_trial_from_the_overlay(
    search: tuple[Path, CompareOutcome], tmp_path: Path
) -> None:
    _, outcome = search
    study = outcome.study
    assert study is not None
    assert study.best is not None
    assert outcome.overlay is not None
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    shutil.copy(outcome.overlay, configs / "experiment" / outcome.overlay.name)
    trained = training(
        overrides=[f"experiment={outcome.overlay.stem}", f"data_dir={tmp_path / 'data'}"],
        config_dir=str(configs),
    )
    tracker = Runs(default_tracking_uri(tmp_path / "data"), "lossflow-flights")
    history = tracker.client.get_metric_history(trained.run_id, study.metric)
    assert max(m.value for m in history) == pytest.approx(study.best.value, abs=1e-6)
