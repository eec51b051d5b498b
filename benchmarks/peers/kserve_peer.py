"""KServe's Python ``ModelServer`` serving a lossflow ONNX model (a peer of
``benchmarks/serving.py``), run from its own venv (``make peers``: ``.venv-peers/kserve``)::

    PYTHONPATH=src .venv-peers/kserve/bin/python benchmarks/peers/kserve_peer.py \\
        --onnx model.onnx --name flights --port 8020

KServe has no Python runtime for ONNX (its ONNX path is the Triton server), so the model is a
``kserve.Model`` subclass that does what lossflow's service does per request, through lossflow's
own ``OnnxPredictor`` (imported from ``src``: it needs numpy, pandas, pydantic and onnxruntime,
no torch): one Open Inference Protocol (V2) tensor of shape [1] per raw feature column (numeric
FP32/FP64, categorical BYTES, null for a missing value) becomes one record, validated, encoded
with the preprocessing the model file carries and scored by onnxruntime on one intra-op thread.

``POST /v2/models/<name>/infer`` answers ``probability`` (FP64) and ``label`` (INT64), each of
shape [1]; ``GET /v2/models/<name>/ready`` is KServe's readiness. REST only (gRPC off), on
loopback; no per-request log lines (KServe's latency log, request timings and uvicorn's access
log off), as lossflow serves. The options avoid ``--model``: KServe parses the command line when
it is imported and would take it for its own ``--model_name``.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer
from kserve.errors import InvalidInput, ModelNotReady
from kserve.utils.utils import generate_uuid

from lossflow.serving.predictor import OnnxPredictor


class LossflowModel(Model):
    """One V2 request = one record of raw feature columns; the answer is its prediction."""

    def __init__(self, name: str, path: Path) -> None:
        super().__init__(name)
        self.path = path
        self.predictor: OnnxPredictor | None = None

    def load(self) -> bool:
        self.predictor = OnnxPredictor.from_path(self.path)
        self.ready = True
        return self.ready

    def predict(
        self, payload: InferRequest, headers: dict[str, str] | None = None
    ) -> InferResponse:
        if self.predictor is None:
            raise ModelNotReady(self.name)
        try:
            record = {tensor.name: _value(tensor.data) for tensor in payload.inputs}
            (prediction,) = self.predictor.predict([record])
        except ValueError as err:  # a tensor not of one value; RecordError: a bad field
            raise InvalidInput(str(err)) from err
        outputs = [
            InferOutput("probability", [1], "FP64", [prediction.probability]),
            InferOutput("label", [1], "INT64", [prediction.label]),
        ]
        # A V2 answer has an id: the request's, or a new one (as KServe's own runtimes do).
        return InferResponse(payload.id or generate_uuid(), self.name, outputs)


def _value(data: Any) -> Any:
    """The one value of a shape-[1] tensor's JSON data (BYTES may come as bytes)."""
    (value,) = data
    return value.decode() if isinstance(value, bytes) else value


class QuietModelServer(ModelServer):
    """KServe's ``ModelServer`` with its REST server bound to ``host`` and without uvicorn's
    access log: KServe binds 0.0.0.0 and logs each request, with no option for either, and its
    uvicorn config is reachable only between building the REST server and serving
    (``setup_event_loop`` runs there)."""

    def __init__(self, host: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.host = host

    def setup_event_loop(self) -> None:
        if self._rest_server is not None:
            self._rest_server.config.host = self.host
            self._rest_server.config.access_log = False
        # What uvicorn does for access_log=False when it configures logging (KServe's config
        # has already set up this logger; uvicorn logs a request iff it has handlers).
        access = logging.getLogger("uvicorn.access")
        access.handlers = []
        access.propagate = False
        super().setup_event_loop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--onnx", type=Path, required=True, help="lossflow ONNX file")
    parser.add_argument("--name", required=True, help="model name in /v2/models/<name>/infer")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    model = LossflowModel(args.name, args.onnx)
    model.load()
    server = QuietModelServer(
        args.host,
        http_port=args.port,
        enable_grpc=False,
        enable_latency_logging=False,
        enable_docs_url=False,
    )
    # KServe's per-request timings (its "trace" logger; configured by the server above).
    logging.getLogger("kserve.trace").setLevel(logging.WARNING)
    server.start([model])


if __name__ == "__main__":
    main()
