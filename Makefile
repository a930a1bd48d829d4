# The two commands: `make demo` and `make test`. Both create .venv and install what they need.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	@# On a machine without an NVIDIA GPU take the CPU build of torch first (it is on disk here);
	@# the project's torch range then needs nothing more.
	@if ! command -v nvidia-smi >/dev/null 2>&1 && ! $(PY) -c "import torch" 2>/dev/null; then \
		$(PY) -m pip install --quiet torch==2.13.0; fi
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/gpufleet demo

test: $(STAMP)
	$(VENV)/bin/ruff check gpufleet agent collectors db alerts planner dashboard tests bench
	$(VENV)/bin/mypy
	$(VENV)/bin/bandit -q -c pyproject.toml -r gpufleet agent collectors db alerts planner dashboard
	$(PY) .ci/audit_deps.py
	$(VENV)/bin/pytest -q -ra

bench: $(STAMP)
	$(PY) bench/agent_cost.py --write
	$(PY) bench/ingest.py --write
	$(PY) bench/pages.py --write
	$(PY) bench/alerting.py --write
	$(PY) bench/prom_import.py --write
	$(PY) bench/harness_overhead.py --write
	$(PY) bench/fleet_load.py --write
	$(PY) bench/simulator_speed.py --write
	$(PY) bench/fragmentation_experiment.py --exact-seeds 3 --write

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
