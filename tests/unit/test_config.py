"""The configuration reader: merging, overrides and errors that say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossflow.config import ConfigError, config_to_dict, load_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _write(root: Path, name: str, text: str) -> None:
    path = root / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    _write(
        tmp_path, "base.yaml", "defaults: {data: flights, loss: focal}\ntrainer:\n  max_epochs: 3\n"
    )
    _write(
        tmp_path,
        "data/flights.yaml",
        "source: flights\nsplit: {kind: time, train_end: '2013-07-01', val_end: '2013-08-01', "
        "test_end: '2013-09-01'}\n",
    )
    _write(tmp_path, "loss/focal.yaml", "name: focal\ngamma: 2.0\n")
    _write(tmp_path, "loss/bce.yaml", "name: bce\n")
    _write(tmp_path, "loss/broken.yaml", "name: focal\ngama: 2.0\n")
    _write(tmp_path, "loss/listnet.yaml", "name: listnet\n")
    _write(tmp_path, "experiment/strict.yaml", "defaults: {loss: bce}\ntrainer: {batch_size: 64}\n")
    return tmp_path


def test_base_groups_and_defaults_resolve(config_dir: Path) -> None:
    cfg = load_config([], config_dir)
    assert cfg.loss.name == "focal"
    assert cfg.data.task == "binary"
    assert cfg.trainer.max_epochs == 3
    assert cfg.trainer.batch_size == 1024  # schema default


def test_group_choice_replaces_the_whole_section(config_dir: Path) -> None:
    cfg = load_config(["loss=bce"], config_dir)
    assert config_to_dict(cfg)["loss"] == {"name": "bce", "reduction": "mean", "pos_weight": None}


def test_dotted_overrides_parse_yaml_values(config_dir: Path) -> None:
    cfg = load_config(["loss.gamma=3", "trainer.max_epochs=5", "model.hidden=[8, 4]"], config_dir)
    assert cfg.loss.gamma == 3.0  # type: ignore[attr-defined]
    assert cfg.trainer.max_epochs == 5
    assert cfg.model.hidden == [8, 4]


def test_experiment_overlay_switches_groups_and_sets_keys(config_dir: Path) -> None:
    cfg = load_config(["experiment=strict"], config_dir)
    assert cfg.loss.name == "bce"
    assert cfg.trainer.batch_size == 64
    assert cfg.trainer.max_epochs == 3


def test_error_names_the_file_and_the_key(config_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["loss=broken"], config_dir)
    message = str(err.value)
    assert "loss/broken.yaml" in message
    assert "unknown option 'gama' (did you mean 'gamma'?)" in message


def test_error_names_the_command_line_and_expected_type(config_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_config(["trainer.max_epochs=many"], config_dir)
    message = str(err.value)
    assert "command line: trainer.max_epochs" in message
    assert "valid integer" in message
    assert "'many'" in message


def test_unknown_key_in_a_section_is_rejected(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"command line: trainer.max_epoch: Extra inputs"):
        load_config(["trainer.max_epoch=3"], config_dir)


def test_loss_that_does_not_fit_the_task_is_rejected(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match="loss 'listnet' fits ranking tasks, not a binary task"):
        load_config(["loss=listnet"], config_dir)


def test_unknown_group_choice_lists_what_exists(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"no loss config named 'fokal'.*available: bce, broken"):
        load_config(["loss=fokal"], config_dir)


def test_malformed_override_and_missing_base(config_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_config(["trainer.max_epochs"], config_dir)
    with pytest.raises(ConfigError, match=r"cannot set 'trainer\.max_epochs\.x'"):
        load_config(["trainer.max_epochs.x=1"], config_dir)
    with pytest.raises(ConfigError, match="no base config"):
        load_config([], tmp_path / "nowhere")


def test_project_defaults_load() -> None:
    cfg = load_config([], CONFIG_DIR)
    assert cfg.data.source == "flights"
    assert cfg.loss.name == "focal"
