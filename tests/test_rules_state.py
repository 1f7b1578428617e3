"""The host-state snapshot: derived values from successive observations."""

from __future__ import annotations

from dataclasses import replace

from agent.hypervisor.model import (
    DomainInfo,
    DomainState,
    Node,
    Topology,
    VcpuInfo,
    VcpuState,
)
from agent.rules.catalogue import OBJECT_FIELDS
from agent.rules.testing import HostModel
from agent.rules.types import BOOL, FLOAT, INT, NODESET, STR, element_of
from agent.state import (
    ABSENT_DOMAIN,
    ABSENT_NODE,
    HostView,
    Observation,
    build_state,
)

NS = 1_000_000_000
N0, N1 = frozenset(range(0, 4)), frozenset(range(4, 8))
ALL = N0 | N1
TOPO = Topology(
    nodes=(Node(0, N0, 8 << 20, 6 << 20), Node(1, N1, 8 << 20, 7 << 20)),
    distances=((10, 21), (21, 10)),
)


def dom(domid: int, vcpus: int, state: DomainState = DomainState.RUNNING,
        uuid: str = "") -> DomainInfo:
    return DomainInfo(domid, f"d{domid}", uuid or f"uuid-{domid}", state, vcpus, 2 << 20)


def vcpu(domid: int, v: int, cpu: int | None, time_s: float, soft: frozenset[int] = N0,
         hard: frozenset[int] = ALL, state: VcpuState = VcpuState.RUNNING) -> VcpuInfo:
    return VcpuInfo(domid, v, cpu, state, int(time_s * NS), hard, soft)


def observe(t: float, vcpus: list[VcpuInfo], domains: list[DomainInfo] | None = None,
            **kw: object) -> Observation:
    domains = domains or [dom(1, 2)]
    return Observation(t, TOPO, tuple(domains), tuple(vcpus), **kw)  # type: ignore[arg-type]


def test_run_rate_is_the_change_of_run_time_over_the_interval() -> None:
    s0 = build_state(observe(0.0, [vcpu(1, 0, 0, 0.0), vcpu(1, 1, 5, 0.0)]))
    assert [v.run_rate for v in s0.vcpus] == [0.0, 0.0]  # no history yet
    s1 = build_state(observe(2.0, [vcpu(1, 0, 0, 1.0), vcpu(1, 1, 5, 2.5)]), s0)
    assert [v.run_rate for v in s1.vcpus] == [0.5, 1.0]  # clamped to one pCPU
    # the same domid now belongs to another domain: no history carries over
    s2 = build_state(observe(3.0, [vcpu(1, 0, 0, 9.0), vcpu(1, 1, 5, 9.0)],
                             [dom(1, 2, uuid="other")]), s1)
    assert [v.run_rate for v in s2.vcpus] == [0.0, 0.0]
    assert s2.domains[0].age_s == 0.0


def test_source_rates_take_precedence() -> None:
    s = build_state(observe(0.0, [vcpu(1, 0, 0, 0.0), vcpu(1, 1, 5, 0.0)],
                            run_rates={(1, 0): 0.25, (1, 1): 7.0}))
    assert [v.run_rate for v in s.vcpus] == [0.25, 1.0]


def test_off_node_time_accumulates_and_resets() -> None:
    s = build_state(observe(0.0, [vcpu(1, 0, 0, 0.0), vcpu(1, 1, 5, 0.0)]))
    assert [(v.on_soft, v.off_node_s) for v in s.vcpus] == [(True, 0.0), (False, 0.0)]
    s = build_state(observe(1.5, [vcpu(1, 0, 0, 1), vcpu(1, 1, 6, 1)]), s)
    assert s.vcpus[1].off_node_s == 1.5
    s = build_state(observe(2.0, [vcpu(1, 0, 0, 1), vcpu(1, 1, 1, 1)]), s)
    assert s.vcpus[1].off_node_s == 0.0 and s.vcpus[1].on_soft and s.vcpus[1].on_home
    s = build_state(observe(3.0, [vcpu(1, 0, 0, 1), vcpu(1, 1, 7, 1)]), s)
    s = build_state(observe(4.0, [vcpu(1, 0, 0, 1), vcpu(1, 1, 7, 1, state=VcpuState.PAUSED)]), s)
    assert s.vcpus[1].off_node_s == 0.0  # a paused vCPU is not stuck anywhere
    assert s.domains[0].off_node_vcpus == 1  # but it does sit outside its soft affinity


def test_home_node_rules() -> None:
    single = build_state(observe(0.0, [vcpu(1, 0, 0, 0), vcpu(1, 1, 5, 0)]))
    assert single.domains[0].home_node == 0 and single.vcpus[1].home_node == 0
    spread = build_state(observe(0.0, [vcpu(1, 0, 0, 0, soft=ALL), vcpu(1, 1, 5, 0, soft=ALL)],
                                 memory_kib={1: (1 << 20, 3 << 20)}))
    d = spread.domains[0]
    assert (d.home_node, d.memory_node, d.memory_node_share) == (1, 1, 0.75)
    assert (d.home_memory_share, d.soft_memory_share, d.memory_known) == (0.75, 1.0, True)
    unknown = build_state(observe(0.0, [vcpu(1, 0, 0, 0, soft=ALL)], [dom(1, 1)]))
    assert unknown.domains[0].home_node == -1 and not unknown.domains[0].memory_known
    # per-vCPU soft affinity on one node gives that vCPU its own home
    mixed = build_state(observe(0.0, [vcpu(1, 0, 0, 0, soft=N0), vcpu(1, 1, 5, 0, soft=N1)],
                                memory_kib={1: (1 << 20, 3 << 20)}))
    assert mixed.domains[0].home_node == 1 and mixed.domains[0].soft_nodes == {0, 1}
    assert [v.home_node for v in mixed.vcpus] == [0, 1]


def test_memory_is_carried_until_measured_again() -> None:
    s = build_state(observe(0.0, [vcpu(1, 0, 0, 0)], [dom(1, 1)],
                            memory_kib={1: (3 << 20, 1 << 20)}))
    s = build_state(observe(1.0, [vcpu(1, 0, 0, 0)], [dom(1, 1)]), s)
    assert s.domains[0].memory_known and s.domains[0].memory_node == 0
    s = build_state(observe(2.0, [vcpu(1, 0, 0, 0)], [dom(1, 1)],
                            memory_kib={1: (0, 4 << 20)}), s)
    assert s.domains[0].memory_node == 1 and s.domains[0].soft_memory_share == 0.0


def test_soft_changed_is_sticky_and_age_counts_from_first_sight() -> None:
    s = build_state(observe(5.0, [vcpu(1, 0, 0, 0)], [dom(1, 1)]))
    assert not s.domains[0].soft_changed and s.domains[0].age_s == 0.0
    s = build_state(observe(6.0, [vcpu(1, 0, 5, 0, soft=N1)], [dom(1, 1)]), s)
    assert s.domains[0].soft_changed and s.domains[0].age_s == 1.0
    s = build_state(observe(7.0, [vcpu(1, 0, 0, 0, soft=N0)], [dom(1, 1)]), s)
    assert s.domains[0].soft_changed


def test_node_and_host_aggregates() -> None:
    model = HostModel(
        {"nodes": 2, "cpus": 4, "memory_mib": 8192, "reserved_mib": [1000, 0]},
        [
            {"domid": 1, "vcpus": 4, "soft": [0], "run": [0, 0, 0, 1], "memory_mib": 2048},
            {"domid": 2, "vcpus": 2, "soft": [0], "run": [0, 1], "rate": 0.5,
             "memory_mib": 1024},
            {"domid": 3, "vcpus": 1, "soft": [1], "run": [1], "state": "paused",
             "memory_mib": 1024},
        ],
    )
    s = model.observe(1.0)
    n0, n1 = s.nodes
    assert (n0.busy_cpus, n0.idle_cpus, n0.load, n0.running_vcpus) == (3.5, 0.5, 0.875, 4)
    assert (n1.busy_cpus, n1.idle_cpus, n1.load) == (1.5, 2.5, 0.375)
    assert (n0.home_demand, n0.pressure, n1.home_demand) == (5.0, 1.25, 0.0)
    assert [d.domid for d in n0.domains] == [1, 2] and [d.domid for d in n1.domains] == [3]
    assert [(v.domid, v.id) for v in n1.vcpus] == [(1, 3), (2, 1), (3, 0)]
    assert (n0.free_memory_mib, n0.reserved_mib, n0.available_mib) == (5120, 1000, 4120)
    assert (s.cpus, s.busy_cpus, s.load, s.min_load, s.max_load) == (8, 5.0, 0.625, 0.375, 0.875)
    d2 = s.domain_by_id[2]
    assert (d2.demand, d2.locality) == (1.0, 0.5)
    assert s.domain_by_id[3].vcpus[0].state == "paused"
    assert s.node_at(7) is ABSENT_NODE and s.domain_at(9) is ABSENT_DOMAIN
    assert (s.distance(0, 1), s.distance(1, 1), s.distance(0, 9)) == (20, 10, 0)


def test_backends_placement_facts() -> None:
    model = HostModel(
        {"nodes": 2, "cpus": 4},
        [{"domid": 0, "vcpus": 4, "pin": [0, 0, 1, 1]}, {"domid": 1, "vcpus": 1, "soft": [1]}],
        [{"pid": 10, "domid": 1, "cpus": [2]}, {"pid": 11, "domid": 1},
         {"pid": 12, "domid": 7}],
    )
    s = model.observe(0.0)
    assert s.dom0_node_bound
    b10, b11 = s.backends  # the backend of a domain that is gone is dropped
    assert (b10.node, b10.home_node, b10.on_home, b10.placeable) == (1, 1, True, True)
    assert (b11.node, b11.on_home, b11.placeable) == (-1, False, True)
    assert s.domain_by_id[1].backends == [b10, b11] and b10.domain is s.domain_by_id[1]
    model.apply({"domain": 0, "pin": [], "hard": [0, 1]})
    s = model.observe(1.0, s)
    assert not s.dom0_node_bound and not s.backends[0].placeable


def test_build_is_pure() -> None:
    o1 = observe(0.0, [vcpu(1, 0, 0, 0.0), vcpu(1, 1, 5, 0.0)])
    s1 = build_state(o1)
    before = [(v.off_since, v.time_ns, v.run_rate) for v in s1.vcpus]
    o2 = replace(o1, time=3.0, vcpus=(vcpu(1, 0, 0, 1.0), vcpu(1, 1, 6, 2.0)))
    a = build_state(o2, s1)
    b = build_state(o2, s1)
    assert [(v.off_since, v.time_ns, v.run_rate) for v in s1.vcpus] == before
    assert [(v.off_node_s, v.run_rate) for v in a.vcpus] == [(v.off_node_s, v.run_rate)
                                                             for v in b.vcpus]


def test_catalogue_matches_the_views() -> None:
    """Every catalogued field exists on its view, with a value of its type."""
    model = HostModel(
        {"nodes": 2, "cpus": 4},
        [{"domid": 0, "vcpus": 2, "pin": [0, 1]}, {"domid": 1, "vcpus": 2, "soft": [0]}],
        [{"pid": 10, "domid": 1}],
    )
    s: HostView = model.observe(0.0)
    objects = {"host": s, "node": s.nodes[0], "domain": s.domains[1], "vcpu": s.vcpus[2],
               "backend": s.backends[0]}
    py = {INT: int, FLOAT: float, BOOL: bool, STR: str, NODESET: frozenset}
    for kind, obj in objects.items():
        for name, spec in OBJECT_FIELDS[kind].items():
            value = getattr(obj, name)
            if spec.type in py:
                assert type(value) is py[spec.type], (kind, name, value)
            elif element_of(spec.type):
                assert isinstance(value, list), (kind, name)
            else:
                assert type(value).__name__.lower() == spec.type + "view", (kind, name)
    for absent in (ABSENT_NODE, ABSENT_DOMAIN):
        kind = "node" if absent is ABSENT_NODE else "domain"
        for name, spec in OBJECT_FIELDS[kind].items():
            if spec.type in py:
                assert type(getattr(absent, name)) is py[spec.type], (kind, name)
