"""Metrics: r(d), useful work, the efficiency LP on hand-worked cases, tallies, recovery."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.sim.metrics import (
    FAIR_TOLERANCE,
    Bucket,
    BucketSums,
    Demand,
    DomainTally,
    FairOptimum,
    Optimum,
    Score,
    Shape,
    Tally,
    VcpuUsage,
    efficiency,
    fair_ns_of,
    max_useful_work,
    node_shares,
    recovery_ns,
    sliding_efficiency,
    sliding_fair_efficiency,
)
from agent.sim.spec import HostSpec, NodeSpec

MS = 1_000_000
# Two nodes of two pCPUs (0-1 on node 0, 2-3 on node 1), r = 0.7 for any remote node.
TWO = Shape.of(HostSpec(nodes=(NodeSpec(2, 1024), NodeSpec(2, 1024))))
ALL = frozenset(range(4))


def test_shape_speed_follows_distances() -> None:
    assert TWO.distances == ((10, 20), (20, 10))
    assert TWO.speed(0, 0) == 1.0 and TWO.speed(0, 1) == 0.7
    three = Shape.of(HostSpec(
        nodes=(NodeSpec(1, 1), NodeSpec(1, 1), NodeSpec(1, 1)),
        distances=((10, 12, 30), (12, 10, 30), (30, 30, 10)),
        remote_speed=((12, 0.9),), remote_speed_default=0.5))
    assert three.speed(1, 0) == 0.9 and three.speed(2, 1) == 0.5


def test_useful_work_weights_remote_time() -> None:
    v = VcpuUsage("A", 0, home=1, allowed=ALL, run_ns=(4 * MS, 6 * MS), demand_ns=10 * MS)
    # 6 ms at home + 0.7 x 4 ms remote = 8.8 ms; locality 6/10.
    assert v.useful_ns(TWO) == pytest.approx(8.8 * MS)
    assert v.home_ns == 6 * MS and v.total_run_ns == 10 * MS


def test_lp_overload_spills_to_the_remote_node() -> None:
    # 4 vCPUs homed on node 0 want the whole 10 ms each (40 ms); node 0 gives 2 x 10 ms at
    # speed 1, node 1 gives 2 x 10 ms at 0.7: 20 + 14 = 34 ms.
    assert max_useful_work([Demand(0, ALL, 40 * MS)], TWO, 10 * MS) == pytest.approx(34 * MS)


def test_lp_gives_each_node_to_its_own_domain_first() -> None:
    # Same, plus 2 vCPUs homed on node 1 (20 ms). Node 1 serving them at 1.0 beats serving
    # the node-0 overflow at 0.7: 20 (X on node 0) + 20 (Y on node 1) = 40 ms; 20 ms of X's
    # demand goes unserved.
    demands = [Demand(0, ALL, 40 * MS), Demand(1, ALL, 20 * MS)]
    assert max_useful_work(demands, TWO, 10 * MS) == pytest.approx(40 * MS)


def test_lp_respects_hard_affinity() -> None:
    # 2 vCPUs homed on node 0 but hard-pinned to node 1 (pCPUs 2-3): 20 ms at 0.7 = 14 ms,
    # although node 0 sits idle.
    demands = [Demand(0, frozenset({2, 3}), 20 * MS)]
    assert max_useful_work(demands, TWO, 10 * MS) == pytest.approx(14 * MS)


def test_lp_respects_cpupools() -> None:
    # Pool P = {0}, pool Q = {1, 2, 3}. X: 2 vCPUs in P homed on node 0 (20 ms) get pCPU 0
    # only: 10 ms. Y: 3 vCPUs in Q homed on node 0 (30 ms): pCPU 1 at home 10 ms + pCPUs 2-3
    # remote 20 ms x 0.7 = 14 ms. Total 10 + 10 + 14 = 34 ms.
    demands = [Demand(0, frozenset({0}), 20 * MS), Demand(0, frozenset({1, 2, 3}), 30 * MS)]
    assert max_useful_work(demands, TWO, 10 * MS) == pytest.approx(34 * MS)


def test_lp_beats_greedy_home_first_with_distances() -> None:
    # 3 nodes of 1 pCPU; nodes 0-1 near (12: r = 0.9), node 2 far (30: r = 0.5).
    # X: 2 vCPUs homed on node 0, any pCPU (20 ms). Y: 1 vCPU homed on node 2, hard {0, 1}.
    # Greedy: X on pCPU 0 (10) and pCPU 1 (0.9 x 10 = 9), Y nothing: 19 ms.
    # Best: X on pCPU 0 (10) and pCPU 2 (0.5 x 10 = 5), Y on pCPU 1 (0.5 x 10 = 5): 20 ms.
    three = Shape.of(HostSpec(
        nodes=(NodeSpec(1, 1), NodeSpec(1, 1), NodeSpec(1, 1)),
        distances=((10, 12, 30), (12, 10, 30), (30, 30, 10)),
        remote_speed=((12, 0.9),), remote_speed_default=0.5))
    demands = [Demand(0, frozenset({0, 1, 2}), 20 * MS), Demand(2, frozenset({0, 1}), 10 * MS)]
    assert max_useful_work(demands, three, 10 * MS) == pytest.approx(20 * MS)


def test_lp_partial_demand_and_nothing_to_do() -> None:
    # One vCPU runnable 3 ms of 10: it could all have run at home: 3 ms.
    assert max_useful_work([Demand(1, ALL, 3 * MS)], TWO, 10 * MS) == pytest.approx(3 * MS)
    assert max_useful_work([], TWO, 10 * MS) == 0.0
    assert max_useful_work([Demand(0, ALL, 0)], TWO, 10 * MS) == 0.0


def test_seed_stuck_state_efficiency() -> None:
    # The seed's last phase in miniature: 26 pCPUs per node, A (26 vCPUs, home 0) and
    # C (26 vCPUs, home 1), one A vCPU on node 1 and one C vCPU on node 0, 1 ms.
    # Optimum: everyone home, 52 ms. Actual: 50 at home + 2 x 0.7 = 51.4 ms -> 0.98846,
    # below the 0.99 recovery bar: one misplaced vCPU each way never counts as recovered.
    shape = Shape.of(HostSpec(nodes=(NodeSpec(26, 1024), NodeSpec(26, 1024))))
    allowed = frozenset(range(52))
    vcpus = [VcpuUsage("A", i, 0, allowed, (MS, 0) if i else (0, MS), MS) for i in range(26)]
    vcpus += [VcpuUsage("C", i, 1, allowed, (0, MS) if i else (MS, 0), MS) for i in range(26)]
    bucket = Bucket(0, MS, tuple(vcpus), (26 * MS, 26 * MS))
    optimum = Optimum(shape).of(bucket)
    assert optimum == pytest.approx(52 * MS)
    useful = sum(v.useful_ns(shape) for v in vcpus)
    assert useful == pytest.approx(51.4 * MS)
    assert efficiency(useful, optimum) == pytest.approx(51.4 / 52)
    assert efficiency(useful, optimum) < 0.99


def test_optimum_cache_reuses_equal_buckets() -> None:
    # Overloaded node 0 and a node-1 domain: the LP of test_lp_gives_each_node... (40 ms),
    # solved once for two equal buckets, again for a different one.
    opt = Optimum(TWO)
    x = [VcpuUsage("X", i, 0, ALL, (5 * MS, 0), 10 * MS) for i in range(4)]
    y = [VcpuUsage("Y", i, 1, ALL, (0, 10 * MS), 10 * MS) for i in range(2)]
    first = opt.of(Bucket(0, 10 * MS, (*x, *y), (20 * MS, 20 * MS)))
    again = opt.of(Bucket(10 * MS, 20 * MS, (*x, *y), (20 * MS, 20 * MS)))
    assert first == again == pytest.approx(40 * MS)
    assert opt.solved == 1
    opt.of(Bucket(20 * MS, 30 * MS, (*x[:3], *y), (20 * MS, 20 * MS)))
    assert opt.solved == 2


def test_optimum_shortcuts() -> None:
    opt = Optimum(TWO)
    # Everyone ran at home all the time it wanted: the optimum is the demand, no LP.
    home = [VcpuUsage("X", 0, 0, ALL, (7 * MS, 0), 7 * MS),
            VcpuUsage("Y", 0, 1, ALL, (0, 10 * MS), 10 * MS)]
    assert opt.of(Bucket(0, 10 * MS, tuple(home), (7 * MS, 10 * MS))) == 17 * MS
    # One class alone: 3 vCPUs homed on node 1, one waiting: 20 ms at home + 10 x 0.7 = 27.
    alone = [VcpuUsage("Y", i, 1, ALL, (0, 5 * MS), 10 * MS) for i in range(3)]
    assert opt.of(Bucket(0, 10 * MS, tuple(alone), (0, 15 * MS))) == pytest.approx(27 * MS)
    # Two pools never compete: each is its own single-class problem. P = {0}: 2 vCPUs homed
    # on node 1 get 10 ms x 0.7 = 7; Q = {1, 2, 3}: 1 vCPU homed on node 0 gets 10 at home.
    p = [VcpuUsage("P", i, 1, frozenset({0}), (5 * MS, 0), 10 * MS) for i in range(2)]
    q = [VcpuUsage("Q", 0, 0, frozenset({1, 2, 3}), (0, 10 * MS), 10 * MS)]
    assert opt.of(Bucket(0, 10 * MS, (*p, *q), (10 * MS, 10 * MS))) == pytest.approx(17 * MS)
    assert opt.solved == 0


@settings(deadline=None, max_examples=100)
@given(st.lists(st.tuples(st.integers(0, 1), st.sets(st.integers(0, 3), min_size=1),
                          st.integers(0, 10), st.integers(0, 10), st.integers(0, 10)),
                min_size=1, max_size=8))
def test_optimum_equals_the_plain_lp(vcpus: list[tuple[int, set[int], int, int, int]]) -> None:
    # Whatever shortcut Optimum takes, it agrees with one LP over all classes. The run times
    # form a feasible schedule: each vCPU runs at most its demand, on allowed pCPUs that
    # still have time left (home node first).
    free = {cpu: 10 for cpu in range(4)}
    usages = []
    for i, (home, allowed, demand, at_home, away) in enumerate(vcpus):
        run = [0, 0]
        left = demand
        for cpu in sorted(allowed, key=lambda c: (c // 2 != home, c)):
            want = min(left, at_home if cpu // 2 == home else away)
            take = min(want, free[cpu])
            free[cpu] -= take
            left -= take
            run[cpu // 2] += take * MS
            if cpu // 2 == home:
                at_home -= take
            else:
                away -= take
        usages.append(VcpuUsage("D", i, home, frozenset(allowed), (run[0], run[1]), demand * MS))
    bucket = Bucket(0, 10 * MS, tuple(usages), (0, 0))
    plain = max_useful_work([Demand(v.home, v.allowed, v.demand_ns) for v in usages], TWO,
                            10 * MS)
    assert Optimum(TWO).of(bucket) == pytest.approx(plain, abs=1e-3)


def test_efficiency_edges() -> None:
    assert efficiency(0.0, 0.0) == 1.0
    assert efficiency(5.0, 10.0) == 0.5
    assert efficiency(10.0 + 1e-9, 10.0) == 1.0  # solver round-off
    with pytest.raises(ValueError, match="beats the optimum"):
        efficiency(11.0, 10.0)
    with pytest.raises(ValueError, match="no demand"):
        efficiency(1.0, 0.0)


def test_tally_locality_utilisation_migrations() -> None:
    # A: 2 vCPUs homed on node 0; vCPU 0 runs 10 ms at home, vCPU 1 runs 4 ms at home and
    # 6 ms on node 1 (it migrated once, across nodes). B: homed on node 1, paused (no run).
    # A's locality = 14 / 20 = 0.7; useful = 14 + 0.7 x 6 = 18.2 ms.
    # Optimum: A wants 20 ms, node 0 has 2 pCPUs: 20 ms at home -> efficiency 0.91.
    # Utilisation: node 0 busy 14 ms of 2 x 10, node 1 busy 6 of 20: 0.7 and 0.3.
    a0 = VcpuUsage("A", 0, 0, ALL, (10 * MS, 0), 10 * MS)
    a1 = VcpuUsage("A", 1, 0, ALL, (4 * MS, 6 * MS), 10 * MS, migrations=1, node_moves=1)
    b0 = VcpuUsage("B", 0, 1, ALL, (0, 0), 0)
    bucket = Bucket(0, 10 * MS, (a0, a1, b0), (14 * MS, 6 * MS))
    tally = Tally(nodes=2)
    tally.add(BucketSums.of(bucket, TWO, Optimum(TWO).of(bucket)))
    assert tally.domains["A"].locality == pytest.approx(0.7)
    assert tally.domains["B"].locality is None
    assert tally.host_locality == pytest.approx(0.7)
    assert tally.useful_ns == pytest.approx(18.2 * MS)
    assert tally.efficiency == pytest.approx(0.91)
    assert tally.utilisation(TWO) == pytest.approx([0.7, 0.3])
    assert (tally.migrations, tally.node_moves) == (1, 1)
    assert Tally(nodes=2).host_locality is None and Tally(nodes=2).efficiency == 1.0


def scores(effs: list[float], step: int = 10) -> list[Score]:
    return [Score(i * step, (i + 1) * step, 10 * e, 10.0) for i, e in enumerate(effs)]


def test_sliding_window_starts_at_the_event() -> None:
    # Buckets of 10: eff 0.5 until 80, then 1. Event at 50, window 30:
    # ends 60, 70, 80 -> only post-event buckets, all 0.5; end 90 covers 60-90: (5+5+10)/30;
    # end 100: (5+10+10)/30; end 110: 1.0.
    series = sliding_efficiency(scores([0.5] * 8 + [1.0] * 12), since_ns=50, window_ns=30)
    assert [t for t, _ in series][:6] == [60, 70, 80, 90, 100, 110]
    assert [e for _, e in series][:6] == pytest.approx([0.5, 0.5, 0.5, 2 / 3, 5 / 6, 1.0])


def test_recovery_time() -> None:
    s = scores([0.5] * 8 + [1.0] * 12)  # 0..200
    # From the series above, 0.99 is reached at 110 and held to the end: 110 - 50 = 60.
    assert recovery_ns(s, 50, 200, window_ns=30) == 60
    # A dip at the end of the phase means it never recovered for good.
    dip = scores([0.5] * 8 + [1.0] * 10 + [0.0, 0.0])
    assert recovery_ns(dip, 50, 200, window_ns=30) is None
    # ... but a phase that ends before the dip recovered at 60.
    assert recovery_ns(dip, 50, 170, window_ns=30) == 60
    # Efficient from the first bucket: recovered when that bucket ends.
    assert recovery_ns(scores([1.0] * 20), 50, 200, window_ns=30) == 10
    # A dip in the middle delays recovery to after the dip has left the window:
    # dip bucket 120-130; windows ending 130, 140, 150 contain it; 160 is clean.
    mid = scores([1.0] * 12 + [0.0] + [1.0] * 7)
    assert recovery_ns(mid, 50, 200, window_ns=30) == 110


@settings(deadline=None, max_examples=60)
@given(
    st.lists(st.tuples(st.integers(0, 1), st.sets(st.integers(0, 3), min_size=1),
                       st.integers(0, 3)), min_size=1, max_size=6)
)
def test_lp_bounds_hold(classes: list[tuple[int, set[int], int]]) -> None:
    # Never more than the demand or the host's capacity; never less than a feasible
    # placement built greedily (each class in turn takes free allowed pCPUs, home first).
    demands = [Demand(h, frozenset(a), n * 10.0 * MS) for h, a, n in classes]
    best = max_useful_work(demands, TWO, 10 * MS)
    assert best <= sum(d.demand_ns for d in demands) + 1e-3
    assert best <= 4 * 10 * MS + 1e-3
    free = {cpu: 10.0 * MS for cpu in range(4)}
    greedy = 0.0
    for d in demands:
        want = d.demand_ns
        for cpu in sorted(d.allowed, key=lambda c: (c // 2 != d.home, c)):
            take = min(want, free[cpu])
            free[cpu] -= take
            want -= take
            greedy += take * TWO.speed(d.home, cpu // 2)
    assert best >= greedy - 1e-3


def test_node_shares() -> None:
    a0 = VcpuUsage("A", 0, 0, ALL, (10, 0), 10)
    a1 = VcpuUsage("A", 1, 0, ALL, (2, 8), 10)
    b0 = VcpuUsage("B", 0, 1, ALL, (0, 0), 0)
    assert node_shares([a0, a1, b0], 2) == {"A": [0.6, 0.4], "B": [0.0, 0.0]}


# -- fair shares ----------------------------------------------------------------------------


def seed_like(a_run: list[tuple[int, int]], bc_run: list[tuple[int, int]]) -> Bucket:
    """The seed's first phase in small: A (2 vCPUs, home node 0), B and C (2 each, home
    node 1), all wanting the whole 30 ms bucket on the 4 pCPUs: each is due 40 ms."""
    vcpus = [VcpuUsage("A", i, 0, ALL, (r[0] * MS, r[1] * MS), 30 * MS)
             for i, r in enumerate(a_run)]
    for name in "BC":
        vcpus += [VcpuUsage(name, i, 1, ALL, (r[0] * MS, r[1] * MS), 30 * MS)
                  for i, r in enumerate(bc_run)]
    busy = [sum(v.run_ns[n] for v in vcpus) for n in range(2)]
    return Bucket(0, 30 * MS, tuple(vcpus), (busy[0], busy[1]))


def test_fair_optimum_keeps_every_domain_at_its_share() -> None:
    # Plain optimum: A fills node 0, B and C node 1 (120 ms, everyone at home). Within
    # fair shares (40 ms each): A 40 at home, B and C 30 at home + 10 remote each (0.7):
    # 40 + 2 x 37 = 114 ms.
    bucket = seed_like([(30, 0), (30, 0)], [(0, 15), (0, 15)])
    plain = Optimum(TWO).of(bucket)
    fair = FairOptimum(TWO).of(bucket, plain)
    assert plain == pytest.approx(120 * MS)
    assert fair.shares == pytest.approx({"A": 40 * MS, "B": 40 * MS, "C": 40 * MS})
    assert fair.optimum_ns == pytest.approx(114 * MS)


def test_locality_bought_by_starving_scores_on_efficiency_only() -> None:
    # A holds node 0 whole (60 ms), B and C queue on node 1 (30 ms each): every ns is
    # useful, so efficiency is 1; but A is credited only its due (40 of its 60 ms, + 5 %
    # tolerance): (42 + 30 + 30) / 114 for fair efficiency, and Jain over
    # (1.5, 0.75, 0.75) = 8/9.
    starved = seed_like([(30, 0), (30, 0)], [(0, 15), (0, 15)])
    # credit1's own answer: A 40, B and C 40 each, a third of it on node 0.
    fair = seed_like([(20, 0), (20, 0)], [(5, 15), (5, 15)])
    for bucket, eff, fair_eff, jain in ((starved, 1.0, 102 / 114, 8 / 9),
                                        (fair, 114 / 120, 1.0, 1.0)):
        tally = Tally(nodes=2)
        tally.add(BucketSums.of(bucket, TWO, Optimum(TWO).of(bucket)))
        assert tally.efficiency == pytest.approx(eff)
        assert tally.fair_efficiency == pytest.approx(fair_eff)
        assert tally.jain == pytest.approx(jain)
        assert tally.domains["A"].fair_ns == pytest.approx(40 * MS)


def test_without_overcommit_the_fair_bound_is_the_plain_one() -> None:
    opt, fair = Optimum(TWO), FairOptimum(TWO)
    x = [VcpuUsage("X", i, 0, ALL, (10 * MS, 0), 10 * MS) for i in range(2)]
    y = [VcpuUsage("Y", 0, 0, ALL, (0, 10 * MS), 10 * MS)]
    bucket = Bucket(0, 10 * MS, (*x, *y), (20 * MS, 10 * MS))
    plain = opt.of(bucket)
    assert fair.of(bucket, plain).optimum_ns == plain
    assert fair.solved == 0


def test_fair_shares_follow_weights_and_pools() -> None:
    # Pool "p" is pCPUs 2-3: H (weight 512) and L (256) both want 30 ms of its 20:
    # 13.3 and 6.7. Pool-0 (pCPUs 0-1) has Z alone, due its demand.
    shape = Shape(TWO.node_cpus, TWO.distances, pools={"p": frozenset({2, 3})})
    assert shape.pool_size("p") == 2 and shape.pool_size("Pool-0") == 2
    h = [VcpuUsage("H", i, 1, frozenset({2, 3}), (0, 7 * MS), 10 * MS, pool="p", weight=512)
         for i in range(3)]
    low = [VcpuUsage("L", i, 1, frozenset({2, 3}), (0, 2 * MS), 10 * MS, pool="p")
           for i in range(3)]
    z = [VcpuUsage("Z", 0, 0, frozenset({0, 1}), (5 * MS, 0), 5 * MS)]
    shares = fair_ns_of(Bucket(0, 10 * MS, (*h, *low, *z), (5 * MS, 20 * MS)), shape)
    assert shares == pytest.approx({"H": 40 / 3 * MS, "L": 20 / 3 * MS, "Z": 5 * MS})


def test_a_domain_within_the_tolerance_is_fairly_served() -> None:
    # A 5 % over its share loses nothing; 10 % over, the part beyond 5 %.
    d = DomainTally(run_ns=105, useful_ns=105.0, fair_ns=100.0)
    assert d.fair_useful_ns == 105.0
    d = DomainTally(run_ns=110, useful_ns=110.0, fair_ns=100.0)
    assert d.fair_useful_ns == pytest.approx(105.0)
    assert FAIR_TOLERANCE == 0.05


def test_sliding_fair_efficiency_compares_shares_over_the_window() -> None:
    # Two buckets: A ahead in the first, B in the second; over both, even.
    def score(i: int, a: float, b: float) -> Score:
        return Score(i * 10, (i + 1) * 10, a + b, 10.0, 10.0,
                     {"A": (a, a, 5.0), "B": (b, b, 5.0)})
    series = sliding_fair_efficiency([score(0, 7, 3), score(1, 3, 7)], 0, 20)
    assert series[0] == (10, pytest.approx(0.825))  # A credited 5 (+ 5 %) of 7
    assert series[1] == (20, 1.0)
