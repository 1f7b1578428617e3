"""SimHypervisor (the Hypervisor interface over a SimHost) and run_host (virtual time)."""

from __future__ import annotations

import pytest
import trio

from agent.hypervisor.interface import Hypervisor, HypervisorError, NoSuchDomain
from agent.hypervisor.model import DomainState, VcpuState
from agent.sim.backend import SimHypervisor, run_host
from agent.sim.engine import SimHost
from agent.sim.spec import CpuBound, DomainSpec, HostSpec, Idle, NodeSpec

MS = 1_000_000


def host() -> SimHost:
    h = SimHost(HostSpec(nodes=(NodeSpec(2, 4096), NodeSpec(2, 4096))))
    h.create_domain(DomainSpec("Domain-0", 1, 512, workload=Idle(), is_dom0=True,
                               memory_nodes=(0,)))
    h.create_domain(DomainSpec("A", 2, 1024, workload=CpuBound(), memory_nodes=(1,)))
    return h


async def test_queries_and_actions_act_on_the_host() -> None:
    h = host()
    hv: Hypervisor = SimHypervisor(h)
    topo = await hv.topology()
    assert [sorted(n.cpus) for n in topo.nodes] == [[0, 1], [2, 3]]
    assert topo.nodes[1].memory_free_kib == 3072 * 1024
    assert topo.distances == ((10, 20), (20, 10))
    doms = await hv.domains()
    assert [(d.domid, d.name, d.vcpus) for d in doms] == [(0, "Domain-0", 1), (1, "A", 2)]
    assert doms[1].state is DomainState.RUNNING
    assert await hv.memory_per_node(1) == (0, 1024 * 1024)
    vcpus = await hv.vcpus(1)
    assert [v.state for v in vcpus] == [VcpuState.RUNNING] * 2
    assert len(await hv.vcpus()) == 3
    await hv.set_vcpu_affinity(1, 0, frozenset({0}), None)
    assert (await hv.vcpus(1))[0].cpu == 0
    await hv.set_vcpu_affinity(1, 0, None, frozenset({2, 3}))
    v0 = (await hv.vcpus(1))[0]
    assert v0.hard == frozenset({0}) and v0.soft == frozenset({2, 3}) and v0.cpu == 0


async def test_unknown_domains_and_bad_masks_raise_interface_errors() -> None:
    hv = SimHypervisor(host())
    with pytest.raises(NoSuchDomain):
        await hv.vcpus(7)
    with pytest.raises(NoSuchDomain):
        await hv.memory_per_node(7)
    with pytest.raises(NoSuchDomain):
        await hv.set_vcpu_affinity(7, 0, None, None)
    with pytest.raises(NoSuchDomain):
        await hv.set_vcpu_affinity(1, 9, None, None)
    with pytest.raises(HypervisorError, match="do not exist"):
        await hv.set_vcpu_affinity(1, 0, frozenset({8}), None)


async def test_run_host_moves_the_host_with_trio_time(autojump_clock: trio.abc.Clock) -> None:
    h = host()
    hv = SimHypervisor(h)
    steps: list[int] = []
    seen: list[tuple[int, int]] = []

    async def agent() -> None:
        # An agent polling every 100 ms sees the host's clock and its vCPUs' run time
        # advance with trio's (virtual) clock. (It polls 5 ms after the host's steps:
        # at the same instant, which task runs first is not defined.)
        await trio.sleep(0.005)
        for _ in range(5):
            await trio.sleep(0.1)
            seen.append((h.now_ns, (await hv.vcpus(1))[0].time_ns))

    async with trio.open_nursery() as nursery:
        await nursery.start(run_host, h, 10 * MS)
        await agent()
        nursery.cancel_scope.cancel()
    assert [now for now, _ in seen] == [100 * MS, 200 * MS, 300 * MS, 400 * MS, 500 * MS]
    assert [t for _, t in seen] == [now for now, _ in seen]  # cpu-bound: ran all along
    h2 = host()
    await run_host(h2, 30 * MS, until_ns=100 * MS, on_step=lambda x: steps.append(x.now_ns))
    assert steps == [30 * MS, 60 * MS, 90 * MS, 100 * MS]
    assert h2.now_ns == 100 * MS
    with pytest.raises(ValueError, match="clock_step_ns"):
        await run_host(h2, 0)
