"""The efficiency model in the host snapshot: demand, per-pool balance, ``misplaced``.

A vCPU off its home node is ``misplaced`` only where that costs work: its home
has room, or the pCPU it takes is wanted by that node's own vCPUs. The seed's
phases are the cases: B spilling onto A's idle node is right (A paused), the
same B vCPUs are wrong once A wants its node back and can use it whole.

Within weight-fair shares: where the pool cannot give every domain its demand,
a node's own domains are due their fair share only, and the rest of the node is
room for other nodes' overflow (the seed's first phase: A, B and C each due a
third of the pool, so B and C may use a third of A's node).
"""

from __future__ import annotations

import pytest

from agent.daemon.fixup import spill_room
from agent.hypervisor.model import (
    DomainInfo,
    DomainState,
    Node,
    Topology,
    VcpuInfo,
    VcpuState,
)
from agent.state import HostView, Observation, VcpuKey, build_state

CPUS = 4  # per node


def topo(nodes: int = 2, distances: tuple[tuple[int, ...], ...] | None = None) -> Topology:
    if distances is None:
        distances = tuple(tuple(10 if i == j else 20 for j in range(nodes)) for i in range(nodes))
    return Topology(
        nodes=tuple(Node(n, frozenset(range(n * CPUS, (n + 1) * CPUS)), 8 << 20, 4 << 20)
                    for n in range(nodes)),
        distances=distances,
    )


def cpus(node: int) -> frozenset[int]:
    return frozenset(range(node * CPUS, (node + 1) * CPUS))


class Host:
    """Domains homed by soft affinity; vCPUs placed on pCPUs of given nodes."""

    def __init__(self, t: Topology) -> None:
        self.topo = t
        self.domains: list[DomainInfo] = []
        self.vcpus: list[VcpuInfo] = []
        self.next_cpu = dict.fromkeys(range(len(t.nodes)), 0)

    def add(self, domid: int, home: int, on: list[int], *, pool: str = "Pool-0",
            state: VcpuState = VcpuState.RUNNING, paused: bool = False) -> None:
        dstate = DomainState.PAUSED if paused else DomainState.RUNNING
        self.domains.append(DomainInfo(domid, f"d{domid}", f"u{domid}", dstate, len(on),
                                       1 << 20, pool))
        for v, node in enumerate(on):
            cpu = node * CPUS + self.next_cpu[node] % CPUS
            self.next_cpu[node] += 1
            vstate = VcpuState.PAUSED if paused else state
            self.vcpus.append(VcpuInfo(domid, v, cpu, vstate, 0, self.topo.all_cpus, cpus(home)))

    def view(self, *, demand: dict[VcpuKey, float] | None = None,
             pool_cpus: dict[str, frozenset[int]] | None = None) -> HostView:
        rates = {(v.domid, v.vcpu): 1.0 if v.state is VcpuState.RUNNING else 0.0
                 for v in self.vcpus}
        return build_state(Observation(
            0.0, self.topo, tuple(self.domains), tuple(self.vcpus), run_rates=rates,
            demand=demand, pool_cpus=pool_cpus or {},
        ))


def misplaced(view: HostView) -> set[VcpuKey]:
    return {(v.domid, v.id) for v in view.vcpus if v.misplaced}


def test_spill_onto_an_idle_node_is_justified() -> None:
    # "A paused": node 1's own 8 vCPUs want 8 pCPUs of 4; node 0 is idle.
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 0, 0], paused=True)
    h.add(2, home=1, on=[0, 0, 0, 0])
    h.add(3, home=1, on=[1, 1, 1, 1])
    view = h.view()
    assert misplaced(view) == set()
    b = view.balance[("Pool-0", 1)]
    assert (b.capacity, b.home_demand, b.overflow, b.spill) == (4, 8.0, 4.0, 4.0)
    assert view.balance[("Pool-0", 0)].spare == 4.0


def test_the_same_spill_is_misplaced_once_its_node_is_wanted() -> None:
    # A back, and B alone on node 1: the pool has room for both, so node 0's own
    # vCPUs are due it whole; B's vCPUs there cost work, as do A's on node 1.
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 1, 1])  # two of A's on node 1 as well
    h.add(2, home=1, on=[0, 0, 1, 1])
    view = h.view()
    assert misplaced(view) == {(1, 2), (1, 3), (2, 0), (2, 1)}
    assert {d.fair_scale for d in view.domains} == {1.0}


def test_an_overcommitted_pool_spills_up_to_the_fair_shares() -> None:
    # "A back" in small: A, B, C want 4 pCPUs each of 8; each is due 8/3. Node 0's
    # own domain (A) is due 8/3 of its 4 pCPUs: 4/3 are room for B's and C's overflow,
    # where B's two vCPUs (2/3 of a pCPU each, their fair part) fit. A's vCPUs on node 1
    # still cost work: A's share fits its own node.
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 1, 1])
    h.add(2, home=1, on=[0, 0, 1, 1])
    h.add(3, home=1, on=[1, 1, 1, 1])
    view = h.view()
    assert misplaced(view) == {(1, 2), (1, 3)}
    assert [round(d.fair_scale, 4) for d in view.domains] == [0.6667] * 3
    assert view.flows[("Pool-0", 1, 0)] == pytest.approx(4 / 3)
    b = view.balance[("Pool-0", 1)]
    assert (b.home_demand, b.overflow) == (8.0, 4.0)  # node 1 still overflows


def test_a_third_vcpu_beyond_the_fair_spill_is_misplaced() -> None:
    # The seed's first phase in small: A at home on node 0; B's and C's overflow may
    # take 4/3 pCPUs of it (two vCPUs at 2/3); a third one there is beyond that.
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 0, 0])
    h.add(2, home=1, on=[0, 0, 0, 1])
    h.add(3, home=1, on=[1, 1, 1, 1])
    assert misplaced(h.view()) == {(2, 2)}


def test_starving_the_overflow_leaves_room_that_relaxes_its_narrowings() -> None:
    # What the agent used to keep: A alone on node 0, B and C queued on node 1. Nothing
    # is misplaced, but node 0 has 4/3 pCPUs of room for node 1's overflow: the
    # fixer relaxes a sustained narrowing that keeps B or C off it (fixup._sustained).
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 0, 0])
    h.add(2, home=1, on=[1, 1, 1, 1])
    h.add(3, home=1, on=[1, 1, 1, 1])
    view = h.view()
    assert misplaced(view) == set()
    assert spill_room(view) == {("Pool-0", 1, 0): pytest.approx(4 / 3)}


def test_fair_shares_are_per_pool_and_capped_by_demand() -> None:
    # Pool "guests" (pCPUs 1-3 and 5-7) is overcommitted, Pool-0 (0 and 4) is not.
    # A light domain (demand 1) gets all it wants; the two heavy ones split the rest.
    h = Host(topo())
    h.add(1, home=0, on=[0], pool="guests")
    h.add(2, home=0, on=[0, 0, 0, 0], pool="guests")
    h.add(3, home=1, on=[1, 1, 1, 1], pool="guests")
    h.add(4, home=0, on=[0])
    guests = (cpus(0) | cpus(1)) - {0, 4}
    view = h.view(pool_cpus={"guests": guests})
    scales = {d.domid: round(d.fair_scale, 4) for d in view.domains}
    assert scales == {1: 1.0, 2: 0.625, 3: 0.625, 4: 1.0}


def test_overflow_beyond_the_spare_is_misplaced() -> None:
    # Node 0 has 1 spare pCPU (3 of its own); node 1 overflows by 1 (the pool has
    # room for all): one of the two B vCPUs on node 0 is the justified spill, the
    # other one is not (ordered by domid and vCPU id).
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 0])
    h.add(2, home=1, on=[0, 0, 1, 1, 1])
    assert misplaced(h.view()) == {(2, 1)}


def test_a_vcpu_that_is_not_running_or_queued_is_never_misplaced() -> None:
    h = Host(topo())
    h.add(1, home=0, on=[1], state=VcpuState.BLOCKED)
    view = h.view()
    assert misplaced(view) == set()
    assert view.vcpus[0].demand == 0.0


def test_demand_from_the_observation_beats_the_run_rate() -> None:
    # Queued vCPUs run less than they want: by run rate (0.5 each) node 1's own
    # 8 vCPUs would fit its 4 pCPUs and node 0's spare would absorb A's stray;
    # by demand (1 each) node 1 overflows and is wanted, and node 0 is wanted too.
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 0, 1])
    h.add(2, home=1, on=[1, 1, 1, 1, 1, 1, 1, 0])
    half = {(v.domid, v.vcpu): 0.5 for v in h.vcpus}
    rates_view = build_state(Observation(0.0, h.topo, tuple(h.domains), tuple(h.vcpus),
                                         run_rates=half))
    assert rates_view.node_by_id[1].home_demand == 4.0
    demand = {(v.domid, v.vcpu): 1.0 for v in h.vcpus}
    by_demand = build_state(Observation(0.0, h.topo, tuple(h.domains), tuple(h.vcpus),
                                        run_rates=half, demand=demand))
    assert by_demand.node_by_id[1].home_demand == 8.0
    assert by_demand.node_by_id[1].pressure == 2.0
    assert [v.demand for v in by_demand.vcpus[:2]] == [1.0, 1.0]
    assert [v.run_rate for v in by_demand.vcpus[:2]] == [0.5, 0.5]
    assert misplaced(by_demand) == {(1, 3), (2, 7)}
    # locality still weighs run time, not demand
    assert by_demand.domain_by_id[1].locality == 0.75


def test_capacity_counts_the_pools_pcpus_only() -> None:
    # The guests' pool has 3 pCPUs per node (dom0 keeps one per node in Pool-0).
    # Node 0 holds 3 of A's own: full for the pool, though the node has 4 pCPUs,
    # so B's stray there is misplaced; without the pools it would look justified.
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 0], pool="guests")
    h.add(2, home=1, on=[0, 1, 1, 1, 1], pool="guests")
    guests = (cpus(0) | cpus(1)) - {0, 4}
    assert misplaced(h.view(pool_cpus={"guests": guests})) == {(2, 0)}
    assert misplaced(h.view()) == set()


def test_spill_goes_to_the_nearest_spare_node_first() -> None:
    # Two sockets of two nodes: node 1 overflows by 4; node 0 (near, 12) and
    # node 2 (far, 32) are both idle. The spill belongs on node 0: B's vCPUs on
    # node 2 are misplaced, those on node 0 are not.
    d = ((10, 12, 32, 32), (12, 10, 32, 32), (32, 32, 10, 12), (32, 32, 12, 10))
    h = Host(topo(4, d))
    h.add(1, home=1, on=[1, 1, 1, 1, 0, 0, 2, 2])
    assert misplaced(h.view()) == {(1, 6), (1, 7)}


def test_paused_vcpus_want_nothing() -> None:
    h = Host(topo())
    h.add(1, home=0, on=[0, 0, 0, 0], paused=True)
    demand = {(1, v): 1.0 for v in range(4)}
    view = h.view(demand=demand)
    assert view.node_by_id[0].home_demand == 0.0
