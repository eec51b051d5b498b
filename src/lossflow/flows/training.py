"""The ``training`` flow: validate + prepare → train → evaluate → export + parity → register →
reference profile → aliases.

Each task is one call into the library (``lossflow.data.prepare``, ``lossflow.usecases.training``);
MLflow calls retry. Runs on Prefect's temporary local server by default, against a Prefect server
when ``PREFECT_API_URL`` is set.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from lossflow.config import DEFAULT_CONFIG_DIR
from lossflow.config.training import TrainingConfig, load_training_config
from lossflow.data.prepare import PreparedData, prepare_data
from lossflow.flows.common import RETRYING
from lossflow.tracking import git_commit
from lossflow.usecases import training as steps


@task(name="validate-and-prepare", cache_policy=NO_CACHE)
def prepare(cfg: TrainingConfig, directory: Path) -> PreparedData:
    return prepare_data(cfg, directory)


@task(name="log-run-inputs", cache_policy=NO_CACHE, **RETRYING)
def log_inputs(cfg: TrainingConfig, prepared: PreparedData, run_id: str) -> str:
    return steps.log_run_inputs(cfg, prepared, steps.runs_of(cfg), run_id)


@task(name="train", cache_policy=NO_CACHE)
def train(
    cfg: TrainingConfig,
    prepared: PreparedData,
    checkpoint_dir: Path,
    run_id: str,
    resume: bool,
    progress_bar: bool,
) -> steps.TrainResult:
    return steps.train_model(
        cfg, prepared, checkpoint_dir, run_id=run_id, resume=resume, progress_bar=progress_bar
    )


@task(name="evaluate", cache_policy=NO_CACHE, **RETRYING)
def evaluate(
    cfg: TrainingConfig, prepared: PreparedData, trained: steps.TrainResult, run_id: str
) -> steps.EvaluationResult:
    return steps.evaluate_model(cfg, prepared, trained, run_id=run_id)


@task(name="export-and-parity", cache_policy=NO_CACHE)
def export(
    cfg: TrainingConfig,
    prepared: PreparedData,
    trained: steps.TrainResult,
    evaluation: steps.EvaluationResult,
    lid: str,
    out_dir: Path,
) -> steps.ExportResult:
    return steps.export_model(cfg, prepared, trained, evaluation, lid, out_dir)


@task(name="register", cache_policy=NO_CACHE, **RETRYING)
def register(
    cfg: TrainingConfig, prepared: PreparedData, exported: steps.ExportResult, run_id: str
) -> tuple[str, str]:
    return steps.register_version(cfg, prepared, exported, run_id)


@task(name="reference-profile", cache_policy=NO_CACHE)
def reference_profile(
    cfg: TrainingConfig,
    prepared: PreparedData,
    exported: steps.ExportResult,
    run_id: str,
    name: str,
    version: str,
) -> Path:
    return steps.store_reference_profile(cfg, prepared, exported, run_id, name, version)


@task(name="aliases", cache_policy=NO_CACHE, **RETRYING)
def aliases(
    cfg: TrainingConfig, name: str, version: str, evaluation: steps.EvaluationResult
) -> steps.Registration:
    return steps.assign_aliases(cfg, name, version, evaluation)


@dataclass(frozen=True)
class TrainingOutcome:
    """What a training run produced, as printed by ``lossflow train``."""

    run_id: str
    loss_id: str
    model_name: str
    model_version: str
    aliases: tuple[str, ...]
    metrics: dict[str, float]
    onnx_path: Path
    tracking_uri: str
    baseline: str = ""
    project: str | None = None


@flow(name="training", log_prints=True)
def training(
    overrides: list[str] | None = None,
    config_dir: str = str(DEFAULT_CONFIG_DIR),
    resume_run: str | None = None,
    progress_bar: bool = False,
) -> TrainingOutcome:
    """Train, evaluate, export and register one model for the configured loss.

    Args:
        overrides: ``key=value`` config overrides (``loss=focal``, ``loss.gamma=3``).
        config_dir: the configuration directory.
        resume_run: continue training from that run's last checkpoint.
        progress_bar: show a live progress bar while fitting.
    """
    cfg = load_training_config(overrides or [], Path(config_dir))
    runs = steps.runs_of(cfg)
    tags = {"lossflow.loss": cfg.loss.name, "lossflow.task": cfg.data.task}
    commit = git_commit()
    if commit is not None:
        tags["lossflow.git_commit"] = commit
    if resume_run is not None:
        tags["lossflow.resumed_from"] = resume_run
    run_name = f"{cfg.loss.name}-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    with runs.start_run(run_name, tags) as run_id:
        work = cfg.data_dir / "runs" / (resume_run or run_id)
        prepared = prepare(cfg, work / "prepared")
        lid = log_inputs(cfg, prepared, run_id)
        trained = train(
            cfg, prepared, work / "checkpoints", run_id, resume_run is not None, progress_bar
        )
        evaluation = evaluate(cfg, prepared, trained, run_id)
        exported = export(cfg, prepared, trained, evaluation, lid, work / "model")
        name, version = register(cfg, prepared, exported, run_id)
        reference_profile(cfg, prepared, exported, run_id, name, version)
        registration = aliases(cfg, name, version, evaluation)
    return TrainingOutcome(
        run_id=run_id,
        loss_id=lid,
        model_name=registration.name,
        model_version=registration.version,
        aliases=registration.aliases,
        metrics=evaluation.metrics,
        onnx_path=exported.onnx_path,
        tracking_uri=runs.tracking_uri,
        baseline=evaluation.baseline,
        project=cfg.project,
    )
