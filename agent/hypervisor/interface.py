"""The Hypervisor interface: every host query and action the agent needs.

The ``xl`` backend and the simulator implement it; the agent cannot tell them
apart. No method exists only for the simulator's sake.
"""

from __future__ import annotations

from typing import Generic, Protocol, TypeVar

from agent.hypervisor.model import CpuSet, DomainInfo, Topology, VcpuInfo


class HypervisorError(Exception):
    """A host query or action failed (after any retries its backend makes)."""


class NoSuchDomain(HypervisorError):
    """The domain (or vCPU) does not exist (any more)."""


class Rejected(HypervisorError):
    """The hypervisor or toolstack refused the request itself (an empty or invalid mask, a
    bad argument): asking again cannot help."""


def transient(exc: BaseException) -> bool:
    """Whether asking again may succeed: a timeout, an exit status, a lost race may pass;
    a domain that is gone or a request refused as such will not."""
    return isinstance(exc, HypervisorError) and not isinstance(exc, NoSuchDomain | Rejected)


class Hypervisor(Protocol):
    async def topology(self) -> Topology:
        """Nodes, their pCPUs, memory (free memory is current) and distances."""
        ...

    async def domains(self) -> list[DomainInfo]:
        """Every domain, dom0 included, ordered by domid."""
        ...

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        """vCPUs of one domain, or of every domain."""
        ...

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        """KiB of the domain's memory on each node (index = node id). Costly on
        real Xen (debug key ``u``): callers rate-limit it."""
        ...

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        """Set hard and/or soft affinity; None keeps that mask (``xl vcpu-pin`` '-')."""
        ...


H = TypeVar("H", bound=Hypervisor)


class Forwarding(Generic[H]):
    """A Hypervisor that passes every call to ``inner``: subclass it to watch some calls
    (the benchmarks count affinity changes this way)."""

    def __init__(self, inner: H) -> None:
        self.inner = inner

    async def topology(self) -> Topology:
        return await self.inner.topology()

    async def domains(self) -> list[DomainInfo]:
        return await self.inner.domains()

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        return await self.inner.vcpus(domid)

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        return await self.inner.memory_per_node(domid)

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        await self.inner.set_vcpu_affinity(domid, vcpu, hard, soft)
