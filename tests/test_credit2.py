"""credit2 model: one test per rule of xen/common/sched/credit2.c it follows."""

from __future__ import annotations

from agent.sim.credit2 import (
    CARRYOVER_MAX,
    CREDIT_INIT,
    GRAN_SHIFT,
    MIN_TIMER,
    RATELIMIT_NS,
    Credit2,
    P,
    W,
)
from agent.sim.engine import SimHost
from agent.sim.objects import Vcpu
from agent.sim.spec import CpuBound, DomainSpec, HostSpec, Idle, NodeSpec

MS = 1_000_000


def make(nodes: tuple[int, ...] = (2, 2), tpc: int = 1) -> SimHost:
    return SimHost(
        HostSpec(
            nodes=tuple(NodeSpec(c, 8192) for c in nodes), threads_per_core=tpc,
            scheduler="credit2",
        ),
        core="python",  # these tests read the model's own objects
    )


def sched(h: SimHost) -> Credit2:
    s = h.scheduler_of()
    assert isinstance(s, Credit2)
    return s


def vcpu(h: SimHost, domid: int, i: int = 0) -> Vcpu:
    return h.domains[domid].vcpus[i]


def cpus(lo: int, hi: int) -> frozenset[int]:
    return frozenset(range(lo, hi + 1))


# -- cpu_add_to_runqueue: per socket, at most 16 pCPUs, spread evenly ----------------


def test_runqueues_of_the_seed_host_are_two_per_socket() -> None:
    # 56 pCPUs online: 4 runqueues at least, so at most 14 pCPUs each.
    assert sched(make((28, 28))).runqueues() == [
        cpus(0, 13), cpus(14, 27), cpus(28, 41), cpus(42, 55)
    ]


def test_runqueues_keep_to_sockets_on_a_small_host() -> None:
    assert sched(make((4, 4))).runqueues() == [cpus(0, 3), cpus(4, 7)]


def test_runqueues_of_a_large_smt_host() -> None:
    rqs = sched(make((56,) * 8, tpc=2)).runqueues()
    assert [len(r) for r in rqs] == [16, 16, 16, 8] * 8
    for r in rqs:
        assert all(c ^ 1 in r for c in r)  # SMT siblings stay together
        assert len({c // 56 for c in r}) == 1  # within one socket


# -- balance_load: by load, hard affinity only --------------------------------------


def test_balance_load_moves_by_load_ignoring_soft_and_keeping_hard() -> None:
    h = make()  # runqueues {0,1} and {2,3}
    pinned = h.create_domain(DomainSpec("P", 4, 64, hard=cpus(0, 1)))
    loose = h.create_domain(DomainSpec("S", 2, 64, soft=cpus(0, 1), memory_nodes=(0,)))
    h.advance(500 * MS)
    h.take_accounting()
    h.advance(2500 * MS)
    acc = h.take_accounting()
    for i in range(4):
        assert acc.vcpus[(pinned, i)].run_ns[1] == 0  # never outside its hard mask
    # S is soft-affine to node 0, but node 0's runqueue is overloaded and the other
    # idle: balance_load pushed S's vCPUs there, soft affinity notwithstanding.
    for i in range(2):
        run = acc.vcpus[(loose, i)].run_ns
        assert run[1] > 0.9 * sum(run)


def test_balance_load_leaves_a_balanced_host_alone() -> None:
    h = make()
    a = h.create_domain(DomainSpec("A", 2, 64, soft=cpus(0, 1), memory_nodes=(0,)))
    b = h.create_domain(DomainSpec("B", 2, 64, soft=cpus(2, 3), memory_nodes=(1,)))
    h.advance(500 * MS)
    h.take_accounting()
    h.advance(2000 * MS)
    acc = h.take_accounting()
    for d, home in ((a, 0), (b, 1)):
        for i in range(2):
            row = acc.vcpus[(d, i)]
            assert row.run_ns[home] == sum(row.run_ns) and row.cross_node_migrations == 0


# -- runq_tickle and csched2_res_pick: soft affinity as a preference -----------------


def test_tickle_prefers_an_idle_pcpu_in_soft_affinity() -> None:
    h = make((4,))  # one runqueue
    h.create_domain(DomainSpec("F", 1, 64, hard=frozenset({0})))
    v_id = h.create_domain(DomainSpec("V", 1, 64, workload=Idle(), soft=frozenset({2, 3})))
    v = vcpu(h, v_id)
    v.cpu = 1  # idle, but only hard-affine
    h.set_workload(v_id, 0, CpuBound())
    assert v.is_running and v.cpu in (2, 3)


def test_tickle_takes_its_own_pcpu_if_soft_affine_else_the_best_score() -> None:
    h = make((3,))
    ids = [h.create_domain(DomainSpec(n, 1, 64, hard=frozenset({c}))) for c, n in enumerate("ABC")]
    h.advance(3 * MS)
    for d, credit in zip(ids, (5 * MS, 1 * MS, 8 * MS), strict=True):
        vcpu(h, d).credit = credit
    n = h.create_domain(DomainSpec("N", 1, 64, workload=Idle()))
    vn = vcpu(h, n)
    vn.cpu = 0
    # Its own pCPU 0 is in its soft affinity (all) and it out-credits A: just take it.
    h.set_workload(n, 0, CpuBound())
    assert vn.is_running and vn.cpu == 0
    h.set_workload(n, 0, Idle())
    h.advance(h.now_ns + 2 * MS)
    for d, credit in zip(ids, (5 * MS, 1 * MS, 8 * MS), strict=True):
        vcpu(h, d).credit = credit
    vn.cpu = 0
    vn.set_masks(h.topo.all_mask, 0b110, h.topo.all_mask)
    # pCPU 0 is outside its soft affinity now: the best tickle_score wins, B's
    # pCPU 1 (lowest credit, soft-affine to N).
    h.set_workload(n, 0, CpuBound())
    assert vn.is_running and vn.cpu == 1


def test_res_pick_prefers_the_least_loaded_runqueue_with_soft_affinity() -> None:
    h = make()
    s = sched(h)
    rq0, rq1 = s.rqds
    rq0.b_avgload, rq1.b_avgload = 1 << P, 3 << P
    v_id = h.create_domain(DomainSpec("V", 1, 64, workload=Idle(), soft=cpus(2, 3)))
    v = vcpu(h, v_id)
    assert s.pick_resource(v) in (2, 3)  # the soft-affine runqueue, though busier
    v.set_masks(h.topo.all_mask, h.topo.all_mask, h.topo.all_mask)
    assert s.pick_resource(v) in (0, 1)  # no soft affinity: the least loaded one


# -- credits --------------------------------------------------------------------------


def test_reset_credit_adds_credit_init_and_clips_the_carryover() -> None:
    h = make((2,))
    ids = [h.create_domain(DomainSpec(n, 1, 64, workload=Idle())) for n in "XYZ"]
    s = sched(h)
    x, y, z = (vcpu(h, d) for d in ids)
    x.credit, y.credit, z.credit = -2 * MS, 3 * MS, 1
    s._reset_credit(x.rqd, h.now_ns, z)
    assert x.credit == CREDIT_INIT - 2 * MS
    assert y.credit == CREDIT_INIT + CARRYOVER_MAX  # 13 ms clipped
    assert z.credit == CREDIT_INIT + 1


def test_credit_shares_a_pcpu_by_weight() -> None:
    h = make((1,))
    heavy = h.create_domain(DomainSpec("H", 1, 64, weight=512))
    light = h.create_domain(DomainSpec("L", 1, 64, weight=256))
    h.advance(200 * MS)
    h.take_accounting()
    h.advance(3200 * MS)
    acc = h.take_accounting()
    ratio = sum(acc.vcpus[(heavy, 0)].run_ns) / sum(acc.vcpus[(light, 0)].run_ns)
    assert 1.8 < ratio < 2.2


def test_ratelimit_and_runtime_bounds() -> None:
    h = make((1,))
    a = h.create_domain(DomainSpec("A", 1, 64))
    b = h.create_domain(DomainSpec("B", 1, 64))
    h.advance(20 * MS)
    s = sched(h)
    run = vcpu(h, a) if vcpu(h, a).is_running else vcpu(h, b)
    other = vcpu(h, b) if run is vcpu(h, a) else vcpu(h, a)
    run.state_entry = h.now_ns - 300_000
    other.credit = run.credit + 5 * MS
    assert s._runq_candidate(run.rqd, run, 0, h.now_ns) is run  # ran < 1 ms: kept
    run.state_entry = h.now_ns - 2 * MS
    assert s._runq_candidate(run.rqd, run, 0, h.now_ns) is other
    # A runtime is never shorter than 500 us nor longer than 10 ms.
    t = s._runtime(run.rqd, run, h.now_ns)
    assert MIN_TIMER <= t <= CREDIT_INIT
    assert s._runtime(run.rqd, None, h.now_ns) == -1
    assert RATELIMIT_NS == 1_000_000


# -- load averages (update_runq_load) ---------------------------------------------------


def test_runq_load_average_follows_the_window_formula() -> None:
    h = make((2,))
    s = sched(h)
    rq = s.rqds[0]
    rq.load, rq.avgload, rq.b_avgload, rq.load_last = 0, 0, 0, 0
    s._update_runq_load(rq, 1, 0)  # load becomes 1 at t=0
    half = (1 << W) // 2  # half a window, in load-tracking units
    s._update_runq_load(rq, 0, half << GRAN_SHIFT)
    assert rq.avgload == (half * (1 << P)) >> W == 1 << (P - 1)
    # More than a window later the average is reset to the instant load.
    s._update_runq_load(rq, 0, (half + (1 << W) + 2) << GRAN_SHIFT)
    assert rq.avgload == rq.b_avgload == 1 << P
