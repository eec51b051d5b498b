"""HPO scale-out: two worker processes (``lossflow hpo-worker``) share one Optuna study on the
local PostgreSQL and together run exactly the requested trials, none twice.

The workers start behind a barrier: the test holds the study's ``trials`` table locked until
both processes wait on it, so neither can take a ticket before the other is ready (without it,
on a loaded machine one worker could run every trial before the other had imported torch)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from lossflow.comparison.optuna_study import create_study, study_result
from lossflow.comparison.search import study_plan
from lossflow.config.compare import load_compare_config
from lossflow.usecases.compare import plan_comparison

ROOT = Path(__file__).resolve().parents[2]
LOSSFLOW = Path(sys.executable).parent / "lossflow"
ADMIN_URL = os.environ.get(
    "LOSSFLOW_TEST_POSTGRES_ADMIN", "postgresql://postgres@127.0.0.1:5432/postgres"
)
TRIALS = 8

pytestmark = pytest.mark.slow


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh database on the test PostgreSQL server, dropped afterwards."""
    name = f"lossflow_hpo_{uuid.uuid4().hex[:12]}"
    try:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.OperationalError as exc:
        message = f"PostgreSQL at {ADMIN_URL} is unreachable: {exc}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message + "; start it or set LOSSFLOW_TEST_POSTGRES_ADMIN")
    try:
        yield ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def test_two_workers_share_one_study_without_duplicates(database: str, tmp_path: Path) -> None:
    settings = load_compare_config(
        [
            "compare=flights_hpo",
            f"data_dir={tmp_path / 'data'}",
            "data.subsample=1500",
            "trainer.max_epochs=2",
            f"hpo.n_trials={TRIALS}",
            f"hpo.storage={database}",
            "hpo.pruner=none",
        ],
        ROOT / "configs",
    )
    plan = plan_comparison(settings, ROOT / "configs")
    assert create_study(study_plan(plan), database, "shared") == TRIALS
    env = {**os.environ, "LOSSFLOW_LOG_FILE": str(tmp_path / "lossflow.log")}
    barrier = psycopg.connect(database)
    barrier.execute("LOCK TABLE trials IN ACCESS EXCLUSIVE MODE")
    workers = [
        subprocess.Popen(
            [
                str(LOSSFLOW),
                "hpo-worker",
                "shared",
                "--storage",
                database,
                "--work-dir",
                str(tmp_path / f"worker-{i}"),
                "--worker",
                str(i),
            ],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in (1, 2)
    ]
    try:
        _wait_until_blocked(database, workers)
    finally:
        barrier.rollback()  # both wait: let them go
        barrier.close()
    ran = []
    for worker in workers:
        out, err = worker.communicate(timeout=600)
        assert worker.returncode == 0, err[-3000:]
        ran.append(int(out.strip().splitlines()[-1].split()[1]))
    result = study_result(database, "shared")
    finished = result.finished()
    assert sum(ran) == len(finished) == TRIALS
    assert sorted(t.ticket for t in finished) == list(range(TRIALS))  # each ticket ran once
    assert len({t.number for t in result.trials}) == len(result.trials)
    assert {t.worker for t in finished} == {1, 2}  # both processes took part
    extra = [t for t in result.trials if t.ticket is None]
    assert all(t.state == "FAIL" for t in extra)  # a late ask after the last ticket trains nothing


def _wait_until_blocked(database: str, workers: list[subprocess.Popen[str]]) -> None:
    """Wait until every worker's connection waits on a lock in ``database``."""
    name = database.rsplit("/", 1)[1]
    query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'"
    deadline = time.monotonic() + 300
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        while True:
            row = conn.execute(query, (name,)).fetchone()
            if row is not None and row[0] >= len(workers):
                return
            for worker in workers:
                if worker.poll() is not None:
                    _, err = worker.communicate()
                    pytest.fail(f"a worker exited ({worker.returncode}) before the barrier:\n"
                                f"{err[-3000:]}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail(f"the workers did not reach the study within 300 s ({row} waiting)")
            time.sleep(0.2)
