# salespulse: the two commands of the quick start are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: demo test lint typecheck compiled unit integration faults cluster bench up down status lock clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -r requirements.lock
	$(BIN)/pip install -q --no-deps -e .
	touch $(STAMP)

## compiled: the planner's modules built by mypyc (projections/__init__.py); quick when up to
## date, and with no C compiler they run as Python
compiled: $(STAMP)
	$(BIN)/python -m tools.compile_planner

## demo: start the local stack and the worker, stream simulated events, show live counts
demo: compiled
	$(BIN)/salespulse demo

## test: lint, type-check and the whole test suite (starts and stops its own servers), then
## the unit tier again with the planner as Python
test: lint typecheck compiled
	$(BIN)/pytest
	SALESPULSE_COMPILED=0 $(BIN)/pytest -m unit -q  # the unit tier again as Python (the image's)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

unit: compiled
	$(BIN)/pytest -m unit

integration: compiled
	$(BIN)/pytest -m integration

## faults: crashes, restarts, stalls and poison on the real stack; prints the results table
faults: compiled
	$(BIN)/pytest -m faults

## cluster: what runs on the clustered stack (3 brokers, Redis Cluster): the oracle tests, the
## store contract, slots moving under traffic, the cluster fault scenarios
cluster: compiled
	$(BIN)/pytest -m cluster

# The clustered stack of `make bench` (benchmarks.scale): its own folder and ports beside the
# default stack (brokers 20092-20097, Redis nodes 21379-21384 with their bus 1000 above).
BENCH_CLUSTER := $(foreach setting,STACK_DIR=.salespulse/bench-cluster KAFKA_PORT=20092 \
	KAFKA_CONTROLLER_PORT=20093 REDIS_PORT=21379 PROMETHEUS_PORT=20090 \
	WORKER_METRICS_PORT=20466 EXPORTER_PORT=20467,--cluster-env SALESPULSE_$(setting))

## bench: every benchmark of benchmarks/RESULTS.md on the local stacks (about 40 minutes);
## the 30-minute soak is not part of it: .venv/bin/python -m benchmarks.soak
bench: compiled
	$(BIN)/python -m benchmarks.stages
	$(BIN)/python -m benchmarks.redis_scripts
	$(BIN)/python -m benchmarks.throughput
	$(BIN)/python -m benchmarks.freshness
	$(BIN)/python -m benchmarks.ingest
	$(BIN)/python -m benchmarks.scrape
	$(BIN)/python -m benchmarks.api_latency
	$(BIN)/python -m benchmarks.footprint
	$(BIN)/python -m benchmarks.webhooks
	$(BIN)/python -m benchmarks.peers.compare
	$(BIN)/python -m benchmarks.scale --stacks single,cluster --json .salespulse/scale.json $(BENCH_CLUSTER)
	$(BIN)/python -m benchmarks.capacity --costs .salespulse/scale.json

up: compiled
	$(BIN)/salespulse stack up
down: $(STAMP)
	$(BIN)/salespulse stack down
status: $(STAMP)
	$(BIN)/salespulse stack status

## lock: re-pin requirements.lock to what is installed in .venv, and requirements.runtime.lock
## (what the Docker image installs) to its runtime part
lock: $(STAMP)
	{ sed -n '1,2p' requirements.lock; $(BIN)/pip freeze --exclude-editable | grep -v '^salespulse'; } > requirements.lock.new
	mv requirements.lock.new requirements.lock
	$(BIN)/python deploy/runtime_lock.py > requirements.runtime.lock.new
	mv requirements.runtime.lock.new requirements.runtime.lock

clean: down
	rm -rf $(VENV) .salespulse build/compiled
