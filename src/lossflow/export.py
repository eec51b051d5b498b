"""ONNX export with a dynamic batch axis and a pinned opset, model metadata, and the parity gate.

This module (torch, ``onnx``) and ``lossflow.onnx_runner`` (``onnxruntime`` only, what a
service imports) are the only places that touch ONNX. Models are exported with the
``torch.export``-based exporter (``torch.onnx.export(..., dynamo=True)``, backed by onnxscript),
which is PyTorch's supported path; the legacy TorchScript exporter is deprecated.

The exported graph has one input per entry of ``example_inputs`` (same names, same order, passed
positionally to ``forward``), a single output named ``"output"``, and a symbolic batch dimension
``"batch"`` on axis 0 of every input and of the output. Whatever the caller needs to serve the
model (loss id, feature schema, preprocessing parameters) goes into the ``ModelProto``'s
``metadata_props`` as strings; structured values are JSON-encoded by the caller.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final

import numpy as np
import onnx
import torch
from torch import Tensor, nn

from lossflow.errors import UserError
from lossflow.onnx_runner import OnnxRunner, require_file

OPSET: Final[int] = 18
"""ONNX opset of every exported model: torch's ONNX function library (torchlib) is written for
opset 18, so no version conversion runs, and onnxruntime 1.32 implements it fully."""

OUTPUT_NAME: Final[str] = "output"
BATCH_DIM: Final[str] = "batch"


class ExportError(RuntimeError):
    """The model could not be exported to the graph contract described in this module."""


class ParityError(UserError, RuntimeError):
    """onnxruntime's outputs differ from the torch model's by more than the tolerance.

    A :class:`~lossflow.errors.UserError`: its one-line message says what was measured and the
    command shows it as such (nothing is registered); it is not a bug of the caller's input.
    """


@dataclass(frozen=True)
class ParityReport:
    """Outcome of a passed parity check.

    Attributes:
        max_abs_diff: Largest absolute difference between torch and onnxruntime outputs.
        rows: Number of input rows compared.
        atol: Absolute tolerance the check was run with.
        rtol: Relative tolerance (of the torch value) the check was run with.
        max_rel_diff: Largest ``|difference| / |torch value|`` among outputs larger than
            ``atol`` (a relative difference of values near 0 means nothing).
    """

    max_abs_diff: float
    rows: int
    atol: float
    rtol: float = 0.0
    max_rel_diff: float = 0.0


def export_onnx(
    model: nn.Module,
    example_inputs: Mapping[str, Tensor],
    path: Path,
    metadata: Mapping[str, str],
    opset: int = OPSET,
) -> Path:
    """Export ``model`` to an ONNX file with a dynamic batch axis and metadata.

    The model is traced in eval mode; its previous train/eval mode is restored afterwards.

    Args:
        model: Network whose ``forward`` takes the example inputs positionally, in mapping order,
            and returns one tensor whose dim 0 is the batch.
        example_inputs: Graph input name -> example tensor with the batch on dim 0. Values are
            only used for tracing; any batch size works, 2 or more is the safest.
        path: Destination ``.onnx`` file; parent directories are created.
        metadata: String key/values written to the model's ``metadata_props``.
        opset: ONNX opset version.

    Returns:
        ``path``.

    Raises:
        ValueError: If ``example_inputs`` is empty or its tensors disagree on the batch size.
        TypeError: If a metadata key or value is not a string.
        ExportError: If export fails, or the graph lacks the single ``output`` or the dynamic
            batch axis.
    """
    names = list(example_inputs)
    _check_example_inputs(example_inputs)
    _check_metadata(metadata)
    was_training = model.training
    model.eval()
    batch = torch.export.Dim(BATCH_DIM)
    dynamic_shapes = tuple({0: batch} for _ in names)
    try:
        program = torch.onnx.export(
            model,
            tuple(example_inputs.values()),
            input_names=names,
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            dynamo=True,
            dynamic_shapes=dynamic_shapes,
            verbose=False,
        )
    except Exception as exc:
        raise ExportError(
            f"exporting {type(model).__name__} to ONNX (opset {opset}) failed: {exc}. "
            f"Check that forward takes ({', '.join(names)}) positionally with the batch on dim 0 "
            "and returns a single tensor."
        ) from exc
    finally:
        model.train(was_training)
    if program is None:
        raise ExportError("torch.onnx.export returned no program; the dynamo exporter is required")
    proto = program.model_proto
    _check_graph(proto, names, type(model).__name__)
    onnx.helper.set_model_props(proto, dict(metadata))
    onnx.checker.check_model(proto)
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save_model(proto, path)
    return path


def read_metadata(path: Path) -> dict[str, str]:
    """Return the ``metadata_props`` of the ONNX model at ``path``.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
    """
    require_file(path)
    proto = onnx.load_model(path, load_external_data=False)
    return {prop.key: prop.value for prop in proto.metadata_props}


def check_parity(
    model: nn.Module,
    onnx_path: Path,
    inputs: Mapping[str, np.ndarray],
    atol: float = 1e-5,
    batch_size: int = 8192,
    rtol: float = 1e-5,
) -> ParityReport:
    """Compare the torch model with its ONNX export on every given row.

    Both run in float32 on the same arrays, in batches of ``batch_size``; torch runs in eval mode
    under ``no_grad`` (the model's previous mode is restored). An output agrees when
    ``|onnxruntime - torch| <= atol + rtol * |torch|`` (``numpy.allclose``'s rule, torch as the
    reference): float32 carries about 7 significant digits, so an absolute tolerance alone
    cannot judge outputs far from 1 (the spacing of float32 is 1.5e-5 at 200 and 0.008 at 1e5),
    while a wrong weight moves outputs by far more than either tolerance. NaN in both outputs
    at the same place counts as equal; NaN in only one counts as an infinite difference.

    Args:
        model: The float32 network that was exported.
        onnx_path: Its exported ``.onnx`` file.
        inputs: Graph input name -> array with rows on dim 0 (floating arrays are cast to
            float32).
        atol: Absolute part of the tolerance.
        batch_size: Rows per forward pass.
        rtol: Relative part of the tolerance (of the torch value).

    Returns:
        The largest differences found, the number of rows and the tolerances.

    Raises:
        ParityError: If any output disagrees, or the output shapes differ; the message gives the
            worst output (row, both values, difference, tolerance) in one line.
        ValueError: If arguments are invalid or the inputs do not match the graph's.
    """
    for name, value in (("atol", atol), ("rtol", rtol)):
        if value < 0 or not math.isfinite(value):
            raise ValueError(f"{name} must be finite and >= 0; got {value}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1; got {batch_size}")
    _check_float32(model)
    runner = OnnxRunner(onnx_path)
    names = runner.input_names
    if set(inputs) != set(names):
        raise ValueError(f"inputs must be exactly the graph inputs {names}; got {sorted(inputs)}")
    arrays = {name: _as_float32(np.asarray(inputs[name])) for name in names}
    rows = _batch_size(arrays)
    if rows == 0:
        raise ValueError("check_parity needs at least one row")
    was_training = model.training
    model.eval()
    worst = _Worst()
    try:
        with torch.no_grad():
            for start in range(0, rows, batch_size):
                batch = {name: array[start : start + batch_size] for name, array in arrays.items()}
                expected = model(*(torch.from_numpy(batch[name]) for name in names))
                if not isinstance(expected, Tensor):
                    raise ParityError(
                        f"the torch model returned {type(expected).__name__}, not one tensor"
                    )
                reference = expected.detach().cpu().float().numpy()
                actual = runner.run(batch)
                if reference.shape != actual.shape:
                    raise ParityError(
                        f"output shapes differ for rows {start}..: torch {reference.shape}, "
                        f"onnxruntime {actual.shape}"
                    )
                worst.update(reference, actual, start, atol, rtol)
    finally:
        model.train(was_training)
    report = ParityReport(worst.abs_diff, rows, atol, rtol, worst.rel_diff)
    if worst.ratio > 1.0:
        raise ParityError(
            f"onnxruntime output differs from torch by {worst.at_diff:.6g} at row {worst.row} "
            f"(torch {worst.at_torch:.9g}, onnxruntime {worst.at_onnx:.9g}; tolerance "
            f"{atol:g} + {rtol:g} x |torch| = {atol + rtol * abs(worst.at_torch):.3g}; "
            f"{rows} rows compared): the ONNX file does not reproduce this model, so it is not "
            "registered; re-export it from the same weights and check for unsupported ops"
        )
    return report


class _Worst:
    """The largest differences seen so far, and the output that is furthest out of tolerance."""

    def __init__(self) -> None:
        self.abs_diff = self.rel_diff = self.ratio = 0.0
        self.row = 0
        self.at_diff = self.at_torch = self.at_onnx = 0.0

    def update(
        self, reference: np.ndarray, actual: np.ndarray, start: int, atol: float, rtol: float
    ) -> None:
        ref = np.atleast_1d(reference.astype(np.float64))
        ref = ref.reshape(len(ref), -1)
        out = np.atleast_1d(actual.astype(np.float64)).reshape(ref.shape)
        with np.errstate(invalid="ignore"):
            diff = np.abs(ref - out)
        same = (ref == out) | (np.isnan(ref) & np.isnan(out))
        diff = np.where(same, 0.0, np.where(np.isnan(diff), np.inf, diff))
        if diff.size == 0:
            return
        scale = np.abs(np.where(np.isfinite(ref), ref, 0.0))
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(diff == 0.0, 0.0, diff / (atol + rtol * scale))
            rel = np.where((diff == 0.0) | (scale <= atol), 0.0, diff / scale)
        self.abs_diff = max(self.abs_diff, float(diff.max()))
        self.rel_diff = max(self.rel_diff, float(rel.max()))
        at = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if float(ratio[at]) > self.ratio:
            self.ratio = float(ratio[at])
            self.row = start + int(at[0])
            self.at_diff, self.at_torch, self.at_onnx = float(diff[at]), ref[at], out[at]


def _as_float32(array: np.ndarray) -> np.ndarray:
    if np.issubdtype(array.dtype, np.floating) and array.dtype != np.float32:
        return np.ascontiguousarray(array, dtype=np.float32)
    return np.ascontiguousarray(array)


def _batch_size(arrays: Mapping[str, np.ndarray]) -> int:
    sizes = {name: int(array.shape[0]) if array.ndim else -1 for name, array in arrays.items()}
    if len(set(sizes.values())) != 1 or -1 in sizes.values():
        raise ValueError(f"every input needs the same number of rows on dim 0; got {sizes}")
    return next(iter(sizes.values()))


def _check_float32(model: nn.Module) -> None:
    for name, tensor in [*model.named_parameters(), *model.named_buffers()]:
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            raise ValueError(
                f"check_parity compares in float32 but {name} is {tensor.dtype}; "
                "call model.float() before exporting and checking"
            )


def _check_example_inputs(example_inputs: Mapping[str, Tensor]) -> None:
    if not example_inputs:
        raise ValueError("example_inputs is empty; give one named tensor per forward argument")
    sizes = {name: int(t.shape[0]) if t.dim() else -1 for name, t in example_inputs.items()}
    if len(set(sizes.values())) != 1 or -1 in sizes.values():
        raise ValueError(f"example inputs need the same batch size on dim 0; got {sizes}")


def _check_metadata(metadata: Mapping[str, str]) -> None:
    for key, value in metadata.items():
        if not isinstance(key, str) or not isinstance(value, str):
            raise TypeError(
                f"metadata must map str to str (JSON-encode structures); "
                f"got {key!r}: {type(value).__name__}"
            )


def _check_graph(proto: onnx.ModelProto, names: list[str], model_name: str) -> None:
    graph_inputs = [value.name for value in proto.graph.input]
    if graph_inputs != names:
        raise ExportError(
            f"exported {model_name} has inputs {graph_inputs}, expected {names}; "
            "every example input must be used by forward"
        )
    outputs = [value.name for value in proto.graph.output]
    if outputs != [OUTPUT_NAME]:
        raise ExportError(
            f"exported {model_name} has outputs {outputs}; forward must return exactly one tensor"
        )
    for value in [*proto.graph.input, *proto.graph.output]:
        dims = value.type.tensor_type.shape.dim
        if not dims or not dims[0].dim_param:
            raise ExportError(
                f"{value.name!r} of exported {model_name} has a fixed dim 0; the batch axis must "
                "stay dynamic (avoid reshapes or loops that hard-code the batch size)"
            )
