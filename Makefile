# Every target sets up what it needs: a fresh clone only needs Python 3.11.
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: run test setup setup-test lint typecheck bench-annotate bench-load bench-train bench-export bench-generate bench-loop bench-active clean

run:            ## install, migrate, seed the demo and start web + worker + beat
	PYTHON=$(PYTHON) bash scripts/run.sh

test:           ## install the test extras and run the whole suite
	PYTHON=$(PYTHON) bash scripts/test.sh

setup:
	PYTHON=$(PYTHON) bash scripts/setup.sh

setup-test:
	PYTHON=$(PYTHON) bash scripts/setup.sh test

lint: setup-test
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/lint-imports --no-logo

typecheck: setup-test
	$(VENV)/bin/mypy annotate training

bench-annotate: setup-test  ## 32 concurrent annotators through the API (add ARGS="--db postgres"); ARGS="--sizes 1000,100000,1000000": project-size sweep
	$(PY) bench/bench_annotate.py $(ARGS)

bench-load: setup-test  ## N annotators looping next -> submit, stress and paced (ARGS="--db postgres --duration 15")
	$(PY) bench/bench_load.py $(ARGS)

bench-train: setup-test
	$(PY) bench/bench_train.py

bench-generate: setup-test
	$(PY) bench/bench_generate.py

bench-export: setup-test
	$(PY) bench/bench_export.py

bench-loop: setup-test  ## online vs offline DPO on the demo model, 3 seeds (hours on a CPU; resumes)
	$(PY) bench/bench_loop.py $(ARGS)

bench-active: setup-test  ## active pair selection vs random on a tiny model, 3 seeds (minutes)
	$(PY) bench/bench_active.py $(ARGS)

clean:
	rm -rf var/broker var/static
