"""The ONNX inference service: predictor (onnxruntime), A/B router, prediction log, HTTP app."""
