# rseqlab: `make run` and `make test` each set up everything they need first.
# Every target has a `## NAME: what it does` line above it; `make help` prints them.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: help run test stress fuzz selftest-full bench bench-scale-full setup clean vm-deps vm-test fidelity

# The virtual environment is rebuilt whenever the pinned dependencies change.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test,plot,fast]'
	@# Static guest programs (rseqlab.vm.guestbuild) link glibc's libc.a, from libc6-dev.
	@gcc -print-file-name=libc.a | grep -q / || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-upgrade libc6-dev >/dev/null; }
	@# The trace.dat and perf.data tests record with the real tools (tests/live/test_foreign_recordings.py).
	@{ command -v trace-cmd && command -v perf; } >/dev/null 2>&1 || { apt-get update -qq && \
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-upgrade trace-cmd linux-perf >/dev/null; }
	touch $(STAMP)

## setup: create .venv with rseqlab and every extra (done by every other target when needed)
setup: $(STAMP)

# The main job: the default workload (kernel-build) under 6.18 and 6.19, as the 6.19 commit tabulates it.
## run: the main job: compare kernel-build under 6.18 and 6.19 (the 6.19 commit's table)
run: $(STAMP)
	$(BIN)/rseqlab compare

## test: the default test suite (no stress, no QEMU), under 15 minutes
test: $(STAMP)
	$(BIN)/python -m pytest -q -m "not stress and not vm"

# Long property-test runs (more examples); not part of `make test`.
## stress: long property-test runs (many more examples)
stress: $(STAMP)
	$(BIN)/python -m pytest -q -m stress --hypothesis-profile=stress

# A longer fuzz campaign over every input format and the CLI's arguments (tests/test_fuzz.py,
# tests/test_fuzz_cli.py; 25x the examples, new ones each run).
## fuzz: a longer fuzz campaign over every input format and the CLI's arguments
fuzz: $(STAMP)
	RSEQLAB_FUZZ_SCALE=25 $(BIN)/python -m pytest -q tests/test_fuzz.py tests/test_fuzz_cli.py --hypothesis-profile=fuzz --hypothesis-show-statistics

# The whole run_param_test.sh matrix (2048 runs per kernel) on the simulated machine, plus the
# rest of the ported suite, under every release (6.18, 6.19, 7.1); estimated at an hour or more. `rseqlab selftest` alone runs the reduced matrix.
## selftest-full: the whole run_param_test.sh matrix under every release (an hour or more)
selftest-full: $(STAMP)
	$(BIN)/rseqlab selftest --full

# Engine speed (issues 6 and 14) and scale (issue 16): ratios measured in one run, table on stdout, build/bench.json.
# The live metrics need root, tracefs and perf: perf is installed here when missing.
## bench: engine speed ratios (table on stdout, build/bench.json)
bench: $(STAMP)
	@command -v perf >/dev/null 2>&1 && perf --version >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf >/dev/null; }
	$(BIN)/python -m rseqlab.bench

# The scale rows of make bench (issue 16) over the whole selftest --full matrix instead of its
# sample: hours on one core; build/bench-scale.json.
## bench-scale-full: the scale ratios over the whole selftest --full matrix (hours)
bench-scale-full: $(STAMP)
	$(BIN)/python -m rseqlab.scalebench --full

# Real kernels under QEMU (issue 11, docs/real-kernels.md). The host packages (QEMU, busybox-static,
# the kernel build tools, static glibc) are installed when missing; kernels are fetched or built
# into $$XDG_CACHE_HOME/rseqlab/kernels (~/.cache/rseqlab) and reused.
## vm-deps: install the host packages for real kernels under QEMU
vm-deps: $(STAMP)
	$(BIN)/python -m rseqlab.vm.host

# Statistics kernels for one 6.19.x and one 7.x (built once, ~5 CPU-minutes each), then the
# deterministic workloads' counters, predicted against observed (pytest marker `vm`).
## vm-test: real kernels under QEMU: predicted against observed counters (pytest marker vm)
vm-test: vm-deps
	$(BIN)/python -m pytest -q -m vm tests/vm

# The fidelity table of docs/fidelity.md: every kernel of RSEQLAB_VM_KERNELS, every workload; build/fidelity/.
## fidelity: the fidelity table for every kernel and workload (docs/fidelity.md, its summary in README.md)
fidelity: vm-deps
	$(BIN)/python -m rseqlab.vm.fidelity build/fidelity --doc docs/fidelity.md --summary README.md

## clean: remove .venv, build/ and the test caches
clean:
	rm -rf $(VENV) build .pytest_cache .hypothesis

## help: list these targets
help:
	@sed -n 's/^## \([a-z-]*\): /\1\t/p' $(firstword $(MAKEFILE_LIST)) | awk -F'\t' '{ printf "  make %-14s %s\n", $$1, $$2 }'
