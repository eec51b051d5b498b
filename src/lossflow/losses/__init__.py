"""lossflow's loss library: functional + ``nn.Module`` pairs chosen by name from config.

``build_loss({"name": "focal", "gamma": 2.0})`` returns a module; ``loss_id`` gives a stable short
id of a loss decision; ``available_losses()`` is the catalogue ``lossflow losses`` prints.
"""

from lossflow.losses import classification, composite, ranking, regression
from lossflow.losses._base import Reduction
from lossflow.losses.regularizers import (
    RegularizerSpec,
    build_regularizer,
    parse_regularizer_spec,
)
from lossflow.losses.spec import (
    LOSS_SPECS,
    TASK_TYPES,
    LossConfigError,
    LossInfo,
    LossSpec,
    LossSpecBase,
    TaskType,
    available_losses,
    build_loss,
    check_task,
    loss_id,
    parse_loss_spec,
)

__all__ = [
    "LOSS_SPECS",
    "TASK_TYPES",
    "LossConfigError",
    "LossInfo",
    "LossSpec",
    "LossSpecBase",
    "Reduction",
    "RegularizerSpec",
    "TaskType",
    "available_losses",
    "build_loss",
    "build_regularizer",
    "check_task",
    "classification",
    "composite",
    "loss_id",
    "parse_loss_spec",
    "parse_regularizer_spec",
    "ranking",
    "regression",
]
