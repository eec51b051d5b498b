"""Every experiment lossflow uses records MLflow's kind of a model-training experiment
(``mlflow.experimentKind``), on a real sqlite-backed MLflow store in tmp_path: when lossflow
creates it, when lossflow opens one that lacks it, and never over a kind someone chose."""

from __future__ import annotations

from pathlib import Path
from typing import Any, get_args

import pytest

from lossflow.config.common import ExperimentNames, Process, TrackingConfig
from lossflow.tracking import (
    EXPERIMENT_KIND_TAG,
    TRAINING_KIND,
    Runs,
    default_tracking_uri,
    open_runs,
    project_experiments,
)

TRACKING = TrackingConfig(
    experiment="kind-training",
    registered_model="kind-model",
    experiments=ExperimentNames(rehearsal="kind-demo"),
)


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One store per module: creating an MLflow sqlite DB runs its migrations (seconds)."""
    return tmp_path_factory.mktemp("kind") / "data"


def _kind(runs: Runs) -> str | None:
    tags: dict[str, str] = runs.client.get_experiment(runs.experiment_id).tags
    return tags.get(EXPERIMENT_KIND_TAG)


def _count_tag_writes(runs: Runs, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Any, ...]]:
    """Record every experiment-tag write of any client of the store (from now on)."""
    writes: list[tuple[Any, ...]] = []
    client_type = type(runs.client)
    original = client_type.set_experiment_tag

    def spy(self: Any, *args: Any, **kwargs: Any) -> None:
        writes.append(args)
        original(self, *args, **kwargs)

    monkeypatch.setattr(client_type, "set_experiment_tag", spy)
    return writes


def test_each_process_s_experiment_is_created_of_the_training_kind(data_dir: Path) -> None:
    processes = ["training", *get_args(Process)]
    opened = {process: open_runs(TRACKING, data_dir, process) for process in processes}
    assert {process: runs.experiment for process, runs in opened.items()} == {
        "training": "kind-training",
        "monitoring": "kind-model-monitoring",
        "retrain": "kind-model-retrain",
        "ab": "kind-model-ab",
        "compare": "kind-model-compare",
        "rehearsal": "kind-demo",
    }
    assert {process: _kind(runs) for process, runs in opened.items()} == dict.fromkeys(
        processes, TRAINING_KIND
    )


def test_an_experiment_without_a_kind_gets_it_once_and_a_chosen_kind_stays(
    data_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uri = default_tracking_uri(data_dir)
    older, chosen = Runs(uri, "made-before-kinds"), Runs(uri, "chosen-kind")
    older.client.delete_experiment_tag(older.experiment_id, EXPERIMENT_KIND_TAG)
    chosen.client.set_experiment_tag(chosen.experiment_id, EXPERIMENT_KIND_TAG, "finetuning")
    assert _kind(older) is None
    writes = _count_tag_writes(older, monkeypatch)

    assert _kind(Runs(uri, "made-before-kinds")) == TRAINING_KIND
    assert writes == [(older.experiment_id, EXPERIMENT_KIND_TAG, TRAINING_KIND)]
    # Opened again (each run, each process), nothing more is written.
    Runs(uri, "made-before-kinds")
    assert _kind(Runs(uri, "chosen-kind")) == "finetuning"
    assert len(writes) == 1


def test_the_ui_s_lookup_marks_the_project_s_experiments_and_creates_none(
    data_dir: Path, tmp_path: Path
) -> None:
    uri = default_tracking_uri(data_dir)
    project = TrackingConfig(
        experiment="lookup-training",
        registered_model="lookup",
        experiments=ExperimentNames(ab="chosen-kind"),
    )
    training = Runs(uri, "lookup-training")
    monitoring = Runs(uri, "lookup-monitoring")
    training.client.delete_experiment_tag(training.experiment_id, EXPERIMENT_KIND_TAG)
    monitoring.client.delete_experiment_tag(monitoring.experiment_id, EXPERIMENT_KIND_TAG)
    chosen = Runs(uri, "chosen-kind")
    chosen.client.set_experiment_tag(chosen.experiment_id, EXPERIMENT_KIND_TAG, "finetuning")

    found = project_experiments(project, data_dir)

    assert found == {
        "lookup-training": training.experiment_id,
        "lookup-monitoring": monitoring.experiment_id,
        "chosen-kind": chosen.experiment_id,
    }
    assert (_kind(training), _kind(monitoring), _kind(chosen)) == (
        TRAINING_KIND,
        TRAINING_KIND,
        "finetuning",
    )
    assert training.client.get_experiment_by_name("lookup-retrain") is None
    absent = tmp_path / "no-store"
    assert project_experiments(project, absent) == {}
    assert not absent.exists()
