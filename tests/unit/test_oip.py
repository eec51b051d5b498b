"""The Open Inference Protocol codec (``lossflow.serving.oip``) against tritonclient's own encoder
and decoder (``generate_request_body``, ``parse_response_body``): what a real client writes is
read, and what lossflow writes is read back by the client, binary tensors and JSON alike."""

from __future__ import annotations

from typing import Any

import numpy as np
import orjson
import pytest
import tritonclient.http as triton

from lossflow.serving import oip

FEATURES = ("distance", "hour", "carrier")
NUMERIC = frozenset({"distance", "hour"})


def _triton_body(binary: bool, **parameters: Any) -> tuple[bytes, str | None]:
    distance = triton.InferInput("distance", [3, 1], "FP32")
    distance.set_data_from_numpy(np.array([[1.5], [np.nan], [3e3]], np.float32), binary)
    hour = triton.InferInput("hour", [3], "INT64")
    hour.set_data_from_numpy(np.array([5, 0, 23], np.int64), binary)
    carrier = triton.InferInput("carrier", [3], "BYTES")
    carrier.set_data_from_numpy(np.array(["UA", "Überflug", ""], object), binary)
    body, length = triton.InferenceServerClient.generate_request_body(
        [distance, hour, carrier], parameters={"unit_id": "u-1", **parameters}
    )
    return body, None if length is None else str(length)


@pytest.mark.parametrize("binary", [True, False])
def test_a_tritonclient_request_gives_the_records_it_holds(binary: bool) -> None:
    body, length = _triton_body(binary)
    request = oip.parse_request(body, length)
    assert request.unit_id == "u-1"
    assert request.binary_output, "no outputs asked for: tritonclient wants them binary"
    assert oip.records_of(request.inputs, FEATURES, NUMERIC) == [
        {"distance": 1.5, "hour": 5, "carrier": "UA"},
        {"distance": None, "hour": 0, "carrier": "Überflug"},  # NaN: missing
        {"distance": 3000.0, "hour": 23, "carrier": ""},
    ]


def _answer(tensors: list[oip.Tensor], binary: bool, requested: Any = None) -> triton.InferResult:
    header = {"model_name": "m", "model_version": "2", "id": "r", "parameters": {"variant": "a"}}
    body, length = oip.encode_answer(header, tensors, requested, binary)
    return triton.InferenceServerClient.parse_response_body(body, header_length=length)


def _text(array: Any) -> list[str]:
    """BYTES as text: the client gives bytes from binary tensors, str from JSON."""
    return [v.decode() if isinstance(v, bytes) else v for v in array.tolist()]


@pytest.mark.parametrize("binary", [True, False])
def test_every_task_s_answer_is_read_back_by_tritonclient(binary: bool) -> None:
    multiclass = oip.output_tensors(
        "multiclass",
        [
            {"probabilities": {"a": 0.7, "b": 0.2, "c": 0.1}, "label": "a"},
            {"probabilities": {"a": 0.1, "b": 0.1, "c": 0.8}, "label": "c"},
        ],
        ("a", "b", "c"),
    )
    result = _answer(multiclass, binary)
    np.testing.assert_allclose(result.as_numpy("probabilities"), [[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]])
    assert _text(result.as_numpy("label")) == ["a", "c"]
    assert result.get_response()["parameters"] == {"variant": "a"}

    named = oip.output_tensors(
        "binary", [{"probability": 0.9, "label": 1, "class": "yes"}], ("no", "yes")
    )
    result = _answer(named, binary)
    assert result.as_numpy("probability").tolist() == [0.9]
    assert result.as_numpy("label").tolist() == [1]
    assert _text(result.as_numpy("class")) == ["yes"]

    items: list[dict[str, Any]] = [
        {"score": 0.2, "rank": 2},
        {"score": None, "rank": 3},
        {"score": 1.0, "rank": 1},
    ]
    ranked = oip.output_tensors("ranking", items, None)
    result = _answer(ranked, binary)
    assert result.as_numpy("rank").tolist() == [2, 3, 1]
    np.testing.assert_equal(result.as_numpy("score"), [0.2, np.nan, 1.0])  # no score: NaN

    value = oip.output_tensors("regression", [{"value": 123.5}], None)
    assert _answer(value, binary).as_numpy("value").tolist() == [123.5]


def test_requested_outputs_come_in_their_order_and_format() -> None:
    tensors = oip.output_tensors(
        "binary", [{"probability": 0.25, "label": 0, "class": "no"}], ("no", "yes")
    )
    header = {"model_name": "m", "id": "r"}
    body, length = oip.encode_answer(
        header, tensors, (("class", False), ("probability", True)), False
    )
    assert length is not None
    described = orjson.loads(body[:length])["outputs"]
    assert [o["name"] for o in described] == ["class", "probability"]
    assert described[0]["data"] == ["no"]
    assert described[1]["parameters"] == {"binary_data_size": 8}
    with pytest.raises(oip.ProtocolError, match=r"output 'value' is not given .* probability"):
        oip.check_requested((("value", False),), ["probability", "label", "class"])


def _json(**fields: Any) -> bytes:
    inputs = [{"name": "distance", "shape": [2], "datatype": "FP64", "data": [1.0, 2.0]}]
    return orjson.dumps({"parameters": {"unit_id": "u"}, "inputs": inputs, **fields})


@pytest.mark.parametrize(
    ("body", "length", "says"),
    [
        (b"[1, 2]", None, "must be a JSON object"),
        (_json(), "0", "must be the byte length of the JSON header"),
        (_json(), "99999", "must be the byte length of the JSON header"),
        (_json(extra=1), None, "unknown field 'extra'"),
        (_json(id=7), None, "'id' must be a string"),
        (_json(parameters={"unit_id": ""}), None, "unit_id must be a string of 1 to 256"),
        (_json(parameters={"unit_id": "u", "sequence_id": 3}), None, "'sequence_id'"),
        (_json(parameters={"unit_id": "u", "content_type": "np"}), None, "content_type 'np'"),
        (_json(inputs=[]), None, "non-empty list of tensors"),
        (
            _json(inputs=[{"name": "d", "shape": [2, 2], "datatype": "FP32", "data": [1] * 4}]),
            None,
            r"shape \[2, 2\] is not one value per record",
        ),
        (
            _json(inputs=[{"name": "d", "shape": [1], "datatype": "FP8", "data": [1]}]),
            None,
            "datatype 'FP8' is not one of",
        ),
        (
            _json(inputs=[{"name": "d", "shape": [2], "datatype": "BYTES", "data": ["a", 3]}]),
            None,
            "element 1: BYTES data must be strings",
        ),
        (
            _json(inputs=[{"name": "d", "shape": [1], "datatype": "FP32", "data": [1]}] * 2),
            None,
            "input 'd' is sent twice",
        ),
        (
            _json(outputs=[{"name": "p", "parameters": {"classification": 2}}]),
            None,
            "parameter 'classification' of output 'p'",
        ),
    ],
)
def test_a_malformed_request_is_refused_naming_what_is_wrong(
    body: bytes, length: str | None, says: str
) -> None:
    with pytest.raises(oip.ProtocolError, match=says):
        oip.parse_request(body, length)


def _binary(datatype: str, size: int, raw: bytes, shape: list[int]) -> tuple[bytes, str]:
    header = orjson.dumps(
        {
            "parameters": {"unit_id": "u"},
            "inputs": [
                {
                    "name": "d",
                    "shape": shape,
                    "datatype": datatype,
                    "parameters": {"binary_data_size": size},
                }
            ],
        }
    )
    return header + raw, str(len(header))


@pytest.mark.parametrize(
    ("datatype", "size", "raw", "shape", "says"),
    [
        ("FP32", 8, b"\0" * 4, [2], "runs past the 4 bytes"),
        ("FP32", 4, b"\0" * 8, [1], "4 bytes after the JSON header belong to no input"),
        ("FP32", 4, b"\0" * 4, [2], "2 FP32 values take 8 bytes"),
        ("BYTES", 6, b"\x05\0\0\0ab", [1], "BYTES element 0 is cut short"),
        ("BYTES", 5, b"\x01\0\0\0\xff", [1], "element 0: not UTF-8"),
        ("BYTES", 5, b"\x01\0\0\0a", [2], "shape says 2 values, the binary data holds 1"),
    ],
)
def test_malformed_binary_tensors_are_refused(
    datatype: str, size: int, raw: bytes, shape: list[int], says: str
) -> None:
    body, length = _binary(datatype, size, raw, shape)
    with pytest.raises(oip.ProtocolError, match=says):
        oip.parse_request(body, length)


def test_nested_json_data_and_nan_from_json_dumps_are_read() -> None:
    # tritonclient writes JSON with Python's json, whose NaN is not JSON: it is read as missing.
    body = (
        b'{"parameters": {"unit_id": "u"}, "inputs": [{"name": "distance", "shape": [2, 1],'
        b' "datatype": "FP32", "data": [[NaN], [2.5]]}]}'
    )
    request = oip.parse_request(body, None)
    assert request.inputs[0].values == [None, 2.5]


def test_inputs_must_match_the_model_s_columns() -> None:
    request = oip.parse_request(_triton_body(False)[0], None)
    with pytest.raises(oip.ProtocolError, match="input 'origin' is missing"):
        oip.records_of(request.inputs, (*FEATURES, "origin"), NUMERIC)
    with pytest.raises(oip.ProtocolError, match="unknown input 'carrier'"):
        oip.records_of(request.inputs, ("distance", "hour"), NUMERIC)
    with pytest.raises(oip.ProtocolError, match="'carrier' is a numeric column"):
        oip.records_of(request.inputs, FEATURES, NUMERIC | {"carrier"})
    with pytest.raises(oip.ProtocolError, match="'hour' is a categorical column"):
        oip.records_of(request.inputs, FEATURES, frozenset({"distance"}))
