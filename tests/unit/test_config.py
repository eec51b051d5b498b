"""The configuration reader: merging, overrides and errors that say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossflow.config import ConfigError, config_to_dict
from lossflow.config.training import load_training_config

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
    cfg = load_training_config([], config_dir)
    assert cfg.loss.name == "focal"
    assert cfg.data.task == "binary"
    assert cfg.trainer.max_epochs == 3
    assert cfg.trainer.batch_size == 1024  # schema default


def test_group_choice_replaces_the_whole_section(config_dir: Path) -> None:
    cfg = load_training_config(["loss=bce"], config_dir)
    assert config_to_dict(cfg)["loss"] == {"name": "bce", "reduction": "mean", "pos_weight": None}


def test_dotted_overrides_parse_yaml_values(config_dir: Path) -> None:
    cfg = load_training_config(
        ["loss.gamma=3", "trainer.max_epochs=5", "model.hidden=[8, 4]"], config_dir
    )
    assert cfg.loss.gamma == 3.0  # type: ignore[attr-defined]
    assert cfg.trainer.max_epochs == 5
    assert cfg.model.hidden == [8, 4]


def test_experiment_overlay_switches_groups_and_sets_keys(config_dir: Path) -> None:
    cfg = load_training_config(["experiment=strict"], config_dir)
    assert cfg.loss.name == "bce"
    assert cfg.trainer.batch_size == 64
    assert cfg.trainer.max_epochs == 3


def test_error_names_the_file_and_the_key(config_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_training_config(["loss=broken"], config_dir)
    message = str(err.value)
    assert "loss/broken.yaml" in message
    assert "unknown option 'gama' (did you mean 'gamma'?)" in message


def test_error_names_the_command_line_and_expected_type(config_dir: Path) -> None:
    with pytest.raises(ConfigError) as err:
        load_training_config(["trainer.max_epochs=many"], config_dir)
    message = str(err.value)
    assert "command line: trainer.max_epochs" in message
    assert "valid integer" in message
    assert "'many'" in message


def test_unknown_key_in_a_section_is_rejected(config_dir: Path) -> None:
    with pytest.raises(
        ConfigError,
        match=r"command line: trainer.max_epoch: unknown key \(did you mean 'max_epochs'\?\)",
    ):
        load_training_config(["trainer.max_epoch=3"], config_dir)


def test_loss_that_does_not_fit_the_task_is_rejected(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match="loss 'listnet' fits ranking tasks, not a binary task"):
        load_training_config(["loss=listnet"], config_dir)


def test_unknown_group_choice_lists_what_exists(config_dir: Path) -> None:
    with pytest.raises(ConfigError, match=r"no loss config named 'fokal'.*available: bce, broken"):
        load_training_config(["loss=fokal"], config_dir)


def test_malformed_override_and_missing_base(config_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must look like key=value"):
        load_training_config(["trainer.max_epochs"], config_dir)
    with pytest.raises(ConfigError, match=r"cannot set 'trainer\.max_epochs\.x'"):
        load_training_config(["trainer.max_epochs.x=1"], config_dir)
    with pytest.raises(ConfigError, match="no base config"):
        load_training_config([], tmp_path / "nowhere")


def test_project_defaults_load() -> None:
    cfg = load_training_config([], CONFIG_DIR)
    assert cfg.data.source == "flights"
    assert cfg.loss.name == "focal"


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        # values that parse and still cannot work: each named where it came from, before any data
        (["data.split.train_end=2013-02-30"], r"command line: 'data.split.train_end=2013-02-30'"),
        (["trainer.early_stopping.monitor=val/accuracy"], r"'val/accuracy' is not logged by a "),
        (["trainer.early_stopping.mode=min"], r"val/auc is better when higher; set mode: max"),
        (["optimizer.name=adamm"], r"unknown optimizer 'adamm' \(did you mean 'adam'\?\)"),
        (["scheduler.name=cosin"], r"unknown scheduler 'cosin' \(did you mean 'cosine'\?\)"),
        (["schedule.cron=every monday"], r"schedule.cron: 'every monday' is not a cron expression"),
        (["schedule.cron=61 * * * *"], r"schedule.cron: '61 \* \* \* \*' is not a valid cron"),
        (["schedule.timezone=Mars/Olympus"], r"unknown time zone 'Mars/Olympus'"),
        (["data_dir=/proc/lossflow"], r"command line: data_dir: /proc/lossflow is not writable"),
        (["loss=listnet"], r"loss: loss 'listnet' fits ranking tasks, not a binary task"),
        (["trainer.devices=2"], r"more than one training process needs trainer.strategy: ddp"),
        (["trainer.num_nodes=2"], r"trainer.num_nodes=2: more than one training process needs"),
        (
            ["evaluation.threshold=cost", "evaluation.fn_cost=2", "evaluation.fp_cost=1",
             "data.task=regression", "loss=bce"],
            r"loss 'bce' fits binary",
        ),
    ],
)  # fmt: skip
def test_values_that_cannot_work_are_refused_when_loaded(
    config_dir: Path, overrides: list[str], expected: str
) -> None:
    with pytest.raises(ConfigError, match=expected):
        load_training_config(overrides, config_dir)


def test_a_file_that_is_not_a_directory_cannot_be_the_data_dir(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(ConfigError, match=r"cannot be a directory: .*taken is a file"):
        load_training_config([f"data_dir={tmp_path / 'taken' / 'data'}"], CONFIG_DIR)


def test_an_impossible_date_in_a_file_names_the_file(config_dir: Path) -> None:
    _write(config_dir, "experiment/bad_date.yaml", "data:\n  split:\n    val_end: 2013-02-30\n")
    with pytest.raises(ConfigError, match=r"bad_date.yaml: not valid YAML: day is out of range"):
        load_training_config(["experiment=bad_date"], config_dir)


def test_tasks_without_a_pipeline_are_refused_naming_those_with_one(
    config_dir: Path, tmp_path: Path
) -> None:
    csv = tmp_path / "rank.csv"
    csv.write_text("q,x,rel\n1,0.5,1\n1,0.1,0\n")
    overrides = [
        "data.source=csv",
        f"data.path={csv}",
        "data.task=ranking",
        "data.columns={numeric: [x], categorical: [], target: rel, group: q}",
        "data.split={kind: random}",
        "data.augment={}",
        "loss=listnet",
        "trainer.early_stopping=null",
    ]
    assert load_training_config(overrides, config_dir).data.task == "ranking"
    multilabel = [*overrides[:2], "data.task=multilabel", "data.columns={numeric: [x], "
                  "categorical: [], target: rel}", *overrides[4:6], "loss=bce"]  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"runs binary, multiclass, regression, ranking tasks; 'multilabel'"
    ):
        load_training_config(multilabel, config_dir)


def test_a_data_file_that_does_not_exist_is_refused(tmp_path: Path) -> None:
    overrides = [
        "data.source=csv",
        f"data.path={tmp_path / 'nowhere.csv'}",
        "data.task=binary",
        "data.columns={numeric: [x], categorical: [], target: y}",
        "data.split={kind: random}",
        "data.augment={}",
    ]
    with pytest.raises(ConfigError, match=r"data.path: csv file .*nowhere.csv does not exist"):
        load_training_config(overrides, CONFIG_DIR)


def test_early_stopping_defaults_to_the_tasks_primary_metric() -> None:
    binary = load_training_config([], CONFIG_DIR).early_stopping()
    assert binary is not None
    assert (binary.monitor, binary.mode) == ("val/auc", "max")
    digits = load_training_config(["data=digits", "loss=ce"], CONFIG_DIR).early_stopping()
    assert digits is not None
    assert (digits.monitor, digits.mode) == ("val/accuracy", "max")
    minutes = load_training_config(["data.task=regression", "loss=quantile"], CONFIG_DIR)
    stopping = minutes.early_stopping()
    assert stopping is not None
    assert (stopping.monitor, stopping.mode) == ("val/pinball", "min")


def test_the_schedule_validator_agrees_with_prefect() -> None:
    from prefect.client.schemas.schedules import CronSchedule

    from lossflow.config.common import cron_expression

    for expression in ("0 3 * * 1", "*/15 * * * *", "0 0 1 1 *", "5 4 * * SUN", "0 22 * * 1-5"):
        assert cron_expression(expression) == expression
        CronSchedule(cron=expression)
    for expression in ("61 * * * *", "0 25 * * *", "* * * *", "every monday"):
        with pytest.raises(ValueError, match="cron"):
            cron_expression(expression)
        with pytest.raises(ValueError, match="cron"):
            CronSchedule(cron=expression)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["primary_metric=expected_cost"], "expected_cost needs fn_cost and fp_cost"),
        (["primary_metric=pinball"], "pinball needs quantile"),
        (["challengers=[champion]"], "cannot challenge itself"),
        (["primary_metric=auc"], "primary_metric"),
        (["alpha=1.5"], "alpha"),
        (["min_duration=soon"], "not a duration"),
        (["guardrail.latency_ms=3"], "did you mean 'guardrails'"),
    ],
)
def test_ab_configs_that_cannot_work_are_refused(overrides: list[str], message: str) -> None:
    from lossflow.config.ab import load_ab_config

    with pytest.raises(ConfigError, match=message):
        load_ab_config(overrides, CONFIG_DIR)


def test_the_ab_defaults_load() -> None:
    from lossflow.config.ab import load_ab_config

    cfg = load_ab_config([], CONFIG_DIR)
    assert (cfg.serving, cfg.champion, cfg.alpha, cfg.srm.alpha) == (
        "default",
        "champion",
        0.05,
        0.001,
    )
    assert cfg.guardrails.error_rate == 0.01
    assert (
        load_ab_config(["guardrails.positive_rate=null"], CONFIG_DIR).guardrails.positive_rate
        is None
    )
