"""Prometheus metrics of the inference service, in a registry of its own (one per app).

Per variant: requests by status, errors by reason, records scored and a latency histogram of
``/predict`` (from the first byte read to the response built). Per scrape: the loaded models
(``lossflow_model_info``), their traffic shares, the prediction-log backlog and the records the
database refused for good (dead letters).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Final, Protocol

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from lossflow.serving.variants import Deployment

UNROUTED: Final = "none"
LATENCY_BUCKETS: Final = (
    0.0005,
    0.001,
    0.002,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class LogState(Protocol):
    """What the collector reads of the prediction-log writer at each scrape."""

    @property
    def pending(self) -> int: ...

    @property
    def dead_lettered(self) -> int: ...


class _StateCollector(Collector):
    def __init__(
        self,
        deployment: Callable[[], Deployment | None],
        log_state: Callable[[], LogState | None],
    ):
        self._deployment = deployment
        self._log_state = log_state

    def collect(self) -> Iterator[Metric]:
        info = GaugeMetricFamily(
            "lossflow_model_info",
            "Loaded models: 1 per variant with its version, loss id and source",
            labels=["variant", "model_version", "loss_id", "source"],
        )
        share = GaugeMetricFamily(
            "lossflow_traffic_share", "Share of units routed to each variant", labels=["variant"]
        )
        deployment = self._deployment()
        if deployment is not None:
            shares = deployment.router.split.shares
            loaded = [*deployment.variants.values()]
            if deployment.shadow is not None:
                loaded.append(deployment.shadow)
            for variant in loaded:
                info.add_metric(
                    [variant.name, variant.model_version, variant.loss_id, variant.source], 1.0
                )
                share.add_metric([variant.name], shares.get(variant.name, 0.0))
        yield info
        yield share
        writer = self._log_state()
        yield GaugeMetricFamily(
            "lossflow_prediction_log_pending",
            "Predictions answered but not yet committed to the prediction log (lost on SIGKILL)",
            value=0.0 if writer is None else float(writer.pending),
        )
        yield CounterMetricFamily(
            "lossflow_prediction_log_dead_letters",
            "Predictions the log database refused for good, kept in prediction_dead_letters",
            value=0.0 if writer is None else float(writer.dead_lettered),
        )


class ServiceMetrics:
    """The service's counters and histograms; label children are cached per variant."""

    def __init__(
        self,
        deployment: Callable[[], Deployment | None],
        log_state: Callable[[], LogState | None],
    ) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # no *_created series
        self.registry = CollectorRegistry(auto_describe=True)
        self._requests = Counter(
            "lossflow_requests",
            "Requests to /predict by variant and HTTP status",
            ["variant", "status"],
            registry=self.registry,
        )
        self._errors = Counter(
            "lossflow_request_errors",
            "Failed /predict requests by variant and reason",
            ["variant", "reason"],
            registry=self.registry,
        )
        self._records = Counter(
            "lossflow_records_scored",
            "Records scored by variant (the shadow included)",
            ["variant"],
            registry=self.registry,
        )
        self._latency = Histogram(
            "lossflow_request_duration_seconds",
            "Time to answer /predict by variant",
            ["variant"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self._feedback = Counter(
            "lossflow_feedback",
            "Feedback requests by outcome",
            ["outcome"],
            registry=self.registry,
        )
        self.registry.register(_StateCollector(deployment, log_state))
        self._ok: dict[str, tuple[Counter, Histogram, Counter]] = {}

    def answered(self, variant: str, records: int, seconds: float) -> None:
        """A successful prediction (HTTP 200)."""
        children = self._ok.get(variant)
        if children is None:
            children = (
                self._requests.labels(variant, "200"),
                self._latency.labels(variant),
                self._records.labels(variant),
            )
            self._ok[variant] = children
        requests, latency, scored = children
        requests.inc()
        latency.observe(seconds)
        scored.inc(records)

    def failed(self, variant: str, status: int, reason: str, seconds: float) -> None:
        """A rejected or failed prediction request."""
        self._requests.labels(variant, str(status)).inc()
        self._errors.labels(variant, reason).inc()
        self._latency.labels(variant).observe(seconds)

    def shadow_scored(self, records: int) -> None:
        """The shadow scored a request's records."""
        self._records.labels("shadow").inc(records)

    def shadow_failed(self) -> None:
        """The shadow could not score a request (the answer was not affected)."""
        self._errors.labels("shadow", "shadow_failed").inc()

    def shadow_dropped(self, requests: int = 1) -> None:
        """Requests the shadow did not score because too many already waited for it."""
        self._errors.labels("shadow", "shadow_dropped").inc(requests)

    def feedback(self, outcome: str) -> None:
        """A feedback request ended with ``outcome`` (stored, duplicate, unknown, ...)."""
        self._feedback.labels(outcome).inc()

    def render(self) -> bytes:
        """The Prometheus text exposition."""
        return generate_latest(self.registry)
