"""Every file under configs/ is exercised, so no config rots: training configs train for one tiny
batch, serving configs start the service on a real registry and answer a prediction, comparison
configs plan their arms, cut their folds and train every arm (and ablation variant) one tiny
batch on a fold."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from fastapi.testclient import TestClient

from lossflow.comparison.cv import prepare_folds
from lossflow.config import load_serving_config
from lossflow.config.ab import load_ab_config
from lossflow.config.compare import load_compare_config
from lossflow.config.monitoring import load_monitoring_config
from lossflow.config.retrain import load_retrain_config
from lossflow.config.training import TrainingConfig, load_training_config
from lossflow.data.prepare import PreparedData, prepare_data
from lossflow.losses import LOSS_SPECS
from lossflow.models.build import build_system, split_tensors
from lossflow.serving.app import create_app
from lossflow.usecases import training as steps
from lossflow.usecases.compare import plan_comparison

from .serving_models import Registry, copy_registry

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
pytestmark = pytest.mark.filterwarnings(r"ignore:You are trying to `self.log\(\)`")
TINY = ["data.subsample=400", "trainer.batch_size=64"]
# Forward-chaining folds of 400 flights rows leave the first fold's validation without a delay.
COMPARE_TINY = ["data.subsample=2000", "trainer.batch_size=64"]
DIGITS = ["data=digits"]
RANKING = ["data=modechoice"]
RANKING_SOURCES = ("modechoice", "movielens")


def _task_overrides(loss_file: Path) -> list[str]:
    """Pair a loss file with a dataset whose task it fits."""
    import yaml

    name = yaml.safe_load(loss_file.read_text())["name"]
    tasks = LOSS_SPECS[name].tasks
    if "binary" in tasks:
        return []
    if "multiclass" in tasks:
        return DIGITS
    if "regression" in tasks:
        return ["data.task=regression"]
    if "ranking" in tasks:
        return RANKING
    raise AssertionError(f"{loss_file} fits no dataset shipped with lossflow: {sorted(tasks)}")


def _cases() -> list[tuple[str, list[str]]]:
    cases = [("base.yaml", [])]
    for path in sorted((CONFIG_DIR / "loss").glob("*.yaml")):
        cases.append((f"loss/{path.name}", [f"loss={path.stem}", *_task_overrides(path)]))
    for path in sorted((CONFIG_DIR / "data").glob("*.yaml")):
        extra = [*DIGITS, "loss=ce"] if path.stem == "digits" else [f"data={path.stem}"]
        if path.stem in RANKING_SOURCES:
            extra.append("loss=listnet")
        cases.append((f"data/{path.name}", extra))
    for path in sorted((CONFIG_DIR / "experiment").glob("*.yaml")):
        cases.append((f"experiment/{path.name}", [f"experiment={path.stem}"]))
    for path in sorted((CONFIG_DIR / "project").glob("*.yaml")):
        cases.append((f"project/{path.name}", [f"project={path.stem}"]))
    return cases


SERVING = sorted(p.stem for p in (CONFIG_DIR / "serving").glob("*.yaml"))
MONITORING = sorted(p.stem for p in (CONFIG_DIR / "monitoring").glob("*.yaml"))
AB = sorted(p.stem for p in (CONFIG_DIR / "ab").glob("*.yaml"))
COMPARE = sorted(p.stem for p in (CONFIG_DIR / "compare").glob("*.yaml"))
RETRAIN = sorted(p.stem for p in (CONFIG_DIR / "retrain").glob("*.yaml"))


def test_every_config_file_is_covered() -> None:
    covered = {name for name, _ in _cases()} | {f"serving/{stem}.yaml" for stem in SERVING}
    covered |= {f"monitoring/{stem}.yaml" for stem in MONITORING}
    covered |= {f"ab/{stem}.yaml" for stem in AB}
    covered |= {f"compare/{stem}.yaml" for stem in COMPARE}
    covered |= {f"retrain/{stem}.yaml" for stem in RETRAIN}
    on_disk = {p.relative_to(CONFIG_DIR).as_posix() for p in CONFIG_DIR.rglob("*.yaml")}
    assert covered == on_disk


def _one_tiny_batch(cfg: TrainingConfig, prepared: PreparedData, name: str) -> None:
    system = build_system(cfg, prepared.preprocessor(), prepared.class_counts)
    system.train()
    pre = prepared.preprocessor()
    inputs, target = split_tensors(cfg, pre, steps.split_of(cfg, prepared, "train"))
    batch = (tuple(t[:64] for t in inputs), target[:64])
    loss, _ = system.model_step(batch, "train")
    loss.backward()
    grads = [p.grad for p in system.net.parameters() if p.grad is not None]
    assert torch.isfinite(loss), name
    assert grads, name
    assert all(torch.isfinite(g).all() for g in grads), name


@pytest.mark.parametrize(("name", "overrides"), _cases(), ids=[c[0] for c in _cases()])
def test_config_trains_one_tiny_batch(name: str, overrides: list[str], tmp_path: Path) -> None:
    cfg = load_training_config([*overrides, *TINY, f"data_dir={tmp_path}"], CONFIG_DIR)
    _one_tiny_batch(cfg, prepare_data(cfg, tmp_path / "prepared"), name)
    if name.startswith("project/"):  # every process reads the project's stores and model
        for load in (load_serving_config, load_monitoring_config, load_ab_config,
                     load_retrain_config, load_compare_config):  # fmt: skip
            other = load([overrides[0], f"data_dir={tmp_path}"], CONFIG_DIR)
            assert other.tracking == cfg.tracking, (name, load.__name__)


@pytest.mark.parametrize("stem", COMPARE)
def test_compare_config_plans_folds_and_trains_each_arm(stem: str, tmp_path: Path) -> None:
    overrides = [f"compare={stem}", *COMPARE_TINY, f"data_dir={tmp_path}"]
    settings = load_compare_config(overrides, CONFIG_DIR)
    plan = plan_comparison(settings, CONFIG_DIR)
    assert [a.error for a in plan.arms] == [None] * len(plan.arms)
    assert plan.search is not None or not settings.hpo.enabled
    folds = prepare_folds(plan.reference, settings.cv, plan.cv_kind, plan.slices, tmp_path / "f")
    assert len(folds.folds) == settings.cv.folds * (
        1 if plan.cv_kind == "time" else settings.cv.repeats
    )
    for arm in plan.runnable:
        assert arm.config is not None
        _one_tiny_batch(arm.config, folds.folds[0].prepared, f"{stem}:{arm.name}")


@pytest.mark.slow
@pytest.mark.parametrize("stem", SERVING)
def test_serving_config_starts_the_service_and_answers(
    stem: str, built_registry: Registry, tmp_path: Path
) -> None:
    registry = copy_registry(built_registry, tmp_path / "data")
    cfg = load_serving_config([f"serving={stem}", f"data_dir={registry.data_dir}"], CONFIG_DIR)
    with TestClient(create_app(cfg)) as client:
        answer = client.post("/predict", json={"unit_id": "u", "records": registry.records[:2]})
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["predictions"]) == 2


@pytest.mark.parametrize("stem", MONITORING)
def test_monitoring_config_loads(stem: str, tmp_path: Path) -> None:
    from lossflow.config.monitoring import load_monitoring_config
    from lossflow.usecases.monitoring import policy

    cfg = load_monitoring_config([f"monitoring={stem}", f"data_dir={tmp_path}"], CONFIG_DIR)
    assert policy(cfg).min_rows == cfg.decision.min_rows


@pytest.mark.parametrize("stem", RETRAIN)
def test_retrain_config_loads_and_listens_to_the_monitoring_event(
    stem: str, tmp_path: Path
) -> None:
    from lossflow.config.retrain import load_retrain_config
    from lossflow.flows.monitoring import RETRAIN_EVENT

    cfg = load_retrain_config([f"retrain={stem}", f"data_dir={tmp_path}"], CONFIG_DIR)
    assert cfg.trigger.event == RETRAIN_EVENT
    for spec in cfg.candidates.extra:
        assert spec["name"] in LOSS_SPECS, spec


@pytest.mark.parametrize("stem", AB)
def test_ab_config_loads_and_names_a_serving_config(stem: str, tmp_path: Path) -> None:
    from lossflow.config.ab import load_ab_config
    from lossflow.usecases.ab import serving_config

    cfg = load_ab_config([f"ab={stem}", f"data_dir={tmp_path}"], CONFIG_DIR)
    served = serving_config(cfg, CONFIG_DIR)
    assert served.data_dir == cfg.data_dir
    assert served.tracking == cfg.tracking
