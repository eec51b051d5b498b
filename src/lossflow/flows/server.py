"""A self-hosted Prefect server on loopback, for one machine: ``prefect server start`` as a child
process with its database under the data directory, so schedules, event triggers and the
history of runs survive a restart of it (or of the machine).

Prefect's temporary in-process server, which ``lossflow train`` uses, runs no scheduler: cron
schedules need a real server. ``lossflow schedule`` and ``lossflow demo`` start this one when
``PREFECT_API_URL`` names none.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from lossflow.errors import UserError
from lossflow.processes import spawn, stop_group
from lossflow.telemetry import TELEMETRY_OFF

STARTUP_TIMEOUT_S = 180.0


class PrefectServerError(UserError):
    """The Prefect server did not start; the message holds the end of its output."""


@dataclass(frozen=True)
class PrefectServer:
    """A running server: its API URL (``.../api``), UI URL and home directory."""

    api_url: str
    ui_url: str
    home: Path
    process: subprocess.Popen[bytes]


def free_port() -> int:
    """A free TCP port on loopback."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def server_env(home: Path, api_url: str | None = None) -> dict[str, str]:
    """The environment of the server (and of processes that talk to it)."""
    env = {
        **os.environ,
        **TELEMETRY_OFF,
        "PREFECT_HOME": str(home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{home / 'prefect.db'}",
        "PREFECT_UI_ENABLED": "true",
    }
    if api_url is not None:
        env["PREFECT_API_URL"] = api_url
    return env


def _prefect() -> str:
    local = Path(sys.executable).parent / "prefect"
    return str(local) if local.is_file() else (shutil.which("prefect") or "prefect")


def start(home: Path, port: int | None = None, log: Path | None = None) -> PrefectServer:
    """Start ``prefect server start`` on ``127.0.0.1:port`` and wait until it answers.

    Raises:
        PrefectServerError: it exited or did not answer within the timeout.
    """
    home.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    output = log or home / "server.log"
    with output.open("ab") as sink:
        process = spawn(
            [_prefect(), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
            stdout=sink,
            env=server_env(home),
        )
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    while True:
        if process.poll() is not None:
            raise PrefectServerError(
                f"prefect server exited ({process.returncode}); its output:\n"
                f"{output.read_text()[-3000:]}"
            )
        try:
            if httpx.get(f"{api_url}/health", timeout=5.0).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop_group(process)
            raise PrefectServerError(
                f"prefect server did not answer on {api_url} within {STARTUP_TIMEOUT_S:.0f} s; "
                f"its output:\n{output.read_text()[-3000:]}"
            )
        time.sleep(0.5)
    return PrefectServer(api_url, f"http://127.0.0.1:{port}", home, process)


@contextmanager
def child(
    command: list[str], log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process for the block (its output appended to ``log``), stopped after with its
    process group: SIGTERM, as a container runtime stops it, and SIGKILL after 60 s."""
    with log.open("ab") as sink:
        process = spawn(command, stdout=sink, env=env, cwd=cwd)
    try:
        yield process
    finally:
        stop_group(process, timeout_s=60)


@contextmanager
def running(home: Path, port: int | None = None) -> Iterator[PrefectServer]:
    """A server for the block; ``PREFECT_API_URL`` points at it inside, and it stops after."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = start(home, port)
    try:
        with temporary_settings({PREFECT_API_URL: server.api_url}):
            yield server
    finally:
        stop_group(server.process)
