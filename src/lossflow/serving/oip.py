"""The Open Inference Protocol's (KServe "V2") inference request and answer, as lossflow reads
and writes them; no web framework here.

A request sends one tensor per feature column (as MLServer's pandas codec sends a table), shape
``[N]`` or ``[N, 1]`` for ``N`` records: numeric columns as ``FP16``/``FP32``/``FP64`` or an
integer type (``BOOL`` is refused, as ``/predict`` refuses booleans), categorical columns as
``BYTES`` (UTF-8 strings). A missing value is ``null`` in JSON data or ``NaN`` in a float tensor
(binary tensors cannot carry ``null``; ``tritonclient`` writes a float NaN as the non-JSON
``NaN``, which is read too). Tensors come as JSON ``data`` or, with the binary tensor
extension that ``tritonclient`` uses by default, as raw little-endian bytes after the JSON
header (``Inference-Header-Content-Length``; an input says its ``binary_data_size``; a ``BYTES``
element is a 4-byte little-endian length and its UTF-8 bytes).

Request ``parameters``: ``unit_id`` (required: the unit the A/B split routes; a parameter rather
than a header because every V2 client passes request parameters through, and gateways keep the
body), ``binary_data_output`` (answer every output as binary), ``content_type`` (``pd``, as
MLServer's codec marks a table) and, on a replaying service only, ``ts``. Anything else is
refused by name: nothing a caller sends is silently ignored.

The answer's outputs per task (:func:`output_tensors`): binary ``probability`` (FP64),
``label`` (INT64, 0/1) and, for named classes, ``class`` (BYTES); multiclass ``probabilities``
(FP64, ``[N, K]`` in the order of the model's ``classes``) and ``label`` (BYTES); regression
``value`` (FP64); ranking ``score`` (FP64, ``NaN`` where the model gave no finite score, ``null``
in JSON) and ``rank`` (INT64, 1 = top).
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, NamedTuple

import numpy as np
import orjson

from lossflow.losses import TaskType
from lossflow.serving.predictor import shown
from lossflow.serving.schemas import MAX_UNIT_ID

HEADER_LENGTH: Final = "Inference-Header-Content-Length"
BINARY_EXTENSION: Final = "binary_tensor_data"
BYTES: Final = "BYTES"
NUMERIC_TYPES: Final[Mapping[str, str]] = {
    "UINT8": "<u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "<i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
DATATYPES: Final = (*NUMERIC_TYPES, "BOOL", BYTES)
REQUEST_FIELDS: Final = ("id", "model_name", "model_version", "parameters", "inputs", "outputs")
REQUEST_PARAMETERS: Final = ("unit_id", "binary_data_output", "content_type", "ts")
INPUT_CONTENT_TYPES: Final = ("np", "str", "pd")
_LENGTH = struct.Struct("<I")
_PLAIN_FIELDS = frozenset({"name", "shape", "datatype", "data"})
# What a plain JSON tensor may hold per datatype (an orjson float is never NaN; null: missing).
_PLAIN_KINDS: Final[Mapping[str, frozenset[type]]] = {
    BYTES: frozenset({str, type(None)}),
    **{t: frozenset({int, float, type(None)}) for t in ("FP16", "FP32", "FP64")},
    **{t: frozenset({int}) for t in NUMERIC_TYPES if not t.startswith("FP")},
}


class ProtocolError(ValueError):
    """A request that is not a valid inference request for this model; the message says what
    to send instead."""


class Tensor(NamedTuple):
    """A tensor, decoded (an input) or before encoding (an output): its values flattened in
    row-major order (``None``: a missing input value; in an FP64 output, NaN)."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    values: list[Any]


@dataclass(frozen=True)
class InferRequest:
    """A parsed inference request.

    Attributes:
        model_name: The model named in the body (KServe's client sends it), if any.
        model_version: The version named in the body, if any.
        id: The caller's id for the request (echoed in the answer), if any.
        unit_id: The unit the A/B split routes.
        ts: The replay time as sent (``parameters.ts``), if any.
        inputs: The input tensors in request order.
        outputs: The requested outputs (name, binary?) in order; ``None``: every output.
        binary_output: ``parameters.binary_data_output``: outputs default to binary.
    """

    model_name: str | None
    model_version: str | None
    id: str | None
    unit_id: str
    ts: Any
    inputs: tuple[Tensor, ...]
    outputs: tuple[tuple[str, bool], ...] | None
    binary_output: bool


def output_metadata(task: TaskType, classes: Sequence[str | int] | None) -> list[dict[str, Any]]:
    """The model metadata's ``outputs`` for a task (``-1``: one per record)."""
    if task == "multiclass":
        return [
            {"name": "probabilities", "datatype": "FP64", "shape": [-1, len(classes or ())]},
            {"name": "label", "datatype": BYTES, "shape": [-1]},
        ]
    if task == "binary":
        tensors = [
            {"name": "probability", "datatype": "FP64", "shape": [-1]},
            {"name": "label", "datatype": "INT64", "shape": [-1]},
        ]
        if classes:
            tensors.append({"name": "class", "datatype": BYTES, "shape": [-1]})
        return tensors
    if task == "ranking":
        return [
            {"name": "score", "datatype": "FP64", "shape": [-1]},
            {"name": "rank", "datatype": "INT64", "shape": [-1]},
        ]
    return [{"name": "value", "datatype": "FP64", "shape": [-1]}]


def output_tensors(
    task: TaskType, outputs: Sequence[Mapping[str, Any]], classes: Sequence[str | int] | None
) -> list[Tensor]:
    """An answer's tensors from what the log holds per record (``logged_output``, or a ranked
    list's ``score``/``rank``)."""
    rows = len(outputs)
    if task == "multiclass":
        names = [str(c) for c in classes or ()]
        probabilities = [o["probabilities"][n] for o in outputs for n in names]
        return [
            Tensor("probabilities", "FP64", (rows, len(names)), probabilities),
            Tensor("label", BYTES, (rows,), [str(o["label"]) for o in outputs]),
        ]
    if task == "binary":
        tensors = [
            Tensor("probability", "FP64", (rows,), [o["probability"] for o in outputs]),
            Tensor("label", "INT64", (rows,), [o["label"] for o in outputs]),
        ]
        if classes:
            tensors.append(Tensor("class", BYTES, (rows,), [o["class"] for o in outputs]))
        return tensors
    if task == "ranking":
        return [
            Tensor("score", "FP64", (rows,), [o["score"] for o in outputs]),
            Tensor("rank", "INT64", (rows,), [o["rank"] for o in outputs]),
        ]
    return [Tensor("value", "FP64", (rows,), [o["value"] for o in outputs])]


def parse_request(body: bytes, header_length: str | None) -> InferRequest:
    """Read an inference request: JSON, or a JSON header and binary tensors after it.

    Args:
        body: The whole HTTP body.
        header_length: The ``Inference-Header-Content-Length`` header, if sent.

    Raises:
        ProtocolError: What is wrong, naming the field, input or parameter.
    """
    binary = b""
    if header_length is not None:
        if not header_length.isdigit() or not 0 < int(header_length) <= len(body):
            raise ProtocolError(
                f"{HEADER_LENGTH} is {header_length!r}; it must be the byte length of the JSON "
                f"header, between 1 and the body's {len(body)} bytes"
            )
        binary = body[int(header_length) :]
        body = body[: int(header_length)]
    plain = True  # orjson: no NaN in the data
    try:
        payload = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        try:  # tritonclient writes a missing float as NaN, which JSON does not have
            payload = json.loads(body)
        except ValueError:
            raise ProtocolError(f"the request is not valid JSON: {err}") from err
        plain = False
    if not isinstance(payload, dict):
        raise ProtocolError("the request must be a JSON object with 'inputs' and 'parameters'")
    unknown = sorted(set(payload) - set(REQUEST_FIELDS))
    if unknown:
        raise ProtocolError(
            f"unknown field {unknown[0]!r}; an inference request has {', '.join(REQUEST_FIELDS)}"
        )
    for key in ("model_name", "model_version"):
        if key in payload and not isinstance(payload[key], str):
            raise ProtocolError(f"{key!r} must be a string (got {shown(payload[key])})")
    request_id = payload.get("id")
    if request_id is not None and not isinstance(request_id, str):
        raise ProtocolError(f"'id' must be a string (got {shown(request_id)})")
    parameters = _parameters(payload.get("parameters"), "the request", REQUEST_PARAMETERS)
    unit_id = parameters.get("unit_id")
    if unit_id is None:
        raise ProtocolError(
            "parameters.unit_id is required: the id of the user/session/device the A/B split "
            'routes, e.g. "parameters": {"unit_id": "user-42"}'
        )
    if not isinstance(unit_id, str) or not 1 <= len(unit_id) <= MAX_UNIT_ID:
        raise ProtocolError(f"parameters.unit_id must be a string of 1 to {MAX_UNIT_ID} characters")
    binary_output = parameters.get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise ProtocolError("parameters.binary_data_output must be true or false")
    content_type = parameters.get("content_type", "pd")
    if content_type != "pd":
        raise ProtocolError(
            f"parameters.content_type {shown(content_type)} is not served: the request is a "
            "table, one tensor per feature column ('pd')"
        )
    inputs = _inputs(payload.get("inputs"), binary, plain)
    return InferRequest(
        payload.get("model_name"),
        payload.get("model_version"),
        request_id,
        unit_id,
        parameters.get("ts"),
        inputs,
        _requested_outputs(payload.get("outputs")),
        binary_output,
    )


def records_of(
    inputs: Sequence[Tensor], features: Sequence[str], numeric: frozenset[str]
) -> list[dict[str, Any]]:
    """The feature records the input tensors hold, one per row.

    Raises:
        ProtocolError: An input is missing, unknown, of the wrong type for its column, or the
            inputs differ in length.
    """
    given = {t.name: t for t in inputs}
    takes = f"the model takes one tensor per feature: {', '.join(features)}"
    for name in features:
        if name not in given:
            raise ProtocolError(f"input {name!r} is missing; {takes}")
    if len(given) > len(features):
        extra = next(t.name for t in inputs if t.name not in set(features))
        raise ProtocolError(f"unknown input {extra!r}; {takes}")
    for tensor in inputs:
        if tensor.name in numeric:
            if tensor.datatype not in NUMERIC_TYPES:
                raise ProtocolError(
                    f"input {tensor.name!r} is a numeric column: send it as FP32, FP64 or an "
                    f"integer type, not {tensor.datatype}"
                )
        elif tensor.datatype != BYTES:
            raise ProtocolError(
                f"input {tensor.name!r} is a categorical column: send it as BYTES (strings), "
                f"not {tensor.datatype}"
            )
    rows = {len(t.values) for t in inputs}
    if len(rows) > 1:
        sizes = ", ".join(f"{t.name}: {len(t.values)}" for t in inputs)
        raise ProtocolError(f"the inputs hold different numbers of records ({sizes})")
    columns = [given[name].values for name in features]
    return [dict(zip(features, row, strict=True)) for row in zip(*columns, strict=True)]


def check_requested(requested: tuple[tuple[str, bool], ...] | None, names: Sequence[str]) -> None:
    """Check that every requested output is one the model gives.

    Raises:
        ProtocolError: Naming the first unknown output and the model's outputs.
    """
    for name, _ in requested or ():
        if name not in names:
            raise ProtocolError(
                f"output {name!r} is not given by this model; its outputs are {', '.join(names)}"
            )


def encode_answer(
    header: dict[str, Any],
    tensors: Sequence[Tensor],
    requested: tuple[tuple[str, bool], ...] | None,
    binary_output: bool,
) -> tuple[bytes, int | None]:
    """The answer's body, and the JSON header's length when binary tensors follow it.

    Args:
        header: ``model_name``, ``model_version``, ``id`` and ``parameters``.
        tensors: Every output of the task.
        requested: The outputs asked for (name, binary?), checked by :func:`check_requested`;
            ``None``: all, binary iff ``binary_output``.
        binary_output: The request's ``binary_data_output``.
    """
    by_name = {t.name: t for t in tensors}
    if requested is None:
        chosen = [(t, binary_output) for t in tensors]
    else:
        chosen = [(by_name[name], binary or binary_output) for name, binary in requested]
    described: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for tensor, binary in chosen:
        entry: dict[str, Any] = {
            "name": tensor.name,
            "datatype": tensor.datatype,
            "shape": list(tensor.shape),
        }
        if binary:
            blob = _to_bytes(tensor)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = tensor.values
        described.append(entry)
    body = orjson.dumps({**header, "outputs": described})
    if not blobs:
        return body, None
    return body + b"".join(blobs), len(body)


def _to_bytes(tensor: Tensor) -> bytes:
    if tensor.datatype == BYTES:
        parts = []
        for value in tensor.values:
            raw = str(value).encode()
            parts.append(_LENGTH.pack(len(raw)) + raw)
        return b"".join(parts)
    values = [math.nan if v is None else v for v in tensor.values]
    return np.asarray(values, dtype=NUMERIC_TYPES[tensor.datatype]).tobytes()


def _parameters(value: Any, owner: str, accepted: Sequence[str]) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ProtocolError(f"the parameters of {owner} must be an object")
    for key in value:
        if key not in accepted:
            raise ProtocolError(
                f"parameter {key!r} of {owner} is not supported by lossflow; it takes "
                f"{', '.join(accepted)}"
            )
    return value


def _inputs(value: Any, binary: bytes, plain: bool) -> tuple[Tensor, ...]:
    if not isinstance(value, list) or not value:
        raise ProtocolError("'inputs' must be a non-empty list of tensors, one per feature column")
    tensors: list[Tensor] = []
    offset = 0
    seen: set[str] = set()
    for position, raw in enumerate(value):
        fast = _plain_json_tensor(raw, seen) if plain else None
        if fast is not None:
            tensors.append(fast)
            continue
        if not isinstance(raw, dict):
            raise ProtocolError(f"inputs[{position}] must be an object (a tensor)")
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise ProtocolError(f"inputs[{position}] needs a 'name': the feature column it holds")
        if name in seen:
            raise ProtocolError(f"input {name!r} is sent twice")
        seen.add(name)
        unknown = sorted(set(raw) - {"name", "shape", "datatype", "parameters", "data"})
        if unknown:
            raise ProtocolError(f"input {name!r}: unknown field {unknown[0]!r}")
        datatype = raw.get("datatype")
        if datatype not in DATATYPES:
            raise ProtocolError(
                f"input {name!r}: datatype {shown(datatype)} is not one of {', '.join(DATATYPES)}"
            )
        count, shape = _shape(name, raw.get("shape"))
        parameters = _parameters(
            raw.get("parameters"), f"input {name!r}", ("binary_data_size", "content_type")
        )
        content_type = parameters.get("content_type", "np")
        if content_type not in INPUT_CONTENT_TYPES:
            raise ProtocolError(
                f"input {name!r}: content_type {shown(content_type)} is not served; send "
                "numbers as numbers and strings as UTF-8 BYTES ('np' or 'str')"
            )
        size = parameters.get("binary_data_size")
        if size is not None:
            if "data" in raw:
                raise ProtocolError(f"input {name!r} has both 'data' and binary_data_size")
            if not isinstance(size, int) or isinstance(size, bool) or size < 0:
                raise ProtocolError(f"input {name!r}: binary_data_size must be a byte count")
            if offset + size > len(binary):
                raise ProtocolError(
                    f"input {name!r}: binary_data_size {size} runs past the {len(binary)} "
                    "bytes after the JSON header"
                )
            values = _from_bytes(name, datatype, count, binary[offset : offset + size])
            offset += size
        else:
            if "data" not in raw:
                raise ProtocolError(f"input {name!r} has no 'data'")
            values = _from_json(name, datatype, count, raw["data"])
        tensors.append(Tensor(name, datatype, shape, values))
    if offset != len(binary):
        raise ProtocolError(
            f"{len(binary) - offset} bytes after the JSON header belong to no input; "
            "each binary input gives its binary_data_size"
        )
    return tuple(tensors)


def _plain_json_tensor(raw: Any, seen: set[str]) -> Tensor | None:
    """The common input, read without the checks that explain (``None``: take that path): a
    named tensor of shape ``[N]`` with N plain JSON values of its type and no parameters, as
    hand-written and most client requests send one record's column."""
    if type(raw) is not dict or raw.keys() != _PLAIN_FIELDS:
        return None
    name, shape, datatype, data = raw["name"], raw["shape"], raw["datatype"], raw["data"]
    if (
        type(name) is not str
        or not name
        or name in seen
        or type(shape) is not list
        or len(shape) != 1
        or type(data) is not list
        or shape[0] != len(data)
    ):
        return None
    kinds = _PLAIN_KINDS.get(datatype)
    if kinds is None:
        return None
    for item in data:
        if type(item) not in kinds:
            return None
    seen.add(name)
    return Tensor(name, datatype, (len(data),), data)


def _shape(name: str, value: Any) -> tuple[int, tuple[int, ...]]:
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in value)
    ):
        raise ProtocolError(f"input {name!r}: shape must be a list of sizes, [N] or [N, 1]")
    if len(value) > 2 or (len(value) == 2 and value[1] != 1):
        raise ProtocolError(
            f"input {name!r}: shape {value} is not one value per record; send [N] or [N, 1]"
        )
    return value[0], tuple(value)


def _from_json(name: str, datatype: str, count: int, data: Any) -> list[Any]:
    if not isinstance(data, list):
        raise ProtocolError(f"input {name!r}: 'data' must be a list")
    flat = _flatten(data)
    if len(flat) != count:
        raise ProtocolError(f"input {name!r}: shape says {count} values, 'data' holds {len(flat)}")
    if datatype.startswith("FP"):
        return [None if isinstance(v, float) and v != v else v for v in flat]
    if datatype == BYTES:
        for index, item in enumerate(flat):
            if item is not None and not isinstance(item, str):
                raise ProtocolError(
                    f"input {name!r}, element {index}: BYTES data must be strings (got "
                    f"{shown(item)})"
                )
    return flat


def _flatten(data: list[Any]) -> list[Any]:
    if not any(isinstance(item, list) for item in data):
        return data
    flat: list[Any] = []
    for item in data:
        if isinstance(item, list):
            flat.extend(_flatten(item))
        else:
            flat.append(item)
    return flat


def _from_bytes(name: str, datatype: str, count: int, raw: bytes) -> list[Any]:
    if datatype == BYTES:
        values: list[Any] = []
        offset = 0
        while offset < len(raw):
            if offset + 4 > len(raw):
                raise ProtocolError(f"input {name!r}: BYTES element {len(values)} is cut short")
            (length,) = _LENGTH.unpack_from(raw, offset)
            offset += 4
            if offset + length > len(raw):
                raise ProtocolError(f"input {name!r}: BYTES element {len(values)} is cut short")
            try:
                values.append(raw[offset : offset + length].decode())
            except UnicodeDecodeError as err:
                raise ProtocolError(
                    f"input {name!r}, element {len(values)}: not UTF-8 text"
                ) from err
            offset += length
        if len(values) != count:
            raise ProtocolError(
                f"input {name!r}: shape says {count} values, the binary data holds {len(values)}"
            )
        return values
    dtype = np.dtype("?" if datatype == "BOOL" else NUMERIC_TYPES[datatype])
    if len(raw) != count * dtype.itemsize:
        raise ProtocolError(
            f"input {name!r}: {count} {datatype} values take {count * dtype.itemsize} bytes, "
            f"binary_data_size is {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if dtype.kind == "f":
        # A float tensor cannot carry null: NaN is its missing value.
        return [None if v != v else v for v in array.astype(np.float64).tolist()]
    return list(array.tolist())


def _requested_outputs(value: Any) -> tuple[tuple[str, bool], ...] | None:
    if value is None:
        return None
    if not isinstance(value, list):
        raise ProtocolError("'outputs' must be a list of {'name': ...}")
    requested = []
    for position, raw in enumerate(value):
        if not isinstance(raw, dict) or not isinstance(raw.get("name"), str):
            raise ProtocolError(f"outputs[{position}] must be an object with a 'name'")
        unknown = sorted(set(raw) - {"name", "parameters"})
        if unknown:
            raise ProtocolError(f"output {raw['name']!r}: unknown field {unknown[0]!r}")
        parameters = _parameters(raw.get("parameters"), f"output {raw['name']!r}", ("binary_data",))
        binary = parameters.get("binary_data", False)
        if not isinstance(binary, bool):
            raise ProtocolError(f"output {raw['name']!r}: binary_data must be true or false")
        requested.append((raw["name"], binary))
    return tuple(requested)
