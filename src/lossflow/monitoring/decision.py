"""The retrain decision: a pure function of the evidence, the policy and what was asked before.

``decide`` reads a drift report, a prior-shift verdict and a performance report of one model
version over one window and answers ``retrain`` or not, with the reasons, the evidence, and the
**candidate losses** to retrain with:

- label-prior shift -> ``logit_adjusted`` aimed at the new prior (``class_priors`` = training
  prior / new prior, normalised: a model trained on data with the training prior then scores
  under the new one, Menon et al.'s adjustment) and ``class_balanced``;
- the positive class falling toward rarity (its new share below ``rare_positive_share`` and
  below training) -> ``focal``;
- heavier residual tails in regression (excess kurtosis of the window's residuals above the
  reference's by more than ``tail_kurtosis_increase``) -> ``huber`` and the median ``quantile``;
- covariate shift or decay alone -> the current loss, on recent data.

It never retrains on too little evidence: too few rows, or a window whose records do not fit the
model, give ``insufficient_data``. It asks once per cause: a retrain asked for the same model
version and the same causes (the **dedup key**) is not asked again, and no retrain is asked
within ``cooldown_s`` of the last one (``cooldown``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Literal

from lossflow.monitoring.drift import DriftReport
from lossflow.monitoring.performance import PerformanceReport
from lossflow.monitoring.prior import PriorShift

Status = Literal["retrain", "no_action", "insufficient_data", "cooldown", "duplicate"]


@dataclass(frozen=True)
class Policy:
    """When monitoring asks for a retrain (the ``decision`` section of the monitoring config)."""

    min_rows: int = 1000
    cooldown_s: float = 86_400.0
    retrain_on_dataset_drift: bool = True
    retrain_on_prediction_drift: bool = False
    retrain_on_decay: bool = True
    retrain_on_prior_shift: bool = True
    rare_positive_share: float = 0.1
    tail_kurtosis_increase: float = 2.0


@dataclass(frozen=True)
class Reason:
    """One cause of a retrain (or a note on why not).

    Attributes:
        code: stable identifier (``dataset_drift``, ``prior_shift``, ``decay:roc_auc``...).
        message: what was seen, for a person.
    """

    code: str
    message: str


@dataclass(frozen=True)
class Evidence:
    """What one monitoring run saw of one model version.

    Attributes:
        model_name: registered model.
        model_version: the version judged.
        loss_spec: the loss it was trained with (JSON form).
        task: its task.
        window_start: ISO start of the window.
        window_end: ISO end of the window.
        rows: rows in the window.
        problem: a reason the window cannot be judged (records that do not fit the model...).
        drift: feature and prediction drift (``None`` when not computed).
        prediction_drift: drift of the model's scores.
        prior: label-prior shift.
        performance: quality on delayed labels.
        residual_kurtosis: excess kurtosis of the window's residuals (regression, labelled).
        reference_residual_kurtosis: the same on the reference's test split.
    """

    model_name: str
    model_version: str
    loss_spec: dict[str, Any]
    task: str
    window_start: str
    window_end: str
    rows: int
    problem: str | None = None
    drift: DriftReport | None = None
    prediction_drift: bool = False
    prior: PriorShift | None = None
    performance: PerformanceReport | None = None
    residual_kurtosis: float | None = None
    reference_residual_kurtosis: float | None = None


@dataclass(frozen=True)
class PastRequest:
    """A retrain asked before (from the monitoring runs' records)."""

    at: datetime
    dedup_key: str


@dataclass(frozen=True)
class Decision:
    """What monitoring concluded.

    Attributes:
        status: ``retrain``, ``no_action``, ``insufficient_data``, ``cooldown`` or ``duplicate``.
        reasons: the causes seen (also when they do not lead to a retrain now).
        candidate_losses: loss specs to retrain with (empty unless ``retrain``).
        dedup_key: identifies the causes for this model version.
        model_version: the version judged.
        window: ``[start, end)`` of the window (ISO).
        evidence: the numbers behind the reasons.
    """

    status: Status
    reasons: list[Reason]
    candidate_losses: list[dict[str, Any]]
    dedup_key: str | None
    model_version: str
    window: tuple[str, str]
    evidence: dict[str, Any] = field(default_factory=dict)

    @property
    def retrain(self) -> bool:
        """Whether a retrain is asked for."""
        return self.status == "retrain"

    def to_json(self) -> dict[str, Any]:
        """JSON-able form."""
        return {
            "status": self.status,
            "retrain": self.retrain,
            "reasons": [r.__dict__ for r in self.reasons],
            "candidate_losses": self.candidate_losses,
            "dedup_key": self.dedup_key,
            "model_version": self.model_version,
            "window": list(self.window),
            "evidence": self.evidence,
        }


def dedup_key(model_name: str, model_version: str, codes: Sequence[str]) -> str:
    """A short stable id of "these causes for this model version"."""
    text = f"{model_name}:{model_version}:{','.join(sorted(set(codes)))}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _reasons(evidence: Evidence, policy: Policy) -> list[Reason]:
    reasons: list[Reason] = []
    drift = evidence.drift
    if policy.retrain_on_dataset_drift and drift is not None and drift.dataset_drift:
        reasons.append(
            Reason(
                "dataset_drift",
                f"{len(drift.drifted)} of {len(drift.columns)} features drifted "
                f"({drift.drifted_share:.0%} >= {drift.methods.dataset_share:.0%}): "
                f"{', '.join(drift.drifted[:5])}",
            )
        )
    if policy.retrain_on_prediction_drift and evidence.prediction_drift:
        reasons.append(Reason("prediction_drift", "the model's score distribution drifted"))
    prior = evidence.prior
    if policy.retrain_on_prior_shift and prior is not None and prior.shifted:
        new = prior.new_prior or []
        reasons.append(
            Reason(
                "prior_shift",
                f"class prior {_shares(new)} ({prior.basis}) against {_shares(prior.reference)} "
                f"in training (largest change {prior.change:.3f})",
            )
        )
    performance = evidence.performance
    if policy.retrain_on_decay and performance is not None:
        for d in performance.decay:
            if d.decayed:
                reasons.append(
                    Reason(
                        f"decay:{d.metric}",
                        f"{d.metric} {d.window.value:.4f} [{d.window.low:.4f}, "
                        f"{d.window.high:.4f}] against {d.reference:.4f} on the test split",
                    )
                )
    if (
        evidence.task == "regression"
        and evidence.residual_kurtosis is not None
        and evidence.reference_residual_kurtosis is not None
        and evidence.residual_kurtosis - evidence.reference_residual_kurtosis
        > policy.tail_kurtosis_increase
    ):
        reasons.append(
            Reason(
                "heavy_tails",
                f"residual excess kurtosis {evidence.residual_kurtosis:.2f} against "
                f"{evidence.reference_residual_kurtosis:.2f} on the test split",
            )
        )
    return reasons


def _shares(values: Sequence[float]) -> str:
    return "[" + ", ".join(f"{v:.3f}" for v in values) + "]"


def candidate_losses(
    evidence: Evidence, reasons: Sequence[Reason], policy: Policy
) -> list[dict[str, Any]]:
    """The loss specs worth retraining with, for these causes (the first is the most pointed)."""
    codes = {r.code for r in reasons}
    candidates: list[dict[str, Any]] = []
    prior = evidence.prior
    if "prior_shift" in codes and prior is not None and prior.new_prior is not None:
        ratio = [r / max(q, 1e-6) for r, q in zip(prior.reference, prior.new_prior, strict=True)]
        total = sum(ratio)
        candidates.append(
            {
                "name": "logit_adjusted",
                "tau": 1.0,
                "class_priors": [round(v / total, 6) for v in ratio],
            }
        )
        candidates.append({"name": "class_balanced"})
        positive = prior.new_prior[-1]
        if (
            len(prior.classes) == 2
            and positive < policy.rare_positive_share
            and positive < prior.reference[-1]
        ):
            candidates.append({"name": "focal", "gamma": 2.0, "alpha": 0.25})
    if "heavy_tails" in codes:
        candidates.append({"name": "huber"})
        candidates.append({"name": "quantile", "quantile": 0.5})
    if not candidates:
        candidates.append(dict(evidence.loss_spec))  # covariate shift, decay: same loss, new data
    unique: list[dict[str, Any]] = []
    for spec in candidates:
        if spec not in unique:
            unique.append(spec)
    return unique


def decide(
    evidence: Evidence,
    policy: Policy,
    history: Sequence[PastRequest],
    now: datetime,
) -> Decision:
    """The decision for ``evidence`` (see the module).

    Args:
        evidence: what the monitoring run saw.
        policy: thresholds, minimum rows, cooldown.
        history: retrains asked before.
        now: the decision's time (aware).
    """
    window = (evidence.window_start, evidence.window_end)
    base = {"rows": evidence.rows, "model_version": evidence.model_version}
    if evidence.problem is not None:
        return Decision(
            "insufficient_data",
            [Reason("insufficient_data", evidence.problem)],
            [],
            None,
            evidence.model_version,
            window,
            base,
        )
    if evidence.rows < policy.min_rows:
        return Decision(
            "insufficient_data",
            [
                Reason(
                    "insufficient_data",
                    f"{evidence.rows} rows in the window; the policy needs {policy.min_rows} "
                    "(decision.min_rows) to judge drift",
                )
            ],
            [],
            None,
            evidence.model_version,
            window,
            base,
        )
    reasons = _reasons(evidence, policy)
    evidence_json = {
        **base,
        "drifted": [] if evidence.drift is None else evidence.drift.drifted,
        "drifted_share": None if evidence.drift is None else evidence.drift.drifted_share,
        "prior": None if evidence.prior is None else evidence.prior.to_json(),
        "decayed": [] if evidence.performance is None else evidence.performance.decayed,
    }
    if not reasons:
        return Decision("no_action", [], [], None, evidence.model_version, window, evidence_json)
    key = dedup_key(evidence.model_name, evidence.model_version, [r.code for r in reasons])
    if any(p.dedup_key == key for p in history):
        note = Reason("duplicate", "the same causes were already sent for this model version")
        return Decision(
            "duplicate", [*reasons, note], [], key, evidence.model_version, window, evidence_json
        )
    last = max((p.at for p in history), default=None)
    if last is not None and now - last < timedelta(seconds=policy.cooldown_s):
        until = last + timedelta(seconds=policy.cooldown_s)
        note = Reason("cooldown", f"a retrain was asked at {last.isoformat()}; next after {until}")
        return Decision(
            "cooldown", [*reasons, note], [], key, evidence.model_version, window, evidence_json
        )
    candidates = candidate_losses(evidence, reasons, policy)
    return Decision(
        "retrain", reasons, candidates, key, evidence.model_version, window, evidence_json
    )
