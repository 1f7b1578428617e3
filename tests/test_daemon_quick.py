"""Events about a few domains decided at once, against the last snapshot patched.

A domain created or destroyed between two polls fires ``@introduceDomain`` /
``@releaseDomain``; the agent looks at the domain list and at that domain only
(``Observer.observe_domains``), patches it into its last snapshot
(``patch_domains``), diffs just it (``diff_domains``) and lets the rules decide,
without a full scan of the host. The patched snapshot holds what a full build
would hold for that domain, and the snapshot it was made from is left as it was.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import trio
import trio.testing

from agent.daemon.build import open_agent
from agent.daemon.diff import DiffMemory, diff, diff_domains
from agent.daemon.loop import QUICK_MAX_DOMAINS, QUICK_SPACING_S, Agent, changed_domains
from agent.daemon.observe import Observer
from agent.daemon.simhost import embedded_transport, sim_config
from agent.hypervisor.model import CpuSet, DomainInfo, Topology, VcpuInfo
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.run import AgentReport, Runner
from agent.sim.scenario import parse_scenario
from agent.sim.spec import DomainSpec
from agent.sim.toolstack import SimToolstack
from agent.state import build_state, patch_domains

HOST = """
name = "quick"
scheduler = "credit1"
duration_s = {duration}
seed = 1

[host]
[[host.nodes]]
cpus = 4
memory_mib = 8192
[[host.nodes]]
cpus = 4
memory_mib = 8192

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

[domains.B]
vcpus = 2
memory_mib = 512
soft = "node:1"
memory_nodes = [1]
workload = "cpu-bound"
"""


def late_domain(name: str, at_s: float, node: int = 0) -> str:
    return (f'[domains.{name}]\nvcpus = 2\nmemory_mib = 256\nsoft = "node:{node}"\n'
            f'memory_nodes = [{node}]\nworkload = "cpu-bound"\n'
            f'[[timeline]]\nat_s = {at_s}\naction = "create"\ndomain = "{name}"\n')


# -- the pure parts: patch and diff -------------------------------------------------------


async def test_a_patched_snapshot_holds_what_a_full_build_holds_for_that_domain() -> None:
    sc = parse_scenario(HOST.format(duration=1.0), source="quick.toml")
    runner = Runner(sc)
    while runner.now_ns < 100_000_000:
        runner.step()
    host = runner.host
    assert isinstance(host, SimHost)
    now = [0.1]
    observer = Observer(SimHypervisor(host), clock=lambda: now[0])
    first = await observer.observe()
    before = build_state(first)
    a = before.domain_by_id[1]
    node0_vcpus = list(before.node_by_id[0].vcpus)

    new = host.create_domain(DomainSpec("N", 2, 1024, soft=frozenset(range(4, 8)),
                                        memory_nodes=(1,)))
    host.advance(host.now_ns + 10_000_000)
    now[0] = 0.11
    domains = await observer.domains()
    assert changed_domains(before, domains) == {new}
    obs = await observer.observe_domains(domains, frozenset({new}),
                                         replace(first, vcpus=()))
    assert {v.domid for v in obs.vcpus} == {new}  # only its vCPUs were asked for
    patched = patch_domains(before, obs, {new})
    # what a full scan by an observer that never measured it would build
    fresh = Observer(SimHypervisor(host), clock=lambda: now[0])
    full = build_state(await fresh.observe(), before)

    for field_ in ("name", "home_node", "soft_nodes", "hard_nodes", "memory_known",
                   "memory_node", "memory_mib", "vcpu_count", "state"):
        assert getattr(patched.domain_at(new), field_) == getattr(full.domain_at(new), field_)
    assert patched.domain_at(new).memory_per_node_mib == (0, 1024)
    assert [(v.id, v.node, v.on_soft, v.soft_nodes) for v in patched.domain_at(new).vcpus] \
        == [(v.id, v.node, v.on_soft, v.soft_nodes) for v in full.domain_at(new).vcpus]
    assert [n.free_memory_mib for n in patched.nodes] == [n.free_memory_mib for n in full.nodes]
    assert {(v.domid, v.id) for v in patched.vcpus} == {(v.domid, v.id) for v in full.vcpus}
    assert set(patched.vcpu_by_key) == set(full.vcpu_by_key)
    # the others' views are the very ones of the last snapshot, which is left as it was
    assert patched.domain_at(1) is a
    assert patched.now == before.now
    assert new not in before.domain_by_id
    assert before.node_by_id[0].vcpus == node0_vcpus

    # its events: the create and nothing about the others
    events, memory = diff_domains(before, patched, DiffMemory(), {new}, 1.0)
    assert [(e.type, e.domid) for e in events if e.type.startswith("domain.")] == [
        ("domain.create", new)]
    assert {e.domid for e in events} == {new}

    # gone again: a destroy, and its vCPUs leave the diff's memory
    host.destroy(new)
    domains = await observer.domains()
    assert changed_domains(patched, domains) == {new}
    obs = await observer.observe_domains(domains, frozenset({new}), replace(first, vcpus=()))
    after = patch_domains(patched, obs, {new})
    assert new not in after.domain_by_id and not any(v.domid == new for v in after.vcpus)
    events, memory = diff_domains(patched, after, memory, {new}, 1.0)
    assert [(e.type, e.domid) for e in events] == [("domain.destroy", new)]
    assert not any(k[0] == new for k in memory.rates)


def test_diff_domains_keeps_the_memory_of_every_other_vcpu() -> None:
    from agent.rules.testing import HostModel

    m = HostModel({"nodes": 2, "cpus": 4}, [
        {"domid": 1, "name": "A", "vcpus": 2, "soft": [0]},
        {"domid": 2, "name": "B", "vcpus": 2, "soft": [1]},
    ])
    v0 = m.observe(0.0)
    _, memory = diff(None, v0, DiffMemory(), 0.1)
    events, kept = diff_domains(v0, v0, memory, {2}, 0.1)
    assert events == []
    assert kept.rates == memory.rates and kept.busy == memory.busy
    assert kept.node_band == memory.node_band


# -- the agent: a quick pass instead of a full scan ------------------------------------------


@dataclass
class Counting:
    """The simulator's Hypervisor, each call logged with the (virtual) time it came."""

    inner: SimHypervisor
    log: list[tuple[float, str, Any]] = field(default_factory=list)

    async def topology(self) -> Topology:
        self.log.append((trio.current_time(), "topology", None))
        return await self.inner.topology()

    async def domains(self) -> list[DomainInfo]:
        self.log.append((trio.current_time(), "domains", None))
        return await self.inner.domains()

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        self.log.append((trio.current_time(), "vcpus", domid))
        return await self.inner.vcpus(domid)

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        self.log.append((trio.current_time(), "memory_per_node", domid))
        return await self.inner.memory_per_node(domid)

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        self.log.append((trio.current_time(), "set_vcpu_affinity", domid))
        await self.inner.set_vcpu_affinity(domid, vcpu, hard, soft)


@dataclass
class Run:
    agent: Agent
    hv: Counting
    records: list[tuple[float, dict[str, Any]]]  # (virtual time appended, body)
    origin: float  # trio time of the scenario's 0 s

    def events(self, type_: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t - self.origin, b) for t, b in self.records
                if b["kind"] == "event" and b["type"] == type_]

    def calls(self, start: float, end: float) -> list[tuple[str, Any]]:
        return [(m, arg) for t, m, arg in self.hv.log
                if start <= t - self.origin <= end]


async def run_agent(tmp_path: Path, extra: str, duration: float = 3.0) -> Run:
    sc = parse_scenario(HOST.format(duration=duration) + extra, source="quick.toml")
    toolstack = SimToolstack.for_host(sc.host)
    runner = Runner(sc, listeners=[toolstack])
    assert isinstance(runner.host, SimHost)
    hv = Counting(SimHypervisor(runner.host))
    records: list[tuple[float, dict[str, Any]]] = []
    origin = trio.current_time()
    agents: list[Agent] = []

    class Beside:
        async def run(self, hypervisor: Any) -> None:
            await trio.sleep(0.999)  # full scans just before each round second
            with open_agent(sim_config(tmp_path), xenstore=transport, watch_rule_files=False,
                            keep_records=True, clock=trio.current_time) as agent:
                agents.append(agent)
                append = agent.recorder.append

                def timed(body: Any, *, sync: bool = False) -> int:
                    records.append((trio.current_time(), body))
                    return append(body, sync=sync)

                agent.recorder.append = timed  # type: ignore[method-assign]
                await agent.run(hypervisor)

        def report(self) -> AgentReport:
            return agents[0].report()

    async with trio.open_nursery() as nursery:
        transport = embedded_transport(toolstack.hub, nursery)
        await runner.run_async(Beside(), hypervisor=hv)
        nursery.cancel_scope.cancel()
    return Run(agents[0], hv, records, origin)


async def test_a_new_domain_is_decided_at_once_without_a_full_scan(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    run = await run_agent(tmp_path, late_domain("N", 1.5)
                          + '[[timeline]]\nat_s = 2.5\naction = "destroy"\ndomain = "N"\n')
    (created,) = [(t, b) for t, b in run.events("domain.create")
                  if b["subject"]["domain"] == "N"]
    # decided when it appeared, not at the next poll (2.999 s)
    assert 1.5 <= created[0] <= 1.5 + QUICK_SPACING_S
    domid = created[1]["subject"]["domid"]
    # what the agent asked the host for it: the domain list, the topology (free
    # memory), that domain's vCPUs and memory; not every vCPU of the host
    asked = run.calls(1.5, created[0])
    assert ("vcpus", None) not in asked
    assert set(asked) == {("domains", None), ("topology", None), ("vcpus", domid),
                          ("memory_per_node", domid)}
    # the full scans after it (the burst, the poll) see it as known: no second create
    (destroyed,) = [(t, b) for t, b in run.events("domain.destroy")
                    if b["subject"].get("domain") == "N"]
    assert 2.5 <= destroyed[0] <= 2.5 + QUICK_SPACING_S
    assert ("vcpus", None) not in run.calls(2.5, destroyed[0])
    assert run.agent.stats.quick >= 2
    assert run.agent.view is not None and domid not in run.agent.view.domain_by_id
    # the next full scans carried on from the patched snapshots: no event about N again
    assert len([1 for _, b in run.events("domain.create")
                if b["subject"]["domain"] == "N"]) == 1


async def test_a_burst_of_domains_takes_a_full_scan(
    tmp_path: Path, autojump_clock: trio.testing.MockClock,
) -> None:
    n = QUICK_MAX_DOMAINS + 2
    extra = "".join(late_domain(f"N{i}", 1.5, node=i % 2) for i in range(n))
    run = await run_agent(tmp_path, extra)
    created = [(t, b) for t, b in run.events("domain.create")
               if b["subject"]["domain"].startswith("N")]
    assert sorted(b["subject"]["domain"] for _, b in created) == sorted(
        f"N{i}" for i in range(n))
    first = min(t for t, _ in created)
    assert 1.5 <= first <= 1.7  # the burst's full scan, a burst interval at most later
    assert ("vcpus", None) in run.calls(1.5, first)
    assert run.agent.view is not None
    assert all(d.memory_known for d in run.agent.view.domains)
