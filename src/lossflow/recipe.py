"""The recipe of a registered model version: the resolved training configuration of its run.

The training flow logs every run's whole resolved configuration (``config.json``, with the data
file's absolute path); registering a version makes that run's configuration the version's
recipe. The version is the unit of the loop: the retrain flow starts from the champion's recipe
and changes only what the monitoring decision asks for (the loss, the data window, the seed);
``lossflow compare --version N`` compares losses on a version's own data and settings. Editing or
deleting files under ``configs/`` after a version was registered changes neither.

A recipe that no longer runs (its data file moved, a key this lossflow does not know) is one
message naming the version and what is wrong. Fetching a recipe from the registry and
resolving it with overrides are use cases (:mod:`lossflow.usecases.recipe`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lossflow.errors import UserError

if TYPE_CHECKING:
    from lossflow.config.common import TrackingConfig

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
