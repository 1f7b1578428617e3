"""libxl automatic NUMA placement and the allocator's node order, on hand-worked cases."""

from __future__ import annotations

import pytest

from agent.sim.cpumask import mask_of
from agent.sim.engine import SimError, SimHost
from agent.sim.placement import (
    OutOfMemory,
    PlacedDomain,
    allocate,
    nr_vcpus_on_nodes,
    numa_candidate,
)
from agent.sim.spec import DomainSpec, HostSpec, NodeSpec, PoolSpec

GIB = 1024 * 1024  # KiB
NODE4 = [mask_of(range(4 * n, 4 * n + 4)) for n in range(4)]  # 4 nodes x 4 pCPUs
ALL16 = (1 << 16) - 1


def pick(free: list[int], on_node: list[int], need_gib: float, vcpus: int,
         suitable: int = ALL16) -> tuple[int, ...] | None:
    return numa_candidate(
        free_kib=free, node_cpus=NODE4, suitable=suitable, host_cpus_per_node=[4] * 4,
        vcpus_on_node=on_node, need_kib=int(need_gib * GIB), vcpus=vcpus,
    )


def test_one_node_when_it_fits_the_least_loaded_one() -> None:
    assert pick([8 * GIB] * 4, [3, 1, 2, 5], 2, 2) == (1,)


def test_ties_on_vcpus_go_to_the_node_with_more_free_memory() -> None:
    assert pick([8 * GIB, 6 * GIB, 9 * GIB, 9 * GIB], [0, 0, 1, 0], 2, 2) == (3,)


def test_full_tie_keeps_the_first_candidate() -> None:
    assert pick([8 * GIB] * 4, [0] * 4, 2, 2) == (0,)


def test_more_vcpus_than_a_node_has_pcpus_need_two_nodes() -> None:
    # min_nodes = ceil(6 / 4) = 2; the pair with the fewest vCPUs already there.
    assert pick([8 * GIB] * 4, [6, 6, 0, 1], 2, 6) == (2, 3)


def test_memory_that_fits_no_single_node_spans_two() -> None:
    # 10 GiB fits no node; pairs with enough memory: any; fewest vCPUs: (1, 3).
    assert pick([8 * GIB] * 4, [2, 0, 5, 0], 10, 2) == (1, 3)


def test_no_candidate_when_nothing_fits() -> None:
    assert pick([1 * GIB] * 4, [0] * 4, 5, 2) is None


def test_only_nodes_of_the_pool_are_candidates() -> None:
    pool = NODE4[2] | NODE4[3]
    assert pick([8 * GIB] * 4, [5, 5, 1, 0], 2, 2, suitable=pool) == (3,)
    # A pool with 2 pCPUs on each of two nodes: 3 vCPUs need both.
    pool = mask_of({0, 1, 4, 5})
    assert pick([8 * GIB] * 4, [0] * 4, 1, 3, suitable=pool) == (0, 1)


def test_vcpus_count_where_hard_affinity_and_node_affinity_meet() -> None:
    doms = [
        # Node affinity {0, 1}, hard all: each vCPU counts on both nodes.
        PlacedDomain(ALL16, 0b0011, (ALL16, ALL16)),
        # Node affinity {0, 1}, one vCPU pinned to node 1: counts on node 1 only.
        PlacedDomain(ALL16, 0b0011, (NODE4[1],)),
        # Node affinity {2}: its vCPUs count on node 2 only, however wide their hard mask.
        PlacedDomain(ALL16, 0b0100, (ALL16,)),
        # In a pool of node 3's pCPUs: counts on node 3 only.
        PlacedDomain(NODE4[3], 0b1111, (ALL16,)),
    ]
    assert nr_vcpus_on_nodes(NODE4, ALL16, doms) == [2, 3, 1, 1]
    # The new domain's pool limits what counts: only nodes 0 and 1 here.
    assert nr_vcpus_on_nodes(NODE4, NODE4[0] | NODE4[1], doms) == [2, 3, 0, 0]


def test_allocate_spreads_over_the_affinity_nodes() -> None:
    assert allocate(9, [0, 2], [10, 10, 10]) == [5, 0, 4]


def test_allocate_passes_a_full_nodes_share_to_the_other_affinity_nodes() -> None:
    assert allocate(12, [0, 1], [2, 20, 20]) == [2, 10, 0]


def test_allocate_falls_back_to_other_nodes_lowest_id_first() -> None:
    assert allocate(12, [2], [5, 5, 4, 10]) == [5, 3, 4, 0]


def test_allocate_refuses_more_than_the_host_has() -> None:
    with pytest.raises(OutOfMemory):
        allocate(100, [0], [10, 10])


# -- through the engine -------------------------------------------------------------


def host(pools: tuple[PoolSpec, ...] = ()) -> SimHost:
    return SimHost(HostSpec(nodes=tuple(NodeSpec(4, 8192) for _ in range(4)), pools=pools))


def test_engine_places_domains_as_libxl_and_sets_soft_affinity() -> None:
    h = host()
    a = h.create_domain(DomainSpec("A", 6, 1024))
    b = h.create_domain(DomainSpec("B", 6, 1024))
    c = h.create_domain(DomainSpec("C", 2, 1024))
    assert h.memory_per_node(a) == (512 * 1024, 512 * 1024, 0, 0)
    assert h.memory_per_node(b) == (0, 0, 512 * 1024, 512 * 1024)
    # C: each node has 6 vCPUs able to run there; most free memory: nodes 2, 3
    # (B took 512 MiB from each as A did from 0, 1): a tie, the first one wins.
    assert h.memory_per_node(c) == (1024 * 1024, 0, 0, 0)
    soft = {v.soft for v in h.vcpu_info(a)}
    assert soft == {frozenset(range(8))}
    assert h.home_node(b) == 2


def test_engine_explicit_memory_nodes_and_soft_skip_placement() -> None:
    h = host()
    a = h.create_domain(DomainSpec("A", 2, 1024, memory_nodes=(3,)))
    assert h.memory_per_node(a) == (0, 0, 0, 1024 * 1024)
    assert {v.soft for v in h.vcpu_info(a)} == {frozenset(range(16))}  # no soft affinity
    b = h.create_domain(DomainSpec("B", 2, 1024, soft=frozenset({4, 5, 9})))
    assert h.memory_per_node(b) == (0, 512 * 1024, 512 * 1024, 0)


def test_engine_memory_falls_back_and_is_freed_on_destroy() -> None:
    h = host()
    a = h.create_domain(DomainSpec("A", 2, 10000, memory_nodes=(1,)))
    assert h.memory_per_node(a) == (1808 * 1024, 8192 * 1024, 0, 0)  # 10000 MiB
    assert [n.memory_free_kib for n in h.topology().nodes] == [6384 * 1024, 0, 8 * GIB, 8 * GIB]
    h.destroy(a)
    assert [n.memory_free_kib for n in h.topology().nodes] == [8 * GIB] * 4
    with pytest.raises(SimError, match="needs"):
        h.create_domain(DomainSpec("huge", 1, 40000))


def test_engine_placement_stays_in_the_domains_pool() -> None:
    h = host(pools=(PoolSpec("p", frozenset(range(8, 16)), "credit1"),))
    d = h.create_domain(DomainSpec("D", 2, 1024, pool="p"))
    assert h.home_node(d) == 2
    assert {v.soft for v in h.vcpu_info(d)} == {frozenset(range(8, 12))}
