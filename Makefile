# Entry points: `make demo` (the main job) and `make test`; both run `make setup` first.
# Setup is idempotent and quick when everything is installed (see scripts/setup.sh).

PY ?= $(shell if [ -x .venv/bin/python ]; then echo .venv/bin/python; else command -v python3 || command -v python; fi)
# Per-test limit in seconds (pytest-timeout); a hung browser must not hang CI.
TEST_TIMEOUT ?= 900
PYTEST_ARGS ?=

.PHONY: setup demo test bench doctor

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m webllm_widget.cli chat "What is the capital of France?" --temperature 0

doctor:
	$(PY) -m webllm_widget.cli doctor

# PYTEST_STATUS_FILE (set by .ci/run) receives pytest's own exit status.
test: setup
	@status=0; $(PY) -m pytest tests -v --durations=25 --timeout=$(TEST_TIMEOUT) $(PYTEST_ARGS) || status=$$?; \
	if [ -n "$$PYTEST_STATUS_FILE" ]; then echo $$status > "$$PYTEST_STATUS_FILE"; fi; exit $$status

# Benchmarks: JSON + PNG in bench/results/, table in README's Benchmarks section. BENCH_ARGS goes to
# decode.py (e.g. BENCH_ARGS="--max-tokens 32 --runs 5"), CPU_BENCH_ARGS to cpu.py (the page's CPU path
# beside llama.cpp and numpy; its first run does `npm ci` in bench/llamacpp/).
BENCH_ARGS ?=
CPU_BENCH_ARGS ?=
bench: setup
	$(PY) bench/decode.py $(BENCH_ARGS)
	$(PY) bench/kernels.py
	$(PY) bench/channel.py
	$(PY) bench/cpu.py $(CPU_BENCH_ARGS)
	$(PY) bench/plot.py --readme
