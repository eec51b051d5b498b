"""The training pipeline's steps. Each function is one task of the ``training`` flow.

Steps hand each other small values (paths, ids, dataclasses of numbers), never tensors or
Trainers, so each can run in its own task, be retried, and be called from a unit test.

A run's working directory holds::

    prepared/   train/val/test arrays (.npz), raw test + production rows (.parquet),
                preprocessor.json — what was fitted on the training split
    checkpoints/ best-*.ckpt, last.ckpt (resume)
    model/      model.onnx (with its metadata), history.json
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import Tensor, nn

import lossflow
from lossflow.config import LossflowConfig, config_to_dict
from lossflow.data import (
    BatchAugment,
    EncodedFeatures,
    ImageAugment,
    Preprocessor,
    load_frame,
    oversample,
    resolve_columns,
    split_frame,
    validate_frame,
)
from lossflow.data.sources import DIGITS_SIDE
from lossflow.evaluation import (
    binary_metrics,
    choose_threshold,
    evaluation_report,
    multiclass_metrics,
    regression_metrics,
)
from lossflow.export import OnnxRunner, check_parity, export_onnx
from lossflow.losses import LossSpecBase, build_regularizer, loss_id
from lossflow.losses.spec import spec_payload
from lossflow.models import InferenceModel, OutputSpec, build_network, output_spec
from lossflow.models.system import BatchTransform, LossflowSystem
from lossflow.tracking import Tracker, resolve_tracking_uri
from lossflow.training import TensorBatches, fit

log = logging.getLogger(__name__)

PARTS = ("train", "val", "test")
PREDICT_BATCH = 65_536


# --- prepare ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreparedData:
    """The encoded splits on disk and what describes them."""

    directory: Path
    fingerprint: str
    sizes: dict[str, int]
    class_counts: list[int] | None

    def preprocessor(self) -> Preprocessor:
        """The preprocessing fitted on the training split."""
        return Preprocessor.from_dict(
            json.loads((self.directory / "preprocessor.json").read_text())
        )

    def arrays(self, part: str) -> tuple[EncodedFeatures, np.ndarray]:
        """Encoded features and targets of ``train``, ``val`` or ``test``."""
        with np.load(self.directory / f"{part}.npz") as data:
            encoded = EncodedFeatures(numeric=data["numeric"], categorical=data["categorical"])
            return encoded, data["target"]

    def raw(self, part: str) -> pd.DataFrame:
        """Raw rows of ``test`` or ``production``, as a service would receive them."""
        return pd.read_parquet(self.directory / f"{part}.parquet")


def dataset_fingerprint(frame: pd.DataFrame) -> str:
    """A short content hash of a frame (values, columns and dtypes; not the row index)."""
    digest = hashlib.sha256()
    digest.update(json.dumps([(c, str(t)) for c, t in frame.dtypes.items()]).encode())
    digest.update(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def prepare_data(cfg: LossflowConfig, directory: Path) -> PreparedData:
    """Load, validate, split, fit preprocessing on train, encode and (optionally) oversample."""
    data_cfg = cfg.data
    columns = resolve_columns(data_cfg)
    frame = load_frame(data_cfg)
    validate_frame(frame, columns, data_cfg.task, split=data_cfg.split)
    splits = split_frame(frame, data_cfg, columns)
    pre = Preprocessor.fit(splits.train, columns, data_cfg.impute_numeric, task=data_cfg.task)

    directory.mkdir(parents=True, exist_ok=True)
    (directory / "preprocessor.json").write_text(json.dumps(pre.to_dict()))
    sizes: dict[str, int] = {}
    class_counts: list[int] | None = None
    for part in PARTS:
        df = splits.parts()[part]
        encoded = pre.encode(df)
        target: np.ndarray = pre.encode_target(df)
        if part == "train":
            if data_cfg.task in ("binary", "multiclass"):
                n_classes = 2 if data_cfg.task == "binary" else len(pre.label_names or ())
                class_counts = np.bincount(target.astype(np.int64), minlength=n_classes).tolist()
            if data_cfg.augment.oversample != "none":
                before = len(encoded)
                encoded, target = oversample(
                    encoded,
                    target,
                    data_cfg.augment.oversample,
                    data_cfg.augment.oversample_ratio,
                    data_cfg.seed,
                )
                log.info("oversampling added %d training rows", len(encoded) - before)
        np.savez(
            directory / f"{part}.npz",
            numeric=encoded.numeric,
            categorical=encoded.categorical,
            target=target,
        )
        sizes[part] = len(encoded)
    for part in ("test", "production"):
        splits.parts()[part].to_parquet(directory / f"{part}.parquet", index=False)
    sizes["production"] = len(splits.production)
    return PreparedData(directory, dataset_fingerprint(frame), sizes, class_counts)


# --- model construction ----------------------------------------------------------------------


def resolved_loss_spec(cfg: LossflowConfig, prepared: PreparedData) -> LossSpecBase:
    """The configured loss with class statistics of the training split filled in."""
    if prepared.class_counts is None:
        return cfg.loss
    return cfg.loss.with_class_counts(prepared.class_counts)


def _output(cfg: LossflowConfig, pre: Preprocessor) -> OutputSpec:
    return output_spec(cfg.loss, cfg.data.task, len(pre.label_names or ()))


def build_inference_model(cfg: LossflowConfig, pre: Preprocessor) -> InferenceModel:
    """The configured network (untrained) with its output transform."""
    out = _output(cfg, pre)
    net = build_network(
        cfg.model,
        pre.standardize_module(),
        pre.n_numeric,
        pre.cardinalities,
        out.dim,
        image_side=DIGITS_SIDE if cfg.model.kind == "cnn" else None,
    )
    return InferenceModel(net, out.transform)


def model_inputs(pre: Preprocessor, encoded: EncodedFeatures) -> dict[str, np.ndarray]:
    """The network's named inputs for encoded rows (``categorical`` only when there is one)."""
    inputs = {"numeric": encoded.numeric.astype(np.float32)}
    if pre.categorical_columns:
        inputs["categorical"] = encoded.categorical.astype(np.int64)
    return inputs


def input_tensors(pre: Preprocessor, encoded: EncodedFeatures) -> tuple[Tensor, ...]:
    """The network's input tensors (zero-copy views of the arrays)."""
    return tuple(torch.from_numpy(a) for a in model_inputs(pre, encoded).values())


def target_tensor(target: np.ndarray) -> Tensor:
    """Targets as the losses take them: int64 class indices or float32 values."""
    tensor = torch.from_numpy(target)
    return tensor.long() if tensor.dtype in (torch.int32, torch.int64) else tensor.float()


def _batch_transform(cfg: LossflowConfig, pre: Preprocessor) -> BatchTransform | None:
    """Training-only augmentation, in the network's raw input space.

    Tabular noise and mixup are defined on standardised features: rows are imputed and
    standardised with the model's own preprocessing layer, augmented, and mapped back, so the
    network sees raw-space inputs as at serving time.
    """
    aug = cfg.data.augment
    if aug.image is not None:
        image = ImageAugment(aug.image)

        def images(inputs: tuple[Tensor, ...], target: Tensor) -> Any:
            pixels = inputs[0].reshape(-1, 1, DIGITS_SIDE, DIGITS_SIDE)
            return (image(pixels).reshape(inputs[0].shape), *inputs[1:]), None, 1.0

        return images
    batch = BatchAugment.from_config(aug)
    if not batch.active:
        return None
    standardize = pre.standardize_module()

    def tabular(inputs: tuple[Tensor, ...], target: Tensor) -> Any:
        numeric = inputs[0]
        categorical = inputs[1] if len(inputs) > 1 else numeric.new_zeros((len(numeric), 0))
        standardize.to(numeric.device)  # no-op once the buffers live where the batches do
        z = standardize(numeric)
        out = batch(z, categorical, target)
        raw = out.numeric * standardize.std + standardize.mean
        return (raw, *inputs[1:]), out.perm, out.lam

    return tabular


def _quantile(cfg: LossflowConfig) -> float | None:
    """The quantile a ``quantile`` loss targets (its pinball metric is then reported)."""
    return getattr(cfg.loss, "quantile", None) if cfg.loss.name == "quantile" else None


def _epoch_metrics(cfg: LossflowConfig) -> Callable[[np.ndarray, np.ndarray], Mapping[str, float]]:
    task = cfg.data.task
    quantile = _quantile(cfg)

    def metrics(y: np.ndarray, pred: np.ndarray) -> Mapping[str, float]:
        if task == "binary":
            m = binary_metrics(y, pred, 0.5)
            return {"auc": m["roc_auc"], "pr_auc": m["pr_auc"], "log_loss": m["log_loss"]}
        if task == "multiclass":
            return multiclass_metrics(y, pred)
        return regression_metrics(y, pred, quantile=quantile)

    return metrics


def build_system(cfg: LossflowConfig, prepared: PreparedData) -> LossflowSystem:
    """The LightningModule for ``cfg``: network, resolved loss and regularisers injected."""
    pre = prepared.preprocessor()
    model = build_inference_model(cfg, pre)
    inference = InferenceModel(nn.Identity(), model.output)
    regs = {f"{i}_{r.name}": build_regularizer(r) for i, r in enumerate(cfg.regularizers)}
    return LossflowSystem(
        net=model.net,
        loss=resolved_loss_spec(cfg, prepared).build(),
        regularizers=regs,
        task=cfg.data.task,
        optimizer=cfg.optimizer,
        scheduler=cfg.scheduler,
        max_epochs=cfg.trainer.max_epochs,
        epoch_metrics=_epoch_metrics(cfg),
        predict=inference,
        batch_transform=_batch_transform(cfg, pre),
    )


# --- train -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """Where the trained weights are and how training went."""

    checkpoint: Path
    epochs: int
    global_step: int
    stopped_early: bool
    best_score: float | None
    history_path: Path


def tracker_for(cfg: LossflowConfig) -> Tracker:
    """The MLflow tracker of ``cfg`` (server from env/config, else the embedded store)."""
    uri = resolve_tracking_uri(cfg.tracking.tracking_uri, cfg.data_dir)
    return Tracker(uri, cfg.tracking.experiment, None)


def log_run_inputs(
    cfg: LossflowConfig, prepared: PreparedData, tracker: Tracker, run_id: str
) -> str:
    """Log the resolved config, dataset description and loss decision; return the ``loss_id``."""
    spec = resolved_loss_spec(cfg, prepared)
    lid = loss_id(spec, cfg.regularizers)
    tracker.log_params(run_id, tracker.flatten(config_to_dict(cfg)))
    tracker.log_params(run_id, {f"data.rows.{k}": v for k, v in prepared.sizes.items()})
    tracker.log_dict(run_id, config_to_dict(cfg), "config.json")
    tracker.log_dict(run_id, spec_payload(spec), "loss_spec.json")
    tracker.set_tags(
        run_id,
        {"lossflow.loss_id": lid, "lossflow.dataset_fingerprint": prepared.fingerprint},
    )
    return lid


def train_model(
    cfg: LossflowConfig,
    prepared: PreparedData,
    checkpoint_dir: Path,
    *,
    run_id: str | None = None,
    resume: bool = False,
    progress_bar: bool = False,
) -> TrainResult:
    """Fit the configured model; epoch metrics go to the MLflow run ``run_id`` when given."""
    pre = prepared.preprocessor()
    system = build_system(cfg, prepared)
    train_x, train_y = prepared.arrays("train")
    val_x, val_y = prepared.arrays("val")
    device = "cuda" if cfg.trainer.accelerator == "gpu" and torch.cuda.is_available() else None
    train = TensorBatches(
        input_tensors(pre, train_x),
        target_tensor(train_y),
        cfg.trainer.batch_size,
        shuffle=True,
        seed=cfg.trainer.seed,
        device=device,
    )
    val = TensorBatches(
        input_tensors(pre, val_x),
        target_tensor(val_y),
        max(cfg.trainer.batch_size, 8192),
        device=device,
    )
    sink = None
    if run_id is not None:
        tracker = tracker_for(cfg)

        def sink(metrics: Mapping[str, float], step: int) -> None:
            tracker.log_metrics(
                run_id, {k: v for k, v in metrics.items() if math.isfinite(v)}, step
            )

    result = fit(
        system,
        train,
        val,
        cfg.trainer,
        checkpoint_dir,
        sink=sink,
        resume=resume,
        enable_progress_bar=progress_bar,
    )
    checkpoint = result.best_checkpoint or result.last_checkpoint
    if checkpoint is None:
        raise RuntimeError(f"training wrote no checkpoint under {checkpoint_dir}")
    history_path = checkpoint_dir / "history.json"
    history_path.write_text(json.dumps(result.history))
    return TrainResult(
        checkpoint=checkpoint,
        epochs=result.epochs,
        global_step=result.global_step,
        stopped_early=result.stopped_early,
        best_score=result.best_score,
        history_path=history_path,
    )


def load_trained_model(cfg: LossflowConfig, pre: Preprocessor, checkpoint: Path) -> InferenceModel:
    """The inference model with the weights of a training checkpoint."""
    model = build_inference_model(cfg, pre)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
    model.net.load_state_dict(net_state)
    return model.eval()


@torch.no_grad()
def predict(model: nn.Module, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Batched torch predictions of an inference model on named numpy inputs."""
    model.eval()
    rows = len(next(iter(inputs.values())))
    outs = []
    for lo in range(0, rows, PREDICT_BATCH):
        batch = [torch.from_numpy(a[lo : lo + PREDICT_BATCH]) for a in inputs.values()]
        outs.append(model(*batch).float().numpy())
    return np.concatenate(outs)


# --- evaluate --------------------------------------------------------------------------------


@dataclass(frozen=True)
class EvaluationResult:
    """Test metrics and the decision threshold chosen on validation (binary)."""

    metrics: dict[str, float]
    threshold: float | None


def evaluate_model(
    cfg: LossflowConfig,
    prepared: PreparedData,
    trained: TrainResult,
    *,
    run_id: str | None = None,
) -> EvaluationResult:
    """Choose the threshold on validation, compute test metrics and plots, log them."""
    pre = prepared.preprocessor()
    model = load_trained_model(cfg, pre, trained.checkpoint)
    ev = cfg.evaluation
    costs = (ev.fn_cost, ev.fp_cost) if ev.threshold == "cost" else (None, None)
    threshold: float | None = None
    if cfg.data.task == "binary":
        val_x, val_y = prepared.arrays("val")
        choice = choose_threshold(
            val_y, predict(model, model_inputs(pre, val_x)), fn_cost=costs[0], fp_cost=costs[1]
        )
        threshold = choice.threshold
    test_x, test_y = prepared.arrays("test")
    output = predict(model, model_inputs(pre, test_x))
    history = json.loads(trained.history_path.read_text())
    report = evaluation_report(
        cfg.data.task,
        test_y,
        output,
        threshold=threshold,
        label_names=[str(n) for n in pre.label_names] if pre.label_names else None,
        fn_cost=costs[0],
        fp_cost=costs[1],
        quantile=_quantile(cfg),
        history={k: v for k, v in history.items() if "/" in k} or None,
    )
    metrics = {f"test/{k}": float(v) for k, v in report.metrics.items()}
    if threshold is not None:
        metrics["val/threshold"] = threshold
    if run_id is not None:
        tracker = tracker_for(cfg)
        tracker.log_metrics(run_id, metrics, None)
        for name, figure in report.figures.items():
            tracker.log_figure(run_id, figure, f"plots/{name}")
    return EvaluationResult(metrics, threshold)


# --- export ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ExportResult:
    """The exported ONNX file and its parity with torch on the whole test split."""

    onnx_path: Path
    parity_max_abs_diff: float
    parity_rows: int


def model_metadata(
    cfg: LossflowConfig, prepared: PreparedData, lid: str, threshold: float | None
) -> dict[str, str]:
    """What the ONNX file carries so a service needs nothing else to score raw records."""
    pre = prepared.preprocessor()
    return {
        "lossflow.version": lossflow.__version__,
        "lossflow.loss_id": lid,
        "lossflow.loss_spec": json.dumps(spec_payload(resolved_loss_spec(cfg, prepared))),
        "lossflow.task": cfg.data.task,
        "lossflow.output": _output(cfg, pre).transform,
        "lossflow.preprocessor": json.dumps(pre.to_dict()),
        "lossflow.threshold": json.dumps(threshold),
        "lossflow.label_names": json.dumps(
            [str(n) for n in pre.label_names] if pre.label_names else None
        ),
        "lossflow.dataset_fingerprint": prepared.fingerprint,
    }


def export_model(
    cfg: LossflowConfig,
    prepared: PreparedData,
    trained: TrainResult,
    evaluation: EvaluationResult,
    lid: str,
    out_dir: Path,
) -> ExportResult:
    """Export to ONNX and gate on parity with torch over the whole test split.

    Raises:
        lossflow.export.ParityError: the exported graph disagrees with torch beyond
            ``export.parity_atol``; nothing downstream (registration) runs.
    """
    pre = prepared.preprocessor()
    model = load_trained_model(cfg, pre, trained.checkpoint)
    test_x, _ = prepared.arrays("test")
    inputs = model_inputs(pre, test_x)
    example = {k: torch.from_numpy(v[:2]) for k, v in inputs.items()}
    path = export_onnx(
        model,
        example,
        out_dir / "model.onnx",
        model_metadata(cfg, prepared, lid, evaluation.threshold),
    )
    report = check_parity(model, path, inputs, atol=cfg.export.parity_atol)
    return ExportResult(path, report.max_abs_diff, report.rows)


# --- register --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """A registered model version and the aliases it now holds."""

    name: str
    version: str
    aliases: tuple[str, ...]


def register_model(
    cfg: LossflowConfig, prepared: PreparedData, exported: ExportResult, run_id: str
) -> Registration:
    """Log the ONNX model to the run, register a version, alias it ``challenger`` (and
    ``champion`` when the registered model has none yet)."""
    tracker = tracker_for(cfg)
    pre = prepared.preprocessor()
    test_x, _ = prepared.arrays("test")
    example = {k: v[:5] for k, v in model_inputs(pre, test_x).items()}
    output = OnnxRunner(exported.onnx_path).run(example)
    name = cfg.tracking.registered_model
    version = tracker.log_onnx_model(run_id, exported.onnx_path, example, output, name)
    tracker.log_metrics(run_id, {"export/parity_max_abs_diff": exported.parity_max_abs_diff}, None)
    aliases = ["challenger"]
    tracker.set_alias(name, "challenger", version)
    if tracker.alias_version(name, "champion") is None:
        tracker.set_alias(name, "champion", version)
        aliases.append("champion")
    return Registration(name, version, tuple(aliases))
