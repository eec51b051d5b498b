"""OnnxPredictor on a real flights model: raw records in, onnxruntime predictions out."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from lossflow.data.prepare import PreparedData
from lossflow.onnx_runner import OnnxRunner
from lossflow.serving.predictor import OnnxPredictor, Prediction, RecordError

from .serving_models import export_small_model, json_records

pytestmark = pytest.mark.slow

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, PreparedData]:
    return export_small_model(tmp_path_factory.mktemp("predictor"))


@pytest.fixture(scope="module")
def predictor(exported: tuple[Path, PreparedData]) -> OnnxPredictor:
    return OnnxPredictor.from_path(exported[0])


@pytest.fixture(scope="module")
def records(exported: tuple[Path, PreparedData], predictor: OnnxPredictor) -> list[dict[str, Any]]:
    return _json_records(predictor, exported[1])


def _json_records(predictor: OnnxPredictor, prepared: PreparedData) -> list[dict[str, Any]]:
    return json_records(prepared, predictor.feature_columns)


def _record(predictor: OnnxPredictor, records: list[dict[str, Any]]) -> dict[str, Any]:
    """A valid record with every value present."""
    for record in records:
        if all(v is not None for v in record.values()):
            return dict(record)
    raise LookupError("the test split has no complete record")


def test_metadata_is_read(predictor: OnnxPredictor, exported: tuple[Path, PreparedData]) -> None:
    pre = exported[1].preprocessor()
    assert predictor.task == "binary"
    assert predictor.loss_id.startswith("focal-")
    assert predictor.feature_columns == pre.feature_columns
    assert predictor.preprocessor == pre
    assert predictor.threshold is not None
    assert 0.0 < predictor.threshold < 1.0
    assert predictor.label_names is None


def test_encoding_equals_the_preprocessor_on_every_test_row(
    predictor: OnnxPredictor, records: list[dict[str, Any]]
) -> None:
    assert len(records) > 100
    assert any(v is None for r in records for v in r.values()), "needs rows with nulls"
    fast = predictor.encode(records)
    reference = predictor.preprocessor.encode(records)
    np.testing.assert_array_equal(fast.numeric, reference.numeric)
    np.testing.assert_array_equal(fast.categorical, reference.categorical)
    assert fast.numeric.dtype == reference.numeric.dtype
    assert fast.categorical.dtype == reference.categorical.dtype


def test_predictions_equal_onnxruntime_on_encoded_inputs(
    predictor: OnnxPredictor,
    records: list[dict[str, Any]],
    exported: tuple[Path, PreparedData],
) -> None:
    path, prepared = exported
    pre = prepared.preprocessor()
    expected = OnnxRunner(path).run(pre.model_inputs(pre.encode(records)))
    predictions = predictor.predict(records)
    assert len(predictions) == len(records)
    probability = np.array([p.probability for p in predictions])
    np.testing.assert_allclose(probability, expected, rtol=0, atol=1e-6)
    single = predictor.predict(records[:1])[0]
    assert single.probability == pytest.approx(float(expected[0]), abs=1e-6)
    assert all(p.probabilities is None and p.value is None for p in predictions)


def test_labels_follow_the_threshold(
    predictor: OnnxPredictor, records: list[dict[str, Any]]
) -> None:
    predictions = predictor.predict(records)
    threshold = predictor.threshold
    assert threshold is not None
    for p in predictions:
        assert p.probability is not None
        assert p.label == (1 if p.probability >= threshold else 0)
    assert {p.label for p in predictions} == {0, 1}, "the threshold should split this test split"


def test_null_numeric_is_imputed_like_the_preprocessor_path(
    predictor: OnnxPredictor, records: list[dict[str, Any]]
) -> None:
    pre = predictor.preprocessor
    record = _record(predictor, records)
    column = pre.numeric_columns[0]
    record[column] = None
    (got,) = predictor.predict([record])
    expected = OnnxRunner(predictor.path).run(pre.model_inputs(pre.encode([record])))
    assert got.probability == pytest.approx(float(expected[0]), abs=1e-6)
    filled = dict(record, **{column: pre.fill[0]})
    (imputed,) = predictor.predict([filled])
    assert got.probability == pytest.approx(imputed.probability, abs=1e-6)


def test_unknown_and_null_categories_use_the_unknown_bucket(
    predictor: OnnxPredictor, records: list[dict[str, Any]]
) -> None:
    column = predictor.preprocessor.categorical_columns[0]
    record = _record(predictor, records)
    unseen = dict(record, **{column: "never-seen-in-training"})
    missing = dict(record, **{column: None})
    encoded = predictor.encode([record, unseen, missing])
    position = predictor.preprocessor.categorical_columns.index(column)
    assert encoded.categorical[0, position] > 0
    assert encoded.categorical[1:, position].tolist() == [0, 0]
    first, second, third = predictor.predict([record, unseen, missing])
    assert second.probability == pytest.approx(third.probability, abs=1e-7)
    assert isinstance(first, Prediction)


@pytest.mark.parametrize(
    ("change", "field_kind", "message"),
    [
        ("missing", "numeric", "missing"),
        ("extra", "extra", "unknown field"),
        ("abc", "numeric", "not a number (got 'abc')"),
        ("12.5", "numeric", "not a number (got '12.5')"),
        (True, "numeric", "not a number (got True)"),
        (float("nan"), "numeric", "NaN is not allowed"),
        (float("inf"), "numeric", "infinite"),
        (-float("inf"), "numeric", "infinite"),
        (1e300, "numeric", "float32 range"),
        ([1.0], "numeric", "not a number"),
        (7, "categorical", "must be a string or null (got 7)"),
        (False, "categorical", "must be a string or null"),
    ],
)
def test_each_bad_field_names_record_and_field(
    predictor: OnnxPredictor,
    records: list[dict[str, Any]],
    change: Any,
    field_kind: str,
    message: str,
) -> None:
    pre = predictor.preprocessor
    good = _record(predictor, records)
    bad = dict(good)
    field = {"numeric": pre.numeric_columns[-1], "categorical": pre.categorical_columns[-1]}.get(
        field_kind, "surprise"
    )
    if change == "missing":
        del bad[field]
    elif change == "extra":
        bad[field] = 1.0
    else:
        bad[field] = change
    with pytest.raises(RecordError, match=re.escape(f"record 2, field '{field}': ")) as info:
        predictor.predict([good, good, bad, good])
    assert message in str(info.value)
    assert (info.value.record, info.value.field) == (2, field)
    assert str(info.value) == f"record 2, field '{field}': {info.value.problem}"
    assert isinstance(info.value, ValueError)


def test_records_that_are_not_objects_or_empty_are_rejected(
    predictor: OnnxPredictor, records: list[dict[str, Any]]
) -> None:
    good = _record(predictor, records)
    with pytest.raises(RecordError, match=r"^record 1: not an object .*\(got list\)") as info:
        predictor.validate([good, [1, 2]])  # type: ignore[list-item]
    assert (info.value.record, info.value.field) == (1, "")
    with pytest.raises(RecordError, match="no records"):
        predictor.predict([])
    with pytest.raises(RecordError, match="must be a list"):
        predictor.predict(good)  # type: ignore[arg-type]


def test_numpy_numbers_are_numbers(predictor: OnnxPredictor, records: list[dict[str, Any]]) -> None:
    record = _record(predictor, records)
    column = predictor.preprocessor.numeric_columns[0]
    as_numpy = dict(record, **{column: np.float64(record[column])})
    assert predictor.predict([as_numpy]) == predictor.predict([record])


def test_non_lossflow_onnx_is_rejected(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("numeric", TensorProto.FLOAT, ["batch", 2])
    y = helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 2])
    graph = helper.make_graph(
        [helper.make_node("Identity", ["numeric"], ["output"])], "g", [x], [y]
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    helper.set_model_props(model, {"lossflow.loss_id": "bce-000000000000"})
    path = tmp_path / "plain.onnx"
    onnx.save_model(model, path)
    with pytest.raises(
        ValueError, match=r"not a lossflow model: its metadata has no 'lossflow\.task'"
    ):
        OnnxPredictor.from_path(path)


def test_missing_file_is_reported(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not found"):
        OnnxPredictor.from_path(tmp_path / "absent.onnx")


def test_regression_model_predicts_values(tmp_path: Path) -> None:
    path, prepared = export_small_model(tmp_path, "experiment=flights_delay_minutes")
    predictor = OnnxPredictor.from_path(path)
    assert predictor.task == "regression"
    assert predictor.threshold is None
    records = _json_records(predictor, prepared)
    pre = predictor.preprocessor
    expected = OnnxRunner(path).run(pre.model_inputs(pre.encode(records)))
    predictions = predictor.predict(records)
    values = np.array([p.value for p in predictions], dtype=np.float64)
    np.testing.assert_allclose(values, expected, rtol=0, atol=1e-6)
    assert all(p.probability is None and p.label is None for p in predictions)


def test_multiclass_model_predicts_probabilities_and_label_names(tmp_path: Path) -> None:
    path, prepared = export_small_model(tmp_path, "experiment=digits_cnn")
    predictor = OnnxPredictor.from_path(path)
    assert predictor.task == "multiclass"
    assert predictor.label_names == tuple(range(10))
    records = _json_records(predictor, prepared)[:200]
    pre = predictor.preprocessor
    expected = OnnxRunner(path).run(pre.model_inputs(pre.encode(records)))
    predictions = predictor.predict(records)
    probabilities = np.array([p.probabilities for p in predictions])
    np.testing.assert_allclose(probabilities, expected, rtol=0, atol=1e-6)
    assert [p.label for p in predictions] == expected.argmax(axis=1).tolist()
    assert all(p.probability is None and p.value is None for p in predictions)
