"""The recipe of a registered model version: the resolved training configuration of its run.

The training flow logs every run's whole resolved configuration (``config.json``, with the data
file's absolute path); registering a version makes that run's configuration the version's
recipe. The version is the unit of the loop: the retrain flow starts from the champion's recipe
and changes only what the monitoring decision asks for (the loss, the data window, the seed);
``lossflow compare --version N`` compares losses on a version's own data and settings. Editing or
deleting files under ``configs/`` after a version was registered changes neither.

A recipe that no longer runs (its data file moved, a key this lossflow does not know) is one
message naming the version and what is wrong.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lossflow.config.loader import DEFAULT_CONFIG_DIR, load_from
from lossflow.config.training import TRAINING, TrainingConfig
from lossflow.errors import UserError

if TYPE_CHECKING:  # the MLflow adapter is imported by whoever fetches a recipe
    from lossflow.config.common import TrackingConfig
    from lossflow.tracking import Tracker

RECIPE_ARTIFACT: Final = "config.json"


class RecipeError(UserError):
    """A version has no usable recipe; the message names the version and what to do."""


@dataclass(frozen=True)
class Recipe:
    """A registered version's resolved training configuration.

    Attributes:
        model_name: the registered model.
        version: the version.
        run_id: the training run it was registered from.
        config: the configuration as the run logged it (``config.json``).
    """

    model_name: str
    version: str
    run_id: str
    config: dict[str, Any]

    @property
    def source(self) -> str:
        """How errors name it: ``lossflow-hotels v3's recipe (run 9f2...)``."""
        return f"{self.model_name} v{self.version}'s recipe (run {self.run_id})"

    @property
    def loss(self) -> dict[str, Any]:
        """The loss section of the recipe."""
        loss: dict[str, Any] = dict(self.config.get("loss") or {})
        return loss


def fetch_recipe(tracker: Tracker, model_name: str, version: str) -> Recipe:
    """The recipe of ``model_name`` version ``version`` from its run in ``tracker``'s store.

    Raises:
        RecipeError: the version's run logged no configuration.
        lossflow.tracking.RegistryError: no such version.
    """
    run_id = tracker.run_of_version(model_name, version)
    with tempfile.TemporaryDirectory(prefix="lossflow-recipe-") as scratch:
        path = tracker.download_run_artifact(run_id, RECIPE_ARTIFACT, Path(scratch))
        if path is None:
            raise RecipeError(
                f"{model_name} v{version} has no recipe: its run {run_id} logged no "
                f"{RECIPE_ARTIFACT} (it was not registered by lossflow's training flow); train "
                "a version with `lossflow train` to start the loop from"
            )
        config = json.loads(path.read_text())
    if not isinstance(config, dict):
        raise RecipeError(
            f"{model_name} v{version}: {RECIPE_ARTIFACT} of run {run_id} is not a mapping"
        )
    return Recipe(model_name, version, run_id, config)


def project_changes(
    project: str | None, data_dir: Path, tracking: TrackingConfig
) -> dict[str, Any]:
    """What a configuration built from a recipe takes from the project it runs in rather than
    from the recipe: the project's name, where data and runs live, the tracking store and
    names (one set of settings for every process)."""
    return {
        "project": project,
        "data_dir": str(data_dir),
        "tracking": tracking.model_dump(mode="json"),
    }


def recipe_config(
    recipe: Recipe,
    overrides: Sequence[str] = (),
    config_dir: Path = DEFAULT_CONFIG_DIR,
    *,
    changes: Mapping[str, Any] | None = None,
    changed_by: str = "changes",
) -> TrainingConfig:
    """The training configuration of ``recipe`` with ``changes`` (whole values: a loss spec, a
    pool) and then ``overrides`` (``loss=<file>``, dotted keys) applied.

    Raises:
        ConfigError: the result is not a valid configuration (its data file is gone, a key is
            unknown), naming the recipe, the key and what is wrong.
    """
    return load_from(TRAINING, recipe.config, recipe.source, overrides, config_dir,
                     changes, changed_by)  # fmt: skip
