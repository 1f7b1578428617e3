"""xenstored goes away for good under a running agent with its extensions: the agent
goes on polling, and placement and backend pinning go on without xenstore (backends
by thread name, requests on the socket only), instead of the agent stopping."""

from __future__ import annotations

import errno
import logging
import tempfile
from pathlib import Path

import pytest
import trio
import trio.testing
from test_placement_agent import TWO_NODES

from agent.backends.hooks import BackendHooks
from agent.daemon.build import open_agent, standard_hooks
from agent.daemon.simhost import sim_config
from agent.placement.hooks import PlacementHooks
from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import parse_scenario
from agent.sim.toolstack import SimToolstack
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream


class Killable:
    """A transport to the embedded xenstored that can be taken away: its connections
    hang up, and new ones are refused."""

    def __init__(self, hub: XenstoreHub, nursery: trio.Nursery) -> None:
        self.hub, self.nursery = hub, nursery
        self.alive = True
        self.connects = 0
        self._scopes: list[trio.CancelScope] = []

    async def __call__(self) -> trio.abc.Stream:
        await trio.lowlevel.checkpoint()
        if not self.alive:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "xenstored is gone")
        self.connects += 1
        mine, theirs = trio.testing.memory_stream_pair()
        scope = trio.CancelScope()
        self._scopes.append(scope)

        async def serve() -> None:
            with scope:
                await serve_stream(self.hub, theirs)
            await theirs.aclose()

        self.nursery.start_soon(serve)
        return mine

    def kill(self) -> None:
        self.alive = False
        for scope in self._scopes:
            scope.cancel()


async def test_the_agent_and_its_extensions_go_on_without_xenstore(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture,
) -> None:
    scenario = parse_scenario(TWO_NODES, source="two-nodes.toml").with_overrides(
        duration_s=14.0)
    toolstack = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, listeners=[toolstack])
    caplog.set_level(logging.WARNING)
    scans_at_loss = 0

    with tempfile.TemporaryDirectory() as tmp:
        config = sim_config(Path(tmp))
        async with trio.open_nursery() as nursery:
            transport = Killable(toolstack.hub, nursery)
            with open_agent(config, xenstore=transport, watch_rule_files=False,
                            keep_records=True,
                            hooks=standard_hooks(config, toolstack.dom0)) as agent:

                async def take_xenstore_away() -> None:
                    nonlocal scans_at_loss
                    await trio.sleep(2.0)
                    scans_at_loss = agent.stats.scans
                    transport.kill()

                nursery.start_soon(take_xenstore_away)
                await runner.run_async(agent)  # raises if the agent crashed
            nursery.cancel_scope.cancel()

    assert transport.connects == 2  # the loop's watches, the extensions' client
    (placement,) = [h for h in agent.hooks if isinstance(h, PlacementHooks)]
    (backends,) = [h for h in agent.hooks if isinstance(h, BackendHooks)]
    assert backends.xs is None  # restarted without xenstore
    # Polled on, through the client's reconnecting (about 8 s) and after it gave up:
    # about a scan per poll interval for the 12 s after the loss.
    assert agent.stats.scans - scans_at_loss > 100
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "polling only" in messages
    assert "placement requests and backend discovery go on without xenstore" in messages
    # The backends pinned before the loss stay pinned, found again by name.
    host = runner.host
    assert isinstance(host, SimHost)
    placements = toolstack.dom0.placements(host)
    assert len(placements) == 3 and all(p.on_home for p in placements)
    assert placement.service.pending == 0
