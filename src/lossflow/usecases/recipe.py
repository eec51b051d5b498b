"""A registered version's recipe fetched from the registry, and a training configuration
resolved from it with changes and overrides (the config loader reads the group files they
name). The recipe itself is :class:`lossflow.recipe.Recipe`."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lossflow.config.loader import DEFAULT_CONFIG_DIR, load_from
from lossflow.config.training import TRAINING, TrainingConfig
from lossflow.recipe import RECIPE_ARTIFACT, Recipe, RecipeError

if TYPE_CHECKING:  # the MLflow adapter is imported by whoever opens the registry
    from lossflow.tracking import ModelRegistry


def fetch_recipe(registry: ModelRegistry, model_name: str, version: str) -> Recipe:
    """The recipe of ``model_name`` version ``version`` from its run in ``registry``'s store.

    Raises:
        RecipeError: the version's run logged no configuration.
        lossflow.tracking.RegistryError: no such version.
    """
    run_id = registry.run_of_version(model_name, version)
    with tempfile.TemporaryDirectory(prefix="lossflow-recipe-") as scratch:
        path = registry.download_run_artifact(run_id, RECIPE_ARTIFACT, Path(scratch))
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
