"""lossflow's data layer: sources, validation, splits, preprocessing and augmentation.

``prepare.prepare_data`` calls, in order: ``sources.load_frame`` -> ``validation.validate_frame``
-> ``splits.split_frame`` -> ``preprocessing.Preprocessor.fit`` on the training split -> encode
every split -> ``augment.oversample`` the training split; ``augment.BatchAugment`` and
``augment.ImageAugment`` then run inside the training step. The section's config models live in
``lossflow.config.data``.

Import the submodules themselves: only ``augment`` and ``prepare`` import torch, and the service
imports ``preprocessing`` alone.
"""
