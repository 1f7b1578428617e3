"""One testbed boot for the agent and seed tests (tests/test_xen_agent.py and
tests/test_xen_seed.py), shared within a pytest process: a boot costs half a minute and
creating the three guests as much again under TCG.

The testbed (2node, credit1, dom0 with 2 vCPUs) runs in ``CACHE/run/pytest-seed`` with
guests A, B and C created and paused (``SeedBench.prepare``); QEMU is stopped when the
process exits. Skips (pytest) unless ``XNUMA_XEN_TESTBED`` is set and the testbed built.
"""

from __future__ import annotations

import atexit
import os
from pathlib import Path

import pytest
from seed import SeedBench
from testbed import DEFAULT_CACHE, Config, Testbed

_ENV = os.environ.get("XNUMA_XEN_TESTBED", "")
CACHE = DEFAULT_CACHE if _ENV in ("", "1") else Path(_ENV)
WORKDIR = CACHE / "run" / "pytest-seed"

_bench: SeedBench | None = None


def bench() -> SeedBench:
    """The booted testbed with the seed's guests (booted and prepared on first use)."""
    global _bench
    if not _ENV:
        pytest.skip("set XNUMA_XEN_TESTBED=1 to run against the Xen testbed (make xen-test)")
    if not (CACHE / ".ready").exists():
        pytest.skip(f"Xen testbed not built in {CACHE} (make xen-testbed)")
    if _bench is not None and _bench.tb.is_running():
        return _bench
    WORKDIR.mkdir(parents=True, exist_ok=True)
    tb = Testbed(CACHE, WORKDIR, Config(layout="2node", sched="credit"))
    if tb.is_running():  # left over by a killed run
        tb.stop()
    atexit.register(tb.stop)
    boot_s = tb.start()  # retries a failed boot once, then raises with the console log
    b = SeedBench(tb)
    b.timings["boot_s"] = round(boot_s, 1)
    b.prepare()
    _bench = b
    return b
