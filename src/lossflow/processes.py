"""Child processes that end with what started them.

A server such as ``mlflow ui`` or ``prefect worker`` starts processes of its own (uvicorn
workers, job consumers, flow runs). Stopping only the process that was started leaves those
running, holding ports and memory. So each child here runs in its own process group, and
stopping it stops the group: SIGTERM, as a container runtime sends, then SIGKILL past a timeout.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import IO

STOP_TIMEOUT_S = 30.0
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def spawn(
    command: Sequence[str],
    *,
    stdout: IO[bytes] | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
) -> subprocess.Popen[bytes]:
    """Start ``command`` as the leader of a new process group (its output to ``stdout``, or
    this process's when ``None``; stderr joins stdout)."""
    return subprocess.Popen(
        list(command),
        stdout=stdout,
        stderr=subprocess.STDOUT if stdout is not None else None,
        env=None if env is None else dict(env),
        cwd=cwd,
        start_new_session=True,
    )


def group_alive(pgid: int) -> bool:
    """Whether a process of group ``pgid`` still runs. Zombies do not count: an orphan whose
    parent died waits for init to reap it, and a container's init may never do so."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    proc = Path("/proc")
    if not proc.is_dir():
        return True
    for stat in proc.glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, IndexError, ValueError):
            # after "pid (comm)": state, ppid, pgrp, ...
            state, _, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
            if int(pgrp) == pgid and state != "Z":
                return True
    return False


def _signal_group(pgid: int, signum: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def stop_group(process: subprocess.Popen[bytes], timeout_s: float = STOP_TIMEOUT_S) -> int:
    """Stop ``process`` and every process left in its group, even when ``process`` itself has
    already exited; return its exit code."""
    pgid = process.pid
    _signal_group(pgid, signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(pgid, signal.SIGKILL)
        process.wait()
    deadline = time.monotonic() + timeout_s
    delay = 0.05
    while group_alive(pgid):
        if time.monotonic() > deadline:
            _signal_group(pgid, signal.SIGKILL)
            break
        time.sleep(delay)
        delay = min(delay * 2, 0.5)
    return process.returncode


def run_attached(command: Sequence[str]) -> int:
    """Run ``command`` in the foreground until it ends, and return its exit status as a shell
    reports it (128 + the signal's number when a signal ended it).

    SIGINT, SIGTERM and SIGHUP sent to this process go to the command's whole group, and
    whatever the command leaves behind is stopped when it ends: ``kill`` of ``lossflow ui``
    stops the MLflow server and its workers, not only the process that started them.
    """
    process = spawn(command)

    def forward(signum: int, _frame: FrameType | None) -> None:
        _signal_group(process.pid, signum)

    previous = {signum: signal.signal(signum, forward) for signum in FORWARDED}
    try:
        process.wait()
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        stop_group(process)
    code = process.returncode
    return 128 - code if code < 0 else code
