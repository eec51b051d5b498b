"""lossflow: a training pipeline in which the loss function is a first-class production decision."""

__version__ = "0.1.0"
