# xnuma: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CACHE  := .cache

.PHONY: all demo test lint typecheck unit realxs bench clean

all: test

# The virtualenv is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test,sim,plot]'
	touch $@

# Debian's real xenstored, its libraries and xenstore-utils, unpacked into
# $(CACHE)/xen with apt-get download + dpkg -x: nothing global changes.
$(CACHE)/xen/.ready: tests/realxs/fetch.sh tests/realxs/xenshim.c
	bash tests/realxs/fetch.sh $(CACHE)/xen

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check agent tests
	$(VENV)/bin/mypy

test: $(VENV)/.installed $(CACHE)/xen/.ready lint
	XNUMA_XEN_CACHE=$(CURDIR)/$(CACHE)/xen $(VENV)/bin/pytest -q

demo: $(VENV)/.installed
	$(VENV)/bin/xnuma demo

bench: $(VENV)/.installed $(CACHE)/xen/.ready
	XNUMA_XEN_CACHE=$(CURDIR)/$(CACHE)/xen $(PY) benchmarks/xenstore_bench.py
	$(PY) benchmarks/rules_bench.py
	$(PY) benchmarks/audit_bench.py
	$(PY) benchmarks/sim_speed.py

clean:
	rm -rf $(VENV) $(CACHE) .pytest_cache .mypy_cache .ruff_cache .hypothesis
