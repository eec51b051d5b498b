"""Real servers as processes on loopback for the production-topology tests: free ports, a
process group started and stopped like a container runtime does, PostgreSQL databases created
for a test session and dropped afterwards."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from lossflow.processes import spawn, stop_group

BIN = Path(sys.executable).parent
PG_HOST = os.environ.get("LOSSFLOW_TEST_POSTGRES_HOST", "127.0.0.1")
PG_PORT = os.environ.get("LOSSFLOW_TEST_POSTGRES_PORT", "5432")
PG_USER = os.environ.get("LOSSFLOW_TEST_POSTGRES_USER", "postgres")
STOP_TIMEOUT_S = 60.0


def pg_url(database: str, driver: str = "psycopg") -> str:
    return f"postgresql+{driver}://{PG_USER}@{PG_HOST}:{PG_PORT}/{database}"


def _pg_command(tool: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool, "-h", PG_HOST, "-p", PG_PORT, "-U", PG_USER, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@contextlib.contextmanager
def postgres_databases(*roles: str) -> Iterator[dict[str, str]]:
    """A fresh database per role (``mlflow``, ``prefect``...), dropped on leaving.

    A PostgreSQL that cannot be reached fails the test under ``CI=true`` and skips it elsewhere.
    """
    probe = _pg_command("psql", "-d", "postgres", "-Atc", "SELECT 1")
    if probe.returncode != 0:
        message = f"PostgreSQL at {PG_HOST}:{PG_PORT} is unreachable: {probe.stderr.strip()}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true requires it)")
        pytest.skip(message + "; start it or set LOSSFLOW_TEST_POSTGRES_HOST")
    prefix = f"lossflow_topology_{uuid.uuid4().hex[:10]}"
    names = {role: f"{prefix}_{role}" for role in roles}
    created: list[str] = []
    try:
        for name in names.values():
            proc = _pg_command("createdb", name)
            if proc.returncode != 0:
                raise RuntimeError(f"createdb {name} failed: {proc.stderr}")
            created.append(name)
        yield names
    finally:
        for name in created:
            _pg_command("dropdb", "--force", "--if-exists", name)


class Server:
    """A server process in its own process group, ready once ``ready`` returns true."""

    def __init__(
        self,
        label: str,
        command: Sequence[str],
        env: Mapping[str, str],
        log: Path,
        *,
        cwd: Path | None = None,
    ) -> None:
        self.label = label
        self.log = log
        self._out = log.open("wb")
        self.process = spawn(command, stdout=self._out, env=env, cwd=cwd)

    def output(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]

    def wait_until(self, ready: Callable[[], bool], timeout: float, what: str) -> None:
        """Poll ``ready`` until it holds; fail with the server's output if the process exits
        or ``timeout`` passes first."""
        deadline = time.monotonic() + timeout
        delay = 0.1
        while not ready():
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.label} exited ({self.process.returncode}) before {what}:\n"
                    + self.output()
                )
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"{self.label}: no {what} after {timeout:.0f} s:\n{self.output()}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 1.0)

    def wait_http(self, url: str, timeout: float = 180.0) -> None:
        """Until ``GET url`` answers 200."""

        def answers() -> bool:
            try:
                return httpx.get(url, timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        self.wait_until(answers, timeout, f"200 from {url}")

    def stop(self) -> int:
        """SIGTERM the group, wait, SIGKILL what is left past the timeout."""
        stop_group(self.process, STOP_TIMEOUT_S)
        self._out.close()
        return self.process.returncode


@contextlib.contextmanager
def running(
    label: str,
    command: Sequence[str],
    env: Mapping[str, str],
    log: Path,
    *,
    ready_url: str | None = None,
    cwd: Path | None = None,
    timeout: float = 180.0,
) -> Iterator[Server]:
    """Start a server, wait for ``ready_url`` (when given), stop it on leaving."""
    server = Server(label, command, env, log, cwd=cwd)
    try:
        if ready_url is not None:
            server.wait_http(ready_url, timeout)
        yield server
    finally:
        server.stop()


def fuzz(schema: str, base_url: str | None, cwd: Path, seconds: int = 25) -> None:
    """Fuzz a live API with schemathesis from ``schema`` (a URL, or a file with ``base_url``):
    no 5xx, and status codes, content types and bodies as the schema says."""
    command = [str(BIN / "schemathesis"), "run", schema]
    if base_url is not None:
        command += ["--url", base_url]
    checks = (
        "not_a_server_error,status_code_conformance,content_type_conformance,"
        "response_schema_conformance"
    )
    command += ["--checks", checks, "--max-time", str(seconds), "--workers", "2", "--seed", "1"]
    result = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=cwd,
        env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        check=False,
    )
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
