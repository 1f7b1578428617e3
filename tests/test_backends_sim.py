"""Backends on the simulated host: per-vCPU pins in the engine and scenarios, dom0's
simulated backend threads, and the seed scenario with its backends placed by the
shipped rule, as the simulator's metric shows. Virtual time."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.audit.records import Body
from agent.backends.dom0 import Dom0Cpus
from agent.backends.tracker import BackendTracker
from agent.rules import Memory, Note, Outcome, PinBackend, decide, load_paths, make_event
from agent.rules.events import Event
from agent.sim.backend import SimHypervisor
from agent.sim.dom0_procs import SimDom0Processes, placement_report
from agent.sim.engine import SimError, SimHost
from agent.sim.run import Runner
from agent.sim.scenario import Scenario, ScenarioError, load_scenario, parse_scenario
from agent.sim.spec import DomainSpec, HostSpec, Idle, NodeSpec
from agent.sim.toolstack import SimToolstack
from agent.state import HostView, Observation, build_state
from agent.xenstore.client import Client, open_client
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream

RULES = Path(__file__).resolve().parent.parent / "rules"
NODE0_DOM0 = frozenset({0, 1})  # the seed's dom0 vCPUs pinned to pCPUs 0 and 1
NODE1_DOM0 = frozenset({2, 3})  # ... and to pCPUs 28 and 29


# -- per-vCPU pins -----------------------------------------------------------------------


def test_engine_pins_each_vcpu_to_its_pcpu() -> None:
    host = SimHost(HostSpec(nodes=(NodeSpec(2, 4096), NodeSpec(2, 4096))))
    host.create_domain(DomainSpec("Domain-0", 3, 512, Idle(), is_dom0=True, pins=(0, 2, 3)))
    info = host.vcpu_info(0)
    assert [(v.cpu, sorted(v.hard)) for v in info] == [(0, [0]), (2, [2]), (3, [3])]
    assert [sorted(m) for m in host.effective_hard(0)] == [[0], [2], [3]]
    for bad, message in [
        (DomainSpec("x", 2, 64, pins=(0,)), "1 pins for 2 vCPUs"),
        (DomainSpec("x", 1, 64, pins=(9,)), "do not exist"),
        (DomainSpec("x", 1, 64, pins=(0,), hard=frozenset({0})), "hard or pins, not both"),
    ]:
        with pytest.raises(SimError, match=message):
            host.create_domain(bad)


SCENARIO = """
name = "pins"
duration_s = 1.0
[host]
[[host.nodes]]
cpus = 2
memory_mib = 4096
[[host.nodes]]
cpus = 2
memory_mib = 4096
[[host.pools]]
name = "guests"
cpus = "1,3"
[dom0]
vcpus = 2
memory_mib = 512
PINS
[domains.A]
vcpus = 1
memory_mib = 512
pool = "guests"
"""


def test_scenario_pins_key() -> None:
    s = parse_scenario(SCENARIO.replace("PINS", "pins = [0, 2]"), source="t")
    assert s.domain("Domain-0").pins == (0, 2)
    for pins, message in [
        ("pins = [0]", "expected an array of 2 pCPU numbers (one per vCPU), got an array of 1"),
        ("pins = [0, 1]", "pCPUs [1] are not in the domain's pool (0,2)"),
        ("pins = [0, 7]", "expected an integer between 0 and 3, got 7"),
        ("pins = [0, 2]\nhard = [0]", "give hard (one mask for every vCPU) or pins"),
    ]:
        with pytest.raises(ScenarioError) as info:
            parse_scenario(SCENARIO.replace("PINS", pins), source="t")
        assert message in str(info.value)


def test_seed_dom0_has_two_pinned_vcpus_on_each_node() -> None:
    s = load_scenario("seed-abc")
    assert s.domain("Domain-0").pins == (0, 1, 28, 29)
    assert load_scenario("seed-abc-4node").domain("Domain-0").pins == (0, 14, 28, 42)


# -- the simulated backend threads ----------------------------------------------------------


def test_toolstack_starts_and_stops_dom0_backend_threads() -> None:
    host = SimHost(HostSpec(nodes=(NodeSpec(2, 4096), NodeSpec(2, 4096))))
    ts = SimToolstack()
    ts.domain_created(host, host.create_domain(DomainSpec("Domain-0", 2, 512, Idle(),
                                                          is_dom0=True, pins=(0, 2))))
    domid = host.create_domain(DomainSpec("web", 1, 512, Idle(), memory_nodes=(1,)))
    ts.domain_created(host, domid)
    threads = ts.dom0.of_domain(domid)
    assert [(t.pid, t.comm, t.kind) for t in threads] == [
        (ts.backend_pid(domid), "blkback.1.xvda", "vbd"),
        (ts.backend_pid(domid) + 1, "vif1.0-q0-guest", "vif"),
        (ts.backend_pid(domid) + 2, "vif1.0-q0-deall", "vif")]
    assert ts.dom0.cpus() == {0, 1}
    (vbd, *_) = ts.dom0.placements(host)
    assert (vbd.dom0_cpus, vbd.pcpus, vbd.nodes, vbd.home_node, vbd.on_home) == (
        frozenset({0, 1}), frozenset({0, 2}), frozenset({0, 1}), 1, False)
    ts.dom0.set_affinity(vbd.pid, frozenset({1}))
    (vbd, *_) = ts.dom0.placements(host)
    assert (vbd.pcpus, vbd.nodes, vbd.on_home) == (frozenset({2}), frozenset({1}), True)
    with pytest.raises(OSError, match="not all online"):
        ts.dom0.set_affinity(vbd.pid, frozenset({5}))
    host.destroy(domid)
    ts.domain_destroyed(host, domid)
    assert ts.dom0.of_domain(domid) == [] and ts.dom0.placements(host) == []


# -- the seed scenario ---------------------------------------------------------------------


@asynccontextmanager
async def xenstore(hub: XenstoreHub) -> AsyncIterator[Client]:
    async with trio.open_nursery() as nursery:
        async def connect() -> trio.abc.Stream:
            mine, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_stream, hub, theirs)
            return mine

        async with open_client(connect) as xs:
            yield xs
        nursery.cancel_scope.cancel()


class BackendAgent:
    """The agent's backend part, by hand: scan, decide with the shipped rule, act."""

    def __init__(self, runner: Runner, ts: SimToolstack, xs: Client) -> None:
        assert isinstance(runner.host, SimHost)
        self.hv = SimHypervisor(runner.host)
        self.xs = xs
        self.tracker = BackendTracker(ts.dom0)
        self.rules = load_paths([RULES / "backend_placement.toml", RULES / "engine.toml"])
        self.memory = Memory()
        self.view: HostView | None = None
        self.records: list[Body] = []
        self.notes: list[str] = []

    async def step(self, now: float) -> None:
        domains = await self.hv.domains()
        scan = await self.tracker.scan(self.xs, [d.domid for d in domains])
        topo = await self.hv.topology()
        self.view = build_state(Observation(now, topo, tuple(domains),
                                            tuple(await self.hv.vcpus()),
                                            backends=scan.backends), self.view)
        dom0 = Dom0Cpus.of(topo, await self.hv.vcpus(0))
        events: list[Event] = [make_event("backend.appear", domid=b.domid, pid=b.pid,
                                          kind=b.kind) for b in scan.appeared]
        for event in events:
            decisions, self.memory = decide(self.view, event, now, self.rules, self.memory)
            for d in decisions:
                if d.outcome is not Outcome.ACT:
                    continue
                if isinstance(d.action, PinBackend):
                    self.records.append(self.tracker.pin(d.action, dom0).record())
                elif isinstance(d.action, Note):
                    self.notes.append(d.action.message)


async def run_seed(scenario: Scenario, ts: SimToolstack) -> tuple[Runner, BackendAgent]:
    """Start the seed's domains, let 100 ms pass, let the agent act, run 100 ms more."""
    runner = Runner(scenario, listeners=[ts])
    async with xenstore(ts.hub) as xs:
        agent = BackendAgent(runner, ts, xs)
        while runner.now_ns < 100_000_000:
            runner.step()
        await agent.step(0.1)
        while runner.now_ns < 200_000_000:
            runner.step()
    return runner, agent


def placed(ts: SimToolstack, runner: Runner) -> dict[str, set[tuple[frozenset[int], ...]]]:
    """Per guest: the (dom0 CPUs, pCPUs, nodes) of each of its backend threads."""
    assert isinstance(runner.host, SimHost)
    names = {live.domid: name for name, live in runner.live.items()}
    out: dict[str, set[tuple[frozenset[int], ...]]] = {}
    for p in ts.dom0.placements(runner.host):
        out.setdefault(names[p.domid], set()).add((p.dom0_cpus, p.pcpus, p.nodes))
    return out


async def test_seed_backends_of_a_on_node0_of_b_and_c_on_node1(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenario = load_scenario("seed-abc")
    ts = SimToolstack.for_host(scenario.host)
    runner, agent = await run_seed(scenario, ts)
    assert isinstance(runner.host, SimHost)
    assert placed(ts, runner) == {
        "A": {(NODE0_DOM0, frozenset({0, 1}), frozenset({0}))},
        "B": {(NODE1_DOM0, frozenset({28, 29}), frozenset({1}))},
        "C": {(NODE1_DOM0, frozenset({28, 29}), frozenset({1}))},
    }
    report = placement_report(ts.dom0.placements(runner.host),
                              {live.domid: name for name, live in runner.live.items()})
    assert report["threads"] == report["on_home"] == 9  # 3 threads for each guest
    assert [t["nodes"] for t in report["guests"]["A"]] == [[0]] * 3
    assert [(t["dom0_cpus"], t["pcpus"]) for t in report["guests"]["B"]] == [("2-3", "28-29")] * 3
    # Each thread was bound once, and it is in the audit records.
    assert sorted((r["params"]["pid"], r["params"]["node"], r["outcome"])
                  for r in agent.records) == sorted(
        (p.pid, p.home_node, "ok") for p in ts.dom0.placements(runner.host))
    assert agent.notes == []
    # Where dom0's vCPUs of each node actually ran meanwhile: on that node's pCPUs.
    assert {v.vcpu: v.cpu for v in runner.host.vcpu_info(0)} == {0: 0, 1: 1, 2: 28, 3: 29}


async def test_seed_without_pinned_dom0_says_backend_placement_is_impossible(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seed = load_scenario("seed-abc")
    dom0 = dataclasses.replace(seed.domain("Domain-0"), pins=None)
    scenario = dataclasses.replace(seed, domains=(dom0, *seed.domains[1:]))
    ts = SimToolstack.for_host(scenario.host)
    runner, agent = await run_seed(scenario, ts)
    assert agent.records == [] and len(agent.notes) == 9
    assert all("no dom0 vCPU is bound to that node" in n and "dom0_vcpus_pin" in n
               for n in agent.notes)
    # Nothing was moved: every thread may still run on every dom0 vCPU, on both nodes.
    assert {t for v in placed(ts, runner).values() for t in v} == {
        (frozenset(range(4)), frozenset({0, 1, 28, 29}), frozenset({0, 1}))}


async def test_a_refusing_thread_is_recorded_and_the_rest_are_placed(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenario = load_scenario("seed-abc")
    ts = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, listeners=[ts])
    runner.start()
    a = runner.live["A"].domid
    ts.dom0.threads_by_pid[ts.backend_pid(a)].refuses = True
    async with xenstore(ts.hub) as xs:
        agent = BackendAgent(runner, ts, xs)
        await agent.step(0.0)
    failed = [r for r in agent.records if r["outcome"] == "failed"]
    assert [(r["params"]["pid"], r["params"]["refused"]) for r in failed] == [
        (ts.backend_pid(a), [ts.backend_pid(a)])]
    assert "EINVAL" in failed[0]["error"]
    assert sum(r["outcome"] == "ok" for r in agent.records) == 8


def test_sim_table_is_a_process_table() -> None:
    procs = SimDom0Processes(dom0_vcpus=2)
    procs.start(10, "vif3.0-q0-guest-rx", 3, "vif")
    assert procs.info(10) is not None and procs.info(10).comm == "vif3.0-q0-guest"  # type: ignore[union-attr]
    assert procs.affinity(10) == {0, 1} and procs.threads(10) == [10] and procs.threads(11) == []
    with pytest.raises(ProcessLookupError):
        procs.set_affinity(11, frozenset({0}))
    with pytest.raises(ValueError, match="taken"):
        procs.start(10, "x", 3, "vif")
