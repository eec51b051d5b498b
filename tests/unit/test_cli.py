"""The ``lossflow`` command line (typer's test runner, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from lossflow.cli import app
from lossflow.cli.common import user_errors
from lossflow.data.validation import DataValidationError
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
    losses = {entry["name"] for entry in json.loads(result.output) if entry["kind"] == "loss"}
    assert losses == {"margin_ranking", "ranknet", "listnet", "listmle", "composite"}
    assert names - losses == {"l1", "l2", "elastic_net"}, "penalties fit every task"


def test_unknown_task_is_a_usage_error() -> None:
    result = runner.invoke(app, ["losses", "--task", "clustering"])
    assert result.exit_code == 2
    assert "unknown task 'clustering'" in result.output


def _probe_app(error: Exception) -> typer.Typer:
    probe = typer.Typer()

    @probe.command()
    @user_errors
    def run_probe() -> None:
        raise error

    return probe


def test_a_user_error_is_one_message_and_its_traceback_goes_to_the_log(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LOSSFLOW_LOG_FILE", str(tmp_path / "errors.log"))
    monkeypatch.delenv("LOSSFLOW_DEBUG", raising=False)
    result = runner.invoke(_probe_app(DataValidationError("column 'x' is empty; fill it")))
    assert result.exit_code == 2
    assert "lossflow run-probe: column 'x' is empty; fill it" in result.output
    assert "Traceback" not in result.output
    assert "DataValidationError: column 'x' is empty" in (tmp_path / "errors.log").read_text()


def test_a_bug_keeps_its_traceback() -> None:
    result = runner.invoke(_probe_app(RuntimeError("unexpected")))
    assert isinstance(result.exception, RuntimeError)
    assert result.exit_code == 1


def test_serve_takes_host_and_port_flags_like_other_servers() -> None:
    result = runner.invoke(app, ["serve", "--help"])
    assert result.exit_code == 0
    assert "--port" in result.output
    assert "--host" in result.output


def test_console_filter_drops_user_error_records_and_their_repeats() -> None:
    import logging

    from lossflow import terminal

    def record(message: str, exc: BaseException | None) -> logging.LogRecord:
        info = (type(exc), exc, None) if exc is not None else None
        return logging.LogRecord("prefect.task_runs", logging.ERROR, "x", 1, message, (), info)

    err = DataValidationError("missing column 'c'")
    wrapped = RuntimeError("task failed")
    wrapped.__cause__ = err
    quiet = terminal.QuietUserErrors()
    assert not quiet.filter(record("Task run failed", wrapped))
    assert not quiet.filter(record("Finished in state Failed(\"missing column 'c'\")", None))
    assert quiet.filter(record("Beginning flow run", None))
    assert quiet.filter(record("a bug", RuntimeError("boom")))  # bugs keep their traceback
    scheduler = terminal.QuietUserErrors(strip_only=True)
    for _ in range(2):  # every scheduled run that fails is reported, without the traceback
        failed = record("Flow run failed", err)
        assert scheduler.filter(failed)
        assert failed.exc_info is None
        assert scheduler.filter(record("Finished in state Failed(\"missing column 'c'\")", None))


def test_deploy_and_worker_need_a_prefect_server(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    # A session's Prefect test harness, once started, holds an API URL in the settings context.
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        for command in ("deploy", "worker"):
            result = runner.invoke(app, [command, "--work-pool", "p"])
            assert result.exit_code == 2, result.output
            assert "set PREFECT_API_URL to the Prefect server's API" in result.output


def test_serve_reads_host_and_port_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import lossflow.config.serving as serving

    seen: list[list[str]] = []

    def load(overrides: list[str], config_dir: Path) -> None:
        seen.append(list(overrides))
        raise typer.Exit(0)

    monkeypatch.setattr(serving, "load_serving_config", load)
    monkeypatch.setattr("lossflow.cli.serving.load_serving_config", load)
    monkeypatch.setenv("LOSSFLOW_HOST", "0.0.0.0")
    monkeypatch.setenv("LOSSFLOW_PORT", "8123")
    result = runner.invoke(app, ["serve", "log.enabled=false"])
    assert result.exit_code == 0, result.output
    assert seen == [["log.enabled=false", "host=0.0.0.0", "port=8123"]]
