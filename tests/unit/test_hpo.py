"""The search over losses on a real Optuna study (SQLite in tmp_path): the loss is a categorical
dimension with conditional parameters, tickets make the trial count exact, a grid runs each point
once, and the best trial becomes an overlay the one training loader reads back."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import optuna
import pytest
from optuna.trial import Trial

from lossflow.comparison.optuna_study import (
    create_study,
    open_study,
    study_result,
    suggest,
    take_tickets,
)
from lossflow.comparison.results import TrialRecord, best_overlay
from lossflow.comparison.search import HPOError, StudyPlan, grid_points, trial_config
from lossflow.config.training import config_to_dict, load_training_config
from lossflow.usecases.compare import write_overlay

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _plan(tmp_path: Path, sampler: str = "random", n_trials: int = 12) -> StudyPlan:
    arms = {
        name: config_to_dict(
            load_training_config([f"loss={name}", f"data_dir={tmp_path}"], CONFIG_DIR)
        )
        for name in ("focal", "bce")
    }
    return StudyPlan(
        arms=arms,
        loss_files={"focal": "focal", "bce": "bce"},
        loss_params={"focal": {"gamma": (0.0, 5.0, False)}, "bce": {}},
        lr=(1e-4, 1e-2, True),
        regularizer_strength=None,
        metric="val/auc",
        better="max",
        sampler=sampler,
        seed=0,
        n_trials=n_trials,
        grid_points=3,
        pruner="none",
        pruner_startup_trials=0,
        pruner_warmup_epochs=0,
    )


def _toy(plan: StudyPlan) -> Callable[[Trial], float]:
    """A cheap objective of the trial's parameters (what a training would return)."""

    def objective(trial: Trial) -> float:
        params = suggest(trial, plan)
        return 0.7 - 0.01 * float(params.get("focal.gamma", 2.5)) + float(params["optimizer.lr"])

    return objective


def test_the_plan_travels_as_json(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    assert StudyPlan.from_json(plan.to_json()) == plan


def test_each_arm_searches_only_its_own_parameters(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    assert create_study(plan, storage, "s") == 12
    study, stored = open_study(storage, "s")
    assert stored == plan
    assert take_tickets(study, _toy(plan), worker=0) == 12
    result = study_result(storage, "s")
    assert len(result.finished()) == 12
    assert sorted(t.ticket for t in result.trials) == list(range(12))
    arms = {t.params["loss"] for t in result.trials}
    assert arms == {"focal", "bce"}
    for trial in result.trials:
        expected = {"loss", "optimizer.lr"} | (
            {"focal.gamma"} if trial.params["loss"] == "focal" else set()
        )
        assert set(trial.params) == expected
    assert result.best is not None
    assert result.best.value == max(t.value for t in result.trials if t.value is not None)
    assert {s.param for s in result.sensitivity} >= {"focal.gamma", "optimizer.lr"}
    assert take_tickets(study, _toy(plan), worker=1) == 0  # no ticket left, nothing extra


def test_a_grid_runs_every_point_once(tmp_path: Path) -> None:
    plan = _plan(tmp_path, sampler="grid", n_trials=12)
    points = grid_points(plan)
    assert len(points) == 3 * 3 + 3  # focal: gamma x lr; bce: lr
    assert all(set(p) == {"loss", "optimizer.lr"} for p in points if p["loss"] == "bce")
    storage = f"sqlite:///{tmp_path / 'grid.db'}"
    create_study(plan, storage, "grid")
    study, _ = open_study(storage, "grid")
    take_tickets(study, _toy(plan), worker=0)
    seen = [t.params for t in study_result(storage, "grid").trials]
    assert sorted(map(sorted, (p.items() for p in seen))) == sorted(
        map(sorted, (p.items() for p in points))
    )


def test_a_study_is_joined_with_its_plan_and_refused_with_another(tmp_path: Path) -> None:
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(_plan(tmp_path), storage, "s")
    assert create_study(_plan(tmp_path), storage, "s") == 12  # a restarted coordinator joins
    with pytest.raises(HPOError, match="already exists with another plan"):
        create_study(_plan(tmp_path, n_trials=3), storage, "s")
    with pytest.raises(HPOError, match="no study 'other'"):
        open_study(storage, "other")


def test_the_best_trial_is_an_overlay_the_training_loader_reads(tmp_path: Path) -> None:
    plan = _plan(tmp_path)
    params = {"loss": "bce", "optimizer.lr": 0.0031}
    trained = trial_config(plan, params)
    assert trained.loss.name == "bce"
    assert trained.optimizer.lr == 0.0031
    focal = trial_config(plan, {"loss": "focal", "focal.gamma": 1.25, "optimizer.lr": 0.001})
    assert focal.loss.gamma == 1.25
    configs = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, configs)
    best = TrialRecord(3, "COMPLETE", params, 0.71, {}, 0, None, 3, 1.0)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    create_study(plan, storage, "s")
    study = study_result(storage, "s")
    path = write_overlay(
        configs / "experiment" / "best.yaml", best_overlay(plan, best), study, best
    )
    assert path.read_text().startswith("# Best trial 3 of Optuna study 's' (val/auc = 0.71)")
    loaded = load_training_config(["experiment=best", f"data_dir={tmp_path}"], configs)
    assert config_to_dict(loaded) == config_to_dict(trained)


def test_an_unreachable_storage_is_one_message() -> None:
    with pytest.raises(HPOError, match=r"cannot open the Optuna storage '127.0.0.1:9/none'") as err:
        open_study("postgresql://postgres@127.0.0.1:9/none", "s")
    assert "\n" not in str(err.value)


def test_importing_the_search_leaves_optunas_logging_alone() -> None:
    code = (
        "import optuna; optuna.logging.set_verbosity(optuna.logging.DEBUG); "
        "import lossflow.comparison.optuna_study; "
        "print(optuna.logging.get_verbosity())"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert int(done.stdout.split()[-1]) == optuna.logging.DEBUG


def test_opening_a_study_turns_optunas_trial_logs_off(tmp_path: Path) -> None:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.INFO)
    try:
        create_study(_plan(tmp_path, n_trials=1), f"sqlite:///{tmp_path / 'optuna.db'}", "s")
        assert optuna.logging.get_verbosity() == optuna.logging.WARNING
    finally:
        optuna.logging.set_verbosity(before)
