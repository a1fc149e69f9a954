# talkface: two commands from a fresh clone (Debian, root): `make demo` and `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
DEMO_OUT ?= demo-output

.PHONY: env demo test test-all bench lint clean-env gpu-check

env:
	@bash scripts/setup.sh

demo: env
	@$(VENV)/bin/talkface demo --out $(DEMO_OUT)

test: env
	@$(PY) -m pytest -q

test-all: env
	@$(PY) -m pytest -q -m "not gpu"

# GPU readiness on a bare CUDA machine (no .venv needed): one table, also written to gpu_check.md
gpu-check:
	PYTHONPATH=. $(or $(PYTHON),python3) benchmarks/gpu_check.py --out gpu_check.md

lint: env
	@$(PY) -m ruff check talkface tests benchmarks

clean-env:
	rm -rf $(VENV)
