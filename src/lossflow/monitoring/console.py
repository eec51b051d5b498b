"""What ``lossflow monitor`` prints: per variant, the drifted features, the prior, the metrics
with their intervals, and the decision with its reasons and candidate losses."""

from __future__ import annotations

from typing import Any, Protocol

from rich.table import Table


class _Outcome(Protocol):
    @property
    def variants(self) -> Any: ...

    @property
    def model_name(self) -> str: ...


def variant_table(outcome: Any, model_name: str = "") -> Table:
    """The summary of one variant: version, rows, drift, prior, metrics, decision."""
    target, decision, analysis = outcome.target, outcome.decision, outcome.analysis
    title = (
        f"{model_name} {target.variant}: version {target.model_version} "
        f"({target.loss_id or 'no model'}), {target.requests} requests"
    ).strip()
    table = Table(title=title, show_header=False, show_lines=False)
    table.add_column("what", style="bold")
    table.add_column("value")
    if target.other_versions:
        shown = ", ".join(f"v{v}: {n}" for v, n in target.other_versions.items())
        table.add_row("other versions (excluded)", shown)
    drift = analysis.get("drift")
    if drift:
        columns = drift["columns"]
        drifted = [c for c in columns if c["drifted"]]
        table.add_row(
            "drifted features",
            f"{len(drifted)} of {len(columns)} ({drift['drifted_share']:.0%}); dataset drift: "
            f"{'yes' if drift['dataset_drift'] else 'no'}",
        )
        for c in sorted(drifted, key=lambda c: -c["effect"] / c["threshold"]):
            table.add_row(
                f"  {c['column']}",
                f"{c['effect_method']} {c['effect']:.3f} >= {c['threshold']:g}, "
                f"{c['test_method']} p_adj {c['p_adjusted']:.2g}",
            )
        for name, why in drift.get("skipped", {}).items():
            table.add_row(f"  {name}", f"not compared: {why}")
    prediction = analysis.get("prediction")
    if prediction:
        table.add_row(
            "prediction drift",
            f"{'yes' if prediction['drifted'] else 'no'} ({prediction['effect_method']} "
            f"{prediction['effect']:.3f})",
        )
    prior = analysis.get("prior")
    if prior:
        new = prior["observed"] if prior["basis"] == "labels" else prior["estimated"]
        shares = "-" if new is None else ", ".join(f"{v:.3f}" for v in new)
        reference = ", ".join(f"{v:.3f}" for v in prior["reference"])
        table.add_row(
            "class prior",
            f"{shares} ({prior['basis']}) vs {reference} in training; "
            f"shifted: {'yes' if prior['shifted'] else 'no'}",
        )
    performance = analysis.get("performance")
    if performance:
        table.add_row(
            "labels",
            f"{performance['labelled']} of {performance['rows']} "
            f"({performance['coverage']:.1%})"
            + (
                f", delay median {performance['label_delay_s']['median']:.0f} s"
                if performance["label_delay_s"]
                else ""
            ),
        )
        if performance["insufficient"]:
            table.add_row("measured", performance["insufficient"])
        for name, m in performance["measured"].items():
            table.add_row(f"  {name}", f"{m['value']:.4f} [{m['low']:.4f}, {m['high']:.4f}]")
        decayed = performance["decayed"]
        if decayed:
            table.add_row("decayed", ", ".join(decayed))
        estimated = performance["estimated"]
        if estimated:
            shown = ", ".join(f"{k} {v:.4f}" for k, v in estimated.items() if k in _ESTIMATED)
            table.add_row("estimated (calibration assumed)", shown)
    table.add_row("decision", decision["status"].replace("_", " "))
    for reason in decision["reasons"]:
        table.add_row(f"  {reason['code']}", reason["message"])
    if decision["candidate_losses"]:
        names = ", ".join(_spec(c) for c in decision["candidate_losses"])
        table.add_row("candidate losses", names)
    table.add_row("MLflow run", outcome.run_id)
    return table


_ESTIMATED = ("roc_auc", "accuracy", "log_loss", "brier")


def _spec(spec: dict[str, Any]) -> str:
    options = ", ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec.get('name')}({options})" if options else str(spec.get("name"))


def outcome_tables(outcome: _Outcome) -> list[Table]:
    """One table per variant of a monitoring outcome."""
    return [variant_table(v, outcome.model_name) for v in outcome.variants]
