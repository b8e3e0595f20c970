# kdlib: the two commands of the README (`make test`, `make report`) plus `make lab`.
# Everything runs in .venv, created on first use. torch is pinned to the CPU wheel
# 2.13.0 unless a torch is already installed in .venv (GPU users: see README).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.kdlib-installed
SCALE  ?= default
OUT    ?= reports

.PHONY: test report lab lint bench install clean

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e ".[dev,dask]"
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m ruff check kdlib tests benchmarks notebooks
	$(PY) -m pytest -q
	rm -rf runs/smoke
	$(PY) -m kdlib report --scale smoke --out $(OUT)/smoke

report: $(STAMP)
	$(PY) -m kdlib report --scale $(SCALE) --out $(OUT)/$(SCALE)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache
