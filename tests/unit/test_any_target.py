"""Targets as they come: binary classes with names, regression targets in their own unit (the
output layer in the target's scale), the trivial baselines (checked against scikit-learn), a
ranking model's list quality in monitoring (checked against scikit-learn, its interval's
coverage by simulation), ranking replays as lists, and one model per prediction log."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest
import torch
from sklearn.metrics import log_loss, mean_absolute_error, mean_pinball_loss, ndcg_score

from lossflow.config.data import ColumnSchema
from lossflow.data.preprocessing import Preprocessor
from lossflow.data.validation import DataValidationError
from lossflow.evaluation.baseline import Baseline, baseline_value, fit_baseline, verdict
from lossflow.evaluation.metrics import list_ndcg
from lossflow.models.nets import TargetScale
from lossflow.monitoring.performance import measured_list_metrics
from lossflow.predlog import PredictionLog
from lossflow.predlog.state import LogOwnerError, check_log_owner, claim_log
from lossflow.replay.requests import ServiceInfo, TrafficOptions, plan_requests
from lossflow.replay.rows import ROW_INDEX

COLUMNS = ColumnSchema(numeric=["x"], categorical=["city"], target="y")


def _frame(labels: list[object]) -> pd.DataFrame:
    n = len(labels)
    return pd.DataFrame({"x": np.arange(n, dtype=float), "city": ["a", "b"] * (n // 2),
                         "y": labels})  # fmt: skip


def test_a_binary_target_with_named_classes_keeps_its_names_and_encodes_the_positive() -> None:
    pre = Preprocessor.fit(_frame(["NO", "YES", "NO", "NO"]), COLUMNS, task="binary")
    assert pre.label_names == ("NO", "YES")
    assert pre.encode_target(_frame(["YES", "NO"])).tolist() == [1.0, 0.0]
    assert [pre.positive_of(v) for v in ("YES", "NO", 1, 0, True, "maybe")] == [1, 0, 1, 0, 1, None]
    with pytest.raises(DataValidationError, match=r"'MAYBE'.*besides its classes 'NO'"):
        pre.encode_target(_frame(["MAYBE", "NO"]))
    assert Preprocessor.from_dict(pre.to_dict()) == pre
    good = Preprocessor.fit(_frame(["good", "bad"] * 2), COLUMNS, task="binary",
                            positive_class="bad")  # fmt: skip
    assert good.label_names == ("good", "bad")
    assert good.encode_target(_frame(["bad", "good"])).tolist() == [1.0, 0.0]
    plain = Preprocessor.fit(_frame([0, 1, 1, 0]), COLUMNS, task="binary")
    assert plain.label_names is None, "0/1 targets stay as they were"
    inverted = Preprocessor.fit(_frame([0, 1, 1, 0]), COLUMNS, task="binary", positive_class=0)
    assert inverted.label_names == (1, 0)
    assert inverted.encode_target(_frame([0, 1])).tolist() == [1.0, 0.0]
    assert inverted.positive_of(1) == 0, "a class name that is a number is a name"


def test_a_regression_target_s_statistics_travel_and_old_descriptions_still_read() -> None:
    pre = Preprocessor.fit(_frame([100.0, 300.0, 200.0, 400.0]), COLUMNS, task="regression")
    assert pre.target_stats == pytest.approx(
        {"mean": 250.0, "std": float(np.std([100, 300, 200, 400]))}
    )
    old = {k: v for k, v in pre.to_dict().items() if k != "target_stats"} | {"version": 1}
    assert Preprocessor.from_dict(old).target_stats is None


def test_the_output_layer_starts_in_the_target_s_unit_and_exports() -> None:
    net = torch.nn.Linear(3, 1)
    torch.nn.init.zeros_(net.weight)
    torch.nn.init.zeros_(net.bias)
    scaled = TargetScale(net, "identity", mean=250.0, std=40.0)
    out = scaled(torch.randn(5, 3))
    assert torch.allclose(out, torch.full((5, 1), 250.0)), "an untrained net predicts the mean"
    gaussian = TargetScale(torch.nn.Linear(3, 2), "first", mean=250.0, std=40.0)
    raw = gaussian.net(x := torch.randn(4, 3))
    both = gaussian(x)
    assert torch.allclose(both[:, 0], 250.0 + 40.0 * raw[:, 0])
    assert torch.allclose(both[:, 1], raw[:, 1] + 2 * np.log(40.0))
    with pytest.raises(ValueError, match="positive mean"):
        TargetScale(net, "exp", mean=-1.0, std=1.0)


def test_the_baselines_agree_with_scikit_learn() -> None:
    rng = np.random.default_rng(0)
    train, test = rng.integers(0, 2, 400), rng.integers(0, 2, 300)
    prior = fit_baseline("binary", train)
    assert prior is not None
    share = float(train.mean())
    expected = log_loss(test, np.full(len(test), share), labels=[0, 1])
    assert baseline_value(prior, test) == pytest.approx(expected)
    classes = fit_baseline("multiclass", rng.integers(0, 3, 500), n_classes=3)
    assert classes is not None
    assert isinstance(classes.value, list)
    labels = rng.integers(0, 3, 200)
    probs = np.tile(classes.value, (len(labels), 1))
    assert baseline_value(classes, labels) == pytest.approx(
        log_loss(labels, probs, labels=[0, 1, 2])
    )
    y_train, y_test = rng.lognormal(5, 0.5, 500), rng.lognormal(5, 0.5, 200)
    mean = fit_baseline("regression", y_train, loss_names=["mse"])
    assert mean is not None
    assert mean.metric == "rmse"
    assert baseline_value(mean, y_test) == pytest.approx(
        float(np.sqrt(np.mean((y_test - y_train.mean()) ** 2)))
    )
    median = fit_baseline("regression", y_train, loss_names=["huber"])
    assert median is not None
    assert median.kind == "median"
    assert baseline_value(median, y_test) == pytest.approx(
        mean_absolute_error(y_test, np.full(len(y_test), np.median(y_train)))
    )
    q = fit_baseline("regression", y_train, loss_names=["quantile"], quantile=0.9)
    assert q is not None
    assert q.metric == "pinball"
    assert baseline_value(q, y_test) == pytest.approx(
        mean_pinball_loss(y_test, np.full(len(y_test), np.quantile(y_train, 0.9)), alpha=0.9)
    )
    assert fit_baseline("ranking", y_train) is None
    judged = verdict(mean, {"rmse": 1.0}, y_test)
    assert judged.beats
    assert "beats" in judged.line()
    assert not verdict(mean, {"rmse": 1e9}, y_test).beats
    assert Baseline.from_json(q.to_json()) == q


def test_list_ndcg_agrees_with_scikit_learn_and_its_interval_covers() -> None:
    rng = np.random.default_rng(1)
    sizes = rng.integers(2, 12, 40)
    lists = np.repeat(np.arange(len(sizes)), sizes)
    labels = rng.integers(0, 5, len(lists)).astype(float)
    scores = labels + rng.normal(0, 2, len(lists))
    ours = list_ndcg(scores, labels, lists)
    starts = np.concatenate([[0], np.cumsum(sizes)])
    for i, (a, b) in enumerate(itertools.pairwise(starts)):
        if labels[a:b].any():
            assert ours[i] == pytest.approx(ndcg_score([labels[a:b]], [scores[a:b]], k=10))
        else:
            assert ours[i] == 0.0
    # Lists in order of first appearance, interleaved rows; a window of one-item lists only
    # (scikit-learn refuses a list of one): 1 when its item is relevant.
    assert list_ndcg([0.1, 0.9, 0.5], [0.0, 1.0, 1.0], ["b", "a", "b"]).tolist() == [
        pytest.approx(ndcg_score([[0.0, 1.0]], [[0.1, 0.5]])),
        1.0,
    ]
    assert list_ndcg([0.3, 0.1], [2.0, 0.0], [7, 8]).tolist() == [1.0, 0.0]
    # The bootstrap interval of the mean NDCG over lists covers the true mean ~95% of the time
    # (300 simulated windows of 60 lists from a known distribution: 95% +- 3.8% at 3 sd).
    truth, covered = 0.7, 0
    for seed in range(300):
        draw = np.random.default_rng(seed).beta(7, 3, 60)  # mean 0.7
        estimate = measured_list_metrics(draw, "ndcg_10", resamples=400, seed=seed)["ndcg_10"]
        covered += estimate.low <= truth <= estimate.high
    assert 0.90 <= covered / 300 <= 0.99


def test_a_ranking_model_s_rows_are_replayed_as_one_list_per_query() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0, 5.0], "day": ["d1", "d1", "d2", "d1", "d2"],
                          "rel": [3.0, 0.0, 1.0, 2.0, 0.0]})  # fmt: skip
    frame.index.name = ROW_INDEX
    info = ServiceInfo(features=("x",), target="rel", task="ranking", prediction_log=True,
                       max_records=100, variants=("champion",), group="day")  # fmt: skip
    plan = plan_requests(frame, info, TrafficOptions())
    assert [(p.path, p.rows, p.labels) for p in plan] == [
        ("/rank", (0, 1, 3), (3.0, 0.0, 2.0)),
        ("/rank", (2, 4), (1.0, 0.0)),
    ]
    assert [len(orjson.loads(p.body)["items"]) for p in plan] == [3, 2]


def test_a_prediction_log_is_one_model_s(tmp_path: Path) -> None:
    log = PredictionLog(f"sqlite:///{tmp_path / 'predictions.db'}")
    log.create_schema()
    check_log_owner(log, "hotels")  # nobody has claimed it yet
    claim_log(log, "hotels")
    claim_log(log, "hotels")  # idempotent
    with pytest.raises(LogOwnerError, match=r"holds the predictions of model 'hotels', not "
                       r"'lossflow-flights'.*its own: another data_dir"):  # fmt: skip
        claim_log(log, "lossflow-flights")
    with pytest.raises(LogOwnerError):
        check_log_owner(log, "lossflow-flights")
    check_log_owner(log, "hotels")  # its owner reads it
    log.dispose()
