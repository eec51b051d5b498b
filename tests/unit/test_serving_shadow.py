"""The shadow's scorer without a server: what it logs, what it drops and counts, its shutdown."""

from __future__ import annotations

import threading
import time
from typing import Any, cast

from lossflow.predlog import PredictionRecord
from lossflow.serving.metrics import ServiceMetrics
from lossflow.serving.predictor import Prediction
from lossflow.serving.shadow import ShadowScorer, shadow_request_id
from lossflow.serving.variants import Variant

DROPPED = 'lossflow_request_errors_total{reason="shadow_dropped",variant="shadow"}'
SCORED = 'lossflow_records_scored_total{variant="shadow"}'
FAILED = 'lossflow_request_errors_total{reason="shadow_failed",variant="shadow"}'


class _Model:
    """Stands in for an OnnxPredictor: one score per record, optionally held on an event."""

    label_names = None
    loss_id = "listnet-test"

    def __init__(self, scores: list[float], hold: threading.Event | None = None) -> None:
        self.scores = scores
        self.hold = hold

    def predict(self, records: list[dict[str, Any]]) -> list[Prediction]:
        if self.hold is not None:
            self.hold.wait(10)
        return [Prediction(value=s) for s in self.scores[: len(records)]]


class _Writer:
    def __init__(self) -> None:
        self.records: list[PredictionRecord] = []

    def submit(self, record: PredictionRecord) -> None:
        self.records.append(record)


def _metric(metrics: ServiceMetrics, sample: str) -> float:
    for line in metrics.render().decode().splitlines():
        if line.startswith(f"{sample} "):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def _shadow(model: _Model) -> Variant:
    return Variant("shadow", cast(Any, model), "7", "alias:candidate")


def _metrics() -> ServiceMetrics:
    return ServiceMetrics(lambda: None, lambda: None)


def test_a_ranking_shadow_logs_each_items_score_and_rank_like_the_primary() -> None:
    metrics, writer = _metrics(), _Writer()
    scorer = ShadowScorer(metrics)
    records = [{"x": 1.0}, {"x": 2.0}, {"x": 3.0}]
    scorer.submit(
        _shadow(_Model([0.1, float("nan"), 0.7])), cast(Any, writer), "e", "r1", "u", records, True
    )
    scorer.close(timeout=10)
    (logged,) = writer.records
    assert logged.request_id == shadow_request_id("r1") == "r1:shadow"
    assert (logged.variant, logged.model_version, logged.loss_id) == ("shadow", "7", "listnet-test")
    assert logged.outputs == [
        {"score": 0.1, "rank": 2},
        {"score": None, "rank": 3},
        {"score": 0.7, "rank": 1},
    ]
    assert _metric(metrics, SCORED) == 3.0


def test_requests_beyond_the_bound_are_dropped_and_counted_and_so_is_what_shutdown_leaves() -> None:
    metrics, writer = _metrics(), _Writer()
    hold = threading.Event()
    shadow = _shadow(_Model([0.5], hold))
    scorer = ShadowScorer(metrics, max_pending=2, max_batch=1)
    for i in range(5):
        scorer.submit(shadow, cast(Any, writer), "e", f"r{i}", "u", [{"x": 1.0}])
    assert scorer.pending == 2
    assert _metric(metrics, DROPPED) == 3.0  # r2, r3 and r4 found both places taken
    assert not scorer.wait("r1", timeout=0.05)
    threading.Timer(0.3, hold.set).start()  # r0 finishes after close() gave up waiting
    scorer.close(timeout=0.1)
    assert _metric(metrics, DROPPED) == 4.0  # r1 was still queued: counted, not scored
    assert scorer.wait("r0", timeout=10)
    assert [r.request_id for r in writer.records] == ["r0:shadow"]
    assert _metric(metrics, SCORED) == 1.0
    scorer.submit(shadow, cast(Any, writer), "e", "late", "u", [{"x": 1.0}])  # after shutdown
    assert _metric(metrics, DROPPED) == 5.0


def test_what_queues_up_is_scored_in_one_model_call_and_logged_per_request() -> None:
    metrics, writer = _metrics(), _Writer()
    hold = threading.Event()
    model = _Model([0.1, 0.2, 0.3, 0.4, 0.5], hold)
    calls: list[int] = []
    predict = model.predict

    def counted(records: list[dict[str, Any]]) -> list[Prediction]:
        calls.append(len(records))
        return predict(records)

    model.predict = counted  # type: ignore[method-assign]
    scorer = ShadowScorer(metrics, max_batch=4)
    shadow = _shadow(model)
    scorer.submit(shadow, cast(Any, writer), "e", "first", "u", [{"x": 0.0}])
    _eventually(lambda: calls == [1])  # held in the model: the next ones queue up
    for i, n in enumerate((2, 2, 1)):
        scorer.submit(shadow, cast(Any, writer), "e", f"r{i}", "u", [{"x": 1.0}] * n)
    hold.set()
    scorer.close(timeout=10)
    assert calls == [1, 4, 1]  # r0 + r1 fill a batch of 4; r2 would make 5
    assert [(r.request_id, len(r.outputs)) for r in writer.records] == [
        ("first:shadow", 1), ("r0:shadow", 2), ("r1:shadow", 2), ("r2:shadow", 1),
    ]  # fmt: skip
    assert writer.records[2].outputs == [{"value": 0.3}, {"value": 0.4}]
    assert _metric(metrics, SCORED) == 6.0


def test_a_failing_batch_is_scored_request_by_request_so_only_the_bad_one_fails() -> None:
    metrics, writer = _metrics(), _Writer()
    hold = threading.Event()
    model = _Model([0.5] * 8, hold)
    predict = model.predict
    calls: list[int] = []

    def picky(records: list[dict[str, Any]]) -> list[Prediction]:
        calls.append(len(records))
        if any("bad" in r for r in records):
            raise ValueError("cannot score 'bad'")
        return predict(records)

    model.predict = picky  # type: ignore[method-assign]
    scorer = ShadowScorer(metrics)
    shadow = _shadow(model)
    scorer.submit(shadow, cast(Any, writer), "e", "first", "u", [{"x": 0.0}])
    _eventually(lambda: calls == [1])  # held in the model: the next ones queue up
    for name in ("a", "bad", "c"):
        scorer.submit(shadow, cast(Any, writer), "e", name, "u", [{name: 1.0}])
    hold.set()
    scorer.close(timeout=10)
    assert calls == [1, 3, 1, 1, 1]  # the batch of three, then each alone
    assert [r.request_id for r in writer.records] == ["first:shadow", "a:shadow", "c:shadow"]
    assert _metric(metrics, FAILED) == 1.0


def _eventually(check: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "not reached in time"
        time.sleep(0.005)
