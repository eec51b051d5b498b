"""The pre-screen: each candidate against the champion on the evidence window's labelled rows.

Both models score the same rows; each row's loss (log loss by default, the A/B analysis's
per-record metric; for a ranking model each list's ``1 - NDCG@k``, a list being one logged
``/rank`` request) is averaged per unit, and the per-unit differences ``candidate - champion``
get a paired t-interval at ``alpha / k`` for ``k`` candidates (Bonferroni: every interval holds
at once). A candidate is **worse** when its interval lies above zero; with ``require:
not_worse`` the best candidate (lowest mean difference) that is not worse and better on average
becomes the challenger — the A/B test on live traffic then decides; with ``require: better``
its interval must lie below zero. No such candidate: no challenger, and why.

Beside them, the champion's **trivial baseline** (its training prior or training mean/median:
:mod:`lossflow.evaluation.baseline`) is scored on the same rows: a candidate that does not beat
it there, or did not beat its own on its test split, is not chosen unless
``prescreen.allow_below_baseline`` is set, and then the outcome says so.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lossflow.ab.metrics import list_ndcg, record_loss
from lossflow.evaluation.baseline import Baseline
from lossflow.replay.rows import label_value, records_of
from lossflow.retrain.data import UNIT
from lossflow.serving.predictor import OnnxPredictor, logged_output
from lossflow.stats.paired import PairedTTest, paired_ttest
from lossflow.stats.sequential import unit_means

Verdict = Literal["better", "not_worse", "no_gain", "worse"]


@dataclass(frozen=True)
class Screened:
    """One candidate's pre-screen.

    Attributes:
        name: the candidate.
        loss_id: its loss decision.
        champion_mean: the champion's mean per-unit loss on the rows.
        candidate_mean: the candidate's.
        test: the paired test of ``candidate - champion`` per unit.
        verdict: ``better`` (interval below 0), ``not_worse`` (mean below 0, interval across
            it), ``no_gain`` (mean at or above 0, not significantly worse), ``worse``.
        baseline_mean: the trivial baseline's mean per-unit loss on the rows (``None``: the
            champion's metadata has no baseline).
    """

    name: str
    loss_id: str
    champion_mean: float
    candidate_mean: float
    test: PairedTTest
    verdict: Verdict
    baseline_mean: float | None = None

    @property
    def beats_baseline(self) -> bool:
        """Whether its mean loss on the rows is below the trivial baseline's (``True`` when
        there is no baseline to compare with)."""
        return self.baseline_mean is None or self.candidate_mean < self.baseline_mean

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "name": self.name,
            "loss_id": self.loss_id,
            "champion_mean": self.champion_mean,
            "candidate_mean": self.candidate_mean,
            "difference": self.test.mean_difference,
            "ci_low": self.test.ci_low,
            "ci_high": self.test.ci_high,
            "p_value": self.test.p_value,
            "units": self.test.n,
            "verdict": self.verdict,
            "baseline_mean": self.baseline_mean,
            "beats_baseline": self.beats_baseline,
        }


def outcome_losses(
    model: Path, rows: pd.DataFrame, metric: str, target: str, group: str | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """``(units, losses)``: each row's loss under the model, or with ``group`` (ranking) each
    list's ``1 - NDCG@k`` (``metric`` = ``ndcg_<k>``) and its unit."""
    if group is None:
        return rows[UNIT].astype(str).to_numpy(), row_losses(model, rows, metric, target)
    predictor = OnnxPredictor.from_path(model)
    units, losses = [], []
    for _, items in rows.groupby(group, sort=False):
        scores = predictor.predict(records_of(items, predictor.feature_columns))
        outputs = [{"score": p.value} for p in scores]
        losses.append(1.0 - list_ndcg(metric, outputs, items[target].tolist()))
        units.append(str(items[UNIT].iloc[0]))
    return np.asarray(units), np.asarray(losses, dtype=np.float64)


def row_losses(model: Path, rows: pd.DataFrame, metric: str, target: str) -> np.ndarray:
    """``metric`` of each row under the model at ``model`` (its own validation and encoding)."""
    predictor = OnnxPredictor.from_path(model)
    records = records_of(rows, predictor.feature_columns)
    predictions = predictor.predict(records)
    names = predictor.label_names
    labels = [label_value(y, predictor.task) for y in rows[target].tolist()]
    losses = [
        record_loss(metric, logged_output(p, names), y)
        for p, y in zip(predictions, labels, strict=True)
    ]
    return np.asarray(losses, dtype=np.float64)


def prescreen(
    champion: Path,
    candidates: Mapping[str, tuple[Path, str]],
    rows: pd.DataFrame,
    metric: str,
    target: str,
    alpha: float,
    baseline: Baseline | None = None,
    class_names: Sequence[str] | None = None,
    group: str | None = None,
) -> list[Screened]:
    """Each candidate (name -> ``(onnx path, loss id)``) against ``champion`` (see the module),
    and ``baseline`` (the champion's trivial predictor) on the same rows; ``group``: the list
    column of a ranking model."""
    units, losses = outcome_losses(champion, rows, metric, target, group)
    base = unit_means(units, losses)
    trivial = None
    if baseline is not None and group is None:
        answer = baseline.output(class_names)
        task = OnnxPredictor.from_path(champion).task
        labels = [label_value(y, task) for y in rows[target].tolist()]
        losses = np.array([record_loss(metric, answer, y) for y in labels], dtype=np.float64)
        trivial = float(unit_means(units, losses).mean())
    level = alpha / max(len(candidates), 1)
    screened = []
    for name, (path, lid) in candidates.items():
        mine = unit_means(units, outcome_losses(path, rows, metric, target, group)[1])
        test = paired_ttest(mine, base, alpha=level)
        verdict: Verdict
        if test.ci_high < 0:
            verdict = "better"
        elif test.ci_low > 0:
            verdict = "worse"
        elif test.mean_difference < 0:
            verdict = "not_worse"
        else:
            verdict = "no_gain"
        screened.append(
            Screened(name, lid, float(base.mean()), float(mine.mean()), test, verdict, trivial)
        )
    return screened


def choose(
    screened: list[Screened],
    require: str,
    below_on_test: Mapping[str, str] | None = None,
    allow_below_baseline: bool = False,
) -> tuple[Screened | None, str]:
    """The challenger among the screened candidates, and why (or why none).

    Args:
        screened: the pre-screen of each candidate.
        require: ``better`` or ``not_worse``.
        below_on_test: candidates that did not beat their trivial baseline on their own test
            split -> the line that says so.
        allow_below_baseline: choose such a candidate (or one below the baseline on the rows)
            all the same; the reason then says it.
    """
    below = dict(below_on_test or {})
    for s in screened:
        if not s.beats_baseline and s.name not in below:
            below[s.name] = (
                f"mean loss {s.candidate_mean:.4g} on the evidence window is not below the "
                f"trivial baseline's {s.baseline_mean:.4g}"
            )
    wanted = {"better"} if require == "better" else {"better", "not_worse"}
    eligible = [s for s in screened if s.verdict in wanted]
    if not allow_below_baseline:
        eligible = [s for s in eligible if s.name not in below]
    if not eligible:
        shown = "; ".join(
            f"{s.name} {s.verdict} ({s.test.mean_difference:+.4f} [{s.test.ci_low:+.4f}, "
            f"{s.test.ci_high:+.4f}])" + (" below its baseline" if s.name in below else "")
            for s in screened
        )
        need = "significantly better" if require == "better" else "better on average"
        flagged = "; ".join(f"{n}: {why}" for n, why in below.items())
        return None, (
            f"no candidate is {need} than the champion, not worse and above its trivial "
            f"baseline: {shown}" + (f" (below the baseline: {flagged})" if flagged else "")
        )
    best = min(eligible, key=lambda s: s.test.mean_difference)
    note = (
        f"; NOTE: it does NOT beat its trivial baseline ({below[best.name]}), chosen because "
        "prescreen.allow_below_baseline is set"
        if best.name in below
        else ""
    )
    return best, (
        f"{best.name} is {best.verdict.replace('_', ' ')}: {best.test.mean_difference:+.4f} "
        f"[{best.test.ci_low:+.4f}, {best.test.ci_high:+.4f}] per unit against the champion" + note
    )
