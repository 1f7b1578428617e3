"""dom0's backend threads on the simulated host, and where they run.

The simulated toolstack starts, for each guest device, the dom0 kernel threads
a Linux dom0 would (blkback's ``blkback.<domid>.<dev>``, netback's
``vif<domid>.<devid>-q0-guest-rx`` and ``-dealloc``, names cut to 15
characters as Linux does) and registers them here. This table is the
simulator's ``agent.backends.procs.ProcessTable``: the agent reads and binds
these threads exactly as it does real ones through ``/proc`` and
``sched_setaffinity``. A thread's CPUs are dom0's Linux CPUs, i.e. dom0's vCPU
ids; ``placements`` says on which pCPUs and nodes that lets each thread run,
from dom0's vCPUs' affinity in the simulated hypervisor (the metric).

The threads do no simulated work of their own (dom0's vCPUs carry its
workload); what is modelled is where the kernel may run them.
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.backends.procs import ProcessInfo
from agent.hypervisor.model import CpuSet, Topology, VcpuInfo, format_cpuset

COMM_MAX = 15


class _Host(Protocol):
    def topology(self) -> Topology: ...

    def vcpu_info(self, domid: int | None = None) -> list[VcpuInfo]: ...

    def effective_hard(self, domid: int) -> tuple[CpuSet, ...]: ...

    def home_node(self, domid: int) -> int: ...


@dataclass(slots=True)
class SimThread:
    pid: int
    comm: str
    domid: int  # the guest it serves
    kind: str  # vbd, vif
    cpus: frozenset[int] = frozenset()  # empty: every dom0 CPU
    kthread: bool = True
    refuses: bool = False  # as a per-CPU kernel thread does (EINVAL)


@dataclass(frozen=True, slots=True)
class ThreadPlacement:
    """Where one backend thread may run now, against its guest's home node."""

    pid: int
    comm: str
    domid: int
    kind: str
    dom0_cpus: frozenset[int]  # dom0 vCPUs it may run on
    pcpus: frozenset[int]  # pCPUs those vCPUs may run on (their hard affinity, in the pool)
    nodes: frozenset[int]  # nodes of those pCPUs
    home_node: int  # the guest's (most of its memory)

    @property
    def on_home(self) -> bool:
        return self.nodes == frozenset({self.home_node})

    def to_dict(self) -> dict[str, Any]:
        return {"pid": self.pid, "comm": self.comm, "domid": self.domid, "kind": self.kind,
                "dom0_cpus": format_cpuset(self.dom0_cpus), "pcpus": format_cpuset(self.pcpus),
                "nodes": sorted(self.nodes), "home_node": self.home_node,
                "on_home": self.on_home}


@dataclass(slots=True)
class SimDom0Processes:
    """The simulated dom0's backend threads (an ``agent.backends`` ProcessTable)."""

    dom0_vcpus: int = 1
    threads_by_pid: dict[int, SimThread] = field(default_factory=dict)

    # -- the toolstack's side --

    def start(self, pid: int, comm: str, domid: int, kind: str, *,
              refuses: bool = False) -> SimThread:
        if pid in self.threads_by_pid:
            raise ValueError(f"pid {pid} is taken by {self.threads_by_pid[pid].comm}")
        thread = SimThread(pid, comm[:COMM_MAX], domid, kind, refuses=refuses)
        self.threads_by_pid[pid] = thread
        return thread

    def stop_domain(self, domid: int) -> list[int]:
        """The guest is gone: its backend threads end. Their pids."""
        gone = [p for p, t in self.threads_by_pid.items() if t.domid == domid]
        for pid in gone:
            del self.threads_by_pid[pid]
        return gone

    def of_domain(self, domid: int) -> list[SimThread]:
        return [t for t in self.threads_by_pid.values() if t.domid == domid]

    # -- ProcessTable --

    def info(self, pid: int) -> ProcessInfo | None:
        t = self.threads_by_pid.get(pid)
        return None if t is None else ProcessInfo(t.pid, t.comm, t.kthread, ())

    def pids(self) -> Iterable[int]:
        return sorted(self.threads_by_pid)

    def threads(self, pid: int) -> list[int]:
        return [pid] if pid in self.threads_by_pid else []

    def affinity(self, tid: int) -> frozenset[int]:
        t = self.threads_by_pid.get(tid)
        if t is None:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        return t.cpus or self.cpus()

    def set_affinity(self, tid: int, cpus: frozenset[int]) -> None:
        t = self.threads_by_pid.get(tid)
        if t is None:
            raise ProcessLookupError(errno.ESRCH, "No such process")
        if not cpus or not cpus <= self.cpus():
            raise OSError(errno.EINVAL, f"CPUs {format_cpuset(cpus)} are not all online")
        if t.refuses:
            raise OSError(errno.EINVAL, "Invalid argument")
        t.cpus = frozenset() if cpus == self.cpus() else frozenset(cpus)

    def cpus(self) -> frozenset[int]:
        return frozenset(range(self.dom0_vcpus))

    # -- the metric --

    def placements(self, host: _Host) -> list[ThreadPlacement]:
        """Per thread, by pid: the pCPUs and nodes the hypervisor lets it reach."""
        topo = host.topology()
        node_of = {c: n.id for n in topo.nodes for c in n.cpus}
        reach = host.effective_hard(0)
        out: list[ThreadPlacement] = []
        for t in sorted(self.threads_by_pid.values(), key=lambda t: t.pid):
            mine = t.cpus or self.cpus()
            pcpus = frozenset().union(*(reach[v] for v in mine if v < len(reach)))
            try:
                home = host.home_node(t.domid)
            except KeyError:
                home = -1
            out.append(ThreadPlacement(t.pid, t.comm, t.domid, t.kind, frozenset(mine), pcpus,
                                       frozenset(node_of[c] for c in pcpus), home))
        return out


def placement_report(placements: Iterable[ThreadPlacement],
                     names: dict[int, str] | None = None) -> dict[str, Any]:
    """For ``--json``: per guest, its threads and whether each runs on its home node."""
    by_guest: dict[str, list[dict[str, Any]]] = {}
    total = home = 0
    for p in placements:
        key = (names or {}).get(p.domid, str(p.domid))
        by_guest.setdefault(key, []).append(p.to_dict())
        total += 1
        home += p.on_home
    return {"threads": total, "on_home": home, "guests": by_guest}
