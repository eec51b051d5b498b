"""Write ``constraints.txt``: every distribution ``.[train,dev]`` needs, pinned.

pip resolves the project's full dependency set (``--dry-run --ignore-installed``) with the
versions of this environment as constraints, so the lock is complete (nothing the resolver
needs is missing) and says exactly what the tests ran against. ``make install`` and the images
install with ``-c constraints.txt``; ``make lock`` rewrites it after a dependency change.

    python deploy/lock.py            # from the project root, with the project's venv
"""

from __future__ import annotations

import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGET = ROOT / "constraints.txt"
EXTRAS = ".[train,dev]"
HEADER = """\
# The lock: every distribution `pip install '.[train,dev]'` needs, pinned (deploy/lock.py writes
# it from the environment the tests ran in; `make lock` after a dependency change). Used as a
# constraints file by `make install` and the Dockerfile, so `.[serve]` gets the same versions.
"""


def installed() -> list[str]:
    """``name==version`` of this environment's distributions, the project itself left out."""
    frozen = subprocess.run(
        [sys.executable, "-m", "pip", "freeze", "--exclude-editable"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.splitlines()
    return [line for line in frozen if "==" in line and not line.startswith("lossflow==")]


def resolve(constraints: Path) -> dict[str, str]:
    """What pip installs for ``EXTRAS`` in an empty environment, under ``constraints``."""
    report = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--quiet",
         "--report", "-", "-c", str(constraints), EXTRAS],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    items = json.loads(report.stdout)["install"]
    return {
        item["metadata"]["name"].lower(): item["metadata"]["version"]
        for item in items
        if item["metadata"]["name"].lower() != "lossflow"
    }


def main() -> None:
    with tempfile.NamedTemporaryFile("w", suffix=".txt") as pins:
        pins.write("\n".join(installed()) + "\n")
        pins.flush()
        versions = resolve(Path(pins.name))
    lines = [f"{name}=={version}" for name, version in sorted(versions.items())]
    TARGET.write_text(HEADER + "\n".join(lines) + "\n")
    print(f"wrote {TARGET.relative_to(ROOT)}: {len(lines)} pinned distributions")


if __name__ == "__main__":
    main()
