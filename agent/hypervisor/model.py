"""What the agent observes of a Xen host: plain immutable values.

These are the types every Hypervisor backend returns and the rule engine
reads. Units are explicit in the field names (``_kib``, ``_ns``).
"""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass

CpuSet = frozenset[int]


def format_cpuset(cpus: Iterable[int]) -> str:
    """``0-3,8`` as xl prints masks; the empty set is ``none``."""
    ordered = sorted(set(cpus))
    if not ordered:
        return "none"
    runs: list[str] = []
    start = prev = ordered[0]
    for cpu in [*ordered[1:], None]:
        if cpu is not None and cpu == prev + 1:
            prev = cpu
            continue
        runs.append(str(start) if start == prev else f"{start}-{prev}")
        if cpu is not None:
            start = prev = cpu
    return ",".join(runs)


# Memoised: every vCPU of a domain (and often of a node) has the same mask text, and
# frozensets are immutable, so equal masks can be one object. A host of 4,000 vCPUs
# otherwise holds 4,000 copies of each node's mask per scan (benchmarks/agent_cost.py:
# about 20 MiB of a 64-pCPU mask each scan, and a third of the scan's CPU time).
@functools.lru_cache(maxsize=4096)
def parse_cpuset(text: str, all_cpus: CpuSet | None = None) -> CpuSet:
    """Inverse of ``format_cpuset``; ``all`` needs ``all_cpus``."""
    text = text.strip()
    if text == "all":
        if all_cpus is None:
            raise ValueError("'all' needs the host's pCPU list")
        return all_cpus
    if text == "none":
        return frozenset()
    cpus: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise ValueError(f"bad cpu list item {part!r} in {text!r}")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"descending range {part!r} in {text!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)


@dataclass(frozen=True, slots=True)
class Node:
    id: int
    cpus: CpuSet
    memory_total_kib: int
    memory_free_kib: int


@dataclass(frozen=True, slots=True)
class Topology:
    nodes: tuple[Node, ...]
    # distances[i][j]: ACPI SLIT distance from node i to node j (10 = local).
    distances: tuple[tuple[int, ...], ...]

    def node_of(self, cpu: int) -> int:
        for node in self.nodes:
            if cpu in node.cpus:
                return node.id
        raise KeyError(f"pCPU {cpu} is on no node")

    @property
    def all_cpus(self) -> CpuSet:
        return frozenset().union(*(n.cpus for n in self.nodes))

    def nodes_of(self, cpus: Iterable[int]) -> frozenset[int]:
        return frozenset(self.node_of(c) for c in cpus)


class DomainState(enum.Enum):
    RUNNING = "running"
    BLOCKED = "blocked"
    PAUSED = "paused"
    SHUTDOWN = "shutdown"
    CRASHED = "crashed"
    DYING = "dying"


class VcpuState(enum.Enum):
    RUNNING = "running"  # on a pCPU now
    RUNNABLE = "runnable"  # wants a pCPU, queued
    BLOCKED = "blocked"  # waiting for an event
    PAUSED = "paused"  # its domain is paused
    OFFLINE = "offline"


@dataclass(frozen=True, slots=True)
class DomainInfo:
    domid: int
    name: str
    uuid: str
    state: DomainState
    vcpus: int
    memory_kib: int
    pool: str = "Pool-0"
    # Scheduler parameters (credit1 and credit2 alike, `xl sched-credit[2] -d DOM`):
    # weight 1-65535, 256 by default, a domain's CPU share relative to the others in its
    # cpupool; cap in percent of one pCPU (100 = one pCPU's worth, 0 = no cap).
    weight: int = 256
    cap: int = 0


@dataclass(frozen=True, slots=True)
class VcpuInfo:
    domid: int
    vcpu: int
    cpu: int | None  # the pCPU it runs or last ran on; None if offline
    state: VcpuState
    time_ns: int  # cumulative run time
    hard: CpuSet
    soft: CpuSet
