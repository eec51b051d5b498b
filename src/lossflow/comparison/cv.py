"""The folds on disk, and one training per arm x fold through the training flow's own code.

:func:`prepare_folds` splits the configured data as the training flow does (the same split and
subsample), cross-validates its **training part** and writes each fold as a prepared directory
(:class:`~lossflow.data.prepare.PreparedData`: the preprocessing fitted on the fold's training
rows only; its validation and test rows; and the held-out parts of the configured split --
validation, test, production -- encoded with the fold's preprocessing, for the later months).
Every arm reads the same fold directories.

:func:`run_unit` trains one arm on one fold with :func:`lossflow.models.build.fit_model`, chooses
its threshold on the fold's validation rows, scores the fold's test rows and the held-out parts,
and (where asked) computes permutation importances and the loss landscape. It never raises for a
failing arm: the result carries the error (a non-finite loss, a bad option) and the other units
go on. Units are independent; :func:`run_units` runs them in parallel processes.

A unit's directory holds ``checkpoints/``, ``history.json``, ``predictions.npz`` (test and
held-out outputs), ``importance.json``, ``landscape.npz`` and, when it failed, ``error.txt``.
"""

from __future__ import annotations

import json
import time
import traceback
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from lossflow.comparison.importance import permutation_importance
from lossflow.comparison.landscape import loss_landscape
from lossflow.comparison.parallel import run_in_processes
from lossflow.comparison.plan import ComparisonPlan
from lossflow.comparison.scoring import Direction, epochs_to_fraction, fold_threshold, score
from lossflow.comparison.slices import CLASS_SLICE, HOUR_BAND_SLICE
from lossflow.config.compare import CVConfig, ImportanceConfig, LandscapeConfig
from lossflow.config.training import (
    TrainingConfig,
    monitored_metrics,
    primary_metric,
)
from lossflow.data.folds import FoldError, FoldKind, check_fold_classes, cv_folds
from lossflow.data.prepare import (
    PreparedData,
    dataset_fingerprint,
    load_checked,
    oversampled,
    split_data,
    write_prepared,
)
from lossflow.data.preprocessing import EncodedFeatures
from lossflow.data.splits import split_frame
from lossflow.errors import UserError
from lossflow.evaluation.baseline import baseline_value, model_baseline
from lossflow.models.build import Split, build_system, fit_model, load_trained_model, predict

HELDOUT_PARTS = ("val", "test", "production")
HELDOUT_RAW = "heldout.parquet"
PREDICTIONS = "predictions.npz"


@dataclass(frozen=True)
class FoldData:
    """One fold on disk."""

    repeat: int
    index: int
    prepared: PreparedData

    @property
    def name(self) -> str:
        """``r<repeat>f<index>``."""
        return f"r{self.repeat}f{self.index}"

    @property
    def n_fit(self) -> int:
        """Rows the fold's model learns from (training and validation rows)."""
        return self.prepared.sizes["train"] + self.prepared.sizes["val"]

    @property
    def n_test(self) -> int:
        """Rows the fold is scored on."""
        return self.prepared.sizes["test"]


@dataclass(frozen=True)
class FoldSet:
    """The folds every arm is trained on, and what describes them.

    Attributes:
        directory: where the fold directories and the held-out raw rows are.
        kind: ``stratified``, ``kfold`` or ``time``.
        folds: the folds, repeat by repeat.
        heldout: the held-out parts of the configured split that have rows.
        fingerprint: the content hash of the source data.
        target: the target column.
        time: the time column, if the data has one.
        features: the feature names in model-input order (numeric, then categorical).
        pool_rows: rows cross-validated (the configured split's training part).
    """

    directory: Path
    kind: FoldKind
    folds: tuple[FoldData, ...]
    heldout: tuple[str, ...]
    fingerprint: str
    target: str
    time: str | None
    features: tuple[str, ...]
    pool_rows: int

    @property
    def n_train(self) -> float:
        """Mean rows a fold's model learns from (``n_1`` of the corrected t-test)."""
        return float(np.mean([f.n_fit for f in self.folds]))

    @property
    def n_test(self) -> float:
        """Mean rows a fold is scored on (``n_2`` of the corrected t-test)."""
        return float(np.mean([f.n_test for f in self.folds]))

    def heldout_raw(self) -> pd.DataFrame:
        """The held-out rows (raw, as read) with their ``part``, in the order they are scored."""
        return pd.read_parquet(self.directory / HELDOUT_RAW)


def _check_slices(pool: pd.DataFrame, slices: Sequence[str], target: str) -> None:
    for name in slices:
        if name == CLASS_SLICE or name in pool.columns:
            continue
        if name == HOUR_BAND_SLICE and "hour" in pool.columns:
            continue
        raise FoldError(
            f"robustness.slices: {name!r} is not a column of the data; slice by one of "
            f"{', '.join(map(str, pool.columns))}, hour_band (with an hour column) or class"
        )


def prepare_folds(
    cfg: TrainingConfig,
    cv: CVConfig,
    kind: FoldKind,
    slices: Sequence[str],
    directory: Path,
) -> FoldSet:
    """Cut the configured training part into folds, check them, and write each fold.

    Everything is checked before the first fold is written: a class rarer than the folds, a
    fold part without a class the task needs, a slice that is not a column.

    Raises:
        FoldError: the folds cannot work; the message says what to change.
        DataValidationError: the data does not fit its schema or task.
        SplitError: the configured split leaves a part empty.
    """
    frame, columns, _ = load_checked(cfg)
    splits = split_frame(frame, split_data(cfg), columns)
    pool = splits.train
    target = columns.target
    folds = cv_folds(
        pool,
        kind=kind,
        folds=cv.folds,
        repeats=cv.repeats,
        seed=cv.seed,
        val_fraction=cv.val_fraction,
        target=target,
        time=columns.time,
    )
    check_fold_classes(pool[target].to_numpy(), folds, cfg.data.task, target)
    _check_slices(pool, slices, target)
    heldout = {p: splits.parts()[p] for p in HELDOUT_PARTS if len(splits.parts()[p])}
    directory.mkdir(parents=True, exist_ok=True)
    raw = pd.concat([part.assign(part=name) for name, part in heldout.items()], ignore_index=True)
    raw.to_parquet(directory / HELDOUT_RAW, index=False)
    fingerprint = dataset_fingerprint(frame)
    written = []
    for fold in folds:
        parts = {
            "train": pool.iloc[fold.train],
            "val": pool.iloc[fold.val],
            "test": pool.iloc[fold.test],
            **{f"heldout-{name}": part for name, part in heldout.items()},
        }
        prepared = write_prepared(
            cfg,
            columns,
            parts,
            directory / fold.name,
            fingerprint,
            raw={"test": parts["test"]},
            oversample_train=False,  # each arm applies its own data.augment.oversample
        )
        written.append(FoldData(fold.repeat, fold.index, prepared))
    return FoldSet(
        directory=directory,
        kind=kind,
        folds=tuple(written),
        heldout=tuple(heldout),
        fingerprint=fingerprint,
        target=target,
        time=columns.time,
        features=tuple(columns.features),
        pool_rows=len(pool),
    )


@dataclass(frozen=True)
class Unit:
    """One arm trained on one fold.

    Attributes:
        arm: the arm (or ablation variant) name.
        config: its training configuration.
        fold: the fold.
        heldout: the held-out parts to score too.
        features: the feature names, for importances.
        directory: where the unit writes.
        metric: the fold metric importances are measured by.
        better: which way it is better.
        importance: compute permutation importances on the held-out test part.
        landscape: compute the loss landscape around the trained weights.
    """

    arm: str
    config: TrainingConfig
    fold: FoldData
    heldout: tuple[str, ...]
    features: tuple[str, ...]
    directory: Path
    metric: str
    better: Direction
    importance: ImportanceConfig | None = None
    landscape: LandscapeConfig | None = None


@dataclass(frozen=True)
class UnitResult:
    """What one unit produced (its files are in ``directory``).

    Attributes:
        arm: the arm.
        fold: the fold's name; ``repeat`` and ``index`` locate it.
        repeat: the fold's repeat.
        index: the fold's index within its repeat.
        directory: the unit's directory.
        error: why it failed; None when it trained and scored.
        metrics: every fold metric on the fold's test rows.
        threshold: the binary threshold chosen on the fold's validation rows.
        epochs: epochs trained.
        epochs_to_95: epochs until the monitored validation metric was within 5 % of its best.
        wall_s: seconds spent training and scoring (importance and landscape not included).
        total_s: seconds of the whole unit (with importance and landscape).
        baseline: ``(kind, metric, value)`` of the trivial baseline (the fold's training
            ``prior``, ``mean``, ``median`` or ``quantile``) on the fold's test rows, by the
            metric the arm is judged by against it.
    """

    arm: str
    fold: str
    repeat: int
    index: int
    directory: Path
    error: str | None = None
    metrics: dict[str, float] | None = None
    threshold: float | None = None
    epochs: int = 0
    epochs_to_95: int | None = None
    wall_s: float = 0.0
    total_s: float = 0.0
    baseline: tuple[str, str, float] | None = None

    @property
    def ok(self) -> bool:
        """Whether the unit trained and scored."""
        return self.error is None

    def predictions(self) -> dict[str, np.ndarray]:
        """``test_y``, ``test_output`` and ``<part>_y``, ``<part>_output`` per held-out part."""
        with np.load(self.directory / PREDICTIONS) as data:
            return {key: data[key] for key in data.files}


def _monitor(cfg: TrainingConfig) -> tuple[str, Direction]:
    stopping = cfg.early_stopping()
    monitor = stopping.monitor if stopping is not None and stopping.monitor else None
    name = monitor or primary_metric(cfg.data.task, cfg.loss)
    return name, monitored_metrics(cfg.data.task, cfg.loss, cfg.regularizers)[name]


def _landscape(unit: Unit, checkpoint: Path, settings: LandscapeConfig) -> None:
    cfg, prepared = unit.config, unit.fold.prepared
    pre = prepared.preprocessor()
    system = build_system(cfg, pre, prepared.class_counts)
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)["state_dict"]
    system.load_state_dict(state)
    system.eval()
    encoded, target = prepared.arrays("train")
    rows = np.random.default_rng(settings.seed).permutation(len(encoded))[: settings.rows]
    inputs = tuple(torch.from_numpy(a) for a in pre.model_inputs(encoded.take(rows)).values())
    y = torch.from_numpy(target[rows])
    y = y.long() if y.dtype in (torch.int32, torch.int64) else y.float()

    def objective() -> float:
        with torch.no_grad():
            return float(system.objective(inputs, y))

    surface = loss_landscape(
        objective,
        system.net,
        points_1d=settings.points_1d,
        points_2d=settings.points_2d,
        span=settings.span,
        seed=settings.seed,
    )
    np.savez(
        unit.directory / "landscape.npz",
        steps=surface.steps,
        line=surface.line,
        grid=surface.grid,
        surface=surface.surface,
        center=np.array(surface.center),
    )


def _importance(
    unit: Unit, model: torch.nn.Module, threshold: float | None, settings: ImportanceConfig
) -> None:
    cfg, prepared = unit.config, unit.fold.prepared
    pre = prepared.preprocessor()
    encoded, y = prepared.arrays("heldout-test")
    if settings.rows is not None and len(encoded) > settings.rows:
        drawn = np.random.default_rng(settings.seed).permutation(len(encoded))
        keep = np.sort(drawn[: settings.rows])
        encoded, y = encoded.take(keep), y[keep]

    def output(features: EncodedFeatures) -> np.ndarray:
        return predict(model, pre.model_inputs(features))

    def metric(out: np.ndarray) -> float:
        return score(cfg, y, out, threshold)[unit.metric]

    values = permutation_importance(
        output,
        metric,
        encoded,
        list(pre.numeric_columns) + list(pre.categorical_columns),
        unit.better,
        repeats=settings.repeats,
        seed=settings.seed,
    )
    (unit.directory / "importance.json").write_text(json.dumps(values))


def _train_and_score(unit: Unit, start: float) -> UnitResult:
    cfg, prepared = unit.config, unit.fold.prepared
    pre = prepared.preprocessor()
    train_x, train_y = oversampled(cfg, *prepared.arrays("train"))
    result = fit_model(
        cfg,
        pre,
        Split(train_x, train_y),
        Split(*prepared.arrays("val")),
        prepared.class_counts,
        unit.directory / "checkpoints",
    )
    (unit.directory / "history.json").write_text(json.dumps(result.history))
    checkpoint = result.checkpoint
    model = load_trained_model(cfg, pre, checkpoint)
    val_x, val_y = prepared.arrays("val")
    threshold = fold_threshold(cfg, val_y, predict(model, pre.model_inputs(val_x)))
    outputs: dict[str, np.ndarray] = {}
    for part in ("test", *(f"heldout-{p}" for p in unit.heldout)):
        x, y = prepared.arrays(part)
        key = part.removeprefix("heldout-")
        outputs[f"{key}_y"] = y
        outputs[f"{key}_output"] = predict(model, pre.model_inputs(x))
    np.savez(unit.directory / PREDICTIONS, **outputs)  # type: ignore[arg-type]
    metrics = score(cfg, outputs["test_y"], outputs["test_output"], threshold)
    trivial = model_baseline(cfg, prepared)
    baseline = None
    if trivial is not None and trivial.metric in metrics:
        baseline = (trivial.kind, trivial.metric, baseline_value(trivial, outputs["test_y"]))
    wall = time.perf_counter() - start
    monitor, better = _monitor(cfg)
    converged = epochs_to_fraction(result.history.get(monitor, []), better)
    if unit.importance is not None and "test" in unit.heldout:
        _importance(unit, model, threshold, unit.importance)
    if unit.landscape is not None:
        _landscape(unit, checkpoint, unit.landscape)
    return _result(
        unit,
        metrics=metrics,
        threshold=threshold,
        epochs=result.epochs,
        epochs_to_95=converged,
        wall_s=wall,
        baseline=baseline,
    )


def _result(unit: Unit, **outcome: Any) -> UnitResult:
    fold = unit.fold
    return UnitResult(unit.arm, fold.name, fold.repeat, fold.index, unit.directory, **outcome)


def run_unit(unit: Unit) -> UnitResult:
    """Train and score one arm on one fold; a failure is returned, not raised.

    An arm that fails -- a non-finite loss, an option its loss refuses at build time, metrics
    undefined on its outputs -- is reported with its error (a user error as its message, any
    other exception with its type) and the traceback in ``error.txt``; the comparison goes on
    with the other units.
    """
    unit.directory.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    try:
        result = _train_and_score(unit, start)
        return replace(result, total_s=time.perf_counter() - start)
    except Exception as err:  # the unit's failure is its result: the other arms still compare
        (unit.directory / "error.txt").write_text("".join(traceback.format_exception(err)))
        message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
        elapsed = time.perf_counter() - start
        return _result(unit, error=message, wall_s=elapsed, total_s=elapsed)


def units_for(plan: ComparisonPlan, folds: FoldSet, directory: Path) -> list[Unit]:
    """One unit per runnable arm (and ablation variant) per fold, fold by fold.

    Importances are computed for the arms (not the variants) on every fold of the first
    repeat; the landscape on each arm's first fold.
    """
    settings = plan.settings
    units = []
    for fold in folds.folds:
        for arm in plan.runnable:
            if arm.config is None:
                continue
            main = arm.ablation_of is None and fold.repeat == 0
            units.append(
                Unit(
                    arm=arm.name,
                    config=arm.config,
                    fold=fold,
                    heldout=folds.heldout,
                    features=folds.features,
                    directory=directory / arm.name / fold.name,
                    metric=plan.metric,
                    better=plan.better,
                    importance=settings.importance
                    if main and settings.importance.enabled
                    else None,
                    landscape=settings.landscape
                    if main and fold.index == 0 and settings.landscape.enabled
                    else None,
                )
            )
    return units


def run_units(units: Sequence[Unit], workers: int) -> list[UnitResult]:
    """Every unit, in up to ``workers`` processes; results in the order of ``units``."""
    return run_in_processes(run_unit, list(units), workers)


@dataclass(frozen=True)
class CrossValidation:
    """Every unit's result and how long they took together.

    Attributes:
        results: one per arm x fold, fold by fold.
        elapsed_s: wall-clock seconds from the first unit's start to the last one's end.
        workers: processes the units ran in.
    """

    results: tuple[UnitResult, ...]
    elapsed_s: float
    workers: int

    @property
    def busy_s(self) -> float:
        """Seconds the units took, all together."""
        return float(sum(r.total_s for r in self.results))


def cross_validate(plan: ComparisonPlan, folds: FoldSet, directory: Path) -> CrossValidation:
    """Train and score every runnable arm (and ablation variant) on every fold, in up to
    ``plan.workers`` processes."""
    units = units_for(plan, folds, directory)
    workers = min(plan.workers, len(units))
    start = time.perf_counter()
    results = run_units(units, workers)
    return CrossValidation(tuple(results), time.perf_counter() - start, workers)
