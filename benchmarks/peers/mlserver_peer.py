"""MLServer serving a lossflow ONNX model (a peer of ``benchmarks/serving.py``), run from its
own venv (``make peers``: ``.venv-peers/mlserver``)::

    PYTHONPATH=src .venv-peers/mlserver/bin/python benchmarks/peers/mlserver_peer.py \\
        --onnx model.onnx --name flights --port 8030

MLServer has no ONNX runtime among its own (sklearn, xgboost, lightgbm, mlflow, huggingface,
...), so the model is a custom ``MLModel`` (``LossflowModel`` below) that does what lossflow's
service does per request, through lossflow's own ``OnnxPredictor`` (imported from ``src``: it
needs numpy, pandas, pydantic and onnxruntime, no torch): one Open Inference Protocol (V2)
tensor of shape [1] per raw feature column (numeric FP32/FP64, categorical BYTES, null for a
missing value) becomes one record, validated, encoded with the preprocessing the model file
carries and scored by onnxruntime on one intra-op thread. The tensors are read as they arrive,
without MLServer's codecs (a ``PandasCodec`` DataFrame per one-record request costs more than
the model).

MLServer is configured by files: the script writes ``settings.json`` and
``<name>/model-settings.json`` to a temporary folder and starts it as ``mlserver start FOLDER``
does: REST on ``--port`` (loopback), gRPC and the metrics server on free loopback ports (MLServer
always starts its gRPC server), no access log (``debug: false``), ``--parallel-workers`` inference
processes (MLServer's default is 1; 0 scores in the server's own process, which answered 2 to 4
times the req/s at 16 clients here: ``benchmarks/serving.py`` runs it so).

``POST /v2/models/<name>/infer`` answers ``probability`` (FP64) and ``label`` (INT64), each of
shape [1]; ``GET /v2/models/<name>/ready`` is MLServer's readiness.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import tempfile
from pathlib import Path
from typing import Any

from mlserver import MLModel
from mlserver.cli.serve import load_settings
from mlserver.errors import InferenceError
from mlserver.server import MLServer
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import install_uvloop_event_loop

from lossflow.serving.predictor import OnnxPredictor


class LossflowModel(MLModel):
    """One V2 request = one record of raw feature columns; the answer is its prediction."""

    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if uri is None:
            raise InferenceError(f"model {self.name!r} has no parameters.uri (the ONNX file)")
        self.predictor = OnnxPredictor.from_path(Path(uri))
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        try:
            record = {tensor.name: _value(tensor.data.root) for tensor in payload.inputs}
            (prediction,) = self.predictor.predict([record])
        except ValueError as err:  # a tensor not of one value; RecordError: a bad field
            raise InferenceError(str(err)) from err
        return InferenceResponse(
            model_name=self.name,
            model_version=self.version,
            outputs=[
                ResponseOutput(
                    name="probability", shape=[1], datatype="FP64", data=[prediction.probability]
                ),
                ResponseOutput(name="label", shape=[1], datatype="INT64", data=[prediction.label]),
            ],
        )


def _value(data: Any) -> Any:
    """The one value of a shape-[1] tensor's JSON data (BYTES may come as bytes)."""
    (value,) = data
    return value.decode() if isinstance(value, bytes) else value


def _free_port(host: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def write_settings(
    folder: Path, onnx: Path, name: str, host: str, port: int, parallel_workers: int
) -> None:
    """The files ``mlserver start folder`` reads: server settings and one model's settings."""
    settings = {
        "debug": False,
        "host": host,
        "http_port": port,
        "grpc_port": _free_port(host),
        "metrics_port": _free_port(host),
        "metrics_dir": str(folder / "metrics"),
        "environments_dir": str(folder / "envs"),
        "parallel_workers": parallel_workers,
    }
    model = {
        "name": name,
        # This module, importable by that name: its folder is the script's (sys.path[0]), which
        # MLServer's spawned inference workers inherit.
        "implementation": f"{Path(__file__).stem}.LossflowModel",
        "parameters": {"uri": str(onnx.resolve())},
    }
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / name).mkdir()
    (folder / name / "model-settings.json").write_text(json.dumps(model, indent=2))


async def serve(folder: Path) -> None:
    """What ``mlserver start folder`` does."""
    settings, models = await load_settings(str(folder))
    await MLServer(settings).start(models)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="lossflow ONNX file")
    parser.add_argument("--name", required=True, help="model name in /v2/models/<name>/infer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument(
        "--parallel-workers", type=int, default=1,
        help="MLServer's inference processes (0: in the server's process)",
    )  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="lossflow-mlserver-") as tmp:
        folder = Path(tmp)
        write_settings(folder, args.onnx, args.name, args.host, args.port, args.parallel_workers)
        install_uvloop_event_loop()
        asyncio.run(serve(folder))


if __name__ == "__main__":
    main()
