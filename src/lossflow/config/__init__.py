"""Configuration: one loader (``lossflow.config.loader``) and one typed module per process.

- ``lossflow.config.training``: ``lossflow train`` and the ``training`` flow;
- ``lossflow.config.serving``: ``lossflow serve``;
- ``lossflow.config.compare``: ``lossflow compare`` and the ``compare_losses`` flow;
- ``lossflow.config.data``: the ``data`` section the training process reads;
- ``lossflow.config.common``: what they share (tracking, schedules, checked directories).

A new process adds a module with its models and a :class:`~lossflow.config.loader.ConfigKind`
(and a ``configs/<folder>/``), not a parser. Importing this package does not import torch,
kornia or scikit-learn.
"""

from lossflow.config.common import ScheduleConfig, TrackingConfig
from lossflow.config.data import AugmentConfig, ColumnSchema, DataConfig, SplitConfig
from lossflow.config.loader import DEFAULT_CONFIG_DIR, ConfigError, ConfigKind, load
from lossflow.config.serving import ModelSource, ServingConfig, load_serving_config
from lossflow.config.training import (
    EarlyStoppingConfig,
    ModelConfig,
    OptimizerConfig,
    SchedulerConfig,
    TrainerConfig,
    TrainingConfig,
    config_to_dict,
    load_training_config,
)

__all__ = [
    "DEFAULT_CONFIG_DIR",
    "AugmentConfig",
    "ColumnSchema",
    "ConfigError",
    "ConfigKind",
    "DataConfig",
    "EarlyStoppingConfig",
    "ModelConfig",
    "ModelSource",
    "OptimizerConfig",
    "ScheduleConfig",
    "SchedulerConfig",
    "ServingConfig",
    "SplitConfig",
    "TrackingConfig",
    "TrainerConfig",
    "TrainingConfig",
    "config_to_dict",
    "load",
    "load_serving_config",
    "load_training_config",
]
