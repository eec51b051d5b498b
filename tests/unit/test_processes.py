"""Child processes end with what started them: real process trees (a parent that starts a
grandchild and dies or keeps running), stopped by group; ``run_attached`` forwards a SIGTERM
sent to the lossflow process alone, as ``kill PID`` or a supervisor sends it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from lossflow.processes import group_alive, spawn, stop_group

# A parent that starts a grandchild (sleeping), writes its pid, then waits or exits.
TREE = """
import subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
open(sys.argv[1], "w").write(str(child.pid))
if sys.argv[2] == "wait":
    time.sleep(600)
"""


def _pid_when_written(path: Path, timeout_s: float = 30.0) -> int:
    deadline = time.monotonic() + timeout_s
    while not (path.exists() and path.read_text()):
        assert time.monotonic() < deadline, f"{path} was not written"
        time.sleep(0.05)
    return int(path.read_text())


def _gone(pid: int) -> bool:
    """Whether ``pid`` ended (a zombie left for init to reap counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"


def test_stopping_a_child_stops_its_grandchildren(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    process = spawn([sys.executable, "-c", TREE, str(pid_file), "wait"])
    grandchild = _pid_when_written(pid_file)
    assert group_alive(process.pid)
    assert stop_group(process, timeout_s=10) == -signal.SIGTERM
    assert _gone(grandchild)
    assert not group_alive(process.pid)


def test_what_an_exited_child_left_behind_is_stopped(tmp_path: Path) -> None:
    pid_file = tmp_path / "grandchild"
    process = spawn([sys.executable, "-c", TREE, str(pid_file), "exit"])
    grandchild = _pid_when_written(pid_file)
    assert process.wait(30) == 0
    assert group_alive(process.pid), "the orphaned grandchild still runs in the group"
    assert stop_group(process, timeout_s=10) == 0
    assert _gone(grandchild)


def test_a_child_that_ignores_sigterm_is_killed_after_the_timeout(tmp_path: Path) -> None:
    ignoring = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); "
    ready = tmp_path / "ready"
    ignoring += f"open({str(ready)!r}, 'w').write('1'); time.sleep(600)"
    process = spawn([sys.executable, "-c", ignoring])
    _pid_when_written(ready)
    assert stop_group(process, timeout_s=0.5) == -signal.SIGKILL


def test_a_sigterm_to_the_attached_runner_reaches_the_whole_tree(tmp_path: Path) -> None:
    """The runner is what ``lossflow ui`` and ``lossflow worker`` are: the signal goes to it
    alone, and neither the command nor the grandchild it started outlive it."""
    pid_file = tmp_path / "grandchild"
    runner = subprocess.Popen(
        [sys.executable, "-c", "import sys; from lossflow.processes import run_attached; "
         "sys.exit(run_attached(sys.argv[1:]))", sys.executable, "-c", TREE, str(pid_file),
         "wait"],
    )  # fmt: skip
    try:
        grandchild = _pid_when_written(pid_file)
        runner.send_signal(signal.SIGTERM)
        assert runner.wait(30) == 128 + signal.SIGTERM  # as a shell reports the command's end
        deadline = time.monotonic() + 30
        while not _gone(grandchild):
            assert time.monotonic() < deadline, "the grandchild outlived the runner"
            time.sleep(0.05)
    finally:
        runner.kill()
        runner.wait()
