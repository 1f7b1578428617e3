"""The backend extension reads xenstore in a task of its own, not inside the agent's
scans: the production agent on the simulated seed host keeps scanning (and sees a guest
paused) while a full backend rescan crawls through a slow xenstored, and goes on
scanning when xenstored stops answering in the middle of one (the rescan is cut at its
budget and backs off). Virtual time."""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import trio
import trio.testing

from agent.backends.hooks import BackendHooks
from agent.daemon.build import open_agent
from agent.daemon.hooks import AgentHooks
from agent.daemon.loop import Agent
from agent.daemon.recorder import Recorder
from agent.daemon.simhost import sim_config
from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import load_scenario
from agent.sim.toolstack import SimToolstack
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream


class Xenstored:
    """The embedded xenstored, answering each reply ``delay`` seconds late, or not at
    all while ``frozen`` (a hung daemon: the connection stays up, nothing comes back)."""

    def __init__(self, hub: XenstoreHub, nursery: trio.Nursery, delay: float) -> None:
        self.hub, self.nursery, self.delay = hub, nursery, delay
        self.frozen = False
        self.replies = 0

    async def __call__(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        mine, theirs = trio.testing.memory_stream_pair()
        self.nursery.start_soon(serve_stream, self.hub, theirs)
        return _Late(mine, self)


class _Late(trio.abc.Stream):
    def __init__(self, inner: trio.abc.Stream, daemon: Xenstored) -> None:
        self.inner, self.daemon = inner, daemon

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        await trio.sleep(self.daemon.delay)
        while self.daemon.frozen:
            await trio.sleep(1.0)
        self.daemon.replies += 1
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


async def until(done: Callable[[], bool], step: float = 0.01) -> None:
    while not done():
        await trio.sleep(step)


def events_of(agent: Agent, type_: str) -> list[dict[str, object]]:
    return [b for _, b in agent.recorder.kept or []
            if b["kind"] == "event" and b["type"] == type_]


async def run_seed(
    delay: float, duration_s: float, probe: Callable[[Agent, BackendHooks, Xenstored, Runner],
                                                      object],
    **hook_options: float,
) -> tuple[Agent, BackendHooks, Runner, SimToolstack]:
    scenario = load_scenario("seed-abc").with_overrides(duration_s=duration_s)
    toolstack = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, listeners=[toolstack])
    made: list[BackendHooks] = []

    def hooks(recorder: Recorder) -> list[AgentHooks]:
        made.append(BackendHooks(recorder, toolstack.dom0, **hook_options))
        return list(made)

    with tempfile.TemporaryDirectory() as tmp:
        config = sim_config(Path(tmp))
        async with trio.open_nursery() as nursery:
            xenstored = Xenstored(toolstack.hub, nursery, delay)
            with open_agent(config, xenstore=xenstored, watch_rule_files=False,
                            keep_records=True, hooks=hooks) as agent:
                nursery.start_soon(probe, agent, made[0], xenstored, runner)
                await runner.run_async(agent)  # raises if the agent crashed
            nursery.cancel_scope.cancel()
    return agent, made[0], runner, toolstack


async def test_scans_go_on_during_a_full_rescan_of_a_slow_xenstore(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: dict[str, int] = {}

    async def probe(agent: Agent, backends: BackendHooks, xs: Xenstored,
                    runner: Runner) -> None:
        await until(lambda: backends.rescanning == "full")
        seen["scans_before"], replies = agent.stats.scans, xs.replies
        host = runner.host
        assert isinstance(host, SimHost)
        host.pause(runner.live["C"].domid)
        # The loop saw the pause at its next scan, and scanned on, all within that same
        # full rescan.
        await until(lambda: bool(events_of(agent, "domain.pause")))
        seen["scans_at_pause"] = agent.stats.scans
        await until(lambda: agent.stats.scans >= seen["scans_at_pause"] + 10)
        assert backends.rescanning == "full" and backends.scans == 0
        seen["replies_meanwhile"] = xs.replies - replies

    agent, backends, runner, toolstack = await run_seed(0.1, 10.0, probe)
    assert seen["scans_at_pause"] - seen["scans_before"] <= 2
    assert seen["replies_meanwhile"] > 0  # the rescan was reading all along
    # The rescan ended, was published, and the scans that took it pinned the backends.
    assert backends.scans >= 1 and backends.cut_short == 0
    host = runner.host
    assert isinstance(host, SimHost)
    placements = toolstack.dom0.placements(host)
    assert len(placements) == 9 and all(p.on_home for p in placements)
    assert len(events_of(agent, "backend.appear")) == 9


async def test_scans_go_on_when_xenstored_stops_answering(
    autojump_clock: trio.testing.MockClock,
) -> None:
    seen: dict[str, int] = {}

    async def probe(agent: Agent, backends: BackendHooks, xs: Xenstored,
                    runner: Runner) -> None:
        await until(lambda: backends.scans == 1 and agent.view is not None
                    and len(agent.view.backends) == 9)
        xs.frozen = True  # a hung xenstored: the next periodic rescan never gets an answer
        seen["scans_at_freeze"] = agent.stats.scans
        await until(lambda: backends.cut_short >= 2)
        seen["scans_after_two_cuts"] = agent.stats.scans
        assert agent.view is not None and len(agent.view.backends) == 9  # kept meanwhile

    _, backends, runner, toolstack = await run_seed(
        0.0, 16.0, probe, rescan_s=2.0, rescan_budget_s=1.0)
    # Two rescans cut at 1 s each and a back-off of 1 s between: about 3 s of polling
    # at 0.1 s, which a scan reading xenstore would have spent stuck on its first read.
    assert seen["scans_after_two_cuts"] - seen["scans_at_freeze"] >= 20
    assert backends.scans == 1 and backends.partial_scans >= 2
    host = runner.host
    assert isinstance(host, SimHost)
    assert all(p.on_home for p in toolstack.dom0.placements(host))
