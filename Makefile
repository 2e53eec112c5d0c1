# The first two commands on a fresh machine: `make demo` and `make test`.
# Each creates .venv if it is missing and installs the project (editable, dev extras) into it.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
DEMO_HOME ?= demo-workbench

.PHONY: demo test test-slow test-integration test-postgres test-s3 install clean bench bench-gpu lint

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

# torch is installed first, pinned, so nothing resolves an unpinned (CUDA, multi-GB) build.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q torch==2.13.0
	$(BIN)/pip install -q -e '.[dev,postgres]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	SKINFLOW_HOME=$(DEMO_HOME) $(BIN)/skinflow demo --n 300 --seed 0
	SKINFLOW_HOME=$(DEMO_HOME) $(BIN)/skinflow app

test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

# installs Label Studio in .ls-venv (about 1 GB, a few minutes the first time), starts it beside a throwaway
# PostgreSQL and SeaweedFS (two app servers on one database and one bucket; pictures in a bucket reach Label
# Studio as presigned links), runs -m integration
test-integration: $(STAMP)
	bash .ci/postgres bash .ci/seaweedfs bash .ci/labelstudio

# The database-layer tests (marked `database`) again, on a throwaway PostgreSQL server (Debian's package, installed
# if missing): every test gets its own database (SKINFLOW_TEST_DATABASE_URL, tests/conftest.py).
test-postgres: $(STAMP)
	bash .ci/postgres $(BIN)/python -m pytest -q -m 'database and not slow and not integration'


# The image store in a real S3-compatible bucket: a throwaway SeaweedFS on 127.0.0.1 (.ci/seaweedfs)
test-s3: $(STAMP)
	bash .ci/seaweedfs $(BIN)/python -m pytest -q -m s3

# ruff: pyflakes, bugbear, import order, line length (pyproject.toml), and the formatter's layout
LINTED := app curation schema trainer tests benchmarks
lint: $(STAMP)
	$(BIN)/ruff check $(LINTED)
	$(BIN)/ruff format --check $(LINTED)

bench: $(STAMP)
	$(BIN)/python -m benchmarks

# On a machine with a CUDA GPU (a CUDA build of torch: see README): 9 minutes at most, results kept part by part
bench-gpu: $(STAMP)
	$(BIN)/python benchmarks/gpu.py --budget-s 540

clean:
	rm -rf $(VENV) .ls-venv .pytest_cache
