"""The deployments ``lossflow schedule`` serves and ``lossflow deploy`` registers: schedules,
the retrain trigger and its concurrency limit, all from config."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.client.schemas.objects import ConcurrencyLimitStrategy

from lossflow.flows.deployments import DeploymentSpecError, served, specs, split_overrides

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def test_the_training_deployment_uses_its_cron_and_overrides_and_is_named_after_the_model() -> None:
    overrides = ["loss=bce", "schedule.cron=15 4 * * *", "schedule.timezone=Europe/Paris"]
    [deployment] = served(CONFIG_DIR, {"training": overrides}, flows=["training"])
    assert deployment.name == "lossflow-flights"
    assert deployment.flow_name == "training"
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "15 4 * * *"  # type: ignore[union-attr]
    assert schedule.schedule.timezone == "Europe/Paris"  # type: ignore[union-attr]
    assert deployment.parameters == {"overrides": overrides, "config_dir": str(CONFIG_DIR)}
    assert "loss:bce" in deployment.tags


def test_overrides_for_every_flow_reach_every_flow_or_are_refused_naming_the_flow(
    tmp_path: Path,
) -> None:
    shared = [f"data_dir={tmp_path}", "tracking.registered_model=hotels"]
    deployments = {d.flow: d for d in specs(CONFIG_DIR, {}, shared)}
    assert {d.name for d in deployments.values()} == {"hotels"}
    for d in deployments.values():
        assert d.parameters["overrides"][:2] == shared
    [trigger] = deployments["retrain"].triggers
    assert trigger.match.root == {"prefect.resource.id": "lossflow.model.hotels"}
    with pytest.raises(DeploymentSpecError, match=r"the monitoring flow cannot take them"):
        specs(CONFIG_DIR, {}, ["loss=bce"])
    # Only the flows that run must take them.
    [only] = specs(CONFIG_DIR, {}, ["loss=bce"], flows=["training"])
    assert only.tags[-1] == "loss:bce"


def test_a_project_names_every_flow_and_its_trigger() -> None:
    deployments = {d.flow: d for d in specs(CONFIG_DIR, {}, ["project=digits"])}
    assert {d.name for d in deployments.values()} == {"lossflow-digits"}
    for d in deployments.values():
        assert d.parameters["overrides"][0] == "project=digits"
    [trigger] = deployments["retrain"].triggers
    assert trigger.match.root == {"prefect.resource.id": "lossflow.model.lossflow-digits"}


def test_the_four_flows_get_their_schedules_and_the_retrain_its_trigger() -> None:
    per_flow = split_overrides(
        ["monitoring:schedule.cron=5 * * * *", "retrain:trigger.concurrency_limit=2",
         "training:loss=bce", "ab-analysis:schedule.cron=45 * * * *"]
    )  # fmt: skip
    deployments = {d.flow_name: d for d in served(CONFIG_DIR, per_flow)}
    assert set(deployments) == {"training", "monitoring", "ab_analysis", "retrain"}
    crons = {
        name: d.schedules[0].schedule.cron  # type: ignore[union-attr]
        for name, d in deployments.items()
        if d.schedules
    }
    assert crons == {
        "training": "0 3 * * 1",
        "monitoring": "5 * * * *",
        "ab_analysis": "45 * * * *",
    }
    assert deployments["monitoring"].parameters["since"] == "24h"
    retrain = deployments["retrain"]
    assert not retrain.schedules
    [trigger] = retrain.triggers
    assert trigger.expect == {"lossflow.retrain.requested"}
    assert trigger.match.root == {"prefect.resource.id": "lossflow.model.lossflow-flights"}
    assert trigger.parameters == {
        "request": {
            "__prefect_kind": "json",
            "value": {"__prefect_kind": "jinja", "template": "{{ event.payload | tojson }}"},
        }
    }
    assert retrain.concurrency_limit == 2
    assert retrain.concurrency_options is not None
    assert retrain.concurrency_options.collision_strategy == ConcurrencyLimitStrategy.ENQUEUE
    for d in deployments.values():
        assert d.parameters["config_dir"] == str(CONFIG_DIR.resolve())
        assert "lossflow" in d.tags


def test_the_monitoring_event_of_this_model_is_what_the_trigger_matches() -> None:
    from lossflow.usecases.monitoring import retrain_event  # noqa: F401  (the payload's producer)

    [retrain] = [s for s in specs(CONFIG_DIR) if s.flow == "retrain"]
    [trigger] = retrain.triggers
    # pipelines/monitoring.py emits lossflow.retrain.requested for resource lossflow.model.<name>
    assert trigger.match.root["prefect.resource.id"] == "lossflow.model.lossflow-flights"


@pytest.mark.parametrize("bad", ["loss=bce", "nowhere:loss=bce", "training:loss"])
def test_a_set_that_names_no_flow_is_refused(bad: str) -> None:
    with pytest.raises(DeploymentSpecError, match="FLOW:KEY=VALUE"):
        split_overrides([bad])
