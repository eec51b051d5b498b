"""The comparison's configuration and plan: arms from loss=... or a compare file, overrides routed
to the comparison or to every arm, and every mistake refused before any training with one
message that names what to change."""

from __future__ import annotations

from pathlib import Path

import pytest

from lossflow.comparison.plan import CompareError, ComparisonPlan, ablation_arms
from lossflow.config.compare import load_compare_config, split_overrides
from lossflow.config.loader import ConfigError
from lossflow.usecases.compare import plan_comparison

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def _plan(*overrides: str, tmp: Path) -> ComparisonPlan:
    settings = load_compare_config([*overrides, f"data_dir={tmp}"], CONFIG_DIR)
    return plan_comparison(settings, CONFIG_DIR)


def test_default_file_names_four_arms_and_flags_override_it() -> None:
    cfg = load_compare_config([], CONFIG_DIR)
    assert list(cfg.arms) == ["focal", "bce", "logit_adjusted", "class_balanced"]
    assert (cfg.cv.folds, cfg.cv.repeats) == (5, 1)
    cfg = load_compare_config(["loss=focal,bce", "cv.folds=10", "trainer.max_epochs=3"], CONFIG_DIR)
    assert list(cfg.arms) == ["focal", "bce"]
    assert cfg.arms["bce"].loss == "bce"
    assert cfg.cv.folds == 10
    assert cfg.overrides == ["trainer.max_epochs=3"]


def test_overrides_go_to_the_comparison_or_to_every_arm() -> None:
    mine, training = split_overrides(
        ["compare=flights_cost", "cv.repeats=2", "hpo.enabled=true", "experiment=flights_cost",
         "loss.gamma=3", "loss=focal,bce", "data.subsample=100"]
    )  # fmt: skip
    assert mine == ["compare=flights_cost", "cv.repeats=2", "hpo.enabled=true", "loss=focal,bce"]
    assert training == ["experiment=flights_cost", "loss.gamma=3", "data.subsample=100"]


def test_a_compare_file_lists_arms_with_their_own_overrides() -> None:
    cfg = load_compare_config(["compare=digits_seeds"], CONFIG_DIR)
    assert cfg.arms["ce_seed7"].overrides == ["trainer.seed=7"]
    assert "data=digits" in cfg.overrides
    # Arms on the command line replace the file's, in either form.
    cfg = load_compare_config(["compare=digits_seeds", "loss=ce,focal"], CONFIG_DIR)
    assert list(cfg.arms) == ["ce", "focal"]
    cfg = load_compare_config(["arms={x: {loss: bce}, y: {loss: focal}}"], CONFIG_DIR)
    assert list(cfg.arms) == ["x", "y"]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["cv.folds=1"], "command line: cv.folds: cross-validation needs at least 2 folds; got 1"),
        (["loss=focal"], "a comparison needs at least 2 arms (got 1: focal)"),
        (["loss=ce,ce"], "ce listed twice"),
        (["cv.fold=3"], "cv.fold: unknown key (did you mean 'folds'?)"),
        (["arms={a: {loss: bce}, b: {loss: ce}}", "loss=focal,bce"], "not both"),
        (["cv.kind=time", "cv.repeats=2"], "forward-chaining time folds are the same"),
        (["hpo.arms=[nope]"], "hpo.arms: nope are not arms of this comparison"),
        (["compare=nope"], "no compare config named 'nope'"),
    ],
)
def test_mistakes_in_the_comparison_are_one_message(overrides: list[str], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_compare_config(overrides, CONFIG_DIR)
    assert message in str(caught.value)


def test_an_arm_that_cannot_be_resolved_fails_alone(tmp_path: Path) -> None:
    plan = _plan("loss=focal,bce,huber", tmp=tmp_path)
    failed = {a.name: a.error for a in plan.arms if a.config is None}
    assert list(failed) == ["huber"]
    assert "loss 'huber' fits regression tasks, not a binary task" in str(failed["huber"])
    assert [a.name for a in plan.runnable] == ["focal", "bce"]
    assert (plan.metric, plan.better, plan.cv_kind) == ("roc_auc", "max", "time")
    assert plan.slices == ("carrier", "origin", "month", "hour_band")


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (["loss=huber,mse"], "only 0 of 2 arms can be trained"),
        (
            ["arms={a: {loss: bce}, b: {loss: bce, overrides: [data.subsample=100]}}"],
            "arms 'a' and 'b' differ in data.subsample",
        ),
        (["loss=focal,bce", "metric=expected_cost"], "expected_cost needs evaluation.fn_cost"),
        (["loss=focal,bce", "cv.kind=stratified", "data.task=regression"], "only 0 of 2"),
        (
            [
                "loss=focal,bce",
                "hpo.enabled=true",
                "hpo.loss_params={focal: {gama: {low: 0, high: 1}}}",
            ],
            "hpo.loss_params.focal.gama: not an option of loss 'focal'",
        ),
        (["loss=focal,bce", "hpo.enabled=true", "hpo.metric=val/rmse"], "hpo.metric: 'val/rmse'"),
    ],
)
def test_a_comparison_that_cannot_work_is_refused(
    overrides: list[str], message: str, tmp_path: Path
) -> None:
    with pytest.raises(CompareError) as caught:
        _plan(*overrides, tmp=tmp_path)
    assert message in str(caught.value)


def test_ablations_remove_each_term_and_each_regulariser(tmp_path: Path) -> None:
    plan = _plan("compare=flights_ablation", tmp=tmp_path)
    variants = {a.name: (a.ablation_of, a.removed) for a in plan.ablations}
    assert variants == {
        "composite-no-focal": ("composite", "term focal"),
        "composite-no-bce": ("composite", "term bce"),
        "bce_l2-no-0_l2": ("bce_l2", "regulariser 0_l2"),
    }
    by_name = {a.name: a for a in plan.ablations}
    assert list(by_name["composite-no-focal"].config.loss.terms) == ["bce"]
    assert by_name["bce_l2-no-0_l2"].config.regularizers == []
    full = next(a for a in plan.arms if a.name == "focal")
    assert ablation_arms(full) == []  # nothing to remove


def test_the_search_space_is_conditional_on_the_arm(tmp_path: Path) -> None:
    plan = _plan("compare=flights_hpo", tmp=tmp_path)
    space = plan.search
    assert space.arms == ("focal", "bce", "logit_adjusted")
    assert space.loss_params == {
        "focal": {"gamma": (0.0, 5.0, False)},
        "bce": {},
        "logit_adjusted": {"tau": (0.0, 2.0, False)},
    }
    assert (space.metric, space.better) == ("val/auc", "max")
