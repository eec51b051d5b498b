"""Print the requirements of lossflow's base set plus one extra (``serve``, ``train``, ``dev``),
one per line, with the extra's references to other extras expanded.

The Dockerfile installs these (pinned by ``constraints.txt``) before it copies the source, so
that a code change rebuilds only the last layer:

    python3 deploy/requirements.py serve > requirements.txt
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"
SELF = re.compile(r"^lossflow\[([a-z,\s]+)\]$")


def requirements(extra: str) -> list[str]:
    """The base dependencies and those of ``extra``, each once, in order.

    Raises:
        KeyError: ``extra`` is not an extra of the project.
    """
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    extras: dict[str, list[str]] = project["optional-dependencies"]
    result: list[str] = list(project["dependencies"])
    pending = [extra]
    seen: set[str] = set()
    while pending:
        name = pending.pop(0)
        if name in seen:
            continue
        seen.add(name)
        for requirement in extras[name]:
            nested = SELF.match(requirement.strip())
            if nested:
                pending.extend(part.strip() for part in nested.group(1).split(","))
            elif requirement not in result:
                result.append(requirement)
    return result


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: requirements.py EXTRA")
    print("\n".join(requirements(sys.argv[1])))
