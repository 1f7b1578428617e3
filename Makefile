# xnuma: the two commands a newcomer needs are `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CACHE  := .cache

.PHONY: all demo test lint bench clean xen-testbed xen-test package native

all: test

# The virtualenv is rebuilt whenever pyproject.toml changes.
$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip 'setuptools>=77'
	$(PY) -m pip install --quiet -e '.[test,sim,plot]'
	touch $@

# The simulator's native core (agent/sim/native/*.c, the C port of the Python
# model): built in place; setuptools rebuilds it only when a source changed.
native: $(VENV)/.installed
	$(PY) setup.py --quiet build_ext --inplace

# Debian's real xenstored, its libraries and xenstore-utils, unpacked into
# $(CACHE)/xen with apt-get download + dpkg -x: nothing global changes.
$(CACHE)/xen/.ready: tests/realxs/fetch.sh tests/realxs/xenshim.c
	bash tests/realxs/fetch.sh $(CACHE)/xen

# Xen 4.17 under QEMU (software emulation), built only from Debian packages.
XEN_TESTBED := $(CACHE)/xen-testbed

$(XEN_TESTBED)/.ready: tests/xen/build.sh tests/xen/dom0-initrd-init.sh tests/xen/guest-init.sh
	bash tests/xen/build.sh $(XEN_TESTBED)

xen-testbed: $(XEN_TESTBED)/.ready

xen-test: $(VENV)/.installed $(XEN_TESTBED)/.ready
	XNUMA_XEN_TESTBED=$(CURDIR)/$(XEN_TESTBED) $(VENV)/bin/pytest -q -m xen

# Tools for tests/test_packaging.py (build a .deb and an RPM, check unit and spec);
# python3-msgpack and python3-tenacity let the installed .deb run on this host.
PACKAGING_APT := dpkg-dev debhelper dh-python rpm rpmlint cpio python3-msgpack python3-tenacity

$(CACHE)/packaging-tools.ready:
	mkdir -p $(CACHE)
	DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PACKAGING_APT) >/dev/null \
	  || { apt-get update -q >/dev/null && \
	       DEBIAN_FRONTEND=noninteractive apt-get install -y -q $(PACKAGING_APT) >/dev/null; }
	touch $@

package: $(VENV)/.installed $(CACHE)/packaging-tools.ready
	bash packaging/build-deb.sh dist

lint: $(VENV)/.installed
	$(VENV)/bin/ruff check agent tests
	$(VENV)/bin/mypy

test: $(VENV)/.installed native $(CACHE)/xen/.ready $(CACHE)/packaging-tools.ready lint
	XNUMA_XEN_CACHE=$(CURDIR)/$(CACHE)/xen $(VENV)/bin/pytest -q

demo: $(VENV)/.installed native
	$(VENV)/bin/xnuma demo

bench: $(VENV)/.installed native $(CACHE)/xen/.ready
	XNUMA_XEN_CACHE=$(CURDIR)/$(CACHE)/xen $(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) $(CACHE) dist .pytest_cache .mypy_cache .ruff_cache .hypothesis
