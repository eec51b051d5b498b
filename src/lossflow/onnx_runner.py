"""An onnxruntime CPU session over one exported model: what the service, the parity gate and
the benchmarks run. It imports onnxruntime and numpy only (no torch, no ``onnx``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Final

import numpy as np
import onnxruntime as ort

_ORT_TO_NUMPY: Final[dict[str, type[np.generic]]] = {
    "tensor(float)": np.float32,
    "tensor(double)": np.float64,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
    "tensor(int8)": np.int8,
    "tensor(uint8)": np.uint8,
    "tensor(bool)": np.bool_,
}


def require_file(path: Path) -> None:
    """Raise ``FileNotFoundError`` unless ``path`` is an existing file."""
    if not path.is_file():
        raise FileNotFoundError(f"ONNX model not found at {path}; export it with export_onnx")


class OnnxRunner:
    """An onnxruntime CPU session over one exported model.

    Args:
        path: The ``.onnx`` file.
        intra_op_threads: Threads for one operator; 0 lets onnxruntime choose.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If ``intra_op_threads`` is negative.
    """

    def __init__(self, path: Path, intra_op_threads: int = 0) -> None:
        require_file(path)
        if intra_op_threads < 0:
            raise ValueError(f"intra_op_threads must be >= 0 (0 = default); got {intra_op_threads}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = intra_op_threads
        self.path = path
        self._session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )
        self._input_types: dict[str, str] = {
            node.name: str(node.type) for node in self._session.get_inputs()
        }
        self._output_name = str(self._session.get_outputs()[0].name)

    @property
    def input_names(self) -> list[str]:
        """Graph input names, in the order ``forward`` takes them."""
        return list(self._input_types)

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props``."""
        meta = self._session.get_modelmeta().custom_metadata_map
        return {str(key): str(value) for key, value in meta.items()}

    def run(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """Run the model on one batch and return its output.

        Arrays are cast to the graph's dtype when that cast stays within the same kind
        (float64 -> float32, int32 -> int64).

        Raises:
            ValueError: If input names are missing or unexpected, or the batch sizes disagree.
            TypeError: If an array's dtype cannot be safely cast to the graph input's.
        """
        missing = [name for name in self._input_types if name not in inputs]
        extra = [name for name in inputs if name not in self._input_types]
        if missing or extra:
            raise ValueError(
                f"model inputs are {self.input_names}; missing {missing}, unexpected {extra}"
            )
        feeds = {name: self._cast(name, inputs[name]) for name in self._input_types}
        sizes = {name: array.shape[0] if array.ndim else None for name, array in feeds.items()}
        if len(set(sizes.values())) != 1 or None in sizes.values():
            raise ValueError(f"every input needs the same batch size on dim 0; got {sizes}")
        (output,) = self._session.run([self._output_name], feeds)
        result: np.ndarray = np.asarray(output)
        return result

    def _cast(self, name: str, array: np.ndarray) -> np.ndarray:
        array = np.asarray(array)
        onnx_type = self._input_types[name]
        expected = _ORT_TO_NUMPY.get(onnx_type)
        if expected is None:
            raise TypeError(f"input {name!r} has unsupported ONNX type {onnx_type}")
        if array.dtype == expected:
            return np.ascontiguousarray(array)
        if not np.can_cast(array.dtype, expected, casting="same_kind"):
            raise TypeError(
                f"input {name!r} must be {np.dtype(expected).name} ({onnx_type}); "
                f"got {array.dtype}, which does not cast to it safely"
            )
        return np.ascontiguousarray(array, dtype=expected)
