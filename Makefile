# kdlib: the two commands of the README (`make test`, `make report`) plus `make lab`.
# Everything runs in .venv, created on first use. torch is pinned to the CPU wheel
# 2.13.0 unless a torch is already installed in .venv (GPU users: see README).

PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
STAMP   = $(VENV)/.kdlib-installed
SCALE  ?= default
OUT    ?= reports
NB     ?=
SELECT ?=
DRY_RUN ?=

.PHONY: test report plan lab lint bench install clean chromium

$(PY):
	$(PYTHON) -m venv $(VENV)

# The browser tests drive Debian's Chromium (no browser download): installed when missing,
# as root (CI); checked on every install, a no-op once it is there.
chromium:
	@if [ ! -x /usr/bin/chromium ]; then \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; \
	  else echo "warning: /usr/bin/chromium missing; install it (apt-get install chromium)" \
	    "or set KDLIB_SKIP_BROWSER=1 to skip the browser tests" >&2; fi; \
	fi

$(STAMP): pyproject.toml | $(PY) chromium
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

# make report [SCALE=paper] [NB="02 03"] [SELECT="table=6 seed=0"] [DRY_RUN=1]
report: $(STAMP)
	$(PY) -m kdlib report --scale $(SCALE) $(if $(DRY_RUN),--dry-run) \
	  $(if $(SELECT),--select "$(SELECT)") --out $(OUT)/$(SCALE)$(if $(DRY_RUN),-dry-run) $(NB)

# make plan [SCALE=paper] [NB=02] [SELECT=...]: the runs a report would train, in GPU-hours
plan: $(STAMP)
	$(PY) -m kdlib plan --scale $(SCALE) $(if $(SELECT),--select "$(SELECT)") $(NB)

lab: $(STAMP)
	$(VENV)/bin/jupyter lab --notebook-dir=notebooks

bench: $(STAMP)
	for f in benchmarks/bench_*.py; do echo "== $$f"; $(PY) $$f || exit 1; done

clean:
	rm -rf $(OUT) .pytest_cache
