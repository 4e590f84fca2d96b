# Two commands set everything up on a fresh clone:
#   make run    creates .venv, installs ecobatch, runs the example job on the embedded default
#   make test   creates .venv, installs ecobatch with its test tools, runs the test suite
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
INPUT ?= examples/prompts.jsonl
# llama-cpp-python builds llama.cpp from source. A -march=native build enables the AMX kernels on
# Intel Sapphire Rapids and newer, which crash with SIGSEGV in ggml_backend_amx_mul_mat
# (ggml-org/llama.cpp#20824); a portable AVX2 build runs everywhere x86-64-v3 does.
LLAMA_CMAKE_ARGS ?= -DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON
export CMAKE_ARGS ?= $(LLAMA_CMAKE_ARGS)

.PHONY: run test test-fast lint bench bench-peer clean

$(BIN)/ecobatch: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --upgrade pip
	$(BIN)/pip install -e ".[dev]"
	touch $(BIN)/ecobatch

run: $(BIN)/ecobatch
	$(BIN)/ecobatch run $(INPUT) -o results.jsonl

# Two pytest processes share the suite (pytest-xdist; each has its own Redis and PostgreSQL
# database, see tests/conftest.py): most tests wait on real processes, retries and heartbeats,
# so two at a time use the second core. Tests marked serial compare wall-clock latencies and
# run alone afterwards. Tests go to the processes one at a time, longest first
# (tests/conftest.py), so both finish together.
TEST_WORKERS ?= 2
XDIST := -n $(TEST_WORKERS) --maxschedchunk 1

test: $(BIN)/ecobatch
	$(BIN)/python -m pytest -q -rs $(XDIST) -m "not serial"
	$(BIN)/python -m pytest -q -rs -m serial

# The inner loop (under 2 min): everything but the tests marked slow (llama.cpp inference and
# real router/worker processes). CI runs `make test`, which runs them all.
test-fast: $(BIN)/ecobatch
	$(BIN)/python -m pytest -q -rs $(XDIST) -m "not slow and not serial"

lint: $(BIN)/ecobatch
	$(BIN)/ruff check pipeline router workers tests
	$(BIN)/mypy

bench: $(BIN)/ecobatch
	$(BIN)/python -m tests.benchmarks.bench_pipeline
	$(BIN)/python -m tests.benchmarks.bench_batched
	$(BIN)/python -m tests.benchmarks.bench_intake
	$(BIN)/python -m tests.benchmarks.bench_router
	$(BIN)/python -m tests.benchmarks.bench_simulate
	$(BIN)/python -m tests.benchmarks.bench_strategies

# ecobatch against llama.cpp's own llama-server and llama-batched-bench on the same prompts and
# lengths (issue 13). Apart from `bench`: its first run builds the two llama.cpp binaries, with
# LLAMA_CMAKE_ARGS, into ~/.cache/ecobatch/llama-bin/<version>/ (about 8 minutes on 2 cores).
# BENCH_PEER_ARGS passes options, e.g. make bench-peer BENCH_PEER_ARGS="--quick".
BENCH_PEER_ARGS ?= --json bench-peer.json
bench-peer: $(BIN)/ecobatch
	LLAMA_CMAKE_ARGS="$(LLAMA_CMAKE_ARGS)" $(BIN)/python -m tests.benchmarks.bench_peer $(BENCH_PEER_ARGS)

clean:
	rm -rf $(VENV) ecobatch.db ecobatch.db-wal ecobatch.db-shm results.jsonl bench-peer.json
