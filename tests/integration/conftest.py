"""Fixtures shared by the integration modules."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from .serving_models import PG_URL, Registry, build_registry


@pytest.fixture(scope="session")
def built_registry(tmp_path_factory: pytest.TempPathFactory) -> Registry:
    """focal v1 (champion) and bce v2 (challenger), trained once per session; copy before use
    (``copy_registry``)."""
    return build_registry(tmp_path_factory.mktemp("registry"))


@pytest.fixture
def pg_schema() -> Iterator[str]:
    """A fresh schema name on the machine's PostgreSQL (``PG_URL``), dropped afterwards; the
    test skips when no PostgreSQL answers (and fails under ``CI=true``, where one must)."""
    schema = f"lossflow_test_{uuid.uuid4().hex[:12]}"
    engine = sa.create_engine(PG_URL.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect():
            pass
    except sa.exc.OperationalError as err:
        engine.dispose()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL at {PG_URL} is unreachable (CI=true requires it): {err}")
        pytest.skip(f"PostgreSQL at {PG_URL} is unreachable: {err}")
    try:
        yield schema
    finally:
        with engine.begin() as conn:
            conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        engine.dispose()
