# Two commands do all the set-up on a fresh Debian/Python 3.11 machine:
#   make run    install, fetch the default corpus, run the whole pipeline (Prefect flow -> dvc repro per stage)
#   make test   install what the tests need, run pytest
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# torch first and pinned: the CPU build on this machine's disk. The pyproject range is
# loose for GPU users; an unpinned torch here would pull a multi-GB CUDA build.
TORCH  ?= torch==2.13.0
MLFLOW_PORT ?= 5000
PREFECT_PORT ?= 4200
PG_PORT ?= 5433
SERVICES = $(PY) flows/services.py --prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT) --pg-port $(PG_PORT)

export PATH := $(abspath $(VENV))/bin:$(PATH)
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export DVC_NO_ANALYTICS := 1
export PREFECT_SERVER_ANALYTICS_ENABLED := false

.PHONY: run test test-fast lint format install ui ui-check repro clean help serve stop status

help:
	@echo "make run    - whole pipeline end to end on the default corpus (under 40 min on 2 CPU cores after install)"
	@echo "make run PROFILE=long - the long profile (params/profiles/long.yaml, ~1.6 h): the models trained longer"
	@echo "make test   - lint beside every test: unit + integration (what CI runs; at most 15 min on 2 cores)"
	@echo "make test-fast - the unit tier only, no subprocess training (the edit-run loop; under 3 min)"
	@echo "make lint   - ruff (lint + format check) and mypy on the whole repo"
	@echo "make format - apply ruff's import order and formatting"
	@echo "make ui     - MLflow dashboard on http://127.0.0.1:$(MLFLOW_PORT)"
	@echo "make ui-check - headless Chromium screenshots of both dashboards, each page checked (docs/screenshots/)"
	@echo "make repro  - the same pipeline through 'dvc repro' (a dvc.lock torn by a kill is restored first)"
	@echo "make serve  - Prefect server + deployments + worker, MLflow server on PostgreSQL (127.0.0.1; state in .services/)"
	@echo "make stop   - stop everything make serve started;  make status - what runs"

$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

install: $(STAMP)

# PROFILE=<name>: params/profiles/<name>.yaml instead (bench/profile_run.py): ingest and tokenize
# brought up to date by dvc, then the profile's training and scoring under bench/results/profile-<name>/
ifeq ($(PROFILE),)
run: install
	$(PY) flows/pipeline.py $(if $(PUSH),--push)
	@$(PY) -m llm_pipeline.summary reports/evaluate.json
	@echo
	@echo "Reports:   reports/*.json  (evaluate: reports/evaluate.json)"
	@echo "Dashboard: make ui   -> http://127.0.0.1:$(MLFLOW_PORT)"
	@$(PY) -m llm_pipeline.dashboard_links --base http://127.0.0.1:$(MLFLOW_PORT) | sed 's/^/           /'
	@echo "DVC:       dvc status  (only \"fetch: always changed\")   dvc metrics show   dvc plots show"
else
run: install
	@test -f params/profiles/$(PROFILE).yaml || { echo "make run: no profile params/profiles/$(PROFILE).yaml (there: $$(ls params/profiles | sed 's/.yaml//' | tr '\n' ' '))" >&2; exit 2; }
	$(PY) -m llm_pipeline.dvc_state repro tokenize
	$(PY) bench/profile_run.py --profile params/profiles/$(PROFILE).yaml
endif

# dvc repro, after restoring a dvc.lock a kill tore (python -m llm_pipeline.dvc_state --help)
repro: install
	$(PY) -m llm_pipeline.dvc_state repro $(ARGS)

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

format: install
	$(VENV)/bin/ruff check --select I --fix .
	$(VENV)/bin/ruff format .

# Test files are spread over TEST_WORKERS processes (pytest-xdist, one file per worker at a time:
# a module's fixtures are built once). TEST_WORKERS=0 runs them in this process, in order.
TEST_WORKERS ?= 2
XDIST = $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)
# Lint runs beside the tests, not before them: mypy takes a minute of one core on a clean clone,
# while much of the tests' time is spent waiting on servers and subprocesses. The target fails
# if either fails; lint's report is printed after the tests'.
test: install
	@$(MAKE) --no-print-directory lint > $(VENV)/lint.log 2>&1 & lint=$$!; \
	$(PY) -m pytest $(XDIST); tests=$$?; \
	wait $$lint; linted=$$?; cat $(VENV)/lint.log; \
	if [ $$linted -ne 0 ]; then echo "make test: lint failed (its report is above)" >&2; fi; \
	exit $$(( tests || linted ))

# the unit tier: tests/unit less the tests marked slow (subprocesses, a Prefect harness); seconds each
test-fast: install
	$(PY) -m pytest tests/unit -m "not slow and not integration" -q $(XDIST)

ui: install
	@MLFLOW_TRACKING_URI=sqlite:///$(CURDIR)/mlflow.db $(PY) -m llm_pipeline.dashboard_links --base http://127.0.0.1:$(MLFLOW_PORT)
	mlflow ui --backend-store-uri sqlite:///$(CURDIR)/mlflow.db --host 127.0.0.1 --port $(MLFLOW_PORT) --workers 1

# scripts/ui_check.py: a small store and a Prefect server on free ports, each page's rendered DOM
# checked, screenshots to docs/screenshots/ (needs chromium: apt-get install -y chromium)
ui-check: install
	$(PY) scripts/ui_check.py --out docs/screenshots

# flows/services.py --help: every option (ports also from PREFECT_PORT / MLFLOW_PORT / PG_PORT, artifacts to S3)
serve: install
	$(SERVICES) start

stop:
	$(SERVICES) stop

status:
	$(SERVICES) status

clean:
	rm -rf data reports/*.json reports/plots mlflow.db mlartifacts dvc.lock
