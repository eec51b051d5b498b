"""Offline evaluation against brute force, direct scikit-learn calls and hand-computed values."""

from __future__ import annotations

import io
from collections.abc import Callable
from fractions import Fraction

import numpy as np
import numpy.typing as npt
import pytest
from matplotlib.figure import Figure
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    brier_score_loss,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_pinball_loss,
    mean_squared_error,
    ndcg_score,
    precision_recall_curve,
    precision_score,
    r2_score,
    recall_score,
    roc_auc_score,
)

from lossflow.evaluation.metrics import (
    binary_metrics,
    multiclass_metrics,
    ranking_metrics,
    regression_metrics,
)
from lossflow.evaluation.plots import (
    plot_calibration,
    plot_confusion_matrix,
    plot_pr,
    plot_residuals,
    plot_roc,
    plot_training_curves,
)
from lossflow.evaluation.report import EvaluationReport, evaluation_report
from lossflow.evaluation.threshold import ThresholdChoice, choose_threshold


def _binary_data(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Labels and coarse (2-decimal, hence heavily tied) probabilities that carry signal."""
    rng = np.random.default_rng(seed)
    y = (rng.random(n) < 0.3).astype(np.int64)
    prob = np.clip(0.35 * y + rng.random(n) * 0.65, 0.0, 1.0).round(2)
    return y, prob


def _counts(y: np.ndarray, prob: np.ndarray, t: float) -> tuple[int, int, int]:
    pred = prob >= t
    tp = int((pred & (y == 1)).sum())
    fp = int((pred & (y == 0)).sum())
    fn = int((~pred & (y == 1)).sum())
    return tp, fp, fn


def _brute_force_f1(y: np.ndarray, prob: np.ndarray) -> tuple[float, Fraction]:
    best_t, best = 0.0, Fraction(-1)
    for t in sorted(set(prob.tolist())):
        tp, fp, fn = _counts(y, prob, t)
        f1 = Fraction(2 * tp, 2 * tp + fp + fn)
        if f1 > best:  # strict: ties keep the smaller threshold
            best_t, best = t, f1
    return best_t, best


def _brute_force_cost(
    y: np.ndarray, prob: np.ndarray, fn_cost: float, fp_cost: float
) -> tuple[float, float]:
    candidates = [*sorted(set(prob.tolist())), float(np.nextafter(prob.max(), np.inf))]
    best_t, best = 0.0, float("inf")
    for t in candidates:
        _, fp, fn = _counts(y, prob, t)
        cost = fn_cost * fn + fp_cost * fp
        if cost < best:
            best_t, best = t, cost
    return best_t, best / y.shape[0]


def _png_bytes(fig: Figure) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def _title(fig: Figure) -> str:
    suptitle = fig.get_suptitle()
    return suptitle if suptitle else fig.axes[0].get_title()


# --------------------------------------------------------------------------------------------
# choose_threshold


@pytest.mark.parametrize("seed", range(8))
def test_f1_threshold_matches_brute_force(seed: int) -> None:
    y, prob = _binary_data(seed)
    expected_t, expected_f1 = _brute_force_f1(y, prob)
    choice = choose_threshold(y, prob)
    assert isinstance(choice, ThresholdChoice)
    assert choice.criterion == "f1"
    assert choice.threshold == expected_t
    assert choice.value == pytest.approx(float(expected_f1), rel=1e-12)
    assert choice.value == pytest.approx(f1_score(y, prob >= choice.threshold), rel=1e-12)


def test_f1_threshold_is_on_the_precision_recall_curve() -> None:
    y, prob = _binary_data(11)
    precision, recall, thresholds = precision_recall_curve(y, prob)
    with np.errstate(invalid="ignore"):
        f1 = np.nan_to_num(2 * precision * recall / (precision + recall))[:-1]
    choice = choose_threshold(y, prob)
    assert choice.threshold in thresholds.tolist()
    assert choice.value == pytest.approx(f1.max(), rel=1e-12)


def test_f1_ties_resolve_to_the_smallest_threshold() -> None:
    # thresholds 0.2 and 0.5 both give F1 = 2/3 (0.2: tp2 fp2 fn0; 0.5: tp1 fp0 fn1).
    y = np.array([1, 0, 0, 1])
    prob = np.array([0.2, 0.2, 0.3, 0.5])
    choice = choose_threshold(y, prob)
    assert (choice.threshold, choice.criterion) == (0.2, "f1")
    assert choice.value == pytest.approx(2 / 3)


@pytest.mark.parametrize(
    ("seed", "fn_cost", "fp_cost"),
    [(0, 5.0, 1.0), (1, 1.0, 1.0), (2, 0.3, 1.7), (3, 10.0, 0.1), (4, 2.0, 3.0), (5, 1.0, 1000.0)],
)
def test_cost_threshold_matches_brute_force(seed: int, fn_cost: float, fp_cost: float) -> None:
    y, prob = _binary_data(seed)
    expected_t, expected_cost = _brute_force_cost(y, prob, fn_cost, fp_cost)
    choice = choose_threshold(y, prob, fn_cost=fn_cost, fp_cost=fp_cost)
    assert choice.criterion == "cost"
    assert choice.threshold == expected_t
    assert choice.value == pytest.approx(expected_cost, rel=1e-12)
    at_choice = binary_metrics(y, prob, choice.threshold, fn_cost=fn_cost, fp_cost=fp_cost)
    assert at_choice["expected_cost"] == pytest.approx(choice.value, rel=1e-12)


def test_cost_threshold_can_predict_no_positives() -> None:
    y = np.array([0, 1, 0, 0])
    prob = np.array([0.9, 0.5, 0.95, 0.1])
    choice = choose_threshold(y, prob, fn_cost=1.0, fp_cost=10.0)
    assert choice.threshold > prob.max()
    assert choice.value == pytest.approx(0.25)  # one false negative over four rows


def test_cost_ties_resolve_to_the_smallest_threshold() -> None:
    # 0.2 -> FP 1; 0.5 -> FN 1 + FP 1; 0.8 -> FN 1; above max -> FN 2: 0.2 and 0.8 tie at 1.
    choice = choose_threshold([1, 0, 1], [0.2, 0.5, 0.8], fn_cost=1.0, fp_cost=1.0)
    assert (choice.threshold, choice.criterion) == (0.2, "cost")
    assert choice.value == pytest.approx(1 / 3)
    # 0.1 -> FP 1; 0.9 -> FN 1 + FP 1; above max -> FN 1: 0.1 ties with predicting no positives.
    choice = choose_threshold([1, 0], [0.1, 0.9], fn_cost=1.0, fp_cost=1.0)
    assert choice.threshold == 0.1


def test_choose_threshold_rejects_one_cost() -> None:
    y, prob = _binary_data(0, n=20)
    with pytest.raises(ValueError, match="needs both fn_cost and fp_cost; fp_cost is None"):
        choose_threshold(y, prob, fn_cost=1.0)
    with pytest.raises(ValueError, match="fn_cost must be a finite positive number"):
        choose_threshold(y, prob, fn_cost=-1.0, fp_cost=1.0)


def test_choose_threshold_rejects_single_class() -> None:
    with pytest.raises(ValueError, match=r"choosing a threshold is undefined.*validation split"):
        choose_threshold([0, 0, 0], [0.1, 0.2, 0.3])


# --------------------------------------------------------------------------------------------
# Metrics


def test_binary_metrics_match_sklearn() -> None:
    y, prob = _binary_data(3, n=500)
    threshold = 0.47
    pred = (prob >= threshold).astype(int)
    got = binary_metrics(y, prob, threshold)
    expected = {
        "roc_auc": roc_auc_score(y, prob),
        "pr_auc": average_precision_score(y, prob),
        "log_loss": log_loss(y, prob),
        "brier": brier_score_loss(y, prob),
        "f1": f1_score(y, pred),
        "precision": precision_score(y, pred),
        "recall": recall_score(y, pred),
        "accuracy": accuracy_score(y, pred),
        "positive_rate": pred.mean(),
    }
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key] == pytest.approx(value, rel=1e-12), key


def test_binary_metrics_expected_cost_by_hand() -> None:
    y = [1, 0, 1, 0, 0]
    prob = [0.9, 0.8, 0.3, 0.2, 0.6]
    # threshold 0.5 -> predictions 1 1 0 0 1: FN 1 (row 2), FP 2 (rows 1 and 4).
    got = binary_metrics(y, prob, 0.5, fn_cost=10.0, fp_cost=1.5)
    assert got["expected_cost"] == pytest.approx((10.0 * 1 + 1.5 * 2) / 5)
    assert got["positive_rate"] == pytest.approx(3 / 5)
    assert "expected_cost" not in binary_metrics(y, prob, 0.5)


def test_threshold_rule_is_greater_or_equal() -> None:
    got = binary_metrics([0, 1], [0.25, 0.5], 0.5)
    assert got["recall"] == 1.0
    assert got["positive_rate"] == 0.5


def test_multiclass_metrics_match_sklearn() -> None:
    rng = np.random.default_rng(1)
    logits = rng.normal(size=(200, 4))
    prob = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = rng.integers(0, 4, size=200)
    got = multiclass_metrics(y, prob)
    pred = prob.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(accuracy_score(y, pred), rel=1e-12)
    assert got["macro_f1"] == pytest.approx(f1_score(y, pred, average="macro"), rel=1e-12)
    assert got["log_loss"] == pytest.approx(log_loss(y, prob, labels=[0, 1, 2, 3]), rel=1e-12)


def test_multiclass_log_loss_uses_all_columns_when_a_class_is_absent() -> None:
    prob = np.array([[0.7, 0.2, 0.1], [0.1, 0.8, 0.1]])
    got = multiclass_metrics([0, 1], prob)
    assert got["log_loss"] == pytest.approx(-(np.log(0.7) + np.log(0.8)) / 2)


@pytest.mark.parametrize("quantile", [None, 0.1, 0.9])
def test_regression_metrics_match_sklearn(quantile: float | None) -> None:
    rng = np.random.default_rng(2)
    y = rng.normal(size=300)
    pred = y + rng.normal(scale=0.5, size=300)
    got = regression_metrics(y, pred, quantile=quantile)
    assert got["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-12)
    assert got["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert got["r2"] == pytest.approx(r2_score(y, pred), rel=1e-12)
    if quantile is None:
        assert "pinball" not in got
    else:
        assert got["pinball"] == pytest.approx(
            mean_pinball_loss(y, pred, alpha=quantile), rel=1e-12
        )


def test_ranking_metrics_match_per_query_sklearn() -> None:
    rng = np.random.default_rng(4)
    n_queries, width = 12, 15
    relevance = rng.integers(0, 4, size=(n_queries, width)).astype(float)
    scores = rng.normal(size=(n_queries, width))
    lengths = rng.integers(2, width + 1, size=n_queries)
    mask = np.arange(width)[None, :] < lengths[:, None]
    # Padding holds junk that must not leak into the metrics.
    relevance[~mask] = 3.0
    scores[~mask] = 100.0
    got = ranking_metrics(relevance, scores, mask)
    per_query_ndcg, reciprocal = [], []
    for q in range(n_queries):
        rel_q, sc_q = relevance[q, mask[q]], scores[q, mask[q]]
        per_query_ndcg.append(ndcg_score(rel_q[None], sc_q[None], k=10))
        ranked = rel_q[np.argsort(-sc_q, kind="stable")]
        hits = np.flatnonzero(ranked > 0)
        reciprocal.append(1.0 / (hits[0] + 1) if hits.size else 0.0)
    assert got["ndcg_10"] == pytest.approx(np.mean(per_query_ndcg), rel=1e-12)
    assert got["mrr"] == pytest.approx(np.mean(reciprocal), rel=1e-12)


def test_ranking_mrr_by_hand_with_single_item_query() -> None:
    relevance = np.array([[0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    scores = np.array([[0.9, 0.5, 0.1], [0.3, 9.0, 9.0], [0.1, 0.2, 0.3]])
    mask = np.array([[True, True, True], [True, False, False], [True, True, False]])
    got = ranking_metrics(relevance, scores, mask)
    assert got["mrr"] == pytest.approx((1 / 2 + 1 / 1 + 0) / 3)
    # query 0: DCG 1/log2(3) over ideal 1; query 1: perfect; query 2: no relevant item -> 0.
    assert got["ndcg_10"] == pytest.approx((1 / np.log2(3) + 1.0 + 0.0) / 3)


# --------------------------------------------------------------------------------------------
# Validation errors


def test_length_mismatch_is_rejected() -> None:
    with pytest.raises(ValueError, match="length mismatch: y_true has 3 rows but prob has 2"):
        binary_metrics([0, 1, 1], [0.2, 0.4], 0.5)
    with pytest.raises(ValueError, match="length mismatch: y_true has 2 rows but pred has 3"):
        regression_metrics([1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="length mismatch: y_true has 3 rows but prob has 2"):
        multiclass_metrics([0, 1, 1], [[0.5, 0.5], [0.5, 0.5]])
    with pytest.raises(ValueError, match="length mismatch: relevance, scores and mask"):
        ranking_metrics(np.zeros((2, 3)), np.zeros((2, 4)), np.ones((2, 3), dtype=bool))


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_predictions_are_rejected(bad: float) -> None:
    with pytest.raises(ValueError, match=r"prob contains 1 NaN/inf values \(first at index 1\)"):
        binary_metrics([0, 1, 0], [0.2, bad, 0.4], 0.5)
    with pytest.raises(ValueError, match=r"pred contains 1 NaN/inf values"):
        regression_metrics([1.0, 2.0, 3.0], [1.0, 2.0, bad])
    with pytest.raises(
        ValueError, match=r"prob contains 1 NaN/inf values \(first at index \(1, 0\)"
    ):
        multiclass_metrics([0, 1], [[0.5, 0.5], [bad, 0.5]])
    with pytest.raises(ValueError, match="scores contains 1 NaN/inf values"):
        ranking_metrics(np.ones((1, 2)), np.array([[0.1, bad]]), np.ones((1, 2), dtype=bool))


def test_probabilities_outside_unit_interval_are_rejected() -> None:
    with pytest.raises(ValueError, match=r"prob must be probabilities in \[0, 1\].*sigmoid"):
        binary_metrics([0, 1], [-0.5, 2.3], 0.5)
    with pytest.raises(ValueError, match=r"prob must be probabilities in \[0, 1\]"):
        choose_threshold([0, 1], [0.5, 1.2])
    with pytest.raises(ValueError, match=r"rows of prob must sum to 1; row 1 sums to 0\.6"):
        multiclass_metrics([0, 1], [[0.5, 0.5], [0.3, 0.3]])


def test_single_class_auc_is_rejected_naming_the_split() -> None:
    with pytest.raises(
        ValueError, match=r"ROC AUC is undefined: y_true has only class 1.*test split"
    ):
        binary_metrics([1, 1, 1], [0.2, 0.5, 0.9], 0.5)
    with pytest.raises(ValueError, match="ROC AUC is undefined: y_true has only class 0"):
        plot_roc([0, 0], [0.2, 0.5])
    with pytest.raises(ValueError, match="PR AUC is undefined"):
        plot_pr([0, 0], [0.2, 0.5])


def test_labels_must_be_binary_or_class_indices() -> None:
    with pytest.raises(ValueError, match=r"y_true must hold binary labels 0/1.*\[2.0\]"):
        binary_metrics([0, 2], [0.1, 0.2], 0.5)
    with pytest.raises(ValueError, match=r"y_true must hold class indices 0\.\.1"):
        multiclass_metrics([0, 3], [[0.5, 0.5], [0.5, 0.5]])


def test_other_argument_errors() -> None:
    with pytest.raises(ValueError, match="y_true is empty"):
        binary_metrics([], [], 0.5)
    with pytest.raises(ValueError, match="threshold must be finite"):
        binary_metrics([0, 1], [0.1, 0.9], float("nan"))
    with pytest.raises(ValueError, match=r"quantile must be in \(0, 1\)"):
        regression_metrics([1.0, 2.0], [1.0, 2.0], quantile=1.0)
    with pytest.raises(ValueError, match="R² is undefined for a single row"):
        regression_metrics([1.0], [1.0])
    with pytest.raises(ValueError, match="mask must be a boolean array"):
        ranking_metrics(np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2)))
    with pytest.raises(ValueError, match="query 1 has no real items"):
        ranking_metrics(np.ones((2, 2)), np.ones((2, 2)), np.array([[True, True], [False, False]]))
    with pytest.raises(ValueError, match="relevance must be non-negative"):
        ranking_metrics(-np.ones((1, 2)), np.ones((1, 2)), np.ones((1, 2), dtype=bool))


# --------------------------------------------------------------------------------------------
# Plots


def test_training_curves_group_train_and_val_of_one_quantity() -> None:
    history = {
        "train/loss": [1.0, 0.8, 0.7],
        "val/loss": [1.1, 0.9, 0.85],
        "train/term/focal": [0.5, 0.4, 0.3],
        "val/auc": [0.6, 0.7, 0.75],
    }
    fig = plot_training_curves(history)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 3
    assert _title(fig) == "Training curves"
    by_title = {ax.get_title(): ax for ax in fig.axes}
    assert set(by_title) == {"loss", "term/focal", "auc"}
    assert [line.get_label() for line in by_title["loss"].get_lines()] == ["train", "val"]
    assert by_title["loss"].get_xlabel() == "epoch"
    assert _png_bytes(fig).startswith(b"\x89PNG")


def test_training_curves_reject_empty_history() -> None:
    with pytest.raises(ValueError, match="history is empty"):
        plot_training_curves({})


def test_confusion_matrix_annotates_counts() -> None:
    fig = plot_confusion_matrix([0, 0, 1, 2, 2, 2], [0, 1, 1, 2, 2, 0], ["a", "b", "c"])
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    assert ax.get_title().startswith("Confusion matrix")
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in ax.texts] == ["1", "1", "0", "0", "1", "0", "1", "0", "2"]
    assert _png_bytes(fig).startswith(b"\x89PNG")
    with pytest.raises(ValueError, match=r"y_pred must hold class indices 0\.\.1"):
        plot_confusion_matrix([0, 1], [0, 2], ["a", "b"])


@pytest.mark.parametrize(
    ("plot", "n_axes", "title", "legend_fragment"),
    [
        (plot_roc, 1, "ROC curve", "AUC = "),
        (plot_pr, 1, "Precision-recall curve", "AP = "),
        (plot_calibration, 2, "Calibration (10 quantile bins)", "perfectly calibrated"),
    ],
)
def test_binary_plots(
    plot: Callable[[npt.ArrayLike, npt.ArrayLike], Figure],
    n_axes: int,
    title: str,
    legend_fragment: str,
) -> None:
    y, prob = _binary_data(5)
    fig = plot(y, prob)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == n_axes
    assert _title(fig) == title
    assert tuple(fig.get_size_inches()) == (6.0, 4.5)
    assert fig.axes[0].get_xlabel() or fig.axes[-1].get_xlabel()
    assert fig.axes[0].get_ylabel()
    legend = fig.axes[0].get_legend()
    assert legend is not None
    assert any(legend_fragment in t.get_text() for t in legend.get_texts())
    assert _png_bytes(fig).startswith(b"\x89PNG")


def test_roc_legend_reports_the_auc() -> None:
    y, prob = _binary_data(6)
    legend = plot_roc(y, prob).axes[0].get_legend()
    assert legend is not None
    assert legend.get_texts()[0].get_text() == f"model (AUC = {roc_auc_score(y, prob):.3f})"


def test_residual_scatter_is_subsampled_deterministically() -> None:
    rng = np.random.default_rng(7)
    y = rng.normal(size=12_000)
    pred = y + rng.normal(size=12_000)
    fig = plot_residuals(y, pred)
    assert len(fig.axes) == 2
    assert _title(fig) == "Residuals vs predictions"
    offsets = np.asarray(fig.axes[0].collections[0].get_offsets())
    assert offsets.shape == (5000, 2)
    again = np.asarray(plot_residuals(y, pred).axes[0].collections[0].get_offsets())
    np.testing.assert_array_equal(offsets, again)
    assert fig.axes[0].get_xlabel() == "prediction"
    assert _png_bytes(fig).startswith(b"\x89PNG")
    small = plot_residuals([1.0, 2.0, 3.0], [1.5, 2.0, 2.0])
    assert np.asarray(small.axes[0].collections[0].get_offsets()).shape == (3, 2)


def test_residuals_of_a_constant_offset_still_render() -> None:
    y = np.linspace(0.0, 1.0, 50)
    fig = plot_residuals(y, y + 0.1)  # residuals equal up to rounding: a near-zero range
    assert _png_bytes(fig).startswith(b"\x89PNG")
    assert len(fig.axes[1].patches) == 50


# --------------------------------------------------------------------------------------------
# Report


def test_binary_report_uses_the_threshold() -> None:
    y, prob = _binary_data(8)
    history = {"train/loss": [1.0, 0.5], "val/loss": [1.2, 0.7]}
    report = evaluation_report(
        "binary",
        y,
        prob,
        threshold=0.4,
        label_names=["on time", "delayed"],
        fn_cost=2.0,
        fp_cost=1.0,
        history=history,
    )
    assert isinstance(report, EvaluationReport)
    assert set(report.figures) == {
        "roc.png",
        "pr.png",
        "calibration.png",
        "confusion_matrix.png",
        "training_curves.png",
    }
    assert report.metrics == binary_metrics(y, prob, 0.4, fn_cost=2.0, fp_cost=1.0)
    texts = [int(t.get_text()) for t in report.figures["confusion_matrix.png"].axes[0].texts]
    assert sum(texts[2:]) == int(y.sum())  # second row: true positives' cells
    assert texts[1] + texts[3] == int((prob >= 0.4).sum())  # second column: predicted positive


def test_binary_report_defaults_threshold_to_half() -> None:
    y, prob = _binary_data(9)
    report = evaluation_report("binary", y, prob, threshold=None, label_names=None)
    assert report.metrics["positive_rate"] == pytest.approx((prob >= 0.5).mean())
    assert "training_curves.png" not in report.figures


def test_multiclass_report() -> None:
    prob = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.3, 0.3, 0.4], [0.6, 0.3, 0.1]])
    y = np.array([0, 1, 2, 1])
    report = evaluation_report("multiclass", y, prob, threshold=None, label_names=["a", "b", "c"])
    assert set(report.figures) == {"confusion_matrix.png"}
    assert report.metrics == multiclass_metrics(y, prob)
    with pytest.raises(ValueError, match="label_names has 2 entries but output has 3"):
        evaluation_report("multiclass", y, prob, threshold=None, label_names=["a", "b"])


def test_regression_report_takes_the_gaussian_mean() -> None:
    rng = np.random.default_rng(10)
    y = rng.normal(size=50)
    mean = y + rng.normal(scale=0.1, size=50)
    output = np.stack([mean, np.full(50, 5.0)], axis=1)
    report = evaluation_report(
        "regression",
        y,
        output,
        threshold=None,
        label_names=None,
        quantile=0.5,
        history={"val/rmse": [1.0, 0.5]},
    )
    assert set(report.figures) == {"residuals.png", "training_curves.png"}
    assert report.metrics == regression_metrics(y, mean, quantile=0.5)


def test_report_rejects_unknown_task_and_foreign_options() -> None:
    with pytest.raises(ValueError, match="unknown task 'survival'; known tasks: binary"):
        evaluation_report("survival", [0, 1], [0.1, 0.9], threshold=None, label_names=None)
    with pytest.raises(ValueError, match="call ranking_metrics"):
        evaluation_report("ranking", [0, 1], [0.1, 0.9], threshold=None, label_names=None)
    with pytest.raises(ValueError, match="threshold does not apply to task 'regression'"):
        evaluation_report("regression", [0.0, 1.0], [0.1, 0.9], threshold=0.5, label_names=None)
    with pytest.raises(ValueError, match=r"\(N,\) predictions or \(N, 2\) gaussian output"):
        evaluation_report(
            "regression", [0.0, 1.0], np.zeros((2, 3)), threshold=None, label_names=None
        )
