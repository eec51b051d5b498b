"""What a search produced, as the report shows it: the trials, the best one, parameter
importances, each arm's sensitivity to its parameters, and the best trial as an experiment
overlay. Plain data, read from the study by :func:`lossflow.comparison.optuna_study.study_result`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy import stats

from lossflow.comparison.scoring import Direction
from lossflow.comparison.search import ARM_PARAM, StudyPlan, searched, trial_config
from lossflow.config.training import config_to_dict

# Overlay keys that describe where a run goes, not what it trains.
_NOT_IN_OVERLAY = ("data_dir", "tracking", "schedule")


@dataclass(frozen=True)
class TrialRecord:
    """One finished trial as the report shows it."""

    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    intermediate: dict[int, float]
    worker: int | None
    error: str | None
    ticket: int | None
    duration_s: float | None


@dataclass(frozen=True)
class Sensitivity:
    """How the objective moves with one parameter of one arm, over that arm's trials.

    Attributes:
        arm: the arm.
        param: the parameter.
        trials: completed trials of the arm.
        spearman: Spearman's rank correlation of the parameter and the objective (None when
            either is constant or fewer than 3 trials).
        spread: the objective's range over those trials.
    """

    arm: str
    param: str
    trials: int
    spearman: float | None
    spread: float


@dataclass(frozen=True)
class StudyResult:
    """The study after its workers are done."""

    name: str
    storage: str
    metric: str
    better: Direction
    sampler: str
    trials: tuple[TrialRecord, ...]
    best: TrialRecord | None
    importances: dict[str, float] = field(default_factory=dict)
    importance_note: str | None = None
    sensitivity: tuple[Sensitivity, ...] = ()

    def finished(self) -> list[TrialRecord]:
        """Trials that ran to the end or were pruned (the extra ones closed without training
        are not among them)."""
        return [t for t in self.trials if t.state in ("COMPLETE", "PRUNED")]


def sensitivities(plan: StudyPlan, trials: Sequence[TrialRecord]) -> list[Sensitivity]:
    """Each arm's parameters against the objective, over the arm's completed trials."""
    out = []
    for arm in plan.arms:
        done = [t for t in trials if t.state == "COMPLETE" and t.params.get(ARM_PARAM) == arm]
        for param in searched(plan, arm):
            pairs = [(t.params[param], t.value) for t in done if param in t.params]
            if not pairs:
                continue
            xs = np.array([p[0] for p in pairs], dtype=np.float64)
            ys = np.array([p[1] for p in pairs], dtype=np.float64)
            rho: float | None = None
            if len(pairs) >= 3 and np.ptp(xs) > 0 and np.ptp(ys) > 0:
                rho = float(stats.spearmanr(xs, ys).statistic)
            out.append(Sensitivity(arm, param, len(pairs), rho, float(np.ptp(ys))))
    return out


def best_overlay(plan: StudyPlan, best: TrialRecord) -> dict[str, Any]:
    """The best trial as an experiment overlay: its loss file as the ``loss`` group, then its
    whole resolved training configuration but where it runs (``data_dir``, ``tracking``,
    ``schedule``), so ``lossflow train experiment=<file>`` trains exactly that trial."""
    cfg = config_to_dict(trial_config(plan, best.params))
    arm = str(best.params[ARM_PARAM])
    body = {k: v for k, v in cfg.items() if k not in _NOT_IN_OVERLAY}
    return {"defaults": {"loss": plan.loss_files[arm]}, **body}
