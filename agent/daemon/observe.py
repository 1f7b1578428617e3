"""One look at the host: the hypervisor's answers turned into an ``Observation``.

Besides what the Hypervisor interface returns as is, the observer keeps three
estimates across polls:

- demand: how much of a pCPU each vCPU wants. A run rate understates it where
  vCPUs queue, so each poll samples the vCPU's state (running or queued = it
  wants a pCPU now) into a moving average; a paused or offline vCPU starts over.
- cpupools: the pCPUs each pool's vCPUs have been seen on. The interface does
  not list pools, and a node's capacity for a pool's vCPUs is what matters; a
  pool's pCPUs show up as soon as its vCPUs run there, so what runs on a node
  never exceeds what the observer believes the node can hold.
- memory per node: costly on real Xen (debug key ``u``), so each domain is
  measured when first seen and then every ``memory_interval_s``, at most
  ``memory_batch`` domains per poll.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import trio

from agent.hypervisor.interface import Hypervisor, HypervisorError, NoSuchDomain
from agent.hypervisor.model import CpuSet, DomainInfo, Topology, VcpuInfo, VcpuState
from agent.state import Observation, VcpuKey

DEMAND_WEIGHT = 0.5  # weight of the newest sample in the moving average
_WANTS = (VcpuState.RUNNING, VcpuState.RUNNABLE)
_GONE = (VcpuState.PAUSED, VcpuState.OFFLINE)


@dataclass(slots=True)
class DemandEstimator:
    """Per vCPU, a moving average of "it wants a pCPU now" samples."""

    weight: float = DEMAND_WEIGHT
    _avg: dict[tuple[int, int, str], float] = field(default_factory=dict)

    def update(self, domains: list[DomainInfo], vcpus: list[VcpuInfo]) -> dict[VcpuKey, float]:
        uuid = {d.domid: d.uuid for d in domains}
        seen: dict[tuple[int, int, str], float] = {}
        out: dict[VcpuKey, float] = {}
        for v in vcpus:
            if v.domid not in uuid or v.state in _GONE:
                continue  # dropped: it starts over when it runs again
            key = (v.domid, v.vcpu, uuid[v.domid])
            sample = 1.0 if v.state in _WANTS else 0.0
            old = self._avg.get(key)
            value = sample if old is None else old + self.weight * (sample - old)
            seen[key] = value
            out[(v.domid, v.vcpu)] = value
        self._avg = seen
        return out

    def update_some(self, domains: list[DomainInfo], vcpus: list[VcpuInfo],
                    domids: frozenset[int]) -> dict[VcpuKey, float]:
        """``update`` for the domains ``domids`` only (``vcpus`` are theirs); every
        other vCPU's average is kept."""
        uuid = {d.domid: d.uuid for d in domains if d.domid in domids}
        kept = {k: a for k, a in self._avg.items() if k[0] not in domids}
        self._avg = {k: a for k, a in self._avg.items() if k[0] in domids}
        try:
            return self.update([d for d in domains if d.domid in uuid], vcpus)
        finally:
            self._avg.update(kept)


@dataclass(slots=True)
class PoolLearner:
    """pCPUs each cpupool's vCPUs have been seen on."""

    _cpus: dict[str, set[int]] = field(default_factory=dict)

    def of(self, pool: str) -> CpuSet | None:
        found = self._cpus.get(pool)
        return frozenset(found) if found else None

    def update(self, domains: list[DomainInfo], vcpus: list[VcpuInfo]) -> dict[str, CpuSet]:
        pool = {d.domid: d.pool for d in domains}
        for v in vcpus:
            if v.cpu is not None and v.domid in pool:
                self._cpus.setdefault(pool[v.domid], set()).add(v.cpu)
        return {name: frozenset(cpus) for name, cpus in self._cpus.items()}


class Observer:
    def __init__(
        self,
        hypervisor: Hypervisor,
        *,
        clock: Callable[[], float] = trio.current_time,
        memory_interval_s: float = 30.0,
        memory_batch: int = 64,
        topology_interval_s: float = 10.0,
    ) -> None:
        self.hv = hypervisor
        self.clock = clock
        self.memory_interval_s = memory_interval_s
        self.memory_batch = memory_batch
        self.topology_interval_s = topology_interval_s
        self.demand = DemandEstimator()
        self.pools = PoolLearner()
        self._topology: Topology | None = None
        self._topology_at = 0.0
        self._measured: dict[tuple[int, str], float] = {}  # (domid, uuid) -> when
        self.polls = 0

    def pool_cpus(self, pool: str) -> CpuSet | None:
        return self.pools.of(pool)

    async def topology(self) -> Topology:
        now = self.clock()
        if self._topology is None or now - self._topology_at >= self.topology_interval_s:
            self._topology = await self.hv.topology()
            self._topology_at = now
        return self._topology

    async def observe(self, agent_pinned: frozenset[VcpuKey] = frozenset()) -> Observation:
        topology = await self.topology()
        domains = await self.hv.domains()
        vcpus = await self.hv.vcpus()
        now = self.clock()
        memory = await self._memory(domains, now)
        self.polls += 1
        return Observation(
            time=now,
            topology=topology,
            domains=tuple(domains),
            vcpus=tuple(vcpus),
            memory_kib=memory,
            agent_pinned=agent_pinned,
            demand=self.demand.update(domains, vcpus),
            pool_cpus=self.pools.update(domains, vcpus),
        )

    async def domains(self) -> list[DomainInfo]:
        """The domain list now (one hypervisor call)."""
        return await self.hv.domains()

    async def observe_domains(
        self, domains: list[DomainInfo], domids: frozenset[int], base: Observation,
        agent_pinned: frozenset[VcpuKey] = frozenset(),
    ) -> Observation:
        """A look at the domains ``domids`` only, for ``agent.state.patch_domains``:
        ``domains`` (the list now), their vCPUs, the memory of those never measured,
        and the topology afresh (free memory moves as domains come and go); the rest
        as in ``base`` (an earlier observation). A domain gone meanwhile has no vCPUs."""
        topology = self._topology = await self.hv.topology()
        self._topology_at = now = self.clock()
        vcpus: list[VcpuInfo] = []
        mine = [d for d in domains if d.domid in domids]
        memory: dict[int, tuple[int, ...]] = {}
        for d in mine:
            try:
                vcpus += await self.hv.vcpus(d.domid)
            except NoSuchDomain:
                continue
            if (d.domid, d.uuid) not in self._measured:
                try:
                    memory[d.domid] = await self.hv.memory_per_node(d.domid)
                    self._measured[(d.domid, d.uuid)] = now
                except HypervisorError:
                    pass  # gone meanwhile, or not now: the next full poll measures it
        self.pools.update(mine, vcpus)
        return replace(base, time=now, topology=topology, domains=tuple(domains),
                       vcpus=tuple(vcpus), memory_kib=memory, agent_pinned=agent_pinned,
                       demand=self.demand.update_some(domains, vcpus, domids),
                       pool_cpus=self.pools.update([], []), run_rates=None)

    async def _memory(self, domains: list[DomainInfo], now: float) -> dict[int, tuple[int, ...]]:
        live = {(d.domid, d.uuid) for d in domains}
        self._measured = {k: t for k, t in self._measured.items() if k in live}
        due = [d for d in domains
               if now - self._measured.get((d.domid, d.uuid), -float("inf"))
               >= self.memory_interval_s]
        due.sort(key=lambda d: (self._measured.get((d.domid, d.uuid), -float("inf")), d.domid))
        out: dict[int, tuple[int, ...]] = {}
        for d in due[: self.memory_batch]:
            try:
                out[d.domid] = await self.hv.memory_per_node(d.domid)
            except NoSuchDomain:
                continue  # gone meanwhile: the next poll forgets it
            except HypervisorError:
                continue  # the previous figures stand; try again next time
            self._measured[(d.domid, d.uuid)] = now
        return out
