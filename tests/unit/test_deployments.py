"""``lossflow schedule``'s deployment: the training flow on the configured cron."""

from __future__ import annotations

from pathlib import Path

from pipelines.deployments import training_deployment

from lossflow.config.training import load_training_config

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


def test_training_deployment_uses_the_configured_cron_and_overrides() -> None:
    overrides = ["loss=bce", "schedule.cron=15 4 * * *", "schedule.timezone=Europe/Paris"]
    cfg = load_training_config(overrides, CONFIG_DIR)
    deployment = training_deployment(cfg, overrides, CONFIG_DIR)
    assert deployment.name == "training-bce"
    assert deployment.flow_name == "training"
    [schedule] = deployment.schedules
    assert schedule.schedule.cron == "15 4 * * *"  # type: ignore[union-attr]
    assert schedule.schedule.timezone == "Europe/Paris"  # type: ignore[union-attr]
    assert deployment.parameters == {"overrides": overrides, "config_dir": str(CONFIG_DIR)}
