"""Projects: one model's settings that every process reads (``configs/project/<name>.yaml``),
and the loader that starts from a resolved configuration (a registered version's recipe)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from lossflow.cli import app
from lossflow.config import ConfigError, config_to_dict
from lossflow.config.ab import load_ab_config
from lossflow.config.compare import load_compare_config
from lossflow.config.loader import load_from
from lossflow.config.monitoring import load_monitoring_config
from lossflow.config.retrain import load_retrain_config
from lossflow.config.serving import load_serving_config
from lossflow.config.training import TRAINING, load_training_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
LOADERS = (load_serving_config, load_monitoring_config, load_ab_config, load_retrain_config)


@pytest.fixture
def configs(tmp_path: Path) -> Path:
    copy = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, copy)
    (copy / "project" / "team.yaml").write_text(
        "data_dir: data/team\n"
        "tracking:\n  registered_model: team-model\n  experiment: team\n"
        "  experiments: {monitoring: team-watch}\n"
        "training:\n  defaults: {data: flights, loss: bce}\n  trainer: {max_epochs: 9}\n"
        "  data: {task: binary, subsample: 1234}\n"
        "serving:\n  port: 8123\n"
        "monitoring:\n  decision: {min_rows: 77}\n"
    )
    return copy


def test_the_default_project_is_flights_and_every_process_reads_it() -> None:
    training = load_training_config([], CONFIG_DIR)
    assert training.project == "flights"
    assert training.tracking.registered_model == "lossflow-flights"
    for load in LOADERS:
        cfg = load([], CONFIG_DIR)
        assert cfg.project == "flights"
        assert cfg.data_dir == training.data_dir == Path("data")
        assert cfg.tracking == training.tracking
    assert training.tracking.experiment_of("monitoring") == "lossflow-monitoring"


def test_a_project_sets_the_stores_of_every_process_and_what_differs_per_process(
    configs: Path,
) -> None:
    training = load_training_config(["project=team"], configs)
    assert training.data_dir == Path("data/team")
    assert (training.loss.name, training.trainer.max_epochs) == ("bce", 9)
    assert training.data.subsample == 1234, "the project's changes to its chosen data file"
    assert training.data.source == "flights"
    assert load_serving_config(["project=team"], configs).port == 8123
    monitoring = load_monitoring_config(["project=team"], configs)
    assert monitoring.decision.min_rows == 77
    assert monitoring.tracking.experiment_of("monitoring") == "team-watch"
    assert monitoring.tracking.experiment_of("retrain") == "team-model-retrain"
    for load in (*LOADERS, load_compare_config):
        cfg = load(["project=team"], configs)
        assert (cfg.project, cfg.tracking.registered_model) == ("team", "team-model")
        assert cfg.data_dir == Path("data/team")
    # A command-line key still wins for that one command.
    assert load_serving_config(["project=team", "port=9000"], configs).port == 9000


def test_an_overlay_names_its_project_and_cannot_move_a_project_s_settings(
    configs: Path,
) -> None:
    digits = load_training_config(["experiment=digits_cnn"], configs)
    assert digits.project == "digits"
    assert digits.tracking.registered_model == "lossflow-digits"
    with pytest.raises(ConfigError, match=r"digits_cnn.yaml belongs to project 'digits' but "
                       r"project 'team' was chosen"):  # fmt: skip
        load_training_config(["project=team", "experiment=digits_cnn"], configs)
    (configs / "experiment" / "moves.yaml").write_text("tracking: {registered_model: other}\n")
    with pytest.raises(ConfigError, match=r"moves.yaml: tracking: these are project settings"):
        load_training_config(["experiment=moves"], configs)
    (configs / "project" / "bad.yaml").write_text("data_dir: x\nservng: {port: 1}\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: servng: a project file holds data_dir"):
        load_serving_config(["project=bad"], configs)
    with pytest.raises(ConfigError, match=r"no project config named 'nowhere'.*available: .*team"):
        load_monitoring_config(["project=nowhere"], configs)


def test_the_cli_gives_the_project_to_every_command(
    configs: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(configs.parent)
    result = CliRunner().invoke(
        app, ["--project", "team", "ab", "status", "--config-dir", str(configs)]
    )
    # No log has been written for team-model: the message names its data directory.
    assert result.exit_code == 2, result.output
    assert "data/team/predictions.db" in result.output
    env = CliRunner().invoke(
        app, ["dead-letters", "--config-dir", str(configs)], env={"LOSSFLOW_PROJECT": "team"}
    )
    assert env.exit_code == 0, env.output
    assert "prediction dead letters (0)" in env.output
    assert (configs.parent / "data" / "team" / "predictions.db").is_file()


def test_a_recipe_takes_whole_changes_group_files_and_keys_and_names_itself(
    configs: Path,
) -> None:
    recipe = config_to_dict(load_training_config(["project=team"], configs))
    cfg = load_from(TRAINING, recipe, "team-model v3's recipe", ["trainer.max_epochs=2"],
                    configs, changes={"loss": {"name": "focal", "gamma": 1.0}},
                    changed_by="retrain candidate focal")  # fmt: skip
    assert (cfg.loss.name, cfg.trainer.max_epochs, cfg.data.subsample) == ("focal", 2, 1234)
    assert load_from(TRAINING, recipe, "r", ["loss=bce"], configs).loss.name == "bce"
    with pytest.raises(ConfigError, match=r"retrain candidate focal: loss.gamma"):
        load_from(TRAINING, recipe, "r", [], configs, changes={"loss": {"name": "focal",
                  "gamma": "steep"}}, changed_by="retrain candidate focal")  # fmt: skip
    with pytest.raises(ConfigError, match=r"experiment= cannot apply to team-model v3's recipe"):
        load_from(TRAINING, recipe, "team-model v3's recipe", ["experiment=flights_cost"], configs)
    moved = {**recipe, "data": {**recipe["data"], "source": "csv", "task": "binary",
             "path": "/nowhere/rates.csv", "columns": {"numeric": ["a"], "categorical": [],
             "target": "y", "time": "t"}}}  # fmt: skip
    with pytest.raises(ConfigError, match=r"v3's recipe: data.path: csv file /nowhere/rates.csv"):
        load_from(TRAINING, moved, "team-model v3's recipe", [], configs)
