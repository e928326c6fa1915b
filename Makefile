# fedbroker — set-up is two commands: `make demo` and `make test`.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint typecheck unit integration proto bench fuzz clean

# Python keeps its compiled modules (__pycache__, git-ignored) even where the environment says not to:
# every broker a test or a scenario starts is a new process, and compiling ~90 modules again costs each
# of them about a quarter of a second of CPU.
unexport PYTHONDONTWRITEBYTECODE

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/fedbroker scenario run scenarios/three-tier.yaml --report-json demo-report.json

# Two pytest-xdist workers (the OpenStack tests stay on one, the data-plane tests run one at a time),
# with the exhaustive fault sweep of issue 19 (every operation x injection point x SP of the seven on
# the path, a crash and a hang each; six federations side by side) on one worker from the start.
# About 11 minutes on two cores; the other sweeps (race kills, the demo and data-plane federations
# under kills) are in make sweep.
test: $(STAMP) lint typecheck
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "not sweep" --durations=25

# Every fault sweep of issue 19 (real federations under crashes, hangs and kills): the exhaustive one
# of make test again, the race kills after Commit, and the demo and data-plane federations with every
# SP killed at random moments. FEDBROKER_SWEEP_FEDERATIONS=N sets how many federations run side by side.
sweep: $(STAMP)
	$(BIN)/python -m pytest -q -n 2 --dist loadgroup -m "sweep or exhaustive"

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/lint-imports

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/python -m pytest -q tests/unit

integration: $(STAMP)
	$(BIN)/python -m pytest -q tests/integration

# Benchmarks (not part of `make test`): real broker processes over loopback gRPC; writes
# bench/results.json, bench/results.md and bench/results.png, and the table into README.md.
# Takes three to four minutes on two cores.
bench: $(STAMP)
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	$(BIN)/python -m bench --readme README.md

# The long fuzz run (not part of `make test`, which runs the same harness with 10,000 requests):
# a million mutated and random requests at a real broker over mTLS, fresh token per call; at most
# an hour. Prints the seed and the status counts; FEDBROKER_FUZZ_SEED=N repeats a run.
fuzz: $(STAMP)
	FEDBROKER_FUZZ_REQUESTS=1000000 FEDBROKER_FUZZ_SECONDS=3600 $(BIN)/python -m pytest -q -s \
		-o timeout=3700 tests/integration/test_fuzz.py

# Regenerate the gRPC code from proto/ (tests/unit/test_proto_fresh.py fails when it is stale).
proto: $(STAMP)
	$(BIN)/python -m tools.genproto

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache demo-report.json
