"""The ``lossflow`` command line (typer's test runner, in-process)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from lossflow.cli import app
from lossflow.losses import LOSS_SPECS

runner = CliRunner()


def test_losses_prints_every_loss_with_its_options() -> None:
    result = runner.invoke(app, ["losses"])
    assert result.exit_code == 0, result.output
    for name in LOSS_SPECS:
        assert name in result.output
    assert "pos_weight=None" in result.output
    assert "terms=(required)" in result.output


def test_losses_json_filters_by_task() -> None:
    result = runner.invoke(app, ["losses", "--task", "ranking", "--json"])
    assert result.exit_code == 0, result.output
    names = {entry["name"] for entry in json.loads(result.output)}
    assert names == {"margin_ranking", "ranknet", "listnet", "listmle", "composite"}


def test_unknown_task_is_a_usage_error() -> None:
    result = runner.invoke(app, ["losses", "--task", "clustering"])
    assert result.exit_code == 2
    assert "unknown task 'clustering'" in result.output
