# Two commands do all the set-up on a fresh Debian machine with Python 3.11:
#   make run    installs everything and trains chess from scratch (examples/chess_quick.toml)
#   make test   installs everything and runs the test suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
CONFIG ?= examples/chess_quick.toml

.PHONY: setup run test test-fast lint bench clean

setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	@test -x /usr/games/stockfish || command -v stockfish >/dev/null || \
		($(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq stockfish)
	$(PYTHON) -m venv $(VENV)
	# torch first, pinned: a bare `torch` requirement would pull a multi-GB CUDA build
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $@

run: setup
	$(VENV)/bin/chessrl run $(CONFIG)

test: setup
	$(VENV)/bin/pytest -q; rc=$$?; [ $$rc -eq 5 ] && echo "no tests collected" && rc=1; exit $$rc

# the quick loop while editing: every test but those marked slow (> ~20 s each on 2 cores)
test-fast: setup
	$(VENV)/bin/pytest -q -m "not slow"

# what CI checks besides the tests: ruff (lint + format) and mypy (configured in pyproject.toml)
lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: setup
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) build *.egg-info
