"""LitServe serving a lossflow ONNX model through lossflow's own predictor (a peer of
``benchmarks/serving.py``): same requests, same validation, encoding and onnxruntime session,
so the comparison is the serving layer.

    python benchmarks/litserve_peer.py --model model.onnx --port 8010          # defaults
    python benchmarks/litserve_peer.py --model model.onnx --port 8010 --best   # batching

``POST /predict`` takes lossflow's body (``{"unit_id": ..., "records": [...]}``) and answers
``{"predictions": [{"probability": ..., "label": ...}]}``; ``GET /health`` is LitServe's own.
"""

from __future__ import annotations

import argparse
from dataclasses import asdict
from pathlib import Path
from typing import Any

import litserve as ls

from lossflow.serving.predictor import OnnxPredictor

# --best: dynamic batching on (up to 16 requests or 2 ms) and the ZeroMQ queue between the API
# process and the inference worker; one inference worker, one API process for two cores.
BEST = {"max_batch_size": 16, "batch_timeout": 0.002, "fast_queue": True}


class LossflowAPI(ls.LitAPI):
    """One request = one unit's records; with batching, several requests scored in one call."""

    def __init__(self, model: Path, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.model = model

    def setup(self, device: str) -> None:
        self.predictor = OnnxPredictor.from_path(self.model)

    # No annotations on `request` and the response: LitServe builds its FastAPI endpoint from
    # them, and unannotated means the raw JSON body.
    def decode_request(self, request, **kwargs: Any) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = request["records"]
        return records

    def predict(self, x: Any, **kwargs: Any) -> Any:
        if self.max_batch_size <= 1:
            return self.predictor.predict(x)
        flat = [record for records in x for record in records]
        scored = iter(self.predictor.predict(flat))
        return [[next(scored) for _ in records] for records in x]

    def encode_response(self, output: Any, **kwargs: Any):
        return {
            "predictions": [{k: v for k, v in asdict(p).items() if v is not None} for p in output]
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True, help="lossflow ONNX file")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--best", action="store_true", help="the best configuration measured")
    parser.add_argument("--max-batch-size", type=int, help="dynamic batching: requests per batch")
    parser.add_argument("--batch-timeout", type=float, help="dynamic batching: longest wait (s)")
    parser.add_argument("--fast-queue", action="store_true", help="ZeroMQ between the processes")
    parser.add_argument("--workers", type=int, default=1, help="inference workers")
    parser.add_argument("--api-servers", type=int, help="API server processes")
    args = parser.parse_args()
    options: dict[str, Any] = dict(BEST) if args.best else {}
    if args.max_batch_size is not None:
        options["max_batch_size"] = args.max_batch_size
    if args.batch_timeout is not None:
        options["batch_timeout"] = args.batch_timeout
    api_options = {k: options[k] for k in ("max_batch_size", "batch_timeout") if k in options}
    api = LossflowAPI(args.model, **api_options)
    server = ls.LitServer(
        api,
        accelerator="cpu",
        workers_per_device=args.workers,
        fast_queue=args.fast_queue or bool(options.get("fast_queue")),
    )
    server.run(
        host=args.host,
        port=args.port,
        num_api_servers=args.api_servers,
        generate_client_file=False,
        log_level="warning",
    )


if __name__ == "__main__":
    main()
