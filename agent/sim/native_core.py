"""The native core: HostCore and both scheduler models ported to C (agent/sim/native/).

It answers the engine exactly as ``agent.sim.core.HostCore`` does (the
``SimCore`` protocol) and computes the same results bit for bit, which
tests/test_sim_native.py checks scenario by scenario; it only costs less per
scheduling decision. The Python modules stay the reference: the rules are
read, documented and unit-tested there, and a change to them is ported here.

The engine's ``Vcpu`` objects are the handles: this adapter maps each to the
module's integer handle and keeps the masks on it (the engine reads them), and
hands each vCPU's and credit1's random generators over as their state, so
that the C side continues the very same sequences.
"""

from __future__ import annotations

import random
from collections.abc import Mapping, Sequence

from agent.sim.accounting import Accounting, VcpuAccounting
from agent.sim.core import VcpuView
from agent.sim.objects import Domain, Pool, Topo, Vcpu
from agent.sim.spec import Bursty, CpuBound, Idle, IoLike, Workload

try:
    from agent.sim import _native
except ImportError as exc:  # not built: the Python core runs everything
    _native = None  # type: ignore[assignment]
    _MISSING = f"the C module agent.sim._native is not built ({exc})"
else:
    _MISSING = ""

MAX_CPUS = 512  # MAX_CPUS in native.h


def unavailable(topo: Topo) -> str | None:
    """Why this host cannot run on the native core, or None if it can."""
    if _MISSING:
        return _MISSING
    if topo.ncpus > MAX_CPUS:
        return f"{topo.ncpus} pCPUs: the native core takes at most {MAX_CPUS}"
    return None


def _workload(w: Workload) -> tuple[int, float, float]:
    """The module's encoding: kind 0 CpuBound, 1 Idle, 2 Bursty, 3 IoLike, and parameters."""
    if isinstance(w, CpuBound):
        return 0, 0.0, 0.0
    if isinstance(w, Idle):
        return 1, 0.0, 0.0
    if isinstance(w, Bursty):
        return 2, float(w.on_ms), float(w.off_ms)
    if isinstance(w, IoLike):
        return 3, float(w.run_us), float(w.block_us)
    raise TypeError(f"not a workload: {w!r}")


class NativeCore:
    def __init__(self, topo: Topo, pools: Sequence[Pool], sched_of: Mapping[str, str],
                 seed: int) -> None:
        if _native is None:
            raise RuntimeError(_MISSING)
        specs: list[tuple[int, str, tuple[object, ...] | None]] = []
        self._pool_index: dict[str, int] = {}
        for i, pool in enumerate(pools):
            kind = sched_of[pool.name] if pool.cpus else "none"
            # Credit1's own generator, seeded as credit1.py seeds it.
            state = (random.Random(f"credit1:{pool.name}:{seed}").getstate()
                     if kind == "credit1" else None)
            specs.append((pool.cpus, kind, state))
            self._pool_index[pool.name] = i
        self._host = _native.Host(list(topo.node_of), list(topo.sib_mask), specs,
                                  nnodes=topo.nnodes)
        self._handle: dict[Vcpu, int] = {}
        self._dom: dict[Domain, int] = {}

    @property
    def now(self) -> int:
        return self._host.now

    @property
    def events_run(self) -> int:
        return self._host.events_run

    def start(self) -> None:
        self._host.start()

    def add_vcpu(self, v: Vcpu, hard: int, soft: int, cpu: int) -> None:
        dom = v.dom
        d = self._dom.get(dom)
        if d is None:
            d = self._dom[dom] = self._host.add_domain(
                self._pool_index[dom.pool.name], dom.domid, dom.weight)
        v.set_masks(hard, soft, dom.pool.cpus)
        v.cpu = cpu
        kind, p1, p2 = _workload(v.workload)
        self._handle[v] = self._host.add_vcpu(d, v.vid, hard, soft, cpu, kind, p1, p2,
                                              v.rng.getstate())

    def vcpu_sleep(self, v: Vcpu, bit: int) -> None:
        self._host.sleep(self._handle[v], bit)

    def vcpu_wake(self, v: Vcpu, bit: int) -> None:
        self._host.wake(self._handle[v], bit)

    def flush(self) -> None:
        self._host.flush()

    def shutdown_vcpu(self, v: Vcpu) -> None:
        self._host.shutdown_vcpu(self._handle[v])

    def remove_vcpu(self, v: Vcpu) -> None:
        self._host.remove_vcpu(self._handle[v])

    def set_workload(self, v: Vcpu, workload: Workload) -> None:
        v.workload = workload
        kind, p1, p2 = _workload(workload)
        self._host.set_workload(self._handle[v], kind, p1, p2)

    def set_affinity(self, v: Vcpu, hard: int, soft: int) -> None:
        v.set_masks(hard, soft, v.dom.pool.cpus)
        self._host.set_affinity(self._handle[v], hard, soft)

    def vcpu_view(self, v: Vcpu) -> VcpuView:
        return VcpuView(*self._host.vcpu_view(self._handle[v]))

    def run_until(self, until_ns: int) -> None:
        self._host.run_until(until_ns)

    def take_accounting(self) -> Accounting:
        start, end, rows, busy = self._host.take_accounting()
        # Rows come in the Python core's visiting order, and a later row for the same
        # (domid, vcpu) wins as there (a dom0 destroyed and made again in one window).
        vcpus = {(domid, vid): VcpuAccounting(tuple(run), demand, mig, xmig)
                 for domid, vid, run, demand, mig, xmig in rows}
        return Accounting(start, end, dict(sorted(vcpus.items())), tuple(busy))
