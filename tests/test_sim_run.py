"""The runner: buckets, timeline events, phases, results, against a scripted host and the
real engine."""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
import trio
from trio.testing import MockClock

from agent.hypervisor.interface import Hypervisor
from agent.hypervisor.model import CpuSet, DomainInfo, DomainState
from agent.sim.accounting import Accounting, VcpuAccounting
from agent.sim.run import AgentReport, Runner
from agent.sim.scenario import parse_scenario
from agent.sim.spec import DomainSpec, HostSpec, Idle, Workload

MS = 1_000_000

# 2 nodes x 3 pCPUs (0-2, 3-5); X (2 vCPUs) lives on node 0, Y (2, paused) and Z (1,
# created at 25 ms) on node 1.
SCENARIO = """
name = "tiny"
duration_s = 0.1
first_phase = "X alone"
[host]
[[host.nodes]]
cpus = 3
memory_mib = 1024
[[host.nodes]]
cpus = 3
memory_mib = 1024
[domains.X]
vcpus = 2
memory_mib = 256
memory_nodes = [0]
[domains.Y]
vcpus = 2
memory_mib = 256
memory_nodes = [1]
paused = true
[domains.Z]
vcpus = 1
memory_mib = 256
memory_nodes = [1]
[[timeline]]
at_s = 0.025
action = "unpause"
domain = "Y"
phase = "Y up"
[[timeline]]
at_s = 0.025
action = "create"
domain = "Z"
[[timeline]]
at_s = 0.06
action = "set-load"
domain = "Y"
workload = "idle"
[[timeline]]
at_s = 0.08
action = "set-affinity"
domain = "X"
vcpus = 1
hard = "node:1"
"""


@dataclass
class _Dom:
    spec: DomainSpec
    paused: bool
    home: int
    where: list[int]  # node each vCPU runs on
    idle: list[bool] = field(default_factory=list)


class ScriptedHost:
    """A host whose accounting the test writes: every unpaused, non-idle vCPU runs the whole
    bucket on the node ``where`` says (home unless a test moves it)."""

    def __init__(self, spec: HostSpec) -> None:
        self.spec = spec
        self.now = 0
        self.last = 0
        self.doms: dict[int, _Dom] = {}
        self.calls: list[tuple[int, str, object]] = []
        self.overrun = 1  # > 1 makes the accounting impossible

    @property
    def now_ns(self) -> int:
        return self.now

    def create_domain(self, spec: DomainSpec, *, paused: bool = False) -> int:
        domid = len(self.doms) + 1
        home = spec.memory_nodes[0] if spec.memory_nodes else 0
        self.doms[domid] = _Dom(spec, paused, home, [home] * spec.vcpus, [False] * spec.vcpus)
        self.calls.append((self.now, "create", (spec.name, paused)))
        return domid

    def pause(self, domid: int) -> None:
        self.doms[domid].paused = True
        self.calls.append((self.now, "pause", domid))

    def unpause(self, domid: int) -> None:
        self.doms[domid].paused = False
        self.calls.append((self.now, "unpause", domid))

    def destroy(self, domid: int) -> None:
        del self.doms[domid]

    def set_workload(self, domid: int, vcpu: int | None, workload: Workload) -> None:
        self.calls.append((self.now, "set_workload", (domid, vcpu, workload)))
        for i in range(len(self.doms[domid].idle)) if vcpu is None else [vcpu]:
            self.doms[domid].idle[i] = isinstance(workload, Idle)

    def set_affinity(
        self, domid: int, vcpu: int | None, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        self.calls.append((self.now, "set_affinity", (domid, vcpu, hard, soft)))
        if hard is not None and vcpu is not None:
            self.doms[domid].where[vcpu] = min(hard) // 3

    def advance(self, until_ns: int) -> None:
        assert until_ns >= self.now
        self.now = until_ns

    def domain_info(self) -> list[DomainInfo]:
        return [DomainInfo(k, d.spec.name, "", DomainState.RUNNING, d.spec.vcpus, 0)
                for k, d in self.doms.items()]

    def memory_per_node(self, domid: int) -> tuple[int, ...]:
        d = self.doms[domid]
        return (d.spec.memory_mib * 1024, 0) if d.home == 0 else (0, d.spec.memory_mib * 1024)

    def take_accounting(self) -> Accounting:
        length = self.now - self.last
        rows: dict[tuple[int, int], VcpuAccounting] = {}
        busy = [0, 0]
        for domid, d in sorted(self.doms.items()):
            for i, node in enumerate(d.where):
                if d.paused or d.idle[i]:
                    continue
                run = [0, 0]
                run[node] = length * self.overrun
                busy[node] += length * self.overrun
                rows[(domid, i)] = VcpuAccounting((run[0], run[1]), length, 0, 0)
        acct = Accounting(self.last, self.now, rows, (busy[0], busy[1]))
        self.last = self.now
        return acct


def make_runner(**kwargs: int) -> tuple[Runner, ScriptedHost]:
    hosts: list[ScriptedHost] = []

    def factory(spec: HostSpec) -> ScriptedHost:
        hosts.append(ScriptedHost(spec))
        return hosts[-1]

    runner = Runner(parse_scenario(SCENARIO, source="tiny.toml"), factory, **kwargs)
    runner.start()
    return runner, hosts[0]


def test_runner_follows_the_timeline() -> None:
    runner, host = make_runner()
    stops = []
    while runner.step():
        stops.append(runner.now_ns // MS)
    # The 10 ms grid, cut at the event instants 25, 60 and 80 (on the grid), to the end.
    assert stops == [10, 20, 25, 30, 40, 50, 60, 70, 80, 90]
    assert runner.now_ns == 100 * MS and not runner.step()
    assert host.calls == [
        (0, "create", ("X", False)),
        (0, "create", ("Y", True)),  # paused = true
        (25 * MS, "unpause", 2),
        (25 * MS, "create", ("Z", False)),
        (60 * MS, "set_workload", (2, None, Idle())),
        (80 * MS, "set_affinity", (1, 1, frozenset({3, 4, 5}), None)),
    ]


def test_phases_and_metrics_from_hand_made_accounting() -> None:
    runner, _ = make_runner()
    result = runner.run()
    # Events at one instant open one phase, named by its first ``phase`` key, else after
    # the event.
    assert [(p.name, p.start_ns // MS, p.end_ns // MS) for p in result.phases] == [
        ("X alone", 0, 25), ("Y up", 25, 60), ("set-load Y idle", 60, 80),
        ("set-affinity X vcpus 1 hard 3-5", 80, 100)]
    doc = result.to_dict()
    alone, up, idle, pinned = doc["phases"]
    # X alone, at home: 2 of node 0's 3 pCPUs busy, node 1 idle.
    assert (alone["host_locality"], alone["efficiency"]) == (1.0, 1.0)
    assert alone["utilisation"] == [0.667, 0.0]
    assert list(alone["domains"]) == ["X"]
    # Everyone at home: node 1 runs Y's 2 vCPUs and Z: full.
    assert up["utilisation"] == [0.667, 1.0] and up["efficiency"] == 1.0
    assert list(up["domains"]) == ["X", "Y", "Z"]
    # Y idle: it wants nothing, so it is not in the phase's domains.
    assert list(idle["domains"]) == ["X", "Z"] and idle["utilisation"] == [0.667, 0.333]
    # X's vCPU 1 hard-pinned to node 1 by the scenario runs remote: X's locality is 1/2,
    # the host's (X0 + Z at home, X1 away) 2/3. Efficiency stays 1: per 10 ms, useful =
    # X0 10 + X1 0.7 x 10 + Z 10 = 27 ms, and the optimum, bound by the same hard
    # affinity, is also 27 ms.
    assert pinned["domains"]["X"]["locality"] == 0.5
    assert pinned["host_locality"] == 0.6667
    assert pinned["efficiency"] == 1.0
    assert pinned["domains"]["X"]["useful_s"] == 0.034  # (10 + 7) x 2 buckets
    # Each event: efficient from its first bucket (5 ms for the 25 ms one, then 10 ms);
    # no pool is overcommitted, so fair shares bind nothing and fair efficiency recovers
    # with it.
    assert doc["events"] == [
        {"at_s": 0.025, "what": "unpause Y", "recovery_s": 0.005, "fair_recovery_s": 0.005},
        {"at_s": 0.025, "what": "create Z", "recovery_s": 0.005, "fair_recovery_s": 0.005},
        {"at_s": 0.06, "what": "set-load Y idle", "recovery_s": 0.01, "fair_recovery_s": 0.01},
        {"at_s": 0.08, "what": "set-affinity X vcpus 1 hard 3-5", "recovery_s": 0.01,
         "fair_recovery_s": 0.01},
    ]
    assert doc["agent"] is False and doc["actions"] == {}
    assert doc["temporary_pins_outstanding"] == 0


class Misplacer:
    """A stand-in scheduler mistake, played through the agent hook: at 40 ms Y's vCPU 0
    moves to node 0 (room: X uses 2 of 3 pCPUs), at 50 ms it goes back."""

    def __init__(self) -> None:
        self.moves = 0

    def on_bucket(self, runner: Runner) -> None:
        host = runner.host
        assert isinstance(host, ScriptedHost)
        if runner.now_ns in (40 * MS, 50 * MS):
            host.doms[2].where[0] = 0 if runner.now_ns == 40 * MS else 1
            self.moves += 1

    def report(self) -> AgentReport:
        return AgentReport(actions={"move": self.moves}, temporary_pins_outstanding=1)


@pytest.mark.parametrize(("window_ms", "recovery"), [(250, None), (20, None), (10, 0.035)])
def test_recovery_after_a_dip(window_ms: int, recovery: float | None) -> None:
    # Phase "Y up" is 25-60 ms; buckets 25-30 (25 ms of useful work of 25 possible),
    # 30-40 (50 of 50), 40-50 with Y0 away (47 of 50: 0.7 x 10 instead of 10), 50-60 (50).
    # Window clipped at the event (25 ms): ending at 60 it covers
    #   250 ms -> 25..60: 172/175 = 0.983 < 0.99: never recovered;
    #    20 ms -> 40..60: 97/100 = 0.97: never;
    #    10 ms -> 50..60: 1.0, and every later window too: recovered at 60, 35 ms after.
    runner, _ = make_runner(window_ns=window_ms * MS)
    hook = Misplacer()
    doc = runner.run(hook).to_dict()
    assert doc["events"][0]["recovery_s"] == recovery
    up = doc["phases"][1]
    # Phase efficiency: (25 + 50 + 47 + 50) / (25 + 50 + 50 + 50) = 172 / 175.
    assert up["efficiency"] == round(172 / 175, 4)
    assert up["domains"]["Y"]["locality"] == 0.8571  # 60 of 70 ms at home
    assert doc["agent"] is True
    assert doc["actions"] == {"move": 2} and doc["temporary_pins_outstanding"] == 1


def test_impossible_accounting_is_refused() -> None:
    # A host that reports a vCPU running twice as long as the bucket (more than it wanted,
    # more than a pCPU has): useful work beats the optimum, and the runner refuses it.
    runner, host = make_runner()
    runner.step()
    host.overrun = 2
    with pytest.raises(ValueError, match="beats the optimum"):
        runner.step()


# -- under trio, with an agent beside the real engine ------------------------------------

AGENT_SCENARIO = """
name = "pinned"
duration_s = 0.1
[host]
[[host.nodes]]
cpus = 2
memory_mib = 1024
[[host.nodes]]
cpus = 2
memory_mib = 1024
[domains.X]
vcpus = 2
memory_mib = 256
memory_nodes = [0]
soft = "node:0"
"""


class PinAgent:
    """Pins X's vCPU 1 to node 1 at 45 ms and restores it at 75 ms, through the
    Hypervisor interface, noting where the host's clock stood each time."""

    def __init__(self, runner: Runner) -> None:
        self.runner = runner
        self.seen: list[tuple[str, int]] = []
        self.pinned = 0

    async def run(self, hypervisor: Hypervisor) -> None:
        start = trio.current_time()
        await trio.sleep_until(start + 0.045)
        (x,) = [d for d in await hypervisor.domains() if d.name == "X"]
        await hypervisor.set_vcpu_affinity(x.domid, 1, frozenset({2, 3}), None)
        self.pinned += 1
        self.seen.append(("pin", self.runner.now_ns))
        await trio.sleep_until(start + 0.075)
        await hypervisor.set_vcpu_affinity(x.domid, 1, frozenset(range(4)), None)
        self.pinned -= 1
        self.seen.append(("restore", self.runner.now_ns))
        await trio.sleep_forever()

    def report(self) -> AgentReport:
        actions: dict[str, int] = {}
        for what, _ in self.seen:
            actions[what] = actions.get(what, 0) + 1
        return AgentReport(actions, self.pinned)


async def test_agent_runs_beside_the_host_in_virtual_time(autojump_clock: MockClock) -> None:
    docs = []
    for _ in range(2):
        runner = Runner(parse_scenario(AGENT_SCENARIO, source="pinned.toml"))
        agent = PinAgent(runner)
        before = trio.current_time()
        result = await runner.run_async(agent)
        assert trio.current_time() - before == pytest.approx(0.1)  # virtual seconds
        # Actions land at the host's time: the last bucket boundary before them.
        assert agent.seen == [("pin", 40 * MS), ("restore", 70 * MS)]
        doc = result.to_dict()
        assert doc["agent"] is True
        assert doc["actions"] == {"pin": 1, "restore": 1}
        assert doc["temporary_pins_outstanding"] == 0
        # From 40 to 70 ms X's vCPU 1 ran on node 1, away from its memory: X's locality
        # in the single phase is 1 - 30 / 200 = 0.85 (2 vCPUs x 100 ms, one away 30 ms).
        assert doc["phases"][0]["domains"]["X"]["locality"] == 0.85
        docs.append(result.to_json())
    assert docs[0] == docs[1]


async def test_run_async_without_agent_matches_run(autojump_clock: MockClock) -> None:
    scenario = parse_scenario(AGENT_SCENARIO, source="pinned.toml")
    awaited = await Runner(scenario).run_async()
    assert awaited.to_json() == Runner(scenario).run().to_json()
