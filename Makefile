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
# decode.py, CPU_BENCH_ARGS to cpu.py (the page's CPU path beside llama.cpp and numpy, same run; its first
# run does `npm ci` in bench/llamacpp/). The defaults keep `make bench` within 20 minutes on a fresh
# 2-core machine: WebGPU prompts of 32 tokens (a 128-token prefill on SwiftShader takes ~2 min a run), and
# the CPU baselines only in cpu.py (decode.py's numpy pass repeated them at several minutes).
# gpu_device.py runs only where this machine has an NVIDIA GPU (else it says so and skips); bench/results/gpu.json
# came from a lent GPU machine (prepare here, device_run.py there, collect here: see its docstring).
# BENCH_OUT elsewhere than bench/results leaves the committed results and the README alone (a trial run).
BENCH_ARGS ?= --prompts 32 --baselines none
CPU_BENCH_ARGS ?=
BENCH_OUT ?= bench/results
bench: setup
	$(PY) bench/decode.py --out $(BENCH_OUT) $(BENCH_ARGS)
	$(PY) bench/kernels.py --out $(BENCH_OUT)
	$(PY) bench/channel.py --out $(BENCH_OUT)
	$(PY) bench/cpu.py --out $(BENCH_OUT) $(CPU_BENCH_ARGS)
	$(PY) bench/gpu_device.py run --if-gpu --out $(BENCH_OUT)
	$(PY) bench/plot.py --results $(BENCH_OUT) $(if $(filter bench/results,$(BENCH_OUT)),--readme,)
