# Tally: make install | test | lint | bench | demo | lock
#
# Everything runs from the virtualenv in .venv at the repository root (VENV=... for
# another), which `make install` creates on first use and refreshes whenever the lock
# requirements/lock.txt or pyproject.toml changes.

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
INSTALLED := $(VENV)/.installed
PIP := $(BIN)/python -m pip --disable-pip-version-check

# Every dependency pinned with its hashes (`make lock` writes them from pyproject.toml).
LOCK := requirements/lock.txt
# The image locks: the services' (no client-only libraries), their builder's and the
# operator's; each pins the versions of $(LOCK).
IMAGE_LOCKS := service build operator
# uv resolves the locks; it is fetched into a temporary directory by `make lock`.
UV_VERSION := 0.13.9
# The oldest Python the locks resolve for (pyproject's requires-python); the markers
# in them cover newer ones and every platform.
LOCK_PYTHON := 3.11
# e.g. LOCK_FLAGS=--upgrade, or --upgrade-package numpy: by default `make lock` keeps
# every pin it can.
LOCK_FLAGS ?=

LINT_PATHS := $(wildcard services operator tests bench)

BENCH_CASES ?= mul ltz eq shuffle
BENCH_ROWS ?= 10000 100000 1000000
BENCH_PARTIES ?= 2 3
BENCH_OUT := bench/results/latest.jsonl

.PHONY: help install lock test lint bench bench-analytics demo clean postgres-server netns-tools

help:
	@echo "make install  create .venv and install tally with its dev tools (editable) from $(LOCK)"
	@echo "make lock     re-resolve $(LOCK) and the image locks from pyproject.toml (LOCK_FLAGS=--upgrade)"
	@echo "make test     run the test suite"
	@echo "make lint     ruff check, ruff format --check, mypy --strict on the tally package and tally_operator, import-linter"
	@echo "make bench    benchmark cases $(BENCH_CASES) at $(BENCH_ROWS) rows for $(BENCH_PARTIES) parties"
	@echo "make bench-analytics  sort and group-by benchmarks (issue 3)"
	@echo "make demo     a 3-party local deployment, two providers, a group-by checked against pandas"
	@echo "make clean    remove .venv and caches"

install: $(INSTALLED)

# The stamp is newer than the lock and pyproject.toml once their dependencies are
# installed, so a second `make install` does nothing.  `python3 -m venv` needs ensurepip,
# which some distributions package separately (python3-venv); without it, virtualenv
# from PyPI is fetched into a temporary directory and builds the environment instead.
# Every package comes from the lock, checked against its hashes; tally itself is then
# installed without dependencies and built with the lock's setuptools (no build
# isolation, which would fetch an unpinned one).
$(INSTALLED): $(LOCK) pyproject.toml scripts/gen_protos.py $(wildcard proto/tally/v1/*.proto)
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
	  echo "tally needs Python 3.11 or newer; $(PYTHON) is $$($(PYTHON) -V 2>&1)." \
	       "Run: make PYTHON=python3.11 (or newer) $(MAKECMDGOALS)" >&2; exit 1; }
	@if [ ! -x $(BIN)/python ]; then \
	  echo "creating $(VENV) with $(PYTHON)"; \
	  if ! $(PYTHON) -m venv $(VENV) 2>/dev/null; then \
	    echo "$(PYTHON) -m venv is unavailable here; bootstrapping with virtualenv from PyPI"; \
	    rm -rf $(VENV); \
	    bootstrap=$$(mktemp -d); \
	    $(PYTHON) -m pip install --quiet --disable-pip-version-check --target "$$bootstrap" virtualenv; \
	    PYTHONPATH="$$bootstrap" $(PYTHON) -m virtualenv --quiet $(VENV); \
	    rm -rf "$$bootstrap"; \
	  fi; \
	fi
	@echo "installing the locked dependencies ($(LOCK)) and tally (editable) into $(VENV)"
	$(PIP) install --quiet --require-hashes -r $(LOCK)
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python scripts/gen_protos.py
	@touch $@

# Resolves pyproject.toml's dependencies into the hashed locks (requirements/inputs.py
# says what each holds), keeping the current pins unless LOCK_FLAGS says otherwise.
# Needs PyPI; installs nothing into $(VENV).
lock:
	@tool=$$(mktemp -d); trap 'rm -rf "$$tool"' EXIT; \
	$(PYTHON) -m pip install --quiet --disable-pip-version-check --target "$$tool" uv==$(UV_VERSION); \
	compile() { \
	  $(PYTHON) requirements/inputs.py "$$1" | "$$tool/bin/uv" --quiet pip compile - \
	    --universal --python-version $(LOCK_PYTHON) --generate-hashes \
	    --custom-compile-command 'make lock' $(LOCK_FLAGS) -o "$$2" "$${@:3}"; \
	}; \
	echo "resolving $(LOCK)"; compile lock $(LOCK); \
	for image in $(IMAGE_LOCKS); do \
	  echo "resolving requirements/$$image.txt (pins of $(LOCK))"; \
	  compile $$image requirements/$$image.txt -c $(LOCK); \
	done

# The storage tests start a throwaway PostgreSQL cluster (initdb + pg_ctl); install
# the server where it is missing (Debian/Ubuntu; root or sudo), or point the tests at
# a running one with TALLY_TEST_POSTGRES_URL.
postgres-server:
	@if [ -z "$${TALLY_TEST_POSTGRES_URL:-}" ] && ! command -v initdb >/dev/null 2>&1 \
	    && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  echo "installing the PostgreSQL server for the storage tests (apt-get)"; \
	  sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq postgresql; \
	fi

# The separate-networks tests (tests/execution/test_networks.py, and the shaped links
# of tests/bench/test_run.py) make network namespaces with ip and tc; iproute2 is
# installed where either is missing.
netns-tools:
	@if ! command -v ip >/dev/null 2>&1 || ! command -v tc >/dev/null 2>&1; then \
	  echo "installing iproute2 for the separate-networks tests (apt-get)"; \
	  sudo=$$( [ "$$(id -u)" -eq 0 ] || echo sudo ); \
	  $$sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -qq iproute2; \
	fi

test: install postgres-server netns-tools
	@status=0; $(BIN)/python -m pytest || status=$$?; \
	if [ $$status -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$status

# Every check runs even when an earlier one fails, so one run shows every problem.
lint: install
	@status=0; \
	echo "ruff check $(LINT_PATHS)"; $(BIN)/ruff check $(LINT_PATHS) || status=1; \
	echo "ruff format --check $(LINT_PATHS)"; $(BIN)/ruff format --check $(LINT_PATHS) || status=1; \
	echo "mypy --strict -p tally"; $(BIN)/mypy --strict -p tally || status=1; \
	echo "mypy --strict operator/tally_operator"; $(BIN)/mypy --strict operator/tally_operator || status=1; \
	echo "lint-imports"; $(BIN)/lint-imports || status=1; \
	if [ $$status -ne 0 ]; then echo "make lint: failed (see above)" >&2; fi; \
	exit $$status

# One JSON line per run, also collected in $(BENCH_OUT).
bench: install
	@mkdir -p $(dir $(BENCH_OUT)); : > $(BENCH_OUT); \
	for case in $(BENCH_CASES); do \
	  for parties in $(BENCH_PARTIES); do \
	    for rows in $(BENCH_ROWS); do \
	      $(BIN)/python bench/run.py $$case --parties $$parties --rows $$rows --tuples dealer \
	        | tee -a $(BENCH_OUT); \
	    done; \
	  done; \
	done

# Issue 3's analytics benchmarks: sort and group-by across sizes, groups, parties, partitions.
bench-analytics: install
	@mkdir -p $(dir $(BENCH_OUT)); \
	for parties in 2 3; do \
	  for rows in 10000 100000 1000000; do \
	    $(BIN)/python bench/run.py sort --parties $$parties --rows $$rows | tee -a $(BENCH_OUT); \
	    for groups in 10 100 1000; do \
	      $(BIN)/python bench/run.py groupby --parties $$parties --rows $$rows --groups $$groups \
	        | tee -a $(BENCH_OUT); \
	    done; \
	  done; \
	done; \
	for partitions in 1 2 4; do \
	  $(BIN)/python bench/run.py groupby --parties 3 --rows 1000000 --groups 1000 \
	    --partitions $$partitions | tee -a $(BENCH_OUT); \
	done

demo: install
	@$(BIN)/python -m tally.demo

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis .import_linter_cache
	find services operator tests bench -name __pycache__ -type d -prune -exec rm -rf {} + 2>/dev/null || true
