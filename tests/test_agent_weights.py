"""Scheduler weights and caps in the agent's efficiency model.

credit1 and credit2 split an overcommitted cpupool by weight (``xl sched-credit -w``):
the agent's fair shares, and so the room a node leaves for other nodes' overflow (the
spill), follow the weights the hypervisor reports, and a cap limits what a domain can
use. Same small host as tests/test_agent_balance.py: 2 nodes of 4 pCPUs, every vCPU
busy (demand 1).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.daemon.fixup import spill_room
from agent.daemon.simhost import run_virtual
from agent.hypervisor.model import DomainInfo, DomainState, Node, Topology, VcpuInfo, VcpuState
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.scenario import parse_scenario
from agent.sim.spec import CpuBound, DomainSpec, HostSpec, Idle, NodeSpec
from agent.state import HostView, Observation, VcpuKey, build_state

SCENARIOS = Path(__file__).parents[1] / "agent" / "sim" / "scenarios"
CPUS = 4
TOPO = Topology(
    nodes=tuple(Node(n, frozenset(range(n * CPUS, (n + 1) * CPUS)), 8 << 20, 4 << 20)
                for n in range(2)),
    distances=((10, 20), (20, 10)),
)


def view(doms: list[tuple[int, int, list[int], int, int]]) -> HostView:
    """doms: (domid, home node, node of each vCPU, weight, cap)."""
    infos: list[DomainInfo] = []
    vcpus: list[VcpuInfo] = []
    used = [0, 0]
    for domid, home, on, weight, cap in doms:
        infos.append(DomainInfo(domid, f"d{domid}", f"u{domid}", DomainState.RUNNING, len(on),
                                1 << 20, weight=weight, cap=cap))
        soft = TOPO.nodes[home].cpus
        for v, node in enumerate(on):
            cpu = node * CPUS + used[node] % CPUS
            used[node] += 1
            vcpus.append(VcpuInfo(domid, v, cpu, VcpuState.RUNNING, 0, TOPO.all_cpus, soft))
    rates = {(v.domid, v.vcpu): 1.0 for v in vcpus}
    return build_state(Observation(0.0, TOPO, tuple(infos), tuple(vcpus), run_rates=rates,
                                   pool_cpus={}))


def misplaced(v: HostView) -> set[VcpuKey]:
    return {(x.domid, x.id) for x in v.vcpus if x.misplaced}


def scales(v: HostView) -> dict[int, float]:
    return {d.domid: round(d.fair_scale, 4) for d in v.domains}


def test_weights_reach_the_domain_view() -> None:
    v = view([(1, 0, [0], 512, 0), (2, 1, [1], 256, 30)])
    assert [(d.weight, d.cap) for d in v.domains] == [(512, 0), (256, 30)]


def test_two_domains_on_one_node_weighted_2_to_1() -> None:
    # A (node 0, weight 256), B (node 1, 512), C (node 1, 256) want 4 pCPUs each of 8.
    # Shares by weight: A 2, B 4, C 2 (B and C 2:1). Node 0's own domain is due 2 of
    # its 4 pCPUs: 2 are room for node 1's overflow (equal weights: 8/3 each, 4/3 room).
    # C's three vCPUs on node 0 count at their fair part, 1/2 each: 1.5 fits.
    doms = [(1, 0, [0, 0, 0, 0], 256, 0), (2, 1, [1, 1, 1, 1], 512, 0),
            (3, 1, [0, 0, 0, 1], 256, 0)]
    weighted = view(doms)
    assert scales(weighted) == {1: 0.5, 2: 1.0, 3: 0.5}
    assert weighted.flows[("Pool-0", 1, 0)] == pytest.approx(2.0)
    # C's three vCPUs (1.5) leave 0.5 of it
    assert spill_room(weighted) == {("Pool-0", 1, 0): pytest.approx(0.5)}
    assert misplaced(weighted) == set()
    # The same host with equal weights: a third each, 4/3 of room, and one of C's
    # three vCPUs (2/3 each) on node 0 is beyond it.
    equal = view([(d, h, on, 256, 0) for d, h, on, _, _ in doms])
    assert scales(equal) == {1: 0.6667, 2: 0.6667, 3: 0.6667}
    assert equal.flows[("Pool-0", 1, 0)] == pytest.approx(4 / 3)
    assert misplaced(equal) == {(3, 2)}


def test_a_heavy_domain_keeps_its_node_whole() -> None:
    # A weight 512, B and C 256 each: A is due 4 (its demand), its node has no room
    # for node 1's overflow, and every B/C vCPU on node 0 costs A work.
    v = view([(1, 0, [0, 0, 0, 1], 512, 0), (2, 1, [1, 1, 1, 0], 256, 0),
              (3, 1, [1, 1, 1, 1], 256, 0)])
    assert scales(v) == {1: 1.0, 2: 0.5, 3: 0.5}
    assert v.flows.get(("Pool-0", 1, 0), 0.0) == pytest.approx(0.0)
    assert misplaced(v) == {(1, 3), (2, 3)}


def test_a_cap_limits_the_share_and_frees_the_rest() -> None:
    # A capped at 100 % (one pCPU) of its 4 busy vCPUs: it can use 1, so B and C split
    # the other 7 (3.5 each), and node 0 has 3 pCPUs of room for node 1's overflow.
    v = view([(1, 0, [0, 0, 0, 0], 256, 100), (2, 1, [1, 1, 1, 1], 256, 0),
              (3, 1, [1, 1, 1, 1], 256, 0)])
    assert scales(v) == {1: 0.25, 2: 0.875, 3: 0.875}
    assert v.flows[("Pool-0", 1, 0)] == pytest.approx(3.0)


def test_a_cap_alone_makes_shares_without_overcommit() -> None:
    # 6 vCPUs on 8 pCPUs: room for all, but A's cap of 150 % holds it to 1.5 of its 4.
    v = view([(1, 0, [0, 0, 0, 0], 256, 150), (2, 1, [1, 1], 256, 0)])
    assert scales(v) == {1: 0.375, 2: 1.0}


async def test_the_simulator_reports_the_scenario_weight() -> None:
    h = SimHost(HostSpec(nodes=(NodeSpec(2, 4096), NodeSpec(2, 4096))))
    h.create_domain(DomainSpec("Domain-0", 1, 512, workload=Idle(), is_dom0=True,
                               memory_nodes=(0,)))
    h.create_domain(DomainSpec("A", 2, 1024, workload=CpuBound(), memory_nodes=(1,),
                               weight=512))
    h.create_domain(DomainSpec("B", 2, 1024, workload=CpuBound(), memory_nodes=(1,)))
    doms = await SimHypervisor(h).domains()
    assert [(d.name, d.weight, d.cap) for d in doms] == [
        ("Domain-0", 256, 0), ("A", 512, 0), ("B", 256, 0)
    ]


def test_the_agent_keeps_weighted_shares_in_the_seed_scenario() -> None:
    # seed-abc's first phase (A, B, C with 26 busy vCPUs each in a pool of 26 + 26
    # pCPUs), B given weight 512: shares 13, 26, 13 (equal weights: 26 each of 78 ->
    # 17.3). The agent, observing the simulator through its Hypervisor interface, counts
    # them: node 0's own domain A is due 13 of its 26 pCPUs, 13 are room for node 1's
    # overflow (equal weights: 8.7).
    text = (SCENARIOS / "seed-abc.toml").read_text()
    text = text.replace("[domains.B]\n", "[domains.B]\nweight = 512\n", 1)
    scenario = parse_scenario(text, source="seed-abc+B512").with_overrides(duration_s=2.0)
    run = run_virtual(scenario)
    v = run.agent.view
    assert v is not None
    by_name = {d.name: d for d in v.domains}
    assert [by_name[n].weight for n in "ABC"] == [256, 512, 256]
    assert [round(by_name[n].fair_scale, 3) for n in "ABC"] == [0.5, 1.0, 0.5]
    assert v.flows[("guests", 1, 0)] == pytest.approx(13.0)
    # The simulator's credit1 honours the weight too: B runs about twice as long as C.
    first = run.result.to_dict()["phases"][0]["domains"]
    assert first["B"]["run_s"] == pytest.approx(2 * first["C"]["run_s"], rel=0.15)
