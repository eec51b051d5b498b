"""The pre-screen: each candidate against the champion on the evidence window's labelled rows.

Both models score the same rows; each row's loss (log loss by default, the A/B analysis's
per-record metric) is averaged per unit, and the per-unit differences ``candidate - champion``
get a paired t-interval at ``alpha / k`` for ``k`` candidates (Bonferroni: every interval holds
at once). A candidate is **worse** when its interval lies above zero; with ``require:
not_worse`` the best candidate (lowest mean difference) that is not worse and better on average
becomes the challenger — the A/B test on live traffic then decides; with ``require: better``
its interval must lie below zero. No such candidate: no challenger, and why.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd

from lossflow.ab.metrics import record_loss
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
    """

    name: str
    loss_id: str
    champion_mean: float
    candidate_mean: float
    test: PairedTTest
    verdict: Verdict

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
        }


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
) -> list[Screened]:
    """Each candidate (name -> ``(onnx path, loss id)``) against ``champion`` (see the module)."""
    units = rows[UNIT].astype(str).to_numpy()
    base = unit_means(units, row_losses(champion, rows, metric, target))
    level = alpha / max(len(candidates), 1)
    screened = []
    for name, (path, lid) in candidates.items():
        mine = unit_means(units, row_losses(path, rows, metric, target))
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
        screened.append(Screened(name, lid, float(base.mean()), float(mine.mean()), test, verdict))
    return screened


def choose(screened: list[Screened], require: str) -> tuple[Screened | None, str]:
    """The challenger among the screened candidates, and why (or why none)."""
    wanted = {"better"} if require == "better" else {"better", "not_worse"}
    eligible = [s for s in screened if s.verdict in wanted]
    if not eligible:
        shown = "; ".join(
            f"{s.name} {s.verdict} ({s.test.mean_difference:+.4f} [{s.test.ci_low:+.4f}, "
            f"{s.test.ci_high:+.4f}])"
            for s in screened
        )
        need = "significantly better" if require == "better" else "better on average"
        return None, f"no candidate is {need} than the champion and not worse: {shown}"
    best = min(eligible, key=lambda s: s.test.mean_difference)
    return best, (
        f"{best.name} is {best.verdict.replace('_', ' ')}: {best.test.mean_difference:+.4f} "
        f"[{best.test.ci_low:+.4f}, {best.test.ci_high:+.4f}] per unit against the champion"
    )
