"""Fixtures shared by the integration modules."""

from __future__ import annotations

import pytest

from .serving_models import Registry, build_registry


@pytest.fixture(scope="session")
def built_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """focal v1 (champion) and bce v2 (challenger), trained once per session; copy before use
    (``copy_registry``)."""
    return build_registry(tmp_path_factory.mktemp("registry"))
