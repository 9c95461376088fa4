# echomimic: set-up, demo, tests and benchmark in a local virtual environment (.venv).
#
#   make demo    create .venv if needed, then render demo/demo.mp4 (+ demo/demo.png)
#   make test    create .venv if needed, then run the test suite
#   make bench   time the pipeline (ms/frame per stage, real-time factor)
#   make clean   remove .venv, demo/ and caches

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=
# Test processes run side by side (pytest-xdist); `make test TEST_WORKERS=0` runs in one process.
TEST_WORKERS ?= auto

export PIP_DISABLE_PIP_VERSION_CHECK := 1

.PHONY: all venv demo test bench clean

all: test

venv: $(STAMP)

# Reinstall only when the dependencies change (the stamp is newer than both files otherwise).
$(STAMP): pyproject.toml constraints.txt
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -c constraints.txt -e ".[test]"
	@touch $@

demo: $(STAMP)
	$(BIN)/echomimic demo -o demo/demo.mp4 --preview demo/demo.png

test: $(STAMP)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS)

bench: $(STAMP)
	$(BIN)/echomimic bench --seconds 10 --sizes 512,1080p

clean:
	rm -rf $(VENV) demo build dist .pytest_cache src/*.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +
