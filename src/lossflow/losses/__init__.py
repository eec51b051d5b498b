"""lossflow's loss library: functional + ``nn.Module`` pairs chosen by name from config.

``build_loss({"name": "focal", "gamma": 2.0})`` returns a module; ``loss_id`` gives a stable short
id of a loss decision; ``available_losses()`` is the catalogue ``lossflow losses`` prints;
``target_checks()`` turns on the debug-only per-call target checks (off by default: a loss's
forward never reads data back to the host; data is validated where it is prepared).

Importing this package does not import torch: the specs, ids and the catalogue are torch-free,
and the implementations (``lossflow.losses.classification``, ``.regression``, ``.ranking``,
``.composite``, ``.regularizers``) are imported when a spec is first parsed or built.
"""

from lossflow.losses.options import REGULARIZERS, Reduction, target_checks
from lossflow.losses.spec import (
    LOSS_SPECS,
    TASK_TYPES,
    LossConfigError,
    LossInfo,
    LossSpec,
    LossSpecBase,
    RegularizerSpec,
    TaskType,
    available_losses,
    build_loss,
    build_regularizer,
    check_task,
    loss_id,
    parse_loss_spec,
    parse_regularizer_spec,
)

__all__ = [
    "LOSS_SPECS",
    "REGULARIZERS",
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
    "loss_id",
    "parse_loss_spec",
    "parse_regularizer_spec",
    "target_checks",
]
