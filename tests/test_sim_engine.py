"""SimHost: domain lifecycle, workloads, affinity, accounting, determinism, errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.hypervisor.model import DomainState, VcpuState
from agent.sim.accounting import Accounting
from agent.sim.engine import NoSuchDomainError, SimError, SimHost
from agent.sim.spec import (
    Bursty,
    CpuBound,
    DomainSpec,
    HostSpec,
    Idle,
    IoLike,
    NodeSpec,
    PoolSpec,
    SchedulerName,
)

MS = 1_000_000
SCHEDULERS: tuple[SchedulerName, ...] = ("credit1", "credit2")


def make(nodes: tuple[int, ...] = (2, 2), sched: SchedulerName = "credit1", seed: int = 0,
         pools: tuple[PoolSpec, ...] = (), core: str = "auto") -> SimHost:
    return SimHost(HostSpec(nodes=tuple(NodeSpec(c, 4096) for c in nodes), scheduler=sched,
                            seed=seed, pools=pools), core=core)


def running_cpus(h: SimHost, domid: int) -> list[int]:
    return [v.cpu for v in h.vcpu_info(domid) if v.state is VcpuState.RUNNING]


def check_accounting(h: SimHost, acc: Accounting) -> None:
    span = acc.end_ns - acc.start_ns
    per_node = [0] * h.topo.nnodes
    for row in acc.vcpus.values():
        assert sum(row.run_ns) <= row.demand_ns <= span
        assert row.cross_node_migrations <= row.migrations
        for n, ns in enumerate(row.run_ns):
            per_node[n] += ns
    assert tuple(per_node) == acc.node_busy_ns
    for n, busy in enumerate(acc.node_busy_ns):
        assert busy <= span * h.topo.node_mask[n].bit_count()


# -- lifecycle ----------------------------------------------------------------------


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_lifecycle_states_and_pause_frees_pcpus(sched: SchedulerName) -> None:
    h = make((2,), sched)
    dom0 = h.create_domain(DomainSpec("Domain-0", 1, 128, workload=Idle(), is_dom0=True))
    a = h.create_domain(DomainSpec("A", 2, 256))
    b = h.create_domain(DomainSpec("B", 2, 256))
    assert (dom0, a, b) == (0, 1, 2)
    h.advance(100 * MS)
    states = {d.domid: d.state for d in h.domain_info()}
    assert states == {0: DomainState.BLOCKED, 1: DomainState.RUNNING, 2: DomainState.RUNNING}
    h.pause(a)
    # A's pCPUs go to B at once, before any time passes.
    assert sorted(running_cpus(h, b)) == [0, 1]
    assert {v.state for v in h.vcpu_info(a)} == {VcpuState.PAUSED}
    h.take_accounting()
    h.advance(300 * MS)
    acc = h.take_accounting()
    assert all((a, i) not in acc.vcpus for i in range(2))
    assert all(sum(acc.vcpus[(b, i)].run_ns) == 200 * MS for i in range(2))
    h.unpause(a)
    h.advance(400 * MS)
    h.shutdown(b)
    assert {d.domid: d.state for d in h.domain_info()}[b] is DomainState.SHUTDOWN
    assert {(v.state, v.cpu) for v in h.vcpu_info(b)} == {(VcpuState.OFFLINE, None)}
    assert sorted(running_cpus(h, a)) == [0, 1]
    free = h.topology().nodes[0].memory_free_kib
    h.destroy(b)
    assert h.topology().nodes[0].memory_free_kib == free + 256 * 1024
    assert [d.domid for d in h.domain_info()] == [0, 1]
    with pytest.raises(NoSuchDomainError):
        h.pause(b)
    assert h.create_domain(DomainSpec("B", 1, 64)) == 3  # domids are not reused at once


def test_created_paused_runs_nothing_until_unpaused() -> None:
    h = make((1,))
    d = h.create_domain(DomainSpec("P", 1, 64), paused=True)
    h.advance(50 * MS)
    assert h.vcpu_info(d)[0].time_ns == 0
    h.unpause(d)
    h.advance(80 * MS)
    assert h.vcpu_info(d)[0].time_ns == 30 * MS


# -- workloads ----------------------------------------------------------------------


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_workloads_run_their_share(sched: SchedulerName) -> None:
    h = make((4,), sched, seed=3)
    cpu = h.create_domain(DomainSpec("cpu", 1, 64, workload=CpuBound()))
    bursty = h.create_domain(DomainSpec("bursty", 1, 64, workload=Bursty(on_ms=10, off_ms=30)))
    io = h.create_domain(DomainSpec("io", 1, 64, workload=IoLike(run_us=200, block_us=800)))
    idle = h.create_domain(DomainSpec("idle", 1, 64, workload=Idle()))
    h.advance(4000 * MS)
    acc = h.take_accounting()
    check_accounting(h, acc)
    share = {d: sum(acc.vcpus[(d, 0)].run_ns) / (4000 * MS) for d in (cpu, bursty, io)}
    assert share[cpu] == 1.0
    assert 0.23 < share[bursty] < 0.27
    assert 0.17 < share[io] < 0.23
    assert (idle, 0) not in acc.vcpus
    # Load changes: the idle one becomes cpu-bound, the cpu-bound one idle.
    h.set_workload(idle, None, CpuBound())
    h.set_workload(cpu, 0, Idle())
    h.advance(4500 * MS)
    acc = h.take_accounting()
    assert sum(acc.vcpus[(idle, 0)].run_ns) == 500 * MS
    assert (cpu, 0) not in acc.vcpus


def test_bursty_on_phase_is_cpu_work_not_wall_time() -> None:
    h = make((1,))
    b = h.create_domain(DomainSpec("b", 1, 64, workload=Idle()))
    h.advance(10 * MS)
    h.take_accounting()
    h.set_workload(b, 0, Bursty(on_ms=100, off_ms=100))  # a fresh on phase from now
    h.advance(60 * MS)
    h.pause(b)  # 50 ms of its 100 ms of work done
    h.advance(260 * MS)
    h.unpause(b)
    h.advance(300 * MS)
    assert h.vcpu_info(b)[0].state is VcpuState.RUNNING  # still working off its phase
    h.advance(311 * MS)
    assert h.vcpu_info(b)[0].state is VcpuState.BLOCKED
    row = h.take_accounting().vcpus[(b, 0)]
    assert sum(row.run_ns) == 100 * MS and row.demand_ns == 100 * MS


# -- affinity ----------------------------------------------------------------------


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_new_hard_affinity_moves_a_running_vcpu_at_once(sched: SchedulerName) -> None:
    h = make((2, 2), sched)
    d = h.create_domain(DomainSpec("D", 1, 64, memory_nodes=(0,), soft=frozenset({0, 1})))
    h.advance(20 * MS)
    assert running_cpus(h, d)[0] in (0, 1)
    h.set_affinity(d, 0, frozenset({3}), None)
    assert running_cpus(h, d) == [3]
    info = h.vcpu_info(d)[0]
    assert info.hard == frozenset({3}) and info.soft == frozenset({0, 1})
    h.set_affinity(d, 0, frozenset(range(4)), None)  # re-picked: back to its soft node
    assert running_cpus(h, d)[0] in (0, 1)
    assert h.effective_hard(d) == (frozenset(range(4)),)


def test_affinity_errors_name_the_problem() -> None:
    h = make((2, 2), pools=(PoolSpec("p", frozenset({2, 3}), "credit1"),))
    d = h.create_domain(DomainSpec("D", 2, 64, pool="p"))
    with pytest.raises(SimError, match="no pCPU of cpupool 'p'"):
        h.set_affinity(d, 0, frozenset({0}), None)
    with pytest.raises(SimError, match="do not exist"):
        h.set_affinity(d, 0, None, frozenset({9}))
    with pytest.raises(NoSuchDomainError, match="no vCPU 5"):
        h.set_affinity(d, 5, None, None)
    with pytest.raises(NoSuchDomainError):
        h.set_affinity(42, 0, None, None)
    assert h.effective_hard(d) == (frozenset({2, 3}),) * 2


# -- invariants under random operations -------------------------------------------------

OPS = st.lists(
    st.tuples(
        st.sampled_from(("advance", "pause", "unpause", "hard", "soft", "load", "create",
                         "destroy")),
        st.integers(0, 5),  # which domain
        st.integers(0, 3),  # which vCPU
        st.integers(1, 255),  # a mask / a choice
    ),
    min_size=1,
    max_size=25,
)


@settings(max_examples=60, deadline=None)
@given(sched=st.sampled_from(SCHEDULERS), ops=OPS, seed=st.integers(0, 5))
def test_hard_affinity_always_holds_and_accounting_adds_up(
    sched: SchedulerName, ops: list[tuple[str, int, int, int]], seed: int
) -> None:
    h = make((4, 4), sched, seed=seed, core="python")  # it reads the model's own objects
    loads = (CpuBound(), Bursty(3.0, 2.0), IoLike(300, 700), Idle())
    made = 0
    for op, di, vi, m in ops:
        live = sorted(h.domains)
        if op == "create" or not live:
            h.create_domain(DomainSpec(f"d{made}", 1 + m % 4, 64, workload=loads[m % 4]))
            made += 1
            continue
        domid = live[di % len(live)]
        nv = len(h.domains[domid].vcpus)
        cpus = frozenset(c for c in range(8) if m >> c & 1)
        if op == "advance":
            h.advance(h.now_ns + m * 100_000)
            check_accounting(h, h.take_accounting())
        elif op == "pause":
            h.pause(domid)
        elif op == "unpause":
            h.unpause(domid)
        elif op == "hard":
            h.set_affinity(domid, vi % nv, cpus, None)
        elif op == "soft":
            h.set_affinity(domid, vi % nv, None, cpus)
        elif op == "load":
            h.set_workload(domid, vi % nv, loads[m % 4])
        elif op == "destroy":
            h.destroy(domid)
        seen: set[int] = set()
        for d in h.domains.values():
            for v in d.vcpus:
                assert v.hmask >> v.cpu & 1, f"{v} on pCPU {v.cpu} outside its hard mask"
                if v.is_running:
                    assert h.python_core().cur[v.cpu] is v and v.cpu not in seen
                    seen.add(v.cpu)
                    assert not v.pflags
    h.advance(h.now_ns + 50 * MS)
    check_accounting(h, h.take_accounting())


# -- determinism --------------------------------------------------------------------


def _run(sched: SchedulerName, seed: int) -> list[Accounting]:
    h = make((3, 3), sched, seed=seed)
    h.create_domain(DomainSpec("Domain-0", 2, 64, workload=IoLike(100, 900), is_dom0=True))
    a = h.create_domain(DomainSpec("A", 4, 64, soft=frozenset(range(3))))
    h.create_domain(DomainSpec("B", 3, 64, workload=Bursty(7, 9)))
    h.create_domain(DomainSpec("C", 3, 64, workload=IoLike(500, 1500)))
    out = []
    for i in range(1, 31):
        h.advance(i * 20 * MS)
        if i == 10:
            h.pause(a)
        if i == 20:
            h.unpause(a)
        out.append(h.take_accounting())
    return out


@pytest.mark.parametrize("sched", SCHEDULERS)
def test_same_spec_and_seed_give_identical_accounting(sched: SchedulerName) -> None:
    first = _run(sched, 11)
    assert first == _run(sched, 11)
    assert first != _run(sched, 12)


# -- bad input ----------------------------------------------------------------------


def test_bad_host_specs_are_refused() -> None:
    with pytest.raises(SimError, match="threads_per_core"):
        SimHost(HostSpec(nodes=(NodeSpec(3, 64),), threads_per_core=2))
    with pytest.raises(SimError, match="overlap"):
        SimHost(HostSpec(nodes=(NodeSpec(4, 64),), pools=(
            PoolSpec("a", frozenset({0, 1}), "credit1"),
            PoolSpec("b", frozenset({1, 2}), "credit2"))))
    with pytest.raises(SimError, match="distances"):
        SimHost(HostSpec(nodes=(NodeSpec(1, 64), NodeSpec(1, 64)), distances=((10,),)))
    with pytest.raises(SimError, match="no pCPU"):
        SimHost(HostSpec(nodes=(NodeSpec(0, 64),)))


def test_bad_domain_specs_are_refused() -> None:
    h = make((2,))
    h.create_domain(DomainSpec("A", 1, 64))
    for spec, msg in [
        (DomainSpec("A", 1, 64), "exists"),
        (DomainSpec("B", 0, 64), "vcpus"),
        (DomainSpec("B", 2, 64, workload=(CpuBound(),)), "1 workloads for 2"),
        (DomainSpec("B", 1, 64, workload=Bursty(0, 5)), "on_ms"),
        (DomainSpec("B", 1, 64, pool="nope"), "no cpupool"),
        (DomainSpec("B", 1, 64, hard=frozenset({7})), "do not exist"),
        (DomainSpec("B", 1, 64, memory_nodes=(3,)), "memory_nodes"),
        (DomainSpec("B", 1, 64, cap=50), "cap"),
        (DomainSpec("B", 1, 10**6), "needs"),
    ]:
        with pytest.raises(SimError, match=msg):
            h.create_domain(spec)
    h.create_domain(DomainSpec("Domain-0", 1, 64, is_dom0=True))
    with pytest.raises(SimError, match="dom0 exists"):
        h.create_domain(DomainSpec("other0", 1, 64, is_dom0=True))
    h.advance(10 * MS)
    with pytest.raises(SimError, match="before now"):
        h.advance(5 * MS)
