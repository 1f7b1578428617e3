"""The simulated host behind the Hypervisor interface, and its clock driver.

``SimHypervisor(host)`` answers the agent's queries and applies its actions
to a ``SimHost`` at the host's current time. ``run_host`` is the task that
moves that time: started in the same trio nursery as the agent, it advances
the host every ``clock_step_ns`` of trio time, so that under trio's
``MockClock`` (tests, demos) a minute of host time passes in well under a
second of wall time and the agent sees the host move as it would on a real
one. Between two steps the host stands still: an action lands at the last
step's time, at most ``clock_step_ns`` behind trio's clock.
"""

from __future__ import annotations

from collections.abc import Callable

import trio

from agent.hypervisor.interface import HypervisorError, NoSuchDomain
from agent.hypervisor.model import CpuSet, DomainInfo, Topology, VcpuInfo
from agent.sim.engine import NoSuchDomainError, SimError, SimHost

NS_PER_S = 1_000_000_000


class SimHypervisor:
    """agent.hypervisor.interface.Hypervisor over a SimHost."""

    def __init__(self, host: SimHost) -> None:
        self.host = host

    async def topology(self) -> Topology:
        await trio.lowlevel.checkpoint()
        return self.host.topology()

    async def domains(self) -> list[DomainInfo]:
        await trio.lowlevel.checkpoint()
        return self.host.domain_info()

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        await trio.lowlevel.checkpoint()
        try:
            return self.host.vcpu_info(domid)
        except NoSuchDomainError as exc:
            raise NoSuchDomain(str(exc)) from None

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        await trio.lowlevel.checkpoint()
        try:
            return self.host.memory_per_node(domid)
        except NoSuchDomainError as exc:
            raise NoSuchDomain(str(exc)) from None

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        await trio.lowlevel.checkpoint()
        try:
            self.host.set_affinity(domid, vcpu, hard, soft)
        except NoSuchDomainError as exc:
            raise NoSuchDomain(str(exc)) from None
        except SimError as exc:
            raise HypervisorError(str(exc)) from None


async def run_host(
    host: SimHost,
    clock_step_ns: int,
    *,
    until_ns: int | None = None,
    on_step: Callable[[SimHost], None] | None = None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Advance ``host`` in step with ``trio.current_time()`` (1 s = 1e9 ns).

    Host time ``host.now_ns`` at the start maps to trio's clock at the start.
    Every ``clock_step_ns`` the host is advanced to the matching time and
    ``on_step(host)`` runs. Returns once the host reaches ``until_ns`` (never,
    if None: cancel the nursery to stop it).
    """
    if clock_step_ns <= 0:
        raise ValueError(f"clock_step_ns must be > 0, got {clock_step_ns}")
    t0 = trio.current_time()
    ns0 = host.now_ns
    task_status.started()
    step = 0
    while until_ns is None or host.now_ns < until_ns:
        step += 1
        target = ns0 + step * clock_step_ns
        if until_ns is not None and target > until_ns:
            target = until_ns
        await trio.sleep_until(t0 + (target - ns0) / NS_PER_S)
        host.advance(target)
        if on_step is not None:
            on_step(host)
