"""The agent under faults, against the simulator in virtual time.

The host: 2 nodes x 2 pCPUs, A (2 vCPUs) homed on node 0 and C (2 vCPUs) on
node 1, all cpu-bound. A brief hard pin at the start leaves A's vCPU 1 on
node 1 and C's vCPU 0 on node 0; with every pCPU busy, credit1 never moves
them back (the seed's stuck state in miniature). The agent's first look finds
both misplaced and swaps them. The faults hit that swap:

- the agent cancelled at each of its hypervisor calls (before, and after the
  call took effect), then a new agent started on the same journal: every hard
  affinity is back to what it was;
- the domain destroyed while the swap waits on a slow hypervisor;
- a hypervisor call failing twice, then succeeding; failing always.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from agent.daemon.build import open_agent, shipped_rules_dir
from agent.daemon.config import AgentConfig
from agent.daemon.loop import Agent
from agent.daemon.simhost import embedded_transport, sim_config
from agent.hypervisor.interface import HypervisorError
from agent.hypervisor.model import CpuSet, DomainInfo, Topology, VcpuInfo
from agent.journal import PinJournal
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.run import AgentReport, Runner, RunResult
from agent.sim.scenario import parse_scenario
from agent.sim.toolstack import SimToolstack

ALL = frozenset(range(4))

SCENARIO = """
name = "stuck-pair"
scheduler = "credit1"
duration_s = 1.0
seed = 1

[host]
[[host.nodes]]
cpus = 2
memory_mib = 4096
[[host.nodes]]
cpus = 2
memory_mib = 4096

[dom0]
vcpus = 1
memory_mib = 256
memory_nodes = [0]
workload = "idle"

[domains.A]
vcpus = 2
memory_mib = 512
soft = "node:0"
memory_nodes = [0]
workload = "cpu-bound"

[domains.C]
vcpus = 2
memory_mib = 512
soft = "node:1"
memory_nodes = [1]
workload = "cpu-bound"

[[timeline]]
at_s = 0.02
action = "set-affinity"
domain = "A"
vcpus = [1]
hard = "2-3"
[[timeline]]
at_s = 0.02
action = "set-affinity"
domain = "C"
vcpus = [0]
hard = "0-1"
[[timeline]]
at_s = 0.05
action = "set-affinity"
domain = "A"
hard = "0-3"
[[timeline]]
at_s = 0.05
action = "set-affinity"
domain = "C"
hard = "0-3"
"""


def scenario(extra: str = "", duration: float = 1.0) -> Any:
    return parse_scenario(SCENARIO.replace("duration_s = 1.0", f"duration_s = {duration}")
                          + extra, source="stuck-pair.toml")


@dataclass
class Call:
    method: str
    args: tuple[Any, ...]


@dataclass
class Faulty:
    """The simulator's Hypervisor with hooks around every call (numbered from 1)."""

    inner: SimHypervisor
    before: Callable[[int, Call], Awaitable[None]] | None = None
    after: Callable[[int, Call], Awaitable[None]] | None = None
    log: list[Call] = field(default_factory=list)

    async def _call(self, method: str, *args: Any) -> Any:
        call = Call(method, args)
        self.log.append(call)
        n = len(self.log)
        if self.before is not None:
            await self.before(n, call)
        result = await getattr(self.inner, method)(*args)
        if self.after is not None:
            await self.after(n, call)
        return result

    async def topology(self) -> Topology:
        result: Topology = await self._call("topology")
        return result

    async def domains(self) -> list[DomainInfo]:
        result: list[DomainInfo] = await self._call("domains")
        return result

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        result: list[VcpuInfo] = await self._call("vcpus", domid)
        return result

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        result: tuple[int, ...] = await self._call("memory_per_node", domid)
        return result

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        await self._call("set_vcpu_affinity", domid, vcpu, hard, soft)


@dataclass
class Run:
    result: RunResult
    agents: list[Agent]
    hv: Faulty
    host: SimHost
    journal: Path


class TwoAgents:
    """The agent (cancellable from the hypervisor hooks), and after it, a second one on
    the same journal, in dry-run so that it only repairs."""

    def __init__(self, first: AgentConfig, second: AgentConfig | None, transport: Any) -> None:
        self.configs = [first, second]
        self.transport = transport
        self.scope = trio.CancelScope()
        self.agents: list[Agent] = []

    async def run(self, hv: Any) -> None:
        await trio.sleep(0.099)  # poll just before round instants, as the demo does
        first = self.configs[0]
        assert first is not None
        with open_agent(first, xenstore=self.transport, watch_rule_files=False,
                        keep_records=True, clock=trio.current_time) as agent:
            self.agents.append(agent)
            with self.scope:
                await agent.run(hv)
        second = self.configs[1]
        if second is None:
            await trio.sleep_forever()
        with open_agent(second, xenstore=self.transport, watch_rule_files=False,
                        keep_records=True, clock=trio.current_time) as agent:
            self.agents.append(agent)
            await agent.run(hv)

    def report(self) -> AgentReport:
        return self.agents[0].report()


async def run_stuck(
    tmp_path: Path,
    *,
    before: Callable[[Faulty, TwoAgents, int, Call], Awaitable[None]] | None = None,
    after: Callable[[Faulty, TwoAgents, int, Call], Awaitable[None]] | None = None,
    restart: bool = False,
    sc: Any = None,
    rules: str = "all",
    dry_run: bool = False,
) -> Run:
    sc = sc or scenario()
    toolstack = SimToolstack.for_host(sc.host)
    runner = Runner(sc, listeners=[toolstack])
    assert isinstance(runner.host, SimHost)
    hv = Faulty(SimHypervisor(runner.host))
    config = sim_config(tmp_path, dry_run=dry_run)
    if rules == "fixup-only":  # no swap: each vCPU of the pair gets a fixup of its own
        rules_dir = tmp_path / "rules"
        rules_dir.mkdir(parents=True)
        for name in ("affinity_fixup.toml", "engine.toml"):
            (rules_dir / name).write_text((shipped_rules_dir() / name).read_text())
        config = replace(config, rules_dir=str(rules_dir))
    async with trio.open_nursery() as nursery:
        transport = embedded_transport(toolstack.hub, nursery)
        pair = TwoAgents(config, replace(config, dry_run=True) if restart else None, transport)
        if before is not None:
            hook_b = before

            async def b(n: int, call: Call) -> None:
                await hook_b(hv, pair, n, call)

            hv.before = b
        if after is not None:
            hook_a = after

            async def a(n: int, call: Call) -> None:
                await hook_a(hv, pair, n, call)

            hv.after = a
        result = await runner.run_async(pair, hypervisor=hv)
        nursery.cancel_scope.cancel()
    return Run(result, pair.agents, hv, runner.host, Path(config.journal))


def kept(agent: Agent, kind: str, type_: str | None = None) -> list[dict[str, Any]]:
    assert agent.recorder.kept is not None
    return [b for _, b in agent.recorder.kept
            if b["kind"] == kind and (type_ is None or b.get("type") == type_)]


DEDUPED = "an earlier action of this scan acted on it"


def the_swap(agent: Agent) -> dict[str, Any]:
    """The swap: decided once per vCPU of the pair, carried out once."""
    swaps = kept(agent, "action", "vcpu.swap")
    assert [s.get("error") for s in swaps[1:]] == [DEDUPED] * (len(swaps) - 1)
    return swaps[0]


def hard_affinities(host: SimHost) -> dict[tuple[int, int], frozenset[int]]:
    return {(v.domid, v.vcpu): v.hard for v in host.vcpu_info() if v.domid != 0}


# -- the baseline the faults are measured against -------------------------------------------


async def test_without_faults_the_pair_is_swapped_home(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    run = await run_stuck(tmp_path)
    agent = run.agents[0]
    swap = the_swap(agent)
    assert swap["outcome"] == "ok" and swap["params"]["home"] is True
    # both home for good, every hard affinity as it was, nothing left in the journal
    assert away_after(run.result, 0.11) == {"A": 0, "C": 0}
    assert set(hard_affinities(run.host).values()) == {ALL}
    assert agent.report().temporary_pins_outstanding == 0
    with PinJournal(run.journal) as journal:
        assert journal.outstanding() == []


async def test_without_the_agent_the_pair_stays_misplaced(
    autojump_clock: trio.testing.MockClock,
) -> None:
    result = Runner(scenario()).run()
    last = result.phases[-1].tally
    assert last.domains["A"].locality is not None and last.domains["A"].locality < 0.6
    assert last.domains["C"].locality is not None and last.domains["C"].locality < 0.6


async def test_dry_run_decides_and_records_but_changes_nothing(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    run = await run_stuck(tmp_path, dry_run=True, sc=scenario(duration=0.5))
    agent = run.agents[0]
    decisions = kept(agent, "decision")
    assert {d["outcome"] for d in decisions} >= {"dry-run"}
    assert "act" not in {d["outcome"] for d in decisions}
    assert all(d["detail"] == "the agent runs with --dry-run"
               for d in decisions if d["outcome"] == "dry-run")
    assert kept(agent, "action") == []
    assert not [c for c in run.hv.log if c.method == "set_vcpu_affinity"]
    assert away_after(run.result, 0.11) == {"A": 390_000_000, "C": 390_000_000}


def away_after(result: RunResult, t: float) -> dict[str, int]:
    """Run time (ns) each guest spent away from its home node after ``t`` seconds."""
    home = {"A": 0, "C": 1}
    out = dict.fromkeys(home, 0)
    for sample in result.samples:
        if sample.start_ns >= t * 1e9:
            for name, h in home.items():
                out[name] += sum(ns for node, ns in enumerate(sample.run_ns.get(name, ()))
                                 if node != h)
    return out


def action_calls(log: list[Call]) -> range:
    """Call numbers (from 1) of the first scan's actions: their vCPU reads, narrowings,
    looks while waiting, restores."""
    first = next(i for i, c in enumerate(log) if c.method == "set_vcpu_affinity")
    while first > 0 and log[first - 1].method == "vcpus" and log[first - 1].args != (None,):
        first -= 1
    last = max(i for i, c in enumerate(log) if c.method == "set_vcpu_affinity")
    return range(first + 1, last + 2)


# -- cancelled at every await point ------------------------------------------------------------


async def points(tmp_path: Path, rules: str) -> range:
    run = await run_stuck(tmp_path, sc=scenario(duration=0.3), rules=rules)
    kinds = {b["type"] for _, b in run.agents[0].recorder.kept or [] if b["kind"] == "action"}
    assert ("vcpu.swap" in kinds) == (rules == "all")
    return action_calls(run.hv.log)


@pytest.mark.parametrize("rules", ["all", "fixup-only"])
@pytest.mark.parametrize("when", ["before", "after"])
async def test_cancelled_at_every_await_of_an_action_then_restarted_restores_every_pin(
    autojump_clock: trio.testing.MockClock, tmp_path: Path, when: str, rules: str
) -> None:
    action_points = await points(tmp_path / "points", rules)
    # a swap: 2 reads, 2 narrowings, a look each, 2 restores; two fixups: each a read,
    # a narrowing, a look, a restore
    assert len(action_points) >= 7
    repaired = 0
    for k in action_points:
        narrowed: list[bool] = []

        async def cancel_at(hv: Faulty, pair: TwoAgents, n: int, call: Call, k: int = k,
                            narrowed: list[bool] = narrowed) -> None:
            if n == k:
                narrowed.append(any(c.method == "set_vcpu_affinity" for c in hv.log[:n]))
                pair.scope.cancel()
                await trio.lowlevel.checkpoint()  # raises Cancelled here

        hooks = {"before": cancel_at} if when == "before" else {"after": cancel_at}
        run = await run_stuck(tmp_path / f"{when}-{k}", restart=True, sc=scenario(duration=0.4),
                              rules=rules, **hooks)
        first, second = run.agents
        assert narrowed, f"call {k} was never made"
        # The second agent found what the first left and put it back ...
        restored = [a for a in kept(second, "action", "restore_hard")
                    if a["params"]["why"] == "journal on start"]
        with PinJournal(run.journal) as journal:
            assert journal.outstanding() == [], (when, k)
        # ... so that every hard affinity is what it was before the first agent.
        assert set(hard_affinities(run.host).values()) == {ALL}, (when, k)
        assert all(a["outcome"] == "ok" for a in restored)
        assert first.stopped_by is None  # cancelled, not stopped
        repaired += bool(restored)
    # Cut off between a narrowing and its restore, the first agent left pins behind
    # (at most points); only the journal could tell the second one about them.
    assert repaired >= len(action_points) // 2


# -- a domain destroyed while its action is in flight -----------------------------------------


async def test_a_domain_destroyed_during_its_swap_is_recorded_and_the_agent_goes_on(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async def slow_pins(hv: Faulty, pair: TwoAgents, n: int, call: Call) -> None:
        if call.method == "set_vcpu_affinity":
            await trio.sleep(0.05)  # a slow toolstack: the host moves on meanwhile

    extra = '\n[[timeline]]\nat_s = 0.12\naction = "destroy"\ndomain = "C"\n'
    run = await run_stuck(tmp_path, before=slow_pins, sc=scenario(extra, duration=0.6))
    agent = run.agents[0]
    swap = the_swap(agent)
    assert swap["outcome"] == "skipped" and "domain gone" in swap["error"]
    skipped = [a for a in kept(agent, "action") if a["outcome"] == "skipped"
               and a["subject"].get("domain") == "C"]
    assert skipped, "the narrowing of C's vCPU was not recorded"
    assert [e for e in kept(agent, "event", "domain.destroy")
            if e["subject"].get("domain") == "C"]
    # A's pin of the swap was put back, nothing is held, and the agent kept scanning.
    assert agent.report().temporary_pins_outstanding == 0
    assert hard_affinities(run.host) == {(1, 0): ALL, (1, 1): ALL}
    assert agent.stats.scans > 3


# -- failing calls ------------------------------------------------------------------------------


async def test_a_call_failing_twice_then_succeeding_gives_a_successful_action(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    failures = [0]

    async def flaky(hv: Faulty, pair: TwoAgents, n: int, call: Call) -> None:
        if call.method == "set_vcpu_affinity" and failures[0] < 2:
            failures[0] += 1
            raise HypervisorError(f"xl vcpu-pin timed out (injected #{failures[0]})")

    run = await run_stuck(tmp_path, before=flaky)
    agent = run.agents[0]
    swap = the_swap(agent)
    assert swap["outcome"] == "ok" and swap["params"]["home"] is True
    first_narrow = kept(agent, "action", "narrow_hard")[0]
    assert first_narrow["outcome"] == "ok" and first_narrow["attempts"] == 3
    assert failures[0] == 2
    assert set(hard_affinities(run.host).values()) == {ALL}


async def test_a_call_failing_always_is_recorded_and_the_agent_keeps_running(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async def broken(hv: Faulty, pair: TwoAgents, n: int, call: Call) -> None:
        if call.method == "set_vcpu_affinity":
            raise HypervisorError("xl vcpu-pin: Invalid argument (injected)")

    run = await run_stuck(tmp_path, before=broken, sc=scenario(duration=4.0))
    agent = run.agents[0]
    swap = the_swap(agent)
    assert swap["outcome"] == "failed"
    narrow = kept(agent, "action", "narrow_hard")[0]
    assert narrow["outcome"] == "failed" and narrow["attempts"] == 3
    assert "Invalid argument" in narrow["error"]
    failed_restores = [a for a in kept(agent, "action", "restore_hard") if a["outcome"] == "failed"]
    # tried again on later scans, backing off: after 1, 2 s (and not at every scan)
    assert 3 <= len(failed_restores) <= 6
    # Still running: it went on scanning and deciding after the failure.
    assert agent.stats.scans >= 25
    swap_seq = next(s for s, b in (agent.recorder.kept or []) if b is swap)
    later = [s for s, b in (agent.recorder.kept or []) if b["kind"] == "event" and s > swap_seq]
    assert later
    # The narrowing may or may not have happened: the pin stays in the journal for
    # the next start, not forgotten.
    assert agent.report().temporary_pins_outstanding >= 1


# -- stopped (SIGTERM) with a pin in flight --------------------------------------------------


async def test_stop_with_a_temporary_pin_in_flight_restores_it(
    autojump_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    async def stop_after_first_pin(hv: Faulty, pair: TwoAgents, n: int, call: Call) -> None:
        if call.method == "set_vcpu_affinity" and len(
                [c for c in hv.log if c.method == "set_vcpu_affinity"]) == 1:
            pair.agents[0].stop("SIGTERM")
            await trio.sleep(0.01)  # the stop lands while the swap is in flight

    run = await run_stuck(tmp_path, after=stop_after_first_pin, sc=scenario(duration=0.5))
    agent = run.agents[0]
    assert agent.stopped_by == "SIGTERM" and agent.exit_code == 0
    # The narrowing took effect on the host; the stop cut the swap off before its
    # result was known, and the stop's restore put the original back.
    pins = [c for c in run.hv.log if c.method == "set_vcpu_affinity"]
    assert [c.args[2] == ALL for c in pins] == [False, True]
    (narrowed,) = kept(agent, "action", "narrow_hard")
    assert narrowed["outcome"] == "failed" and "cut off" in narrowed["error"]
    (swap,) = kept(agent, "action", "vcpu.swap")
    assert swap["outcome"] == "failed" and "cut off" in swap["error"]
    restores = [a for a in kept(agent, "action", "restore_hard")
                if a["params"]["why"] == "agent stopping: SIGTERM"]
    assert [a["outcome"] for a in restores] == ["ok"]
    assert set(hard_affinities(run.host).values()) == {ALL}
    assert kept(agent, "agent_stop")[-1]["reason"] == "SIGTERM"
    with PinJournal(run.journal) as journal:
        assert journal.outstanding() == []
