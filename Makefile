# Entry points: `make demo` (the main job) and `make test`; both run `make setup` first.
# Setup is idempotent and quick when everything is installed (see scripts/setup.sh).

PY ?= $(shell if [ -x .venv/bin/python ]; then echo .venv/bin/python; else command -v python3 || command -v python; fi)
# Per-test limit in seconds (pytest-timeout); a hung browser must not hang CI.
TEST_TIMEOUT ?= 1200
PYTEST_ARGS ?=

.PHONY: setup demo test bench doctor

setup:
	bash scripts/setup.sh

demo: setup
	$(PY) -m webllm_widget.cli doctor

doctor:
	$(PY) -m webllm_widget.cli doctor

# PYTEST_STATUS_FILE (set by .ci/run) receives pytest's own exit status.
test: setup
	@status=0; $(PY) -m pytest tests -v --timeout=$(TEST_TIMEOUT) $(PYTEST_ARGS) || status=$$?; \
	if [ -n "$$PYTEST_STATUS_FILE" ]; then echo $$status > "$$PYTEST_STATUS_FILE"; fi; exit $$status

bench: setup
	@set -e; found=0; for f in bench/*.py; do \
	  [ -f "$$f" ] || continue; found=1; echo "== $$f"; $(PY) "$$f"; \
	done; [ $$found = 1 ] || echo "no benchmarks in bench/ yet"
