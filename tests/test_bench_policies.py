"""The benchmark's baselines behave as named (benchmarks/policies.py, benchmarks/harness.py).

Static pinning (rules/baselines/static_pinning.toml, run by the agent) keeps
every vCPU on its home node; the seed's workaround (seed_workaround.toml)
narrows hard affinity to the soft mask for 2 s every 10 s; the numad port
moves at most one domain per cycle, keeps its cycle lengths (5 s after a move,
15 s otherwise) and leaves a domain it bound alone for 300 s.
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.daemon.simhost import Delayed
from agent.hypervisor.model import CpuSet
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import Scenario, parse_scenario
from benchmarks.compare import SUITE, Entry, fair_efficiency_table, verdict
from benchmarks.harness import (
    CountingHypervisor,
    RecordingHost,
    run_policy,
    run_rules,
)
from benchmarks.policies import (
    POLICIES,
    Numad,
    NumadNode,
    NumadProcess,
    combined_value_of_weighted_resources,
    pick_numa_nodes,
    policy,
)
from benchmarks.report import MarkerError, replace_text

NODE0, NODE1 = frozenset(range(0, 4)), frozenset(range(4, 8))
ALL = NODE0 | NODE1

TINY = """
name = "tiny"
duration_s = {duration}
seed = 2
[host]
[[host.nodes]]
cpus = 4
memory_gib = 16
[[host.nodes]]
cpus = 4
memory_gib = 16
[dom0]
vcpus = 1
memory_gib = 1
memory_nodes = [0]
pins = [0]
workload = "idle"
[domains.A]
vcpus = 3
memory_gib = 2
soft = "node:0"
memory_nodes = [0]
[domains.B]
vcpus = 3
memory_gib = 2
soft = "node:1"
memory_nodes = [1]
[domains.C]
vcpus = 2
memory_gib = 2
soft = "node:1"
memory_nodes = [1]
{extra}
"""

# A paused: B and C (5 vCPUs homed on node 1's 4 pCPUs) spill onto node 0.
PAUSE_A = """
[[timeline]]
at_s = 1.0
action = "pause"
domain = "A"
"""


def tiny(duration: float = 3.0, extra: str = "") -> Scenario:
    return parse_scenario(TINY.format(duration=duration, extra=extra), source="tiny.toml")


def run_agent(scenario: Scenario, agent: object, hv_wrap: type | None = None) -> Runner:
    runner = Runner(scenario, RecordingHost)
    inner = SimHypervisor(runner.host)  # type: ignore[arg-type]
    hv = hv_wrap(inner) if hv_wrap is not None else inner

    async def main() -> None:
        await runner.run_async(Delayed(agent, 0.099), hypervisor=hv)  # type: ignore[arg-type]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return runner


class LoggingHypervisor(CountingHypervisor):
    """Every affinity call with the time it was made."""

    def __init__(self, inner: SimHypervisor) -> None:
        super().__init__(inner)
        self.log: list[tuple[float, int, int, CpuSet | None]] = []

    async def set_vcpu_affinity(self, domid: int, vcpu: int, hard: CpuSet | None,
                                soft: CpuSet | None) -> None:
        self.log.append((trio.current_time(), domid, vcpu, hard))
        await super().set_vcpu_affinity(domid, vcpu, hard, soft)


# -- static pinning and the seed's workaround: rule sets (rules/baselines/) ---------------


def test_static_pinning_keeps_every_vcpu_on_its_home_node() -> None:
    pol = policy("static")
    assert pol.kind == "rules" and pol.rules_path is not None
    runner, result, calls, actions = run_rules(tiny(extra=PAUSE_A), pol.rules_path)
    host = runner.host
    assert isinstance(host, SimHost)
    assert actions["domain.set_hard"] == 3 and calls.narrowings == 8
    for name, home in (("A", NODE0), ("B", NODE1), ("C", NODE1)):
        for v in host.vcpu_info(host.domid_of(name)):
            assert v.hard == home
    # B and C stay on node 1 even while A's node is idle (what pinning costs).
    paused = result.phases[-1].tally
    for name in ("B", "C"):
        assert paused.domains[name].locality == 1.0
    assert paused.efficiency < 0.95
    assert host.vcpu_info(0)[0].hard == frozenset({0})  # dom0 left as it was


def test_seed_workaround_narrows_to_soft_then_restores_every_period() -> None:
    pol = policy("seed-workaround")
    assert pol.kind == "rules" and pol.rules_path is not None
    holder: list[LoggingHypervisor] = []

    def wrap(inner: SimHypervisor) -> LoggingHypervisor:
        holder.append(LoggingHypervisor(inner))
        return holder[-1]

    runner, _, _, actions = run_rules(tiny(duration=28.0), pol.rules_path, wrap)
    log = holder[0].log
    soft = {1: NODE0, 2: NODE1, 3: NODE1}
    # Through a chosen pCPU or not, a narrowing ends at the domain's soft node.
    narrowed = [(t, d, v) for t, d, v, hard in log if hard == soft.get(d)]
    rounds = sorted({round(t, 1) for t, _, _ in narrowed})
    # 5 s past each ten seconds of the agent's clock (it starts at 0.099 s, ticks
    # every second; the tick's scan may wait half a poll interval).
    assert rounds == [pytest.approx(5.1 + 10.0 * k, abs=0.06) for k in range(3)]
    vcpus = sorted((d, v) for d in soft for v in range(3 if d in (1, 2) else 2))
    for rounded in rounds:
        this = sorted((d, v) for t, d, v in narrowed if abs(t - rounded) < 0.1)
        assert this == vcpus
        start = min(t for t, _, _ in narrowed if abs(t - rounded) < 0.1)
        restored = sorted((d, v) for t, d, v, hard in log
                          if hard == ALL and start + 2.0 - 1e-6 <= t <= start + 2.1)
        assert restored == vcpus
    assert actions["domain.set_hard"] == 9 and actions["restore_hard"] == 24
    host = runner.host
    assert isinstance(host, SimHost)
    assert all(v.hard == ALL for d in (1, 2, 3) for v in host.vcpu_info(d))


# -- numad ----------------------------------------------------------------------------------


def test_numad_magnitude_is_numads_formula() -> None:
    # (needed_mem * 10 + excess_mem * 4) * (needed_cpu * 6 + excess_cpu)
    assert combined_value_of_weighted_resources(100, 50, 300, 40) == (1000 + 800) * (240 + 0)


def test_numad_picks_the_node_holding_the_memory() -> None:
    nodes = [NumadNode(0, 400, 300, 10000, 5000, (10, 20)),
             NumadNode(1, 400, 300, 10000, 5000, (20, 10))]
    p = NumadProcess(5, "vm", threads=4, cpus_used=200, mbs_used=2000, mbs_per_node=(0, 2000))
    assert pick_numa_nodes(p, 235, 2352, nodes, assume_enough_cpus=True) == frozenset({1})
    p = NumadProcess(5, "vm", threads=4, cpus_used=200, mbs_used=2000, mbs_per_node=(2000, 0))
    assert pick_numa_nodes(p, 235, 2352, nodes, assume_enough_cpus=True) == frozenset({0})


def test_numad_binds_one_domain_per_cycle_with_its_intervals() -> None:
    numad = Numad()
    runner = run_agent(tiny(duration=40.0), numad)
    binds = numad.binds
    # Biggest CPU x memory first: A (3 vCPUs alone on node 0), then B, then C (B's 3 and
    # C's 2 vCPUs share node 1's 4 pCPUs).
    assert [d for _, d, _ in binds] == [1, 2, 3]
    times = [t for t, _, _ in binds]
    assert all(b - a >= 5.0 - 1e-9 for a, b in itertools.pairwise(times))
    assert len({round(t, 6) for t in times}) == len(times)  # one per cycle
    assert [i for _, i in numad.cycles] == [5, 5, 5, 15, 15]
    assert [d for _, d, _ in binds].count(1) == 1  # never again within 300 s
    host = runner.host
    assert isinstance(host, SimHost)
    assert all(v.hard == NODE0 for v in host.vcpu_info(1))  # a hard binding
    assert {frozenset(v.hard) for d in (2, 3) for v in host.vcpu_info(d)} == {NODE1}


async def test_numad_leaves_a_domain_bound_less_than_300_s_ago(
    autojump_clock: trio.testing.MockClock,
) -> None:
    host = SimHost(tiny().host)
    for spec in tiny().domains:
        host.create_domain(spec)
    hv = SimHypervisor(host)
    await trio.sleep(1000.0)  # well past any start-up

    def setup(bound_ago: float) -> Numad:
        numad = Numad()
        # A (domid 1) uses 3 CPUs, its memory all on node 0, bound to node 1: misplaced.
        numad.processes[1] = NumadProcess(1, "A", threads=3, cpus_used=300, mbs_used=2048,
                                          mbs_per_node=(2048, 0), node_list=frozenset({1}),
                                          bind_time=trio.current_time() - bound_ago)
        return numad

    # Node 1 busy (A's own use counts as free there), node 0 has room and A's memory.
    nodes = [NumadNode(0, 400, 350, 16384, 8000, (10, 20)),
             NumadNode(1, 400, 0, 16384, 8000, (20, 10))]
    recent = setup(10.0)
    assert await recent.manage_loads(hv, nodes) == 15  # skipped: nothing moved
    assert recent.binds == []
    old = setup(301.0)
    assert await old.manage_loads(hv, nodes) == 5
    assert [(d, sorted(n)) for _, d, n in old.binds] == [(1, [0])]
    assert all(v.hard == NODE0 for v in host.vcpu_info(1))


# -- the harness ----------------------------------------------------------------------------


async def test_counting_hypervisor_tells_narrowing_from_restoring() -> None:
    host = SimHost(tiny().host)
    for spec in tiny().domains:
        host.create_domain(spec)
    hv = CountingHypervisor(SimHypervisor(host))
    await hv.set_vcpu_affinity(1, 0, NODE0, None)
    await hv.set_vcpu_affinity(1, 0, ALL, None)
    await hv.set_vcpu_affinity(1, 0, None, NODE1)
    assert (hv.calls.affinity, hv.calls.narrowings, hv.calls.widenings, hv.calls.soft) == (
        3, 1, 1, 1)


def test_run_policy_records_a_scheduler_alone_run() -> None:
    rec = run_policy(tiny(extra=PAUSE_A), policy("credit2"))
    assert rec.scheduler == "credit2" and rec.policy == "credit2"
    assert [p.name for p in rec.phases] == ["start", "pause A"]
    assert 0.0 < rec.efficiency <= 1.0
    assert rec.affinity_calls == rec.narrowings == rec.narrowed_at_end == 0
    assert set(rec.shares) == {"A", "B", "C"}  # dom0 is idle: due nothing
    assert 0.0 < rec.jain <= 1.0
    assert rec.series and all(0.0 <= e <= 1.0 for _, e in rec.series)
    assert 0.0 < rec.fair_efficiency <= 1.0


def test_every_policy_names_its_source_and_the_suite_loads() -> None:
    assert [p.name for p in POLICIES] == ["credit1", "credit2", "static", "seed-workaround",
                                          "numad", "xnuma"]
    assert all(p.source for p in POLICIES)
    for entry in SUITE:
        assert entry.load().duration_s > 0


class _Eff:
    def __init__(self, efficiency: float) -> None:
        self.efficiency = efficiency


class _Fair:
    def __init__(self, fair_efficiency: float) -> None:
        self.fair_efficiency = fair_efficiency


def test_fair_efficiency_table_bolds_the_best_of_each_row() -> None:
    records = {("s", p.name): _Fair(0.9) for p in POLICIES}
    records[("s", "xnuma")] = _Fair(0.99)
    table = fair_efficiency_table([Entry("s", "s.toml", "t")], records)  # type: ignore[arg-type]
    assert table.splitlines()[-1] == "| s | " + " | ".join(["0.9000"] * 5) + " | **0.9900** |"


def test_verdict_says_when_a_baseline_beats_xnuma() -> None:
    records = {("s", p.name): _Eff(0.9) for p in POLICIES}
    records[("s", "xnuma")] = _Eff(0.95)
    assert verdict(records, "s").startswith("yes (+0.0500 over")  # type: ignore[arg-type]
    records[("s", "static")] = _Eff(0.97)
    assert verdict(records, "s") == "**NO: static is 0.0200 higher**"  # type: ignore[arg-type]
    assert isinstance(SUITE[0], Entry)


def test_tables_go_between_their_markers() -> None:
    text = "a\n<!-- bench:x:begin -->\nold\n<!-- bench:x:end -->\nb\n"
    assert replace_text(text, "x", "new\n") == (
        "a\n<!-- bench:x:begin -->\nnew\n<!-- bench:x:end -->\nb\n")
    with pytest.raises(MarkerError, match="bench:y:begin"):
        replace_text(text, "y", "new")
