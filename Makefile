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

TYPED := src $(wildcard pipelines)

.DEFAULT_GOAL := help
.PHONY: help install lock images run serve traffic monitor demo losses ui test test-fast lint format typecheck bench clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

# torch is installed first and exact, so that no dependency pulls a multi-GB CUDA build; every
# package is pinned by the lock (constraints.txt), as in the images.
$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -c constraints.txt torch==2.13.0
	$(BIN)/pip install --quiet -c constraints.txt -e '.[train,dev]'
	touch $(STAMP)

install: $(STAMP) ## Create .venv and install lossflow with its dev tools

lock: ## Rewrite constraints.txt (the lock) from .venv after a dependency change
	$(BIN)/python deploy/lock.py

DOCKER_BUILD_ARGS ?=
images: ## Build the serve, train and worker images (DOCKER_BUILD_ARGS="--build-arg ...")
	docker build $(DOCKER_BUILD_ARGS) --target serve -t lossflow-serve .
	docker build $(DOCKER_BUILD_ARGS) --target train -t lossflow-train .
	docker build $(DOCKER_BUILD_ARGS) --target worker -t lossflow-worker .

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

test: lint typecheck ## Everything CI runs: lint, types, all tests
	$(BIN)/pytest

test-fast: $(STAMP) ## Tests without the slow ones
	$(BIN)/pytest -m "not slow"

bench: $(STAMP) ## Benchmarks: losses; training throughput; service vs mlflow serve; monitoring vs Evidently
	$(BIN)/python benchmarks/losses.py --json benchmarks/results/losses.json
	$(BIN)/python benchmarks/training_throughput.py --json benchmarks/results/training_throughput.json
	$(BIN)/python benchmarks/serving.py --json benchmarks/results/serving.json
	$(BIN)/python benchmarks/monitoring.py --json benchmarks/results/monitoring.json

clean: ## Remove the virtual environment and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis
