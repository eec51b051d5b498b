# lossflow images, one target per process:
#   serve   `lossflow serve`: onnxruntime, FastAPI, the prediction-log drivers; no torch
#   train   training, flows and the MLflow server: the full set with CPU torch
#   worker  the train image running a Prefect process worker
#
#   docker build --target serve -t lossflow-serve .
#   docker build --target train -t lossflow-train .
#   docker build --target worker -t lossflow-worker .
#
# Every Python package is pinned by constraints.txt (the lock the Makefile installs from too) and
# installed by uv as in the Makefile (one installer, the same torch-first rule), its bytecode
# compiled as pip would. uv has a venv of its own in the build stages; no runtime image has uv
# or pip.
# Build arguments:
#   BASE_IMAGE        a Debian-based image with python3 (3.11) and its venv module; where no image
#                     registry is reachable, import one (README "Container images")
#   TORCH_INDEX_URL   where the CPU build of torch is found (empty: only PyPI and deploy/wheels/)
#   PIP_CERT_FILE     a CA bundle in the build context for pip and uv (a TLS-inspecting proxy); used
#                     in the build stages only, never copied into an image
#   UV_VERSION        the uv release that installs (the Makefile's)
ARG BASE_IMAGE=python:3.11-slim

# --- build stages: a virtual environment under /opt/lossflow ------------------------------------
FROM ${BASE_IMAGE} AS build-base
ARG PIP_CERT_FILE=
ARG UV_VERSION=0.13.10
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DEFAULT_TIMEOUT=120 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PYTHON=/opt/lossflow/bin/python \
    UV_NO_CACHE=1 \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_HTTP_TIMEOUT=120
WORKDIR /src
COPY deploy/wheels/ /wheels/
RUN if [ -n "$PIP_CERT_FILE" ]; then export PIP_CERT="/wheels/$PIP_CERT_FILE"; fi \
    && python3 -m venv /opt/lossflow \
    && python3 -m venv /opt/uv \
    && /opt/uv/bin/pip install --no-cache-dir "uv==${UV_VERSION}"
# The dependencies first (they change with the lock, not with the code), then the project.
COPY constraints.txt pyproject.toml ./
COPY deploy/requirements.py deploy/

FROM build-base AS build-serve
ARG PIP_CERT_FILE=
RUN if [ -n "$PIP_CERT_FILE" ]; then export SSL_CERT_FILE="/wheels/$PIP_CERT_FILE"; fi \
    && python3 deploy/requirements.py serve > requirements.txt \
    && /opt/uv/bin/uv pip install --find-links /wheels -c constraints.txt -r requirements.txt
COPY README.md ./
COPY src/ src/
RUN if [ -n "$PIP_CERT_FILE" ]; then export SSL_CERT_FILE="/wheels/$PIP_CERT_FILE"; fi \
    && /opt/uv/bin/uv pip install --no-deps . \
    && /opt/uv/bin/uv pip uninstall pip

# --- runtime stages: the venv, the configs, a non-root user -------------------------------------
FROM ${BASE_IMAGE} AS runtime
# Telemetry off everywhere lossflow runs; logs unbuffered; the venv first on PATH.
ENV PATH=/opt/lossflow/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    DO_NOT_TRACK=true \
    MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false \
    ORT_DISABLE_TELEMETRY=1 \
    HOME=/home/lossflow \
    LOSSFLOW_LOG_FILE=/tmp/lossflow.log
RUN useradd --create-home --home-dir /home/lossflow --uid 10001 --user-group --shell /usr/sbin/nologin lossflow \
    && mkdir -p /app/data \
    && chown lossflow:lossflow /app/data
WORKDIR /app
COPY configs/ configs/
# data_dir (base.yaml: data) is the one place lossflow writes: the serving cache, a dump of
# unlogged predictions, training runs. Mount a volume there with a read-only root filesystem.
VOLUME ["/app/data"]

FROM runtime AS serve
COPY --from=build-serve /opt/lossflow /opt/lossflow
USER 10001:10001
ENV LOSSFLOW_HOST=0.0.0.0 \
    LOSSFLOW_PORT=8000
EXPOSE 8000
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["python3", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('LOSSFLOW_PORT', '8000'), timeout=2)"]
CMD ["lossflow", "serve"]

# --- the full set (after serve, so that a builder without BuildKit stops at serve) ----------
FROM build-base AS build-train
ARG PIP_CERT_FILE=
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# torch first, alone and exact (the lock's CPU build), as in the Makefile: no dependency can then
# pull a CUDA build.
RUN if [ -n "$PIP_CERT_FILE" ]; then export SSL_CERT_FILE="/wheels/$PIP_CERT_FILE"; fi \
    && python3 deploy/requirements.py train > requirements.txt \
    && /opt/uv/bin/uv pip install --no-deps --find-links /wheels \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"} -c constraints.txt \
        "$(grep -E '^torch==' constraints.txt)" \
    && /opt/uv/bin/uv pip install --find-links /wheels -c constraints.txt -r requirements.txt
COPY README.md ./
COPY src/ src/
RUN if [ -n "$PIP_CERT_FILE" ]; then export SSL_CERT_FILE="/wheels/$PIP_CERT_FILE"; fi \
    && /opt/uv/bin/uv pip install --no-deps . \
    && /opt/uv/bin/uv pip uninstall pip

FROM runtime AS train
COPY --from=build-train /opt/lossflow /opt/lossflow
USER 10001:10001
CMD ["lossflow", "train"]

FROM train AS worker
ENV LOSSFLOW_WORK_POOL=lossflow
CMD ["lossflow", "worker"]
