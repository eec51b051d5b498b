"""A serving replica needs only read access to the registry (issue 18): an MLflow store on
PostgreSQL, populated by a writer, served through a database role that may only SELECT. About
5 s beside the other tests that share the built registry (the session's two small models)."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from lossflow.config import load_serving_config
from lossflow.contract import CHAMPION
from lossflow.onnx_runner import OnnxRunner
from lossflow.serving.app import create_app
from lossflow.serving.predictor import OnnxPredictor
from lossflow.tracking import Runs, WritableModelRegistry

from .servers import PG_HOST, PG_PORT, pg_url, postgres_databases
from .serving_models import CONFIG_DIR, Registry

with warnings.catch_warnings():
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

# The version comes from another experiment than the service's ``tracking.experiment`` (a
# retrain's, another team's): the service's experiment is not in this store.
WRITER_EXPERIMENT = "lossflow-flights-registrar"


@dataclass(frozen=True)
class Store:
    """An MLflow store on PostgreSQL: its owner's URL and a read-only role's."""

    writer: str
    reader: str
    records: list[dict[str, Any]]


def _register(writer: str, built: Registry) -> None:
    """The champion of the built registry as version 1, aliased ``champion``, by the owner."""
    predictor = OnnxPredictor.from_path(built.champion)
    example = predictor.preprocessor.model_inputs(predictor.encode(built.records[:5]))
    output = OnnxRunner(built.champion).run(example)
    runs, registry = Runs(writer, WRITER_EXPERIMENT), WritableModelRegistry(writer)
    with runs.start_run("register", {}) as run_id:
        logged = runs.log_onnx_model(run_id, built.champion, example, output)
    registry.set_alias(built.model_name, CHAMPION, registry.register(built.model_name, logged))


def _admin(database: str) -> sa.Engine:
    return sa.create_engine(pg_url(database), isolation_level="AUTOCOMMIT")


@pytest.fixture(scope="module")
def store(built_registry: Registry, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Store]:
    root = tmp_path_factory.mktemp("read-only")
    role = f"lossflow_reader_{uuid.uuid4().hex[:10]}"
    try:
        with postgres_databases("mlflow") as databases:
            database = databases["mlflow"]
            writer = pg_url(database)
            with pytest.MonkeyPatch.context() as mp:
                mp.chdir(root)  # a database store keeps its artifacts under ./mlruns
                _register(writer, built_registry)
            admin = _admin(database)
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE ROLE "{role}" LOGIN'))
                conn.execute(sa.text(f'GRANT CONNECT ON DATABASE "{database}" TO "{role}"'))
                conn.execute(sa.text("REVOKE CREATE ON SCHEMA public FROM PUBLIC"))
                conn.execute(sa.text(f'GRANT USAGE ON SCHEMA public TO "{role}"'))
                conn.execute(sa.text(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"'))
            admin.dispose()
            reader = f"postgresql+psycopg://{role}@{PG_HOST}:{PG_PORT}/{database}"
            yield Store(writer, reader, built_registry.records[:20])
    finally:
        admin = _admin("postgres")
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP ROLE IF EXISTS "{role}"'))
        admin.dispose()


def _experiments(store: Store) -> list[str]:
    engine = sa.create_engine(store.writer)
    try:
        with engine.connect() as conn:
            return sorted(conn.execute(sa.text("SELECT name FROM experiments")).scalars())
    finally:
        engine.dispose()


def test_the_reader_role_cannot_write(store: Store) -> None:
    engine = sa.create_engine(store.reader)
    try:
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT count(*) FROM model_versions")).scalar() == 1
            with pytest.raises(sa.exc.ProgrammingError, match="permission denied"):
                conn.execute(sa.text("INSERT INTO experiments (name) VALUES ('x')"))
    finally:
        engine.dispose()


def test_a_replica_serves_the_champion_with_read_only_registry_credentials(
    store: Store, tmp_path: Path
) -> None:
    before = _experiments(store)
    cfg = load_serving_config(
        [
            f"data_dir={tmp_path / 'replica'}",
            f"tracking.tracking_uri={store.reader}",
            f"log.url=sqlite:///{tmp_path / 'predictions.db'}",
            "watch_registry_s=null",
        ],
        CONFIG_DIR,
    )
    assert cfg.tracking.experiment not in before
    with TestClient(create_app(cfg)) as client:
        info = client.get("/info").json()
        assert info["variants"]["champion"]["model_version"] == "1"
        response = client.post("/predict", json={"unit_id": "u", "records": store.records})
        assert response.status_code == 200, response.text
        assert len(response.json()["predictions"]) == len(store.records)
    assert _experiments(store) == before, "the replica wrote nothing to the tracking store"
