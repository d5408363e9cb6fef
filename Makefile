# The two commands of the README: `make run` and `make test`. Both install first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
STAMP := .venv/.installed

help:
	@echo "make run     install and start Airflow on http://localhost:8080 (SQLite, LocalExecutor, local Dask and Spark engines)"
	@echo "make test    install and run the whole test suite"
	@echo "make install create .venv from requirements.txt"
	@echo "make data ROWS=1000000 OUT=/tmp/olympics [FILES=1 SEED=0]  generate an input set of any size"
	@echo "make bench   benchmark both backends against Polars and DuckDB (docs/benchmarks/)"
	@echo "make lint    ruff"
	@echo "make lock    recompile requirements.txt from requirements.in"

# The project's own modules as .pyc (see bin/install: Python may be told never to write them).
COMPILE_PROJECT := .venv/bin/python -m compileall -q -j 0 include plugins dags tests >/dev/null

$(STAMP): requirements.txt bin/install
	@bin/install

# Also after a Java upgrade: the Spark class-data archive of this Java (bin/install; a no-op when up to date).
install: $(STAMP)
	@.venv/bin/python -m include.etl.clusters.spark_local --cds-archive --quiet || true

run: install
	@$(COMPILE_PROJECT)
	@bin/run

# Test files run in PYTEST_WORKERS processes (pytest-xdist, one file per process at a time, so a
# module's engines stay in one process; each process shares one pair of runtime engines between its
# modules, tests/e2e/clusters.py); PYTEST_WORKERS=0 runs everything in this process.
PYTEST_WORKERS ?= 2
test: install
	bin/install-browser
	@$(COMPILE_PROJECT)
	.venv/bin/python -m pytest -n $(PYTEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS)

ROWS ?= 1000000
OUT ?= data/generated
SEED ?= 0
FILES ?= 1
data: install
	.venv/bin/python -m include.pipelines.olympics.generate --rows $(ROWS) --out $(OUT) --seed $(SEED) --files $(FILES)

bench: install
	.venv/bin/uv pip install --quiet --python .venv/bin/python -r bench/requirements.txt
	.venv/bin/python bench/run.py --rows $(BENCH_ROWS) --large-rows $(BENCH_LARGE_ROWS)
	# The embedded runtime's figures (docs/runtime.md): per-task overhead through the scheduler
	# on each backend, and a month of retail_daily backfilled (runs per minute, where time goes).
	.venv/bin/python bench/overhead.py --backend dask --runs 3
	.venv/bin/python bench/overhead.py --backend spark --runs 3
	.venv/bin/python bench/backfill.py --backend dask --from 2011-11-01 --to 2011-11-30
	# A one-off run (dags test olympics_etl) against a do-nothing DAG of the same seven tasks.
	.venv/bin/python bench/dags_test.py --backends dask,spark
	# The lake on local disk against a local S3 server (SeaweedFS): the olympics chain on Dask.
	.venv/bin/python bench/lake_storage.py --rows 2000000 --repeat 3
	# The reader on records with quoted line breaks (the 5 M-row file, and a copy with 1 in 100 such records).
	.venv/bin/python bench/multiline.py --rows 5000000 --every 100

BENCH_ROWS ?= 1000000 5000000
BENCH_LARGE_ROWS ?= 20000000  # Dask and DuckDB only (about 3 GB of CSV): where the curves cross, if they do

lint: install
	.venv/bin/ruff check .

lock: install
	.venv/bin/uv pip compile --quiet requirements.in -o requirements.txt --python-version 3.11

.PHONY: help install run test data bench lint lock
