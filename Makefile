# The two README commands: `make demo` (set up + run the main job) and `make test` (the whole suite).
# Both create .venv/ when missing and are safe to re-run.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
BENCH_SCALES ?= tiny,small
BENCH_MODEL_SCALES ?= small,medium
BENCH_ROWS ?= 10000,100000
BENCH_DEMAND_SERIES ?= 1000,10000
BENCH_MATERIALIZE_ROWS ?= 100000
BENCH_SCALEOUT_SCALE ?= medium
PYTEST_ARGS ?=

export DO_NOT_TRACK=1
export DBT_SEND_ANONYMOUS_USAGE_STATS=False
export FEAST_USAGE=False
export AIRFLOW__COSMOS__ENABLE_TELEMETRY=False
export MLFLOW_DISABLE_TELEMETRY=true

.PHONY: help install demo test lint test-unit test-models test-soak bench lock docs clean

help:
	@echo "make demo   - create .venv, run ingest(generate SCALE, default small or .env's) -> dbt -> Feast -> train -> score through a local Airflow, print the UI login (DEMO_KEEP=1 keeps it serving)"
	@echo "make test   - lint, then unit, models, integration and e2e tests (creates .venv if missing; soak tests deselected)"
	@echo "make lint   - ruff check + ruff format --check (settings in pyproject.toml; \`ruff format .\` fixes the format)"
	@echo "make test-unit / test-models - one tier: pure functions (fast) / model fits on small synthetic frames"
	@echo "make test-soak - the long failure-recovery e2e scenarios (a killed dbt producer, ~8 min)"
	@echo "make bench  - benchmarks (BENCH_SCALES=$(BENCH_SCALES), BENCH_ROWS=$(BENCH_ROWS)) -> bench/results/*.json, docs/benchmarks.md"
	@echo "make docs   - regenerate docs/data_contract.md and dbt docs"
	@echo "make lock   - re-resolve requirements.txt into constraints.txt"

# One install step: pinned direct requirements + the full constraints file (no resolver backtracking).
$(STAMP): requirements.txt constraints.txt pyproject.toml
	@echo "==> [1/3] .venv: a virtual environment for $(PYTHON)"
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] the pinned dependencies (about 2.4 GB, 2-7 min on 2 cores; one line per package)"
	$(BIN)/pip install --disable-pip-version-check --progress-bar off -r requirements.txt -c constraints.txt
	@echo "==> [3/3] this project itself (an editable install)"
	$(BIN)/pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	@# byte-compile this project once: with PYTHONDONTWRITEBYTECODE set, Python never writes .pyc itself
	$(BIN)/python -m compileall -q ml dags feature_repo > /dev/null
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ecomml demo$(if $(SCALE), --scale $(SCALE),)$(if $(filter 1,$(DEMO_KEEP)), --keep,)

test: lint
	$(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit $(PYTEST_ARGS)

test-models: $(STAMP)
	$(BIN)/python -m pytest tests/models $(PYTEST_ARGS)

test-soak: $(STAMP)
	$(BIN)/python -m pytest -m soak tests/e2e $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/python bench/bench_generate.py --scales $(BENCH_SCALES)
	$(BIN)/python bench/bench_dbt.py --scales $(BENCH_SCALES)
	$(BIN)/python bench/bench_retrieval.py --rows $(BENCH_ROWS)
	$(BIN)/python bench/bench_materialize.py --rows $(BENCH_MATERIALIZE_ROWS)
	$(BIN)/python bench/bench_serving.py
	$(BIN)/python bench/bench_airflow.py --scales $(BENCH_SCALES) --modes watcher
	$(BIN)/python bench/bench_scaleout.py --scale $(BENCH_SCALEOUT_SCALE)
	$(BIN)/python bench/bench_models.py --scales $(BENCH_MODEL_SCALES)
	$(BIN)/python bench/bench_recs.py --scales $(BENCH_MODEL_SCALES)
	$(BIN)/python bench/bench_recs_real.py
	$(BIN)/python bench/bench_demand.py --series $(BENCH_DEMAND_SERIES)
	$(BIN)/python bench/bench_demand_real.py
	$(BIN)/python bench/bench_propensity_real.py
	$(BIN)/python bench/report.py

docs: $(STAMP)
	$(BIN)/ecomml contract --update-docs
	$(BIN)/ecomml warehouse docs

lock:
	rm -rf /tmp/ecomml-lock && $(PYTHON) -m venv /tmp/ecomml-lock
	/tmp/ecomml-lock/bin/pip install --quiet -r requirements.txt
	( echo "# Full resolved set for requirements.txt (pip freeze of a fresh install; regenerate with \`make lock\`)."; \
	  /tmp/ecomml-lock/bin/pip freeze | sed 's/+cpu//' ) > constraints.txt

clean:
	rm -rf data dbt_project/target dbt_project/logs
