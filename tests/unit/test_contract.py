"""The model-metadata contract between the training flow and every reader of an ONNX file."""

from __future__ import annotations

import pytest

from lossflow.contract import (
    ALIASES,
    CHALLENGER,
    CHAMPION,
    FORMAT_KEY,
    PREVIOUS,
    MetadataError,
    ModelMetadata,
)

META = ModelMetadata(
    loss_id="focal-0123456789ab",
    loss_spec={"name": "focal", "gamma": 2.0, "alpha": 0.25, "reduction": "mean"},
    task="binary",
    output="sigmoid",
    preprocessor={"format": "lossflow.preprocessor", "task": "binary", "numeric": ["a"]},
    threshold=0.31,
    label_names=None,
    dataset_fingerprint="0f" * 8,
    lossflow_version="0.1.0",
)


def test_round_trip_is_exact_and_every_value_is_a_string() -> None:
    props = META.to_props()
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in props.items())
    assert props[FORMAT_KEY] == "1"
    assert all(key.startswith("lossflow.") for key in props)
    assert ModelMetadata.from_props(props, "m.onnx") == META


def test_unknown_keys_are_tolerated() -> None:
    props = {**META.to_props(), "lossflow.added_later": "x", "producer": "someone"}
    assert ModelMetadata.from_props(props, "m.onnx") == META


def test_files_written_before_the_format_key_still_read() -> None:
    props = META.to_props()
    del props[FORMAT_KEY]
    del props["lossflow.dataset_fingerprint"]
    read = ModelMetadata.from_props(props, "old.onnx")
    assert read.loss_id == META.loss_id
    assert read.dataset_fingerprint == ""


@pytest.mark.parametrize(
    "key",
    ["lossflow.loss_id", "lossflow.task", "lossflow.preprocessor", "lossflow.threshold"],
)
def test_a_missing_required_key_names_the_key_and_the_file(key: str) -> None:
    props = META.to_props()
    del props[key]
    with pytest.raises(MetadataError, match=rf"/models/m\.onnx is not a lossflow model.*'{key}'"):
        ModelMetadata.from_props(props, "/models/m.onnx")


def test_a_newer_format_asks_for_a_newer_lossflow() -> None:
    props = {**META.to_props(), FORMAT_KEY: "7"}
    with pytest.raises(MetadataError, match="newer than this lossflow reads"):
        ModelMetadata.from_props(props, "m.onnx")


@pytest.mark.parametrize(
    ("key", "value", "message"),
    [
        ("lossflow.threshold", "not json", "not valid JSON"),
        ("lossflow.threshold", "null", "a binary model needs a finite 'lossflow.threshold'"),
        ("lossflow.threshold", '"0.5"', "must be a finite number"),
        ("lossflow.task", "clustering", "unknown task 'clustering'"),
        ("lossflow.label_names", "[1, 2]", "must be a list of strings"),
        ("lossflow.preprocessor", '{"task": "regression"}', "differs from the preprocessor's"),
    ],
)
def test_invalid_values_are_named(key: str, value: str, message: str) -> None:
    props = {**META.to_props(), key: value}
    with pytest.raises(MetadataError, match=message):
        ModelMetadata.from_props(props, "m.onnx")


def test_an_integer_threshold_reads_as_a_float() -> None:
    read = ModelMetadata.from_props({**META.to_props(), "lossflow.threshold": "1"}, "m.onnx")
    assert read.threshold == 1.0
    assert isinstance(read.threshold, float)


def test_alias_names_are_one_set() -> None:
    assert (CHAMPION, CHALLENGER, PREVIOUS) == ("champion", "challenger", "previous")
    assert set(ALIASES) == {CHAMPION, CHALLENGER, PREVIOUS}
