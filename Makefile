# lossflow — `make help` lists the targets.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

# Telemetry is off everywhere lossflow runs.
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export ORT_DISABLE_TELEMETRY := 1

TYPED := src

.DEFAULT_GOAL := help
.PHONY: help install lock images run serve traffic monitor demo losses ui test test-fast lint format typecheck peers bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# The install: a plain venv, uv (pinned) bootstrapped into it by its pip, then uv installs from the
# lock (constraints.txt, as in the images): 7x faster than pip here (README). torch goes first,
# alone and exact: the lock pins its CPU build (torch==2.13.0+cpu), which PyPI does not have, so
# it comes from pip's find-links (PIP_FIND_LINKS or pip.conf; on the development machines a local
# wheel) or from PyTorch's CPU index (TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu). uv
# reads no pip configuration, so both are handed to it. With that torch installed no dependency
# can pull a multi-GB CUDA build; without it, the second step fails rather than picks one.
# --system-certs: the platform's CA store (a TLS-inspecting proxy's CA lives there, as for pip).
UV_VERSION := 0.13.10
UV_INSTALL = $(BIN)/uv pip install --quiet --system-certs --python $(BIN)/python -c constraints.txt
TORCH_FIND_LINKS ?= $(or $(PIP_FIND_LINKS),$(shell $(PYTHON) -m pip config get global.find-links 2>/dev/null))
TORCH_INDEX_URL ?=
TORCH_SOURCES = $(foreach d,$(TORCH_FIND_LINKS),--find-links $(d)) $(if $(TORCH_INDEX_URL),--extra-index-url $(TORCH_INDEX_URL))
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip uv==$(UV_VERSION)
	$(UV_INSTALL) --no-deps $(TORCH_SOURCES) torch==2.13.0 || { echo "no torch==2.13.0+cpu" \
		"(the lock's CPU build) found: set TORCH_FIND_LINKS=<a folder with its wheel> or" \
		"TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" >&2; exit 1; }
	$(UV_INSTALL) -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install lossflow with its dev tools (uv, the lock, CPU torch)

lock: ## Rewrite constraints.txt (the lock) from .venv after a dependency change
	$(BIN)/python deploy/lock.py

DOCKER_BUILD_ARGS ?=
images: ## Build the serve, train and worker images (DOCKER_BUILD_ARGS="--build-arg ...")
	docker build --network host $(DOCKER_BUILD_ARGS) --target serve -t lossflow-serve .
	docker build --network host $(DOCKER_BUILD_ARGS) --target train -t lossflow-train .
	docker build --network host $(DOCKER_BUILD_ARGS) --target worker -t lossflow-worker .

run: $(STAMP) ## Main job: train the flights model with the default loss, register it in MLflow
	$(BIN)/lossflow train

serve: $(STAMP) ## Serve the registered champion/challenger on http://127.0.0.1:8000 (A/B, logged)
	$(BIN)/lossflow serve

TRAFFIC_ARGS ?= --rate 50 --limit 3000 --delay 5
traffic: $(STAMP) ## Replay production flights against `make serve` (TRAFFIC_ARGS=...), delayed feedback
	$(BIN)/lossflow traffic $(TRAFFIC_ARGS)

MONITOR_ARGS ?= --since 24h
monitor: $(STAMP) ## Judge the logged traffic: drift, quality, retrain decision (MONITOR_ARGS=...)
	$(BIN)/lossflow monitor $(MONITOR_ARGS)

demo: $(STAMP) ## The closed loop on Sep-Dec 2013 (train, serve, replay, monitor, retrain, A/B): ~10 min
	$(BIN)/lossflow demo --json data/demo-timeline.json

losses: $(STAMP) ## Print the loss catalogue
	$(BIN)/lossflow losses

ui: $(STAMP) ## Open the MLflow UI on the embedded store (http://127.0.0.1:5000)
	$(BIN)/lossflow ui

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## Apply ruff fixes and formatting
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: $(STAMP) ## mypy (strict) on the library and the flows
	$(BIN)/mypy $(TYPED)

test: lint typecheck peers ## Everything CI runs: lint, types, all tests (images: a Docker daemon, .ci/docker.sh; KServe/MLServer: make peers)
	$(BIN)/pytest

test-fast: $(STAMP) ## Tests without the slow ones
	$(BIN)/pytest -m "not slow"

# KServe and MLServer (the serving benchmark's peers; their clients and codecs in the tests of
# the /v2 routes) do not install beside the lock (current kserve and mlserver need
# protobuf<7, the lock has 7; no kserve resolves at all, only mlserver 1.2.1), so each runs from
# a venv of its own, made by the project's uv from its pinned requirements
# (benchmarks/peers/NAME.txt, compiled from NAME.in), anew when they change.
PEERS_VENV := .venv-peers
PEERS := kserve mlserver
$(PEERS_VENV)/%/.installed: benchmarks/peers/%.txt | $(STAMP)
	$(BIN)/uv venv --quiet --clear --python $(BIN)/python $(PEERS_VENV)/$*
	$(BIN)/uv pip install --quiet --system-certs --python $(PEERS_VENV)/$*/bin/python -r $<
	touch $@

peers: $(foreach p,$(PEERS),$(PEERS_VENV)/$(p)/.installed) ## KServe's and MLServer's venvs: .venv-peers/kserve, mlserver (benchmark peers, V2 tests)

bench: $(STAMP) peers ## Benchmarks: losses; training throughput; service vs mlflow serve; monitoring vs Evidently
	$(BIN)/python benchmarks/losses.py --json benchmarks/results/losses.json
	$(BIN)/python benchmarks/training_throughput.py --json benchmarks/results/training_throughput.json
	$(BIN)/python benchmarks/serving.py --json benchmarks/results/serving.json
	$(BIN)/python benchmarks/monitoring.py --json benchmarks/results/monitoring.json

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
