"""credit1 model: one test per scheduling rule of xen/common/sched/credit.c it follows.

Small hosts, built through the engine; where a rule needs a state the public API
cannot reach in one step (a vCPU queued on a given pCPU, masks changed without the
re-pick vcpu_set_affinity does), the test sets it up on the scheduler directly.
"""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sim.credit1 import (
    PRI_BOOST,
    PRI_IDLE,
    PRI_OVER,
    PRI_UNDER,
    RATELIMIT_NS,
    Credit1,
)
from agent.sim.engine import SimHost
from agent.sim.objects import Vcpu
from agent.sim.spec import Bursty, CpuBound, DomainSpec, HostSpec, Idle, NodeSpec

MS = 1_000_000


def make(nodes: tuple[int, ...] = (2, 2), tpc: int = 1, seed: int = 0) -> SimHost:
    return SimHost(
        HostSpec(nodes=tuple(NodeSpec(c, 4096) for c in nodes), threads_per_core=tpc, seed=seed),
        core="python",  # these tests read the model's own objects
    )


def sched(h: SimHost) -> Credit1:
    s = h.scheduler_of()
    assert isinstance(s, Credit1)
    return s


def vcpu(h: SimHost, domid: int, i: int = 0) -> Vcpu:
    return h.domains[domid].vcpus[i]


def pinned(h: SimHost, name: str, cpu: int, load: object = None) -> int:
    return h.create_domain(
        DomainSpec(name, 1, 64, workload=load or CpuBound(), hard=frozenset({cpu}),
                   memory_nodes=(h.topo.node_of[cpu],))
    )


def where(h: SimHost, domid: int) -> int | None:
    v = vcpu(h, domid)
    return v.cpu if v.is_running else None


# -- _csched_cpu_pick / __runq_tickle: soft-affinity step before the hard one ----------


def test_wake_tickles_idle_pcpu_in_soft_affinity_before_one_only_in_hard() -> None:
    h = make()  # pCPUs 0,1 on node 0; 2,3 on node 1
    pinned(h, "F", 0)  # keeps pCPU 0 busy
    v_id = h.create_domain(DomainSpec("V", 1, 64, workload=Idle(), soft=frozenset({2, 3})))
    v = vcpu(h, v_id)
    v.cpu = 0  # it last ran on pCPU 0: pCPU 1 is idle and nearer, but only hard-affine
    h.set_workload(v_id, 0, CpuBound())  # wakes: __runq_tickle
    assert where(h, v_id) in (2, 3)


def test_wake_falls_back_to_hard_affinity_idler_when_soft_ones_are_busy() -> None:
    h = make()
    pinned(h, "F0", 0)
    pinned(h, "F2", 2)
    pinned(h, "F3", 3)
    v_id = h.create_domain(DomainSpec("V", 1, 64, workload=Idle(), soft=frozenset({2, 3})))
    vcpu(h, v_id).cpu = 0
    h.set_workload(v_id, 0, CpuBound())
    assert where(h, v_id) == 1


def test_pick_prefers_soft_idler_then_hard_idler_then_own_pcpu() -> None:
    h = make()
    pinned(h, "F", 0)
    pinned(h, "G", 0)  # queued on pCPU 0, so pCPU 0 does not count as idle for V
    v_id = h.create_domain(DomainSpec("V", 1, 64, workload=Idle(), soft=frozenset({2, 3})))
    v = vcpu(h, v_id)
    v.cpu = 0
    s = sched(h)
    assert s._pick(v, False) in (2, 3)
    s.idlers &= ~0b1100  # nothing idle in the soft mask
    assert s._pick(v, False) == 1
    s.idlers = 0  # nothing idle at all: stay
    assert s._pick(v, False) == 0


def test_pick_counts_the_own_pcpu_idle_when_nothing_is_queued_there() -> None:
    # is_runq_idle(): the pick discounts the vCPU itself from its own pCPU, even
    # when another vCPU runs there; with no idler in the soft mask it stays.
    h = make()
    pinned(h, "F", 0)
    v_id = h.create_domain(DomainSpec("V", 1, 64, workload=Idle(), soft=frozenset({2, 3})))
    v = vcpu(h, v_id)
    v.cpu = 0
    s = sched(h)
    s.idlers &= ~0b1100
    assert s._pick(v, False) == 0


def test_pick_on_smt_prefers_a_wholly_idle_core() -> None:
    h = make(nodes=(4,), tpc=2)  # cores {0,1} and {2,3}
    pinned(h, "F", 0)
    v_id = h.create_domain(DomainSpec("V", 1, 64, workload=Idle()))
    v = vcpu(h, v_id)
    v.cpu = 1  # sibling of the busy pCPU 0
    assert sched(h)._pick(v, False) in (2, 3)


def test_pick_crosses_sockets_only_to_one_more_than_twice_as_idle() -> None:
    h = make(nodes=(4, 4))
    # Node 0: pCPU 0 runs V, 1-2 busy, 3 idle; node 1: busy pCPUs vary.
    for c in (1, 2):
        pinned(h, f"F{c}", c)
    v_id = pinned(h, "V", 0)
    v = vcpu(h, v_id)
    v.set_masks(h.topo.all_mask, h.topo.all_mask, h.topo.all_mask)
    s = sched(h)
    # Node 0 counts 2 idlers for V (pCPU 3, and pCPU 0 itself: is_runq_idle);
    # node 1 has 4: not more than twice as many -> stay.
    assert s._pick(v, False) == 0
    pinned(h, "F3", 3)  # node 0 now counts 1 idler (pCPU 0 itself): 4 > 2 -> move
    assert h.topo.node_of[s._pick(v, False)] == 1


# -- csched_load_balance / csched_runq_steal ----------------------------------------------


def _queued_pair(h: SimHost) -> tuple[int, int]:
    """R running on pCPU 0 and Q queued behind it, both then made free to run anywhere
    (masks changed without the re-pick), soft-affine to node 1."""
    r = pinned(h, "R", 0)
    q = pinned(h, "Q", 0)
    for d in (r, q):
        vcpu(h, d).set_masks(h.topo.all_mask, 0b1100, h.topo.all_mask)
    assert vcpu(h, r).is_running and vcpu(h, q).on_runq
    return r, q


def test_steal_takes_the_queued_vcpu_never_the_running_one() -> None:
    h = make()
    r, q = _queued_pair(h)
    s = sched(h)
    assert s._load_balance(2, PRI_IDLE) is vcpu(h, q)
    assert vcpu(h, q).cpu == 2
    # Now pCPU 0 has one runnable (R, running there, soft-affine to node 1): nothing
    # to steal, even though R would rather run on pCPU 3.
    assert s._load_balance(3, PRI_IDLE) is None
    assert vcpu(h, r).cpu == 0


def test_steal_only_from_peers_with_more_than_one_runnable() -> None:
    h = make()
    _, q = _queued_pair(h)
    s = sched(h)
    s.nr_runnable[0] = 1  # as if Q were not counted: the peer is skipped
    s.overloaded &= ~1
    assert s._load_balance(2, PRI_IDLE) is None
    assert vcpu(h, q).on_runq and vcpu(h, q).cpu == 0


def test_steal_only_strictly_higher_priority() -> None:
    h = make()
    _, q = _queued_pair(h)
    s = sched(h)
    vq = vcpu(h, q)
    s._runq_remove(0, vq)
    vq.pri = PRI_OVER
    s._runq_insert(0, vq)
    assert s._load_balance(2, PRI_OVER) is None  # an OVER pCPU does not take OVER work
    assert s._load_balance(2, PRI_IDLE) is vq  # an idle one does


def test_steal_looks_for_soft_affine_work_first() -> None:
    h = make(nodes=(2, 2, 2))  # pCPUs 4,5 on node 2
    a = pinned(h, "A", 0)
    b = pinned(h, "B", 0)  # queued behind A, soft-affine to node 2
    c = pinned(h, "C", 2)
    d = pinned(h, "D", 2)  # queued behind C, no useful soft affinity
    for dom, soft in ((a, 0b110000), (b, 0b110000), (c, 0), (d, h.topo.all_mask)):
        vcpu(h, dom).set_masks(h.topo.all_mask, soft, h.topo.all_mask)
    # pCPU 4 (node 2) looks at node 0 only after node 1 in the hard step, but B is
    # soft-affine to it, and the soft step comes first.
    assert sched(h)._load_balance(4, PRI_IDLE) is vcpu(h, b)


def test_migration_delay_keeps_cache_hot_vcpus_where_they_are() -> None:
    # vcpu_migration_delay is 0 by default; when set, a vCPU that ran on its pCPU
    # less than that long ago is not stolen (__csched_vcpu_is_cache_hot).
    h = make()
    _, q = _queued_pair(h)
    s = sched(h)
    vq = vcpu(h, q)
    s.migr_delay = 1 * MS
    vq.last_sched = h.now_ns - MS // 2
    assert s._load_balance(2, PRI_IDLE) is None
    vq.last_sched = h.now_ns - 2 * MS
    assert s._load_balance(2, PRI_IDLE) is vq


def test_runq_sort_moves_under_ahead_of_over_keeping_their_order() -> None:
    h = make(nodes=(1,))
    ids = [pinned(h, n, 0) for n in "RABCD"]  # R runs, A-D queued on pCPU 0
    s = sched(h)
    a, b, c, d = (vcpu(h, i) for i in ids[1:])
    for v, pri in ((a, PRI_OVER), (b, PRI_UNDER), (c, PRI_OVER), (d, PRI_UNDER)):
        v.pri = pri
    s.runq[0][:] = [a, b, c, d]
    s._sort_runqs()
    assert s.runq[0] == [b, d, a, c]


# -- priorities: BOOST on wake, tick, accounting ----------------------------------------


def test_wake_boosts_and_the_next_tick_ends_the_boost() -> None:
    h = make(nodes=(1,))
    d = h.create_domain(DomainSpec("V", 1, 64, workload=CpuBound()))
    h.advance(50 * MS)
    h.set_workload(d, 0, Idle())  # blocks
    h.advance(60 * MS)
    v = vcpu(h, d)
    assert v.pri in (PRI_UNDER, PRI_OVER)
    v.pri = PRI_UNDER  # a vCPU with credit
    h.set_workload(d, 0, CpuBound())  # wakes: csched_unit_wake
    assert v.pri == PRI_BOOST and v.is_running
    h.advance(h.now_ns + 10 * MS)  # csched_tick -> csched_unit_acct
    assert v.pri != PRI_BOOST


def test_wake_after_a_migration_is_not_boosted() -> None:
    h = make(nodes=(2,))
    d = h.create_domain(DomainSpec("V", 1, 64, workload=Idle()))
    v = vcpu(h, d)
    h.set_affinity(d, 0, frozenset({1}), None)  # re-picked while blocked: MIGRATING
    v.pri = PRI_UNDER
    h.set_workload(d, 0, CpuBound())
    assert v.pri == PRI_UNDER and v.cpu == 1


def test_accounting_shares_a_pcpu_by_weight() -> None:
    h = make(nodes=(1,))
    heavy = h.create_domain(DomainSpec("H", 1, 64, weight=512))
    light = h.create_domain(DomainSpec("L", 1, 64, weight=256))
    h.advance(200 * MS)
    h.take_accounting()
    h.advance(3200 * MS)
    acc = h.take_accounting()
    run_h = sum(acc.vcpus[(heavy, 0)].run_ns)
    run_l = sum(acc.vcpus[(light, 0)].run_ns)
    assert run_h + run_l == 3000 * MS
    assert 1.8 < run_h / run_l < 2.2


def test_equal_weights_share_equally_and_demand_counts_queueing() -> None:
    h = make(nodes=(1,))
    a = h.create_domain(DomainSpec("A", 1, 64))
    b = h.create_domain(DomainSpec("B", 1, 64))
    h.advance(3000 * MS)
    acc = h.take_accounting()
    for d in (a, b):
        row = acc.vcpus[(d, 0)]
        assert row.demand_ns == 3000 * MS
        assert abs(sum(row.run_ns) - 1500 * MS) < 100 * MS


def test_ratelimit_keeps_a_vcpu_that_ran_less_than_1ms() -> None:
    h = make(nodes=(1,))
    f = h.create_domain(DomainSpec("F", 1, 64))
    q = h.create_domain(DomainSpec("Q", 1, 64))
    h.advance(5 * MS)
    s = sched(h)
    vf = vcpu(h, f) if vcpu(h, f).is_running else vcpu(h, q)
    other = vcpu(h, q) if vf is vcpu(h, f) else vcpu(h, f)
    vf.state_entry = h.now_ns - 300_000  # it has run 0.3 ms
    s._runq_remove(0, other)
    other.pri = PRI_BOOST
    s._runq_insert(0, other)
    nxt, tslice, _ = s.schedule(0, vf)
    assert nxt is vf and tslice == RATELIMIT_NS - 300_000
    vf.state_entry = h.now_ns - 2 * MS
    nxt, _, _ = s.schedule(0, vf)
    assert nxt is other


# -- csched_unit_acct: re-pick of a running vCPU every tick -----------------------------


def test_tick_moves_a_running_vcpu_with_work_behind_it_to_an_idle_pcpu() -> None:
    h = make(nodes=(2,))
    r = pinned(h, "R", 0)
    q = pinned(h, "Q", 0)
    for d in (r, q):
        vcpu(h, d).set_masks(0b11, 0b11, 0b11)
    assert vcpu(h, q).on_runq
    h.advance(10 * MS)  # first tick: R joins the active list (no re-pick yet)
    assert where(h, r) == 0 and vcpu(h, q).on_runq
    h.advance(20 * MS)  # second tick: csched_unit_acct re-picks pCPU 1
    assert {where(h, r), where(h, q)} == {0, 1}


def test_tick_never_moves_a_running_vcpu_without_an_idle_pcpu() -> None:
    h = make()  # 2 nodes x 2
    # Every pCPU busy, one vCPU running on the node it is not soft-affine to.
    ids = [h.create_domain(DomainSpec(f"N{c}", 1, 64, hard=frozenset({c}))) for c in (0, 1, 2)]
    m = h.create_domain(DomainSpec("M", 1, 64, hard=frozenset({3}), soft=frozenset({0, 1})))
    vcpu(h, m).set_masks(h.topo.all_mask, 0b0011, h.topo.all_mask)
    h.take_accounting()
    h.advance(2000 * MS)
    acc = h.take_accounting()
    assert where(h, m) == 3
    assert acc.vcpus[(m, 0)].migrations == 0
    assert all(acc.vcpus[(d, 0)].migrations == 0 for d in ids)


# -- the tick's shortcut agrees with the full pick ------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    nodes=st.lists(st.sampled_from((2, 4, 6)), min_size=1, max_size=3),
    tpc=st.sampled_from((1, 2)),
    doms=st.lists(
        st.tuples(
            st.integers(1, 4),
            st.sampled_from(("cpu", "bursty", "idle")),
            st.integers(0, 7),  # soft: a node index or "none"
        ),
        min_size=1,
        max_size=6,
    ),
    t_ms=st.integers(1, 400),
    seed=st.integers(0, 3),
)
def test_tick_visits_every_pcpu_whose_pick_would_move(
    nodes: list[int], tpc: int, doms: list[tuple[int, str, int]], t_ms: int, seed: int
) -> None:
    h = make(nodes=tuple(nodes), tpc=tpc, seed=seed)
    for i, (n, kind, soft_node) in enumerate(doms):
        load = {"cpu": CpuBound(), "bursty": Bursty(7.0, 5.0), "idle": Idle()}[kind]
        soft = None
        if soft_node < len(nodes):
            soft = frozenset(c for c in range(h.topo.ncpus) if h.topo.node_of[c] == soft_node)
        h.create_domain(DomainSpec(f"d{i}", n, 16, workload=load, soft=soft))
    h.advance(t_ms * MS)
    s = sched(h)
    if not s.idlers:
        return
    cand = s._repick_candidates(s.busy)
    for cpu, v in enumerate(h.python_core().cur):
        if v is not None and v.active and s._pick(v, False) != cpu:
            assert cand >> cpu & 1, f"pCPU {cpu} running {v} would move but is skipped"


def test_idle_priority_is_below_everything() -> None:
    assert PRI_IDLE < PRI_OVER < PRI_UNDER < PRI_BOOST
