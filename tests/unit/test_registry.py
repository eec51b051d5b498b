"""One registry mechanism for losses, optimizers and schedulers, and what it promises."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from lossflow.config.training import (
    OPTIMIZER_NAMES,
    SCHEDULER_NAMES,
    VALIDATION_METRICS,
    OptimizerConfig,
    SchedulerConfig,
    load_training_config,
)
from lossflow.losses import LOSS_SPECS, LossConfigError, parse_loss_spec
from lossflow.models.optim import OPTIMIZERS, SCHEDULERS
from lossflow.registry import Registry
from tests.unit.test_config import CONFIG_DIR


def test_lookup_suggests_the_closest_name_and_lists_the_rest() -> None:
    for registry, typo, close in (
        (OPTIMIZERS, "adamw_", "adamw"),
        (SCHEDULERS, "plato", "plateau"),
    ):
        with pytest.raises(
            ValueError, match=rf"did you mean '{close}'\?\); known {registry.kind}s:"
        ):
            registry.lookup(typo)
    with pytest.raises(LossConfigError, match=r"unknown loss 'fokal' \(did you mean 'focal'\?\)"):
        parse_loss_spec({"name": "fokal"})


def test_the_registries_hold_what_the_config_documents() -> None:
    assert set(OPTIMIZERS) == {"sgd", "adam", "adamw", "rmsprop", "adagrad"}
    assert set(SCHEDULERS) == {"none", "cosine", "step", "plateau"}
    assert len(LOSS_SPECS) == 21


def test_every_declared_optimizer_and_scheduler_has_a_builder_and_no_other_does() -> None:
    assert sorted(OPTIMIZERS) == sorted(OPTIMIZER_NAMES)
    assert sorted(SCHEDULERS) == sorted(SCHEDULER_NAMES)
    for optimizer in OPTIMIZER_NAMES:
        OptimizerConfig(name=optimizer)
    for scheduler in SCHEDULER_NAMES:
        SchedulerConfig(name=scheduler)
    with pytest.raises(TypeError, match="'lamb' is not declared"):
        OPTIMIZERS.register("lamb", OPTIMIZERS["adam"])


def test_optimizer_and_scheduler_names_are_checked_without_torch() -> None:
    code = (
        "import sys\n"
        "from lossflow.config.training import OptimizerConfig, SchedulerConfig\n"
        "OptimizerConfig(name='sgd'); SchedulerConfig(name='plateau')\n"
        "try:\n    OptimizerConfig(name='adamm')\nexcept ValueError as e:\n"
        "    assert \"did you mean 'adam'\" in str(e), e\n"
        "else:\n    raise SystemExit('adamm accepted')\n"
        "assert 'torch' not in sys.modules, 'validating the names imported torch'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_implementations_load_on_first_use_and_a_failed_load_is_retried() -> None:
    calls: list[int] = []

    def load() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise ImportError("no module named 'heavy'")
        registry.register("a", 1)

    registry: Registry[int] = Registry("thing", loader=load)
    with pytest.raises(ImportError, match="heavy"):
        registry.lookup("a")
    assert registry.lookup("a") == 1
    assert list(registry) == ["a"]
    assert len(calls) == 2
    with pytest.raises(TypeError, match="registered twice"):
        registry.register("a", 2)


@pytest.mark.parametrize(
    ("overrides", "task"),
    [([], "binary"), (["data=digits", "loss=ce"], "multiclass"),
     (["data.task=regression", "loss=huber"], "regression")],
)  # fmt: skip
def test_the_validation_epoch_logs_exactly_the_metrics_the_config_checks_against(
    overrides: list[str], task: str
) -> None:
    from lossflow.models.build import epoch_metrics

    cfg = load_training_config(overrides, CONFIG_DIR)
    rng = np.random.default_rng(0)
    y = np.arange(40) % (10 if task == "multiclass" else 2)
    if task == "multiclass":
        pred = rng.dirichlet(np.ones(10), size=40)
    else:
        pred = rng.uniform(0.05, 0.95, size=40)
    assert set(epoch_metrics(cfg)(y, pred)) == set(VALIDATION_METRICS[task])
