"""The simulated host's moving parts: vCPUs, domains, cpupools, topology.

Mutable, slotted and shared between the engine (``engine.py``, which plays
Xen's ``sched/core.c``) and the scheduler models (``credit1.py``,
``credit2.py``). The scheduler-private fields of both schedulers live on the
vCPU itself: one attribute lookup in the hot paths instead of two.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any, Protocol

from agent.sim.spec import DomainSpec, Workload

# v->pause_flags bits; a vCPU is runnable iff none is set (vcpu_runnable()).
BLOCKED = 1  # _VPF_blocked: waiting for an event (its workload is off)
PAUSED = 2  # its domain is paused (domain_pause_by_systemcontroller)
MIGRATING = 4  # _VPF_migrating: being moved by vcpu_migrate / a scheduler
DOWN = 8  # _VPF_down: shut down or destroyed
PARKED = 16  # credit1 cap parking (sched_unit_pause_nosync from csched_acct)


class Topo:
    """Static host topology: pCPU -> node/core, masks per node and sibling group."""

    __slots__ = ("all_mask", "core_mask", "ncpus", "nnodes", "node_mask", "node_of", "sib_mask")

    def __init__(self, cpus_per_node: tuple[int, ...], threads_per_core: int) -> None:
        self.nnodes = len(cpus_per_node)
        self.node_of: list[int] = []
        self.node_mask: list[int] = []
        cpu = 0
        for node, count in enumerate(cpus_per_node):
            m = 0
            for _ in range(count):
                self.node_of.append(node)
                m |= 1 << cpu
                cpu += 1
            self.node_mask.append(m)
        self.ncpus = cpu
        self.all_mask = (1 << cpu) - 1
        # cpu_sibling_mask: SMT threads of one core, consecutive ids within a node.
        self.sib_mask: list[int] = [0] * cpu
        for node, count in enumerate(cpus_per_node):
            base = sum(cpus_per_node[:node])
            for off in range(0, count, threads_per_core):
                group = 0
                for t in range(off, min(off + threads_per_core, count)):
                    group |= 1 << (base + t)
                for t in range(off, min(off + threads_per_core, count)):
                    self.sib_mask[base + t] = group
        # cpu_core_mask: the socket; one socket per NUMA node here.
        self.core_mask: list[int] = [self.node_mask[self.node_of[c]] for c in range(cpu)]


class Pool:
    """A cpupool: its pCPUs and its scheduler instance."""

    __slots__ = ("cpus", "name", "sched")

    def __init__(self, name: str, cpus: int) -> None:
        self.name = name
        self.cpus = cpus
        self.sched: SchedOps = _NO_SCHED


class Domain:
    __slots__ = (
        "cap",
        "domid",
        "mem_kib",
        "name",
        "node_affinity",
        "paused",
        "pool",
        "sdom",
        "shutdown",
        "spec",
        "uuid",
        "vcpus",
        "weight",
    )

    def __init__(self, domid: int, spec: DomainSpec, uuid: str, pool: Pool) -> None:
        self.domid = domid
        self.spec = spec
        self.name = spec.name
        self.uuid = uuid
        self.pool = pool
        self.weight = spec.weight
        self.cap = spec.cap
        self.paused = False
        self.shutdown = False
        self.mem_kib: list[int] = []
        self.node_affinity = 0  # bitmask of nodes
        self.vcpus: list[Vcpu] = []
        self.sdom: Any = None  # scheduler-private per-domain data


class Vcpu:
    __slots__ = (
        "acc_demand",
        "acc_mig",
        "acc_run",
        "acc_xmig",
        "active",
        "avgload",
        "cpu",
        "credit",
        "demand_start",
        "dom",
        "domid",
        "flags",
        "hard",
        "has_soft",
        "hmask",
        "is_running",
        "last_cpu",
        "last_sched",
        "load_last",
        "migrate_rqd",
        "on_runq",
        "pflags",
        "pri",
        "residual",
        "rng",
        "rqd",
        "run_start",
        "smask",
        "soft",
        "start_time",
        "state_entry",
        "tickled_cpu",
        "total_run",
        "touched",
        "vid",
        "wl_ver",
        "work_left",
        "work_mark",
        "workload",
    )

    def __init__(self, dom: Domain, vid: int, nnodes: int, workload: Workload) -> None:
        self.dom = dom
        self.domid = dom.domid
        self.vid = vid
        # -- generic (sched/core.c) --
        self.pflags = PAUSED  # created paused, as libxl builds domains
        self.cpu = 0  # v->processor
        self.is_running = False
        self.state_entry = 0  # when it last started running (unit->state_entry_time)
        self.hard = 0  # cpu_hard_affinity as set (may exceed the pool)
        self.soft = 0  # cpu_soft_affinity as set
        self.hmask = 0  # hard & pool: where it may run
        self.smask = 0  # soft & hard & pool: the soft balance step's mask
        self.has_soft = False  # has_soft_affinity()
        # -- workload --
        self.workload: Workload = workload
        self.work_left = 0  # ns of CPU work before it blocks; -1 = never
        self.work_mark = 0  # when work_left was last brought up to date while running
        self.rng: random.Random = random.Random(0)  # replaced by the engine
        self.wl_ver = 0  # invalidates pending workload timers
        # -- accounting --
        self.run_start = -1
        self.demand_start = -1
        self.last_cpu = -1
        self.acc_run = [0] * nnodes
        self.acc_demand = 0
        self.acc_mig = 0
        self.acc_xmig = 0
        self.total_run = 0
        self.touched = False
        # -- scheduler-private (credit1 and credit2 share the common names) --
        self.pri = 0  # credit1 priority
        self.credit = 0  # credit1: credits; credit2: ns-scaled credit
        self.residual = 0
        self.flags = 0
        self.active = False  # credit1: on the active list
        self.on_runq = False
        self.last_sched = 0
        self.start_time = 0
        self.load_last = 0  # credit2 load tracking
        self.avgload = 0
        self.rqd: Any = None  # credit2 runqueue
        self.migrate_rqd: Any = None
        self.tickled_cpu = -1

    def __repr__(self) -> str:
        return f"d{self.domid}v{self.vid}"

    def set_masks(self, hard: int, soft: int, pool_cpus: int) -> None:
        """Store affinity and derive what the schedulers test (sched_set_affinity)."""
        self.hard = hard
        self.soft = soft
        self.hmask = hard & pool_cpus
        both = soft & hard
        # soft_aff_effective && !cpumask_subset(pool, soft): has_soft_affinity().
        effective = (hard & ~soft) != 0 and both != 0
        self.has_soft = effective and (pool_cpus & ~soft) != 0
        self.smask = both & pool_cpus


class Core(Protocol):
    """What a scheduler model may ask of the engine (sched/core.c services)."""

    now: int
    cur: list[Vcpu | None]
    topo: Topo
    ncpus_online: int

    def raise_softirq(self, cpu: int) -> None: ...

    def flush(self) -> None: ...

    def arm_slice(self, cpu: int) -> None: ...

    def timer(self, at_ns: int, fn: Callable[[Any, int], None], a: Any, b: int) -> None: ...

    def set_migrating(self, v: Vcpu) -> None: ...


class SchedOps(Protocol):
    """The hooks of ``struct scheduler`` the engine calls."""

    name: str

    def start(self) -> None: ...

    def insert(self, v: Vcpu) -> None: ...

    def remove(self, v: Vcpu) -> None: ...

    def sleep(self, v: Vcpu) -> None: ...

    def wake(self, v: Vcpu) -> None: ...

    def schedule(self, cpu: int, prev: Vcpu | None) -> tuple[Vcpu | None, int, bool]:
        """Next to run on ``cpu`` (None = idle), its slice in ns (-1 = none), and
        whether the slice is lazy (its end is queued only on ``Core.arm_slice``)."""
        ...

    def context_saved(self, v: Vcpu) -> None: ...

    def pick_resource(self, v: Vcpu) -> int: ...

    def move(self, v: Vcpu, cpu: int) -> None: ...

    def affinity_changed(self, v: Vcpu) -> None: ...


class _NoSched:
    name = "none"

    def start(self) -> None:
        pass

    def insert(self, v: Vcpu) -> None:
        raise RuntimeError("cpupool has no scheduler")

    def remove(self, v: Vcpu) -> None:
        pass

    def sleep(self, v: Vcpu) -> None:
        pass

    def wake(self, v: Vcpu) -> None:
        pass

    def schedule(self, cpu: int, prev: Vcpu | None) -> tuple[Vcpu | None, int, bool]:
        return None, -1, False

    def context_saved(self, v: Vcpu) -> None:
        pass

    def pick_resource(self, v: Vcpu) -> int:
        return v.cpu

    def move(self, v: Vcpu, cpu: int) -> None:
        v.cpu = cpu

    def affinity_changed(self, v: Vcpu) -> None:
        pass


_NO_SCHED: SchedOps = _NoSched()
