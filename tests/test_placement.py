"""Placement of new domains: the algorithm, the ledger's part in it, and the race it removes."""

from __future__ import annotations

from itertools import combinations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.hypervisor.model import Node, Topology
from agent.placement.algorithm import (
    Choice,
    HostCapacity,
    NodeCapacity,
    Refusal,
    capacity_of,
    choose,
)
from agent.placement.placer import Placer
from agent.placement.request import PlacementRequest
from agent.sim.engine import SimHost
from agent.sim.spec import DomainSpec, HostSpec, Idle, NodeSpec
from agent.state import HostView, Observation, build_state

GIB = 1024


def req(vcpus: int = 2, memory_mib: int = 4 * GIB, **kw: object) -> PlacementRequest:
    kw.setdefault("id", "r1")
    return PlacementRequest(vcpus=vcpus, memory_mib=memory_mib, **kw)  # type: ignore[arg-type]


def host(*free_mib: int, cpus: int = 4, vcpus: tuple[int, ...] = (),
         distances: tuple[tuple[int, ...], ...] | None = None) -> HostCapacity:
    n = len(free_mib)
    nodes = tuple(
        NodeCapacity(i, cpus, f, vcpus[i] if i < len(vcpus) else 0,
                     cpu_set=frozenset(range(i * cpus, (i + 1) * cpus)))
        for i, f in enumerate(free_mib))
    dist = distances or tuple(tuple(10 if i == j else 20 for j in range(n)) for i in range(n))
    return HostCapacity(nodes, dist)


# An asymmetric 4-node SLIT: node 2 is nearest to node 0 in both directions
# (0->2 = 12, 2->0 = 14), node 1 next (20/22), node 3 farthest (28/30).
ASYM4 = (
    (10, 20, 12, 28),
    (22, 10, 20, 16),
    (14, 20, 10, 18),
    (30, 16, 18, 10),
)


# -- the algorithm --------------------------------------------------------------------


def test_fewest_nodes_then_most_memory() -> None:
    got = choose(req(memory_mib=6 * GIB), host(8 * GIB, 12 * GIB, 10 * GIB))
    assert isinstance(got, Choice)
    assert got.nodes == (1,) and got.memory_mib == (6 * GIB,) and not got.fallback
    assert got.cpus == frozenset(range(4, 8))


def test_memory_ties_go_to_the_lower_vcpu_load_then_the_lower_id() -> None:
    # Within one GiB step memory ties; node 0 has more vCPUs homed than node 2.
    h = host(10 * GIB, 4 * GIB, 10 * GIB + 100, vcpus=(6, 0, 2))
    got = choose(req(memory_mib=5 * GIB), h)
    assert isinstance(got, Choice) and got.nodes == (2,)
    h = host(10 * GIB, 10 * GIB, vcpus=(3, 3))
    got = choose(req(memory_mib=5 * GIB), h)
    assert isinstance(got, Choice) and got.nodes == (0,)


def test_vcpus_must_fit_pcpus_too() -> None:
    # 6 vCPUs do not fit one 4-pCPU node: two nodes, as libxl would.
    got = choose(req(vcpus=6, memory_mib=GIB), host(8 * GIB, 8 * GIB, 8 * GIB))
    assert isinstance(got, Choice) and len(got.nodes) == 2
    assert sum(got.vcpus) == 6 and sum(got.memory_mib) == GIB


def test_two_nodes_the_tightest_pair_when_memory_ties() -> None:
    h = host(6 * GIB, 6 * GIB, 6 * GIB, 6 * GIB, distances=ASYM4)
    got = choose(req(memory_mib=10 * GIB), h)
    assert isinstance(got, Choice)
    assert got.nodes == (0, 2)  # 12 + 14: the closest pair in the matrix
    assert got.memory_mib == (5 * GIB, 5 * GIB)  # even shares, as Xen's allocator


def test_split_respects_what_each_node_has() -> None:
    got = choose(req(memory_mib=10 * GIB), host(3 * GIB, 20 * GIB, distances=None))
    assert isinstance(got, Choice) and got.nodes == (1,)
    got = choose(req(memory_mib=10 * GIB), host(3 * GIB, 8 * GIB))
    assert isinstance(got, Choice) and got.nodes == (0, 1)
    assert got.memory_mib == (3 * GIB, 7 * GIB)


def test_preferred_nodes_are_tried_first() -> None:
    got = choose(req(preferred=frozenset({1})), host(20 * GIB, 5 * GIB))
    assert isinstance(got, Choice) and got.nodes == (1,) and not got.fallback


def test_full_preferred_node_best_effort_takes_the_nearest_by_distance() -> None:
    # Node 0 preferred but full; node 1 has the most memory and the lowest id
    # of the rest, node 3 is the emptiest: node 2 is nearest to node 0.
    h = host(1 * GIB, 30 * GIB, 9 * GIB, 20 * GIB, distances=ASYM4)
    got = choose(req(memory_mib=8 * GIB, preferred=frozenset({0})), h)
    assert isinstance(got, Choice)
    assert got.nodes == (2,) and got.fallback
    assert "nearest" in got.reason and "distance 13 from 0" in got.reason
    # Take node 2 away too: next nearest is node 1 (20/22), before node 3 (28/30).
    h2 = host(1 * GIB, 30 * GIB, 1 * GIB, 30 * GIB, distances=ASYM4)
    got = choose(req(memory_mib=8 * GIB, preferred=frozenset({0})), h2)
    assert isinstance(got, Choice) and got.nodes == (1,)


def test_full_preferred_node_strict_fails_naming_node_and_shortfall() -> None:
    h = host(3 * GIB, 30 * GIB, 9 * GIB, 20 * GIB, distances=ASYM4)
    got = choose(req(memory_mib=8 * GIB, preferred=frozenset({0}), policy="strict"), h)
    assert isinstance(got, Refusal)
    assert got.shortfall_mib == 5 * GIB and got.nodes == (0,)
    assert "preferred node 0" in got.reason
    assert "node 0: 3072 MiB available (free 3072 - reserved 0)" in got.reason
    assert "short of 5120 MiB" in got.reason


def test_strict_without_preference_fails_only_when_nothing_fits() -> None:
    h = host(3 * GIB, 4 * GIB)
    got = choose(req(memory_mib=8 * GIB, policy="strict", max_nodes=1), h)
    assert isinstance(got, Refusal) and got.shortfall_mib == 4 * GIB
    assert "up to 1 of nodes 0-1" in got.reason
    got = choose(req(memory_mib=6 * GIB, policy="strict"), h)
    assert isinstance(got, Choice) and got.nodes == (0, 1)


def test_best_effort_never_overcommits_memory() -> None:
    got = choose(req(memory_mib=9 * GIB), host(4 * GIB, 4 * GIB))
    assert isinstance(got, Refusal)
    assert got.shortfall_mib == 1 * GIB and got.reason.startswith("best-effort:")


def test_best_effort_lets_vcpus_outnumber_pcpus_but_strict_does_not() -> None:
    h = host(8 * GIB, 8 * GIB)
    got = choose(req(vcpus=12, memory_mib=GIB), h)
    assert isinstance(got, Choice) and got.fallback and "outnumber" in got.reason
    got = choose(req(vcpus=12, memory_mib=GIB, policy="strict"), h)
    assert isinstance(got, Refusal) and got.shortfall_mib == 0
    assert "no such set has 12 pCPUs" in got.reason


def test_unknown_preferred_node_is_refused() -> None:
    got = choose(req(preferred=frozenset({5})), host(8 * GIB, 8 * GIB))
    assert isinstance(got, Refusal) and "5" in got.reason and "0-1" in got.reason


@st.composite
def hosts_and_requests(draw: st.DrawFn) -> tuple[HostCapacity, PlacementRequest]:
    n = draw(st.integers(1, 5))
    free = [draw(st.integers(0, 16)) * GIB for _ in range(n)]
    vcpus = tuple(draw(st.integers(0, 8)) for _ in range(n))
    rows = [[10 if i == j else draw(st.integers(11, 40)) for j in range(n)] for i in range(n)]
    h = host(*free, vcpus=vcpus, distances=tuple(tuple(r) for r in rows))
    preferred = draw(st.frozensets(st.integers(0, n - 1), max_size=n))
    r = req(vcpus=draw(st.integers(1, 12)), memory_mib=draw(st.integers(1, 40)) * GIB,
            preferred=preferred, policy=draw(st.sampled_from(["strict", "best-effort"])),
            max_nodes=draw(st.integers(0, n)))
    return h, r


@settings(deadline=None, max_examples=300, derandomize=True)
@given(hosts_and_requests())
def test_properties_of_every_answer(case: tuple[HostCapacity, PlacementRequest]) -> None:
    h, r = case
    got = choose(r, h)
    limit = r.max_nodes or len(h.nodes)
    allowed = sorted(r.preferred) if r.preferred else [n.id for n in h.nodes]

    def fits(s: tuple[int, ...], cpus: bool = True) -> bool:
        mem = sum(h.node(i).available_mib for i in s) >= r.memory_mib
        return mem and (not cpus or sum(h.node(i).cpus for i in s) >= r.vcpus)

    smallest = next((k for k in range(1, min(limit, len(allowed)) + 1)
                     if any(fits(s) for s in combinations(allowed, k))), None)
    if smallest is not None:  # something fits where asked: fewest such nodes, never a fallback
        assert isinstance(got, Choice) and not got.fallback
        assert len(got.nodes) == smallest and set(got.nodes) <= set(allowed)
    elif r.strict:
        assert isinstance(got, Refusal)
    if isinstance(got, Choice):
        assert len(got.nodes) <= limit and fits(got.nodes, cpus=False)
        assert sum(got.memory_mib) == r.memory_mib and sum(got.vcpus) == r.vcpus
        for node, mib in zip(got.nodes, got.memory_mib, strict=True):
            assert 0 <= mib <= h.node(node).available_mib
    else:  # best-effort refuses only when memory fits in no set of the allowed size
        if not r.strict:
            assert not any(fits(s, cpus=False) for k in range(1, limit + 1)
                           for s in combinations(range(len(h.nodes)), k))
    # The same question in another node order gets the same answer.
    shuffled = HostCapacity(tuple(reversed(h.nodes)), h.distances)
    assert choose(r, shuffled) == got


# -- the ledger in placement: the race ----------------------------------------------------


def two_node_view(free_gib: int = 10) -> tuple[SimHost, HostView]:
    """A simulated 2-node host (4 pCPUs, ``free_gib`` free per node after dom0)
    and the agent's snapshot of it."""
    sim = SimHost(HostSpec(nodes=(NodeSpec(4, (free_gib + 1) * GIB),) * 2))
    sim.create_domain(DomainSpec("Domain-0", 2, 2 * GIB, Idle(), is_dom0=True))
    view = build_state(Observation(0.0, sim.topology(), tuple(sim.domain_info()),
                                   tuple(sim.vcpu_info())))
    return sim, view


def build(sim: SimHost, name: str, memory_mib: int, nodes: tuple[int, ...]) -> tuple[int, ...]:
    """Build the domain where placement said (libxl with a nodemap); KiB per node."""
    domid = sim.create_domain(DomainSpec(name, 2, memory_mib, Idle(), memory_nodes=nodes))
    return sim.memory_per_node(domid)


@pytest.mark.parametrize("use_ledger", [True, False])
def test_two_requests_at_the_same_instant(use_ledger: bool) -> None:
    """Each domain fits only on one node. Both requests see the same snapshot
    (the domains are not built yet, free memory has not moved): with the
    ledger they get different nodes, and both land whole; without it they
    collide on node 0 and the second domain's memory spills over to node 1."""
    sim, view = two_node_view()
    assert [n.free_memory_mib for n in view.nodes] == [10 * GIB, 10 * GIB]
    placer = Placer(use_ledger=use_ledger)
    a = placer.place(req(memory_mib=8 * GIB, id="a", name="a"), view, now=5.0)
    b = placer.place(req(memory_mib=8 * GIB, id="b", name="b"), view, now=5.0)
    assert a.ok and b.ok
    mem_a = build(sim, "a", 8 * GIB, a.nodes)
    mem_b = build(sim, "b", 8 * GIB, b.nodes)
    if use_ledger:
        assert (a.nodes, b.nodes) == ((0,), (1,))
        assert mem_a == (8 * GIB * 1024, 0) and mem_b == (0, 8 * GIB * 1024)
        assert a.expires_s == placer.ledger.ttl_s
    else:
        assert a.nodes == b.nodes == (0,)  # the race: both told "node 0"
        assert mem_b == (2 * GIB * 1024, 6 * GIB * 1024)  # b is split across nodes


def test_reservation_settles_when_the_domain_holds_its_memory() -> None:
    sim, view = two_node_view()
    placer = Placer()
    a = placer.place(req(memory_mib=8 * GIB, id="a", name="a"), view, now=0.0)
    assert placer.ledger.reserved_mib(2) == (8 * GIB, 0)
    build(sim, "a", 8 * GIB, a.nodes)
    changes = placer.observe(sim.domain_info(), now=1.0)
    assert [(s.reservation.request, s.domid) for s in changes.settled] == [("a", 1)]
    assert placer.ledger.reserved_mib(2) == (0, 0)
    # The next snapshot has a's memory out of node 0's free memory instead.
    view2 = build_state(Observation(1.0, sim.topology(), tuple(sim.domain_info()),
                                    tuple(sim.vcpu_info())))
    b = placer.place(req(memory_mib=8 * GIB, id="b"), view2, now=1.0)
    assert b.nodes == (1,)


def test_capacity_of_counts_the_vcpus_homed_on_each_node() -> None:
    topo = Topology((Node(0, frozenset({0, 1}), 8 * GIB * 1024, 4 * GIB * 1024),
                     Node(1, frozenset({2, 3}), 8 * GIB * 1024, 6 * GIB * 1024)),
                    ((10, 20), (20, 10)))
    from agent.hypervisor.model import DomainInfo, DomainState, VcpuInfo, VcpuState

    dom = DomainInfo(1, "x", "u", DomainState.RUNNING, 3, GIB * 1024)
    vcpus = tuple(VcpuInfo(1, i, 2, VcpuState.RUNNING, 0, frozenset({0, 1, 2, 3}),
                           frozenset({2, 3})) for i in range(3))
    cap = capacity_of(build_state(Observation(0.0, topo, (dom,), vcpus)))
    assert [(n.id, n.cpus, n.free_mib, n.vcpus) for n in cap.nodes] == [
        (0, 2, 4 * GIB, 0), (1, 2, 6 * GIB, 3)]
    assert cap.node(1).cpu_set == frozenset({2, 3})
