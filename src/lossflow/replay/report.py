"""What a replay did: every planned request answered, failed or not sent; every labelled answer
with a feedback outcome or not posted."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field, fields
from typing import Any

from rich.table import Table

from lossflow.replay.rows import JsonScalar


@dataclass(frozen=True)
class Answer:
    """A request the service answered (200).

    Attributes:
        position: the request's position in the replay.
        request_id: the service's request id (the prediction log's key).
        unit_id: the unit it was sent for.
        variant: the variant that answered.
        rows: the file positions of its records' rows.
        labels: the labels due as feedback; ``None`` when the request is not labelled.
        ts: the request's own time (a replay clock); ``None``: the service's.
    """

    position: int
    request_id: str
    unit_id: str
    variant: str
    rows: tuple[int, ...]
    labels: tuple[JsonScalar, ...] | None
    ts: str | None = None


@dataclass
class TrafficReport:
    """What a replay did. Every planned request is answered, failed or not sent.

    Attributes:
        url: the service.
        started_at: UTC start (ISO 8601).
        rows: rows replayed (planned).
        requests: requests planned.
        sent: requests sent (at least once).
        answered: requests answered 200.
        failed: requests that finally failed.
        not_sent: requests never sent (stopped by Ctrl-C).
        failed_by_status: failures by HTTP status, or by transport error name.
        errors: the first few failure messages.
        retries: 503 answers retried.
        answered_by_variant: answered requests per variant.
        feedback_due: answered requests that are labelled.
        feedback_posted: feedback posts that got an outcome (any status or transport error).
        feedback_by_status: feedback outcomes by HTTP status (201 stored, 200 duplicate, ...).
        feedback_not_posted: labelled answers whose feedback was not posted (stopped).
        target_rate: the requested rate (requests/s).
        achieved_rate: requests sent per second, from the start to the last answer.
        max_lag_s: how late the latest request was sent relative to its schedule.
        duration_s: the whole replay, feedback included.
        latency_p50_ms: client-side median latency of answered requests.
        latency_p99_ms: client-side 99th percentile latency of answered requests.
        interrupted: stopped early by Ctrl-C.
        notes: warnings for the user (no feedback possible, service could not keep up, ...).
        answers: every answered request (not in :meth:`summary`).
    """

    url: str
    started_at: str
    rows: int
    requests: int
    sent: int
    answered: int
    failed: int
    not_sent: int
    failed_by_status: dict[str, int]
    errors: list[str]
    retries: int
    answered_by_variant: dict[str, int]
    feedback_due: int
    feedback_posted: int
    feedback_by_status: dict[str, int]
    feedback_not_posted: int
    target_rate: float
    achieved_rate: float
    max_lag_s: float
    duration_s: float
    latency_p50_ms: float | None
    latency_p99_ms: float | None
    interrupted: bool
    notes: list[str]
    answers: list[Answer] = field(default_factory=list, repr=False)

    def summary(self) -> dict[str, Any]:
        """The report as JSON-ready values, without the per-request answers."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name != "answers"}


def counts(counter: Counter[str]) -> dict[str, int]:
    """A counter as a dict sorted by key (stable JSON and tables)."""
    return dict(sorted(counter.items()))


def summary_table(report: TrafficReport) -> Table:
    """The report as a rich table for the terminal."""
    table = Table(title=f"traffic replay against {report.url}", show_header=False)
    table.add_column("what", style="bold")
    table.add_column("value")

    def joined(values: dict[str, int]) -> str:
        return ", ".join(f"{k}: {v}" for k, v in values.items()) or "-"

    def ms(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f} ms"

    table.add_row("rows / requests", f"{report.rows} / {report.requests}")
    table.add_row("sent", str(report.sent))
    table.add_row("answered", str(report.answered))
    table.add_row("answered by variant", joined(report.answered_by_variant))
    table.add_row("failed", f"{report.failed} ({joined(report.failed_by_status)})")
    table.add_row("not sent", str(report.not_sent))
    table.add_row("503 retries", str(report.retries))
    table.add_row(
        "rate (target / achieved)", f"{report.target_rate:g} / {report.achieved_rate:.1f} req/s"
    )
    table.add_row("latest send behind schedule", f"{report.max_lag_s:.3f} s")
    table.add_row("latency p50 / p99", f"{ms(report.latency_p50_ms)} / {ms(report.latency_p99_ms)}")
    table.add_row("feedback due / posted", f"{report.feedback_due} / {report.feedback_posted}")
    table.add_row("feedback by status", joined(report.feedback_by_status))
    table.add_row("feedback not posted", str(report.feedback_not_posted))
    table.add_row("duration", f"{report.duration_s:.1f} s")
    if report.interrupted:
        table.add_row("interrupted", "yes (Ctrl-C)")
    for error in report.errors:
        table.add_row("error", error)
    for note in report.notes:
        table.add_row("note", note)
    return table
