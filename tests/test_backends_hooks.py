"""BackendHooks in an agent-shaped loop on the seed scenario: backends found through the
embedded xenstored and the simulated dom0, pinned by the shipped rule, rejected entries
recorded once, xenstore read only when something may have changed (by the extension's
own rescan task, never inside a scan), and backends following their guest's home node.
Virtual time."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing
from test_placement_hooks import FakeRecorder, MiniAgent, xenstore

from agent.backends.hooks import BackendHooks, guest_of
from agent.rules import load_paths
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import load_scenario
from agent.sim.toolstack import SimToolstack

RULES = Path(__file__).resolve().parent.parent / "rules"


async def test_backend_hooks_on_the_seed(autojump_clock: trio.testing.MockClock) -> None:
    scenario = load_scenario("seed-abc")
    ts = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, listeners=[ts])
    while runner.now_ns < 100_000_000:
        runner.step()
    sim = runner.host
    assert isinstance(sim, SimHost)
    a, b = runner.live["A"].domid, runner.live["B"].domid
    # A decoy: B's qemu-pid names A's blkback thread.
    ts.session.write(f"/local/domain/{b}/qemu-pid", str(ts.backend_pid(a)))
    recorder = FakeRecorder()
    hooks = BackendHooks(recorder, ts.dom0)
    agent = MiniAgent(SimHypervisor(sim),
                      [hooks], load_paths([RULES / "backend_placement.toml",
                                           RULES / "engine.toml"]))
    async with xenstore(ts.hub) as xs, trio.open_nursery() as nursery:
        await nursery.start(hooks.run, xs, agent.wake)
        await agent.scan()  # the guests, for the rescan task; nothing read yet
        assert hooks.scans == 0 and agent.view is not None and not agent.view.backends
        await until(lambda: hooks.scans == 1)
        assert not recorder.of("action", "backend.pin")
        await agent.scan()  # takes the rescan, and pins against its own snapshot
        names = {live.domid: name for name, live in runner.live.items()}
        home = {"A": 0, "B": 1, "C": 1}
        for p in ts.dom0.placements(sim):
            assert p.nodes == {home[names[p.domid]]}, p
        pins = recorder.of("action", "backend.pin")
        assert len(pins) == 9 and {p["outcome"] for p in pins} == {"ok"}
        (rejected,) = recorder.of("event", "backend.rejected")
        assert rejected["subject"] == {"domid": b}
        assert rejected["data"]["why"] == (f"'blkback.{a}.xvda' is not a qemu serving "
                                           f"domain {b}")

        # Nothing changed: the next scan reads only the threads' CPUs.
        await agent.scan()
        assert hooks.scans == 1 and len(recorder.of("event", "backend.rejected")) == 1
        assert agent.view is not None and all(v.on_home for v in agent.view.backends)

        # B's home moves to node 0 (its soft affinity, as soft-follows-memory would);
        # after the rule's cooldown its backends follow, without a xenstore read.
        for vcpu in range(scenario.domain("B").vcpus):
            sim.set_affinity(b, vcpu, None, frozenset(range(28)))
        await trio.sleep(61)
        await agent.scan(tick=True)
        assert {p.nodes for p in ts.dom0.placements(sim) if p.domid == b} == {frozenset({0})}
        assert len(recorder.of("action", "backend.pin")) == 12

        # A write under dom0's backend subtree makes the next scan read xenstore again,
        # for the guest it names only.
        await trio.sleep(2)
        await agent.scan()
        before, some = hooks.scans, hooks.partial_scans
        agent.wakeup = trio.Event()
        ts.session.write(f"/local/domain/0/backend/vbd/{a}/51712/kthread-pid",
                         str(ts.backend_pid(a)))
        await agent.wakeup.wait()  # the task read it, and asks for a pass
        assert (hooks.scans, hooks.partial_scans) == (before, some + 1)
        await agent.scan()
        assert agent.view is not None and all(v.on_home for v in agent.view.backends)
        assert {v.domid for v in agent.view.backends} == set(names) - {0}
        # One that names no guest (the subtree itself) makes it read every guest's.
        ts.session.write("/local/domain/0/backend", "")
        await trio.sleep(2)
        await agent.scan()
        assert (hooks.scans, hooks.partial_scans) == (before + 1, some + 1)
        nursery.cancel_scope.cancel()


async def until(done: Callable[[], bool]) -> None:
    while not done():
        await trio.sleep(0.01)


def test_the_guest_a_backend_path_names() -> None:
    assert guest_of(b"/local/domain/0/backend/vbd/7/51712/state") == 7
    assert guest_of(b"/local/domain/0/backend/vif/12") == 12
    assert guest_of(b"/local/domain/0/backend/vbd") is None  # a type: every guest
    assert guest_of(b"/local/domain/0/backend") is None
    assert guest_of(b"/local/domain/0/backend/vbd/x7/0") is None
    assert guest_of(b"/local/domain/0/backend/vbd/1234567/0") is None  # not a domid
    assert guest_of(b"/local/domain/0/backendx/vbd/7") is None
