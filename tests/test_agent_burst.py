"""500 domains created within one simulated second.

The simulator's toolstack writes xenstore for each (a few dozen writes and
watch events per domain). The agent's queues stay bounded (one wake-up of each
kind at most, the rest coalesced; a scan at most every burst interval), and
every domain ends up handled: its domain.create event went through the rules,
its memory was measured, and the tenth of them whose memory landed away from
their soft affinity had it moved there (soft-follows-memory).
"""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agent.backends.hooks import BackendHooks
from agent.daemon.simhost import AgentRun, run_with_agent, sim_config
from agent.daemon.sources import KINDS
from agent.sim.scenario import parse_scenario

N = 500


def scenario_text(n: int = N, duration: float = 6.0) -> str:
    parts = [f"""
name = "burst-{n}"
scheduler = "credit1"
duration_s = {duration}
seed = 1
[host]
[[host.nodes]]
cpus = 8
memory_gib = 64
[[host.nodes]]
cpus = 8
memory_gib = 64
[dom0]
vcpus = 2
memory_gib = 1
memory_nodes = [0]
workload = "idle"
"""]
    for i in range(n):
        home = i % 2
        memory = 1 if i % 10 == 0 else home  # every tenth: memory away from its soft node
        soft = 0 if i % 10 == 0 else home
        parts.append(f'[domains.g{i:03d}]\nvcpus = 1\nmemory_mib = 64\nsoft = "node:{soft}"\n'
                     f'memory_nodes = [{memory}]\nworkload = "idle"\n')
    for i in range(n):
        parts.append(f'[[timeline]]\nat_s = {1.0 + i * 0.002:.3f}\naction = "create"\n'
                     f'domain = "g{i:03d}"\n')
    return "\n".join(parts)


@pytest.fixture(scope="module")
def burst(tmp_path_factory: pytest.TempPathFactory) -> AgentRun:
    sc = parse_scenario(scenario_text(), source="burst-500.toml")
    config = sim_config(tmp_path_factory.mktemp("burst"))

    async def main() -> AgentRun:
        return await run_with_agent(sc, config, keep_records=True, clock=trio.current_time)

    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


def test_the_queues_stay_bounded(burst: AgentRun) -> None:
    agent = burst.agent
    assert agent.signals is not None
    stats = agent.signals.stats
    assert stats.max_queued <= len(KINDS)
    # thousands of watch events (a few dozen per domain): dom0's backend subtree's go to
    # the backend extension's rescan task, which asks the loop for a pass once a rescan ...
    (backends,) = [h for h in agent.hooks if isinstance(h, BackendHooks)]
    assert backends.watch_events > 10 * N and backends.wakes < N / 10
    assert stats.posted > N  # @introduceDomain and the others, the poll, the tick
    assert stats.coalesced > 0.6 * stats.posted
    # ... made a hundred scans or so: at most one per burst interval over 6 s
    assert agent.stats.scans <= 6 / agent.config.burst_interval_s + 10


def test_every_domain_is_handled(burst: AgentRun) -> None:
    agent = burst.agent
    kept = agent.recorder.kept or []
    created = {b["subject"]["domain"] for _, b in kept
               if b["kind"] == "event" and b["type"] == "domain.create"}
    assert {f"g{i:03d}" for i in range(N)} <= created
    assert len(created) == N + 1  # and dom0, each once
    view = agent.view
    assert view is not None
    assert all(d.memory_known for d in view.domains)
    # The tenth with memory away from their soft node got their soft affinity moved.
    moved = {b["subject"]["domain"] for _, b in kept
             if b["kind"] == "action" and b["type"] == "set_soft" and b["outcome"] == "ok"}
    assert moved == {f"g{i:03d}" for i in range(0, N, 10)}
    for i in range(0, N, 10):
        d = next(d for d in view.domains if d.name == f"g{i:03d}")
        assert d.soft_nodes == frozenset({1})


def test_the_audit_holds_a_decision_for_each_moved_domain(burst: AgentRun) -> None:
    kept = burst.agent.recorder.kept or []
    acted = [b for _, b in kept if b["kind"] == "decision" and b["outcome"] == "act"]
    changes = [b for b in acted if b["action"]["type"] != "note"]
    assert len(changes) == N // 10
    assert {b["rule"] for b in changes} == {"soft-follows-memory"}
    # dom0's vCPUs are not pinned here: each guest's three backend threads get a note
    # saying that placing them is impossible and how to make it possible, no pin.
    notes = [b for b in acted if b["action"]["type"] == "note"]
    assert {b["rule"] for b in notes} == {"backend-placement-impossible"}
    assert len(notes) == 3 * N
    assert not [b for _, b in kept if b["kind"] == "action" and b["type"] == "backend.pin"]

