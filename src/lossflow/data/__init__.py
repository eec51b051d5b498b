"""lossflow's data layer: sources, validation, splits, preprocessing and augmentation.

The training flow calls, in order: ``load_frame`` -> ``validate_frame`` -> ``split_frame`` ->
``Preprocessor.fit`` on the training split -> ``encode`` every split -> ``oversample`` the
training split; ``BatchAugment``/``ImageAugment`` then run inside the training step.
"""

from lossflow.data.augment import (
    AugmentConfig,
    AugmentedBatch,
    BatchAugment,
    ImageAugment,
    ImageAugmentConfig,
    oversample,
)
from lossflow.data.preprocessing import EncodedFeatures, Preprocessor, Standardize
from lossflow.data.schema import ColumnSchema, DataConfig, SplitConfig
from lossflow.data.sources import (
    digits_columns,
    flights_columns,
    load_digits_frame,
    load_flights,
    load_frame,
    resolve_columns,
)
from lossflow.data.splits import SplitError, Splits, split_frame
from lossflow.data.validation import DataValidationError, validate_frame

__all__ = [
    "AugmentConfig",
    "AugmentedBatch",
    "BatchAugment",
    "ColumnSchema",
    "DataConfig",
    "DataValidationError",
    "EncodedFeatures",
    "ImageAugment",
    "ImageAugmentConfig",
    "Preprocessor",
    "SplitConfig",
    "SplitError",
    "Splits",
    "Standardize",
    "digits_columns",
    "flights_columns",
    "load_digits_frame",
    "load_flights",
    "load_frame",
    "oversample",
    "resolve_columns",
    "split_frame",
    "validate_frame",
]
