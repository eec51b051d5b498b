"""What a retrain is asked to do: the payload of the ``lossflow.retrain.requested`` event that
the monitoring flow emits (or an operator sends by hand)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from lossflow.errors import UserError


class RetrainRequestError(UserError):
    """The request cannot be acted on; the message names the field and what it needs."""


@dataclass(frozen=True)
class RetrainRequest:
    """A monitoring decision to retrain.

    Attributes:
        model_name: the registered model.
        model_version: the champion version that was judged.
        reasons: the decision's reason codes (``dataset_drift``, ``prior_shift``, ...).
        messages: the reasons for people.
        candidate_losses: loss specs the decision proposes, most pointed first.
        window_start: the evidence window's start (UTC).
        window_end: its end (exclusive).
        dedup_key: identifies "these causes for this version".
        monitoring_run_id: the MLflow run of the decision.
        prior: the window's label prior against training (``classes``, ``reference``,
            ``new``), when the decision measured one.
    """

    model_name: str
    model_version: str
    reasons: list[str]
    candidate_losses: list[dict[str, Any]]
    window_start: datetime
    window_end: datetime
    dedup_key: str
    messages: list[str] = field(default_factory=list)
    monitoring_run_id: str | None = None
    prior: dict[str, Any] | None = None

    @property
    def pure_prior_shift(self) -> bool:
        """The only cause is a shift of the label prior (the case for post-hoc adjustment)."""
        return set(self.reasons) == {"prior_shift"} and self.prior is not None

    @classmethod
    def from_payload(cls, payload: dict[str, Any]) -> RetrainRequest:
        """Read an event payload.

        Raises:
            RetrainRequestError: a field is missing or malformed.
        """
        if not isinstance(payload, dict):
            raise RetrainRequestError("a retrain request is a JSON object (the event's payload)")
        missing = [k for k in ("model_name", "model_version", "window", "dedup_key")
                   if not payload.get(k)]  # fmt: skip
        if missing:
            raise RetrainRequestError(
                f"the retrain request lacks {', '.join(missing)}; send the payload of a "
                "lossflow.retrain.requested event (lossflow monitor emits it)"
            )
        window = payload["window"]
        try:
            start, end = (_utc(str(w)) for w in window)
        except (TypeError, ValueError):
            raise RetrainRequestError(
                f"window must be two ISO times [start, end); got {window!r}"
            ) from None
        if not start < end:
            raise RetrainRequestError(f"window {window!r} is empty: start must be before end")
        prior = payload.get("prior")
        new = None
        if isinstance(prior, dict):
            new = (
                prior.get("observed") if prior.get("basis") == "labels" else prior.get("estimated")
            )
        return cls(
            model_name=str(payload["model_name"]),
            model_version=str(payload["model_version"]),
            reasons=[str(r) for r in payload.get("reasons") or []],
            candidate_losses=[dict(c) for c in payload.get("candidate_losses") or []],
            window_start=start,
            window_end=end,
            dedup_key=str(payload["dedup_key"]),
            messages=[str(m) for m in payload.get("messages") or []],
            monitoring_run_id=payload.get("monitoring_run_id"),
            prior=None if new is None or not isinstance(prior, dict) else {
                "classes": list(prior.get("classes") or []),
                "reference": [float(v) for v in prior.get("reference") or []],
                "new": [float(v) for v in new],
            },
        )  # fmt: skip


def _utc(text: str) -> datetime:
    value = datetime.fromisoformat(text)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
