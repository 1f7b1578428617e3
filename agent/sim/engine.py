"""SimHost: a simulated Xen host in virtual time.

Build one from a ``HostSpec``, create domains, ``advance`` the clock, and read
what happened with ``take_accounting`` (per window) or the Hypervisor-style
views (``domain_info``, ``vcpu_info``, ``topology``, ``memory_per_node``).
Everything is synchronous and deterministic given ``spec.seed``; times are
integer nanoseconds. ``agent/sim/ENGINE_API.md`` documents the contract.
"""

from __future__ import annotations

import uuid as uuidlib
from collections.abc import Mapping

from agent.hypervisor.model import (
    CpuSet,
    DomainInfo,
    DomainState,
    Node,
    Topology,
    VcpuInfo,
    VcpuState,
)
from agent.sim import workload as wl
from agent.sim.accounting import Accounting
from agent.sim.core import HostCore, SimCore
from agent.sim.cpumask import cpus_of, cycle, first, mask_of
from agent.sim.credit1 import Credit1
from agent.sim.credit2 import Credit2
from agent.sim.objects import BLOCKED, DOWN, PAUSED, Domain, Pool, SchedOps, Topo, Vcpu
from agent.sim.placement import PlacedDomain, allocate, nr_vcpus_on_nodes, numa_candidate
from agent.sim.spec import DomainSpec, HostSpec, Workload

POOL0 = "Pool-0"
_UUID_NS = uuidlib.UUID("6c1e0ab2-7d0c-4e55-9a3f-0d1f5b6a7c01")


class SimError(ValueError):
    """A request the simulated host refuses (bad spec, unknown domain, no memory)."""


class NoSuchDomainError(SimError, KeyError):
    """The domid (or vCPU) does not exist."""


def _validate_host(spec: HostSpec) -> None:
    if not spec.nodes:
        raise SimError("HostSpec.nodes: at least one node is needed")
    for i, node in enumerate(spec.nodes):
        if node.cpus < 0 or node.memory_mib < 0:
            raise SimError(f"HostSpec.nodes[{i}]: cpus and memory_mib must be >= 0")
        if node.cpus % spec.threads_per_core:
            raise SimError(
                f"HostSpec.nodes[{i}].cpus={node.cpus} is not a multiple of "
                f"threads_per_core={spec.threads_per_core}"
            )
    if spec.threads_per_core not in (1, 2):
        raise SimError(f"HostSpec.threads_per_core must be 1 or 2, got {spec.threads_per_core}")
    if sum(n.cpus for n in spec.nodes) == 0:
        raise SimError("HostSpec.nodes: the host has no pCPU")
    n = len(spec.nodes)
    if spec.distances is not None:
        d = spec.distances
        if len(d) != n or any(len(row) != n for row in d):
            raise SimError(f"HostSpec.distances must be {n}x{n}")
        if any(d[i][i] != 10 for i in range(n)):
            raise SimError("HostSpec.distances: a node's distance to itself must be 10")
    for s in [spec.scheduler, *(p.scheduler for p in spec.pools)]:
        if s not in ("credit1", "credit2"):
            raise SimError(f"unknown scheduler {s!r} (credit1 or credit2)")


class SimHost:
    """The host: domains, memory and placement here; time and scheduling in ``self.core``.

    ``core="python"`` is the readable model (agent/sim/core.py and the scheduler
    modules); ``"native"`` is its C port (agent/sim/native/), which computes the
    same results bit for bit, faster; ``"auto"`` takes the native one when it is
    built and the host fits it.
    """

    def __init__(self, spec: HostSpec, *, core: str = "auto") -> None:
        _validate_host(spec)
        self.spec = spec
        topo = Topo(tuple(n.cpus for n in spec.nodes), spec.threads_per_core)
        self.topo = topo
        nn = topo.nnodes
        self.distances = spec.distances or tuple(
            tuple(10 if i == j else 20 for j in range(nn)) for i in range(nn)
        )
        self.mem_total_kib = [n.memory_mib * 1024 for n in spec.nodes]
        self.mem_free_kib = list(self.mem_total_kib)
        self.pools: dict[str, Pool] = {}
        taken = 0
        for p in spec.pools:
            if p.name == POOL0 or p.name in self.pools:
                raise SimError(f"HostSpec.pools: duplicate cpupool name {p.name!r}")
            m = mask_of(p.cpus)
            if not m or m & ~topo.all_mask:
                raise SimError(f"HostSpec.pools[{p.name!r}].cpus must be non-empty host pCPUs")
            if m & taken:
                raise SimError(f"HostSpec.pools[{p.name!r}].cpus overlap another pool")
            taken |= m
            self.pools[p.name] = Pool(p.name, m)
        pool0 = Pool(POOL0, topo.all_mask & ~taken)
        self.pools = {POOL0: pool0, **self.pools}
        sched_of = {POOL0: spec.scheduler, **{p.name: p.scheduler for p in spec.pools}}
        self.core: SimCore = _make_core(core, topo, self.pools, sched_of, spec.seed)
        self.domains: dict[int, Domain] = {}
        self._by_name: dict[str, int] = {}
        self._next_domid = 1
        self.core.start()

    # -- clock ---------------------------------------------------------------------

    @property
    def now_ns(self) -> int:
        return self.core.now

    @property
    def events_run(self) -> int:
        """Events the core has run (timers popped), for the speed benchmark."""
        return self.core.events_run

    def advance(self, until_ns: int) -> None:
        """Run the host up to ``until_ns`` (inclusive of events due then)."""
        if until_ns < self.core.now:
            raise SimError(f"advance({until_ns}) is before now ({self.core.now})")
        self.core.run_until(until_ns)

    def take_accounting(self) -> Accounting:
        """What happened since the previous call (or since the host started)."""
        return self.core.take_accounting()

    # -- domains -------------------------------------------------------------------

    def _dom(self, domid: int) -> Domain:
        try:
            return self.domains[domid]
        except KeyError:
            raise NoSuchDomainError(f"no domain with domid {domid}") from None

    def domid_of(self, name: str) -> int:
        try:
            return self._by_name[name]
        except KeyError:
            raise NoSuchDomainError(f"no domain named {name!r}") from None

    def _check_cpus(self, what: str, cpus: frozenset[int]) -> int:
        m = mask_of(cpus)
        if m & ~self.topo.all_mask:
            bad = sorted(c for c in cpus if not 0 <= c < self.topo.ncpus)
            raise SimError(f"{what}: pCPUs {bad} do not exist (host has {self.topo.ncpus})")
        return m

    def create_domain(self, spec: DomainSpec, *, paused: bool = False) -> int:
        """Build a domain as xl/libxl would, then unpause it unless ``paused``."""
        where = f"domain {spec.name!r}"
        if not spec.name:
            raise SimError("DomainSpec.name must not be empty")
        if spec.name in self._by_name:
            raise SimError(f"{where}: a domain of that name exists")
        if spec.vcpus < 1:
            raise SimError(f"{where}: vcpus must be >= 1, got {spec.vcpus}")
        if spec.memory_mib < 0:
            raise SimError(f"{where}: memory_mib must be >= 0")
        if not 1 <= spec.weight <= 65535:
            raise SimError(f"{where}: weight must be 1..65535, got {spec.weight}")
        if spec.cap:
            raise SimError(f"{where}: cap is not modelled (use 0)")
        pool = self.pools.get(spec.pool)
        if pool is None:
            raise SimError(f"{where}: no cpupool {spec.pool!r}")
        if not pool.cpus:
            raise SimError(f"{where}: cpupool {spec.pool!r} has no pCPU")
        if spec.is_dom0 and 0 in self.domains:
            raise SimError(f"{where}: dom0 exists already")
        loads = spec.workload if isinstance(spec.workload, tuple) else (spec.workload,) * spec.vcpus
        if len(loads) != spec.vcpus:
            raise SimError(f"{where}: {len(loads)} workloads for {spec.vcpus} vCPUs")
        for w in loads:
            try:
                wl.validate(w)
            except (TypeError, ValueError) as exc:
                raise SimError(f"{where}: {exc}") from None
        topo = self.topo
        hard = (
            topo.all_mask if spec.hard is None else self._check_cpus(f"{where} hard", spec.hard)
        )
        if not hard & pool.cpus:
            raise SimError(f"{where}: hard affinity has no pCPU of cpupool {spec.pool!r}")
        pins = spec.pins
        if pins is not None:
            if spec.hard is not None:
                raise SimError(f"{where}: give hard or pins, not both")
            if len(pins) != spec.vcpus:
                raise SimError(f"{where}: {len(pins)} pins for {spec.vcpus} vCPUs")
            hard = self._check_cpus(f"{where} pins", frozenset(pins))
            outside = sorted(p for p in pins if not pool.cpus >> p & 1)
            if outside:
                raise SimError(f"{where}: pins {outside} are not in cpupool {spec.pool!r}")
        soft = None if spec.soft is None else self._check_cpus(f"{where} soft", spec.soft)
        if spec.memory_nodes is not None:
            bad_nodes = [n for n in spec.memory_nodes if not 0 <= n < topo.nnodes]
            if bad_nodes or not spec.memory_nodes:
                raise SimError(f"{where}: memory_nodes {list(spec.memory_nodes)} invalid")
        need_kib = spec.memory_mib * 1024
        if need_kib > sum(self.mem_free_kib):
            raise SimError(
                f"{where}: needs {need_kib} KiB, host has {sum(self.mem_free_kib)} KiB free"
            )
        # Node affinity and soft affinity: explicit, or libxl's automatic placement.
        node_aff, soft = self._place(spec, pool, hard, soft, need_kib)
        domid = 0 if spec.is_dom0 else self._take_domid()
        uuid = spec.uuid or str(uuidlib.uuid5(_UUID_NS, spec.name))
        dom = Domain(domid, spec, uuid, pool)
        dom.node_affinity = node_aff
        take = allocate(need_kib, [n for n in range(topo.nnodes) if node_aff >> n & 1],
                        self.mem_free_kib)
        for n, k in enumerate(take):
            self.mem_free_kib[n] -= k
        dom.mem_kib = take
        self.domains[domid] = dom
        self._by_name[spec.name] = domid
        # sched_init_vcpu: vCPU 0 on the first pCPU of the node affinity, the
        # next ones cycling from the previous one's; then insert_unit picks.
        start_cpus = 0
        for n in range(topo.nnodes):
            if node_aff >> n & 1:
                start_cpus |= topo.node_mask[n]
        start_cpus = start_cpus & pool.cpus or pool.cpus
        for i in range(spec.vcpus):
            v = Vcpu(dom, i, topo.nnodes, loads[i])
            v.rng = wl.vcpu_rng(self.spec.seed, domid, i)
            if pins is not None:  # sched_init_vcpu: a pinned vCPU starts on its pCPU
                self.core.add_vcpu(v, 1 << pins[i], soft, pins[i])
            else:  # the next pCPU after where the previous one's insert put it
                cpu = (first(start_cpus) if i == 0
                       else cycle(self.core.vcpu_view(dom.vcpus[-1]).cpu, start_cpus))
                self.core.add_vcpu(v, hard, soft, cpu)
            dom.vcpus.append(v)
        dom.paused = True
        if not paused:
            self.unpause(domid)
        return domid

    def _take_domid(self) -> int:
        while self._next_domid in self.domains:
            self._next_domid += 1
        domid = self._next_domid
        self._next_domid += 1
        return domid

    def _place(
        self, spec: DomainSpec, pool: Pool, hard: int, soft: int | None, need_kib: int
    ) -> tuple[int, int]:
        """(node affinity mask, soft affinity mask) for a new domain."""
        topo = self.topo
        all_nodes = (1 << topo.nnodes) - 1
        if spec.memory_nodes is not None:
            return mask_of(spec.memory_nodes), topo.all_mask if soft is None else soft
        if soft is not None or spec.is_dom0:
            soft_m = topo.all_mask if soft is None else soft
            # domain_update_node_affinity: nodes of soft & hard & pool, else hard & pool.
            cpus = soft_m & hard & pool.cpus or hard & pool.cpus
            return mask_of({topo.node_of[c] for c in cpus_of(cpus)}), soft_m
        placed = [
            PlacedDomain(d.pool.cpus, d.node_affinity, tuple(v.hard for v in d.vcpus))
            for d in self.domains.values()
        ]
        on_node = nr_vcpus_on_nodes(topo.node_mask, pool.cpus, placed)
        nodes = numa_candidate(
            free_kib=self.mem_free_kib,
            node_cpus=topo.node_mask,
            suitable=pool.cpus,
            host_cpus_per_node=[m.bit_count() for m in topo.node_mask],
            vcpus_on_node=on_node,
            need_kib=need_kib,
            vcpus=spec.vcpus,
        )
        if nodes is None:
            return all_nodes, topo.all_mask
        node_aff = mask_of(n for n in nodes if topo.node_mask[n] & pool.cpus)
        soft_m = 0
        for n in nodes:
            if node_aff >> n & 1:
                soft_m |= topo.node_mask[n]
        return node_aff, soft_m

    def pause(self, domid: int) -> None:
        dom = self._dom(domid)
        if dom.paused or dom.shutdown:
            return
        dom.paused = True
        for v in dom.vcpus:
            self.core.vcpu_sleep(v, PAUSED)
        self.core.flush()

    def unpause(self, domid: int) -> None:
        dom = self._dom(domid)
        if not dom.paused:
            return
        dom.paused = False
        for v in dom.vcpus:
            self.core.vcpu_wake(v, PAUSED)
        self.core.flush()

    def shutdown(self, domid: int) -> None:
        """The guest shuts down: its vCPUs go offline, its memory stays until destroy."""
        dom = self._dom(domid)
        if dom.shutdown:
            return
        dom.shutdown = True
        for v in dom.vcpus:
            self.core.shutdown_vcpu(v)
        self.core.flush()

    def destroy(self, domid: int) -> None:
        """Take the domain down and give its memory back."""
        dom = self._dom(domid)
        self.shutdown(domid)
        for v in dom.vcpus:
            self.core.remove_vcpu(v)
        for n, k in enumerate(dom.mem_kib):
            self.mem_free_kib[n] += k
        dom.mem_kib = [0] * self.topo.nnodes
        del self.domains[domid]
        del self._by_name[dom.name]

    def _vcpus(self, domid: int, vcpu: int | None) -> list[Vcpu]:
        dom = self._dom(domid)
        if vcpu is None:
            return list(dom.vcpus)
        if not 0 <= vcpu < len(dom.vcpus):
            raise NoSuchDomainError(f"domain {domid} has no vCPU {vcpu}")
        return [dom.vcpus[vcpu]]

    def set_workload(self, domid: int, vcpu: int | None, workload: Workload) -> None:
        """Change what a vCPU (or each vCPU, if None) does from now on."""
        try:
            wl.validate(workload)
        except (TypeError, ValueError) as exc:
            raise SimError(str(exc)) from None
        for v in self._vcpus(domid, vcpu):
            self.core.set_workload(v, workload)
        self.core.flush()

    def set_affinity(
        self, domid: int, vcpu: int | None, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        """vcpu_set_affinity: new masks (None keeps one), then re-pick where it runs.

        Hard affinity always holds: a vCPU running outside its new hard mask is
        descheduled at once and woken where the scheduler picks.
        """
        dom = self._dom(domid)
        targets = self._vcpus(domid, vcpu)
        hard_m = None if hard is None else self._check_cpus(f"domain {domid} hard", hard)
        soft_m = None if soft is None else self._check_cpus(f"domain {domid} soft", soft)
        if hard_m is not None and not hard_m & dom.pool.cpus:
            raise SimError(
                f"domain {domid}: hard affinity {sorted(hard or ())} has no pCPU of "
                f"cpupool {dom.pool.name!r}"
            )
        for v in targets:
            self.core.set_affinity(v, v.hard if hard_m is None else hard_m,
                                   v.soft if soft_m is None else soft_m)
        self.core.flush()

    # -- views -----------------------------------------------------------------------

    def topology(self) -> Topology:
        topo = self.topo
        nodes = tuple(
            Node(n, frozenset(cpus_of(topo.node_mask[n])), self.mem_total_kib[n],
                 self.mem_free_kib[n])
            for n in range(topo.nnodes)
        )
        return Topology(nodes, self.distances)

    def domain_info(self) -> list[DomainInfo]:
        out = []
        for domid in sorted(self.domains):
            d = self.domains[domid]
            if d.shutdown:
                state = DomainState.SHUTDOWN
            elif d.paused:
                state = DomainState.PAUSED
            elif all(self.core.vcpu_view(v).pflags & BLOCKED for v in d.vcpus):
                state = DomainState.BLOCKED  # XEN_DOMINF_blocked: every vCPU blocked
            else:
                state = DomainState.RUNNING
            out.append(
                DomainInfo(domid, d.name, d.uuid, state, len(d.vcpus), sum(d.mem_kib), d.pool.name,
                           weight=d.weight, cap=d.cap)
            )
        return out

    def vcpu_info(self, domid: int | None = None) -> list[VcpuInfo]:
        doms = [self._dom(domid)] if domid is not None else [
            self.domains[k] for k in sorted(self.domains)
        ]
        out = []
        for d in doms:
            for v in d.vcpus:
                view = self.core.vcpu_view(v)
                if view.pflags & DOWN:
                    state = VcpuState.OFFLINE
                elif view.running:
                    state = VcpuState.RUNNING
                elif view.pflags & PAUSED:
                    state = VcpuState.PAUSED
                elif view.pflags & BLOCKED:
                    state = VcpuState.BLOCKED
                else:
                    state = VcpuState.RUNNABLE
                cpu = None if state is VcpuState.OFFLINE else view.cpu
                out.append(
                    VcpuInfo(d.domid, v.vid, cpu, state, view.run_ns,
                             frozenset(cpus_of(v.hard)), frozenset(cpus_of(v.soft)))
                )
        return out

    def memory_per_node(self, domid: int) -> tuple[int, ...]:
        return tuple(self._dom(domid).mem_kib)

    def home_node(self, domid: int) -> int:
        """The node holding most of the domain's memory (lowest id on a tie)."""
        mem = self._dom(domid).mem_kib
        return max(range(len(mem)), key=lambda n: (mem[n], -n))

    def effective_hard(self, domid: int) -> tuple[CpuSet, ...]:
        """Per vCPU, the pCPUs it may run on: hard affinity within its cpupool."""
        return tuple(frozenset(cpus_of(v.hmask)) for v in self._dom(domid).vcpus)

    def pool_of_domain(self, domid: int) -> str:
        return self._dom(domid).pool.name

    def python_core(self) -> HostCore:
        """The Python core, for tests and introspection (the native one has no such objects)."""
        if not isinstance(self.core, HostCore):
            raise SimError("this host runs on the native core")
        return self.core

    def scheduler_of(self, pool: str = POOL0) -> SchedOps:
        """The scheduler instance of a cpupool (Python core: for tests and introspection)."""
        self.python_core()
        return self.pools[pool].sched


def _make_core(kind: str, topo: Topo, pools: dict[str, Pool], sched_of: Mapping[str, str],
               seed: int) -> SimCore:
    """The Python model, or its native port when asked (``auto``: when it can)."""
    if kind not in ("python", "native", "auto"):
        raise SimError(f"core must be python, native or auto, got {kind!r}")
    if kind != "python":
        from agent.sim import native_core

        reason = native_core.unavailable(topo)
        if reason is None:
            return native_core.NativeCore(topo, list(pools.values()), sched_of, seed)
        if kind == "native":
            raise SimError(f"native core: {reason}")
    core = HostCore(topo)
    core.pool_of = [pools[POOL0]] * topo.ncpus
    for name, pool in pools.items():
        for c in cpus_of(pool.cpus):
            core.pool_of[c] = pool
        if pool.cpus:
            cls = Credit1 if sched_of[name] == "credit1" else Credit2
            pool.sched = cls(core, pool, seed)
    core.pools = list(pools.values())
    return core
