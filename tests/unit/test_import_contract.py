"""Who may import what (DESIGN.md): each module is imported in a fresh interpreter and the heavy
stacks it must not pull in are looked for in ``sys.modules``; and the ``serve`` dependency set,
resolved from the installed packages' own metadata, holds none of the training stack."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[2]
TRAINING_STACK = ("torch", "lightning", "matplotlib", "kornia", "prefect", "evidently", "optuna")

CONTRACTS = {
    # The service and what it loads: no training stack, no scikit-learn (MLflow's client imports
    # scipy when it is installed; the serve set does not install it).
    "lossflow.serving.app": (*TRAINING_STACK, "sklearn"),
    "lossflow.cli": (*TRAINING_STACK, "sklearn", "mlflow", "fastapi"),
    "lossflow.config": ("torch", "kornia", "sklearn", "mlflow", "fastapi", "sqlalchemy"),
    "lossflow.predlog": (*TRAINING_STACK, "sklearn", "fastapi", "mlflow"),
    # Monitoring reads the log and judges drift: no training stack; Evidently only for its
    # report, imported when one is written.
    "lossflow.usecases.monitoring": (
        "torch",
        "lightning",
        "kornia",
        "matplotlib",
        "prefect",
        "evidently",
        "optuna",
    ),
    "lossflow.replay": (*TRAINING_STACK, "fastapi", "mlflow", "sqlalchemy"),
    "lossflow.contract": (*TRAINING_STACK, "onnxruntime", "mlflow"),
    # Metrics for monitoring and A/B analysis: no plotting, no training.
    "lossflow.evaluation.metrics": ("matplotlib", "torch", "lightning", "prefect"),
    "lossflow.losses": ("torch",),
    # The comparison's config is read by the CLI before anything heavy; its statistics are
    # numpy/scipy; only comparison.optuna_study imports optuna (test below) and only tracking
    # imports mlflow: the plan, the search space, the results and the report's page do not
    # (summary imports the CV runner, the plan and the scoring).
    "lossflow.config.compare": ("torch", "kornia", "sklearn", "mlflow", "optuna"),
    "lossflow.stats.paired": ("torch", "matplotlib", "mlflow", "optuna", "sklearn"),
    "lossflow.comparison.summary": ("optuna", "mlflow", "prefect"),
    "lossflow.comparison.plan": ("optuna", "mlflow", "prefect", "matplotlib"),
    "lossflow.comparison.search": ("optuna", "mlflow", "prefect", "matplotlib"),
    "lossflow.comparison.results": ("optuna", "mlflow", "prefect", "matplotlib"),
    "lossflow.comparison.html": ("optuna", "mlflow", "prefect"),
    # A recipe is plain data: fetching and resolving one are use cases.
    "lossflow.recipe": ("yaml", "mlflow", "torch"),
}


def _loaded_after_import(module: str) -> set[str]:
    code = (
        f"import json, sys; import {module}; "
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


@pytest.mark.parametrize("module", sorted(CONTRACTS))
def test_module_does_not_import_what_its_process_never_uses(module: str) -> None:
    loaded = _loaded_after_import(module)
    forbidden = sorted(set(CONTRACTS[module]) & loaded)
    assert not forbidden, f"import {module} loads {forbidden}"


def _applicable(requirements: list[str], extras: set[str]) -> list[Requirement]:
    """The requirements that apply on this machine with ``extras`` chosen."""
    out = []
    for text in requirements:
        requirement = Requirement(text)
        marker = requirement.marker
        if marker is None or any(marker.evaluate({"extra": e}) for e in extras or {""}):
            out.append(requirement)
    return out


def _closure(roots: list[Requirement]) -> set[str]:
    """Every distribution the roots need, transitively, from the installed metadata."""
    seen: set[tuple[str, frozenset[str]]] = set()
    todo = list(roots)
    while todo:
        requirement = todo.pop()
        key = (canonicalize_name(requirement.name), frozenset(requirement.extras))
        if key in seen:
            continue
        seen.add(key)
        try:
            requires = metadata.requires(requirement.name) or []
        except metadata.PackageNotFoundError:
            continue
        todo.extend(_applicable(requires, set(requirement.extras)))
    return {name for name, _ in seen}


def test_the_serve_dependency_set_holds_no_training_stack() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    roots = _applicable(
        [*project["dependencies"], *project["optional-dependencies"]["serve"]], set()
    )
    closure = _closure(roots)
    forbidden = {
        "torch",
        "lightning",
        "pytorch-lightning",
        "prefect",
        "evidently",
        "optuna",
        "matplotlib",
        "scikit-learn",
        "kornia",
        "mlflow",  # the full MLflow (server, UI, ML libraries); mlflow-skinny is the client
    }
    assert "onnxruntime" in closure
    assert "mlflow-skinny" in closure
    assert not forbidden & closure, f"the serve set pulls {sorted(forbidden & closure)}"


# The layers (DESIGN.md): the use cases (what a flow task or a command calls), the flows, the
# command line and the rehearsal compose the domain packages; the config package reads YAML, the
# prediction log owns SQLAlchemy, the tracking adapter owns MLflow. Everything else is a domain
# package and imports none of those concerns, at module level or inside a function.
SRC = ROOT / "src" / "lossflow"
COMPOSING = {"usecases", "flows", "cli", "rehearsal", "scaffold"}
OWNERS = {"config": "yaml", "predlog": "sqlalchemy"}
NEVER_IN_DOMAIN = ("sqlalchemy", "prefect", "yaml")
UPPER_LAYERS = tuple(f"lossflow.{name}" for name in COMPOSING)


def _imports(path: Path) -> list[tuple[int, str]]:
    """``(line, module or module.name)`` of every import in ``path``."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out += [(node.lineno, node.module)]
            out += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return out


def _layer_violations(path: Path, top: str) -> list[str]:
    """What ``path``, a module of the package (or top-level module) ``top``, must not import."""
    if top in COMPOSING:
        return []
    out = []
    for line, name in _imports(path):
        package = name.split(".")[0]
        loads_config = name.startswith("lossflow.config.") and (
            name.startswith("lossflow.config.loader") or name.rsplit(".", 1)[-1].startswith("load_")
        )
        if (package in NEVER_IN_DOMAIN and OWNERS.get(top) != package) or (
            name.startswith(UPPER_LAYERS) or (loads_config and top != "config")
        ):
            out.append(f"{path.name}:{line} imports {name}")
    return out


def test_domain_packages_import_no_store_orchestrator_yaml_or_upper_layer() -> None:
    violations = sorted(
        f"{path.relative_to(SRC).parent}/{v}"
        for path in SRC.rglob("*.py")
        for v in _layer_violations(path, path.relative_to(SRC).parts[0].removesuffix(".py"))
    )
    assert not violations, "\n".join(violations)


def test_the_layer_check_sees_each_kind_of_violation(tmp_path: Path) -> None:
    """The check above is not vacuous: a domain module that opens the log's database, reads
    YAML, loads a config, talks to Prefect or calls a use case is caught (inside a function
    too); the same imports are allowed where they belong."""
    probe = tmp_path / "module.py"
    probe.write_text(
        "import sqlalchemy\n"
        "def f():\n"
        "    import yaml\n"
        "    from prefect import flow\n"
        "    from lossflow.config.training import load_training_config\n"
        "    from lossflow.usecases import ab\n"
    )
    found = _layer_violations(probe, "monitoring")
    assert [v.partition(" imports ")[2] for v in found] == [
        "sqlalchemy", "yaml", "prefect", "prefect.flow",
        "lossflow.config.training.load_training_config", "lossflow.usecases",
        "lossflow.usecases.ab",
    ]  # fmt: skip
    assert _layer_violations(probe, "usecases") == []
    assert [v for v in _layer_violations(probe, "predlog") if "sqlalchemy" in v] == []


def test_only_the_tracking_adapter_imports_mlflow() -> None:
    """MLflow sits behind ``lossflow.tracking`` (runs, the model registry): nothing else in the
    library imports it, at module level or inside a function."""
    found = sorted(
        f"{path.relative_to(SRC)}:{line} imports {name}"
        for path in SRC.rglob("*.py")
        if path.relative_to(SRC).parts[0] != "tracking"
        for line, name in _imports(path)
        if name.split(".")[0] == "mlflow"
    )
    assert not found, "\n".join(found)


# Each third-party system behind one module (DESIGN.md): who may import it, by path under SRC.
SOLE_IMPORTER = {"optuna": "comparison/optuna_study.py"}


@pytest.mark.parametrize("package", sorted(SOLE_IMPORTER))
def test_one_module_imports_each_adapted_system(package: str) -> None:
    importers = sorted(
        str(path.relative_to(SRC))
        for path in SRC.rglob("*.py")
        if any(name.split(".")[0] == package for _, name in _imports(path))
    )
    assert importers == [SOLE_IMPORTER[package]]
