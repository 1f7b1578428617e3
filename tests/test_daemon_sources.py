"""Event sources: the coalescing channel, the poller's bursts, the tick, xenstore watches."""

from __future__ import annotations

import pytest
import trio
import trio.testing

from agent.daemon import sources
from agent.daemon.simhost import embedded_transport
from agent.daemon.sources import RESYNC, SCAN, TICK, Burst, Signals
from agent.xenstore.client import open_client
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import XenstoreHub


async def test_a_wake_up_already_queued_is_not_queued_again() -> None:
    s = Signals()
    for _ in range(1000):
        s.post(SCAN)
    s.post(TICK)
    s.post(SCAN)
    assert s.queued == 2
    assert s.stats.posted == 1002 and s.stats.coalesced == 1000 and s.stats.max_queued == 2
    assert await s.receive() == frozenset({SCAN, TICK})
    assert s.queued == 0
    s.post(SCAN)  # queued again once taken
    assert await s.receive() == frozenset({SCAN})


async def test_unknown_wake_ups_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown wake-up"):
        Signals().post("reboot")


async def test_drain_takes_only_what_is_queued(autojump_clock: trio.testing.MockClock) -> None:
    s = Signals()
    assert s.drain() == frozenset()
    s.post(RESYNC)
    assert s.drain() == frozenset({RESYNC})
    assert s.queued == 0


async def test_the_poller_speeds_up_during_a_burst(autojump_clock: trio.testing.MockClock) -> None:
    s = Signals()
    burst = Burst()
    seen: list[float] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(sources.poll, s, burst, 1.0, 0.1)

        async def collect() -> None:
            while True:
                await s.receive()
                seen.append(round(trio.current_time(), 3))

        nursery.start_soon(collect)
        await trio.sleep(2.55)
        burst.start(0.5)  # a domain event at 2.55 s
        await trio.sleep(2.0)
        nursery.cancel_scope.cancel()
    # every second; then within a burst interval of the event, every 0.1 s for the
    # burst; then every second again
    assert seen[:2] == [1.0, 2.0]
    assert seen[2:8] == [2.65, 2.75, 2.85, 2.95, 3.05, 4.05]


async def test_the_tick(autojump_clock: trio.testing.MockClock) -> None:
    s = Signals()
    with trio.move_on_after(3.5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sources.tick, s, 1.0)
            await trio.sleep(3.5)
            nursery.cancel_scope.cancel()
    assert s.stats.posted == 3 and s.stats.coalesced == 2  # nobody took them: coalesced


async def test_xenstore_watches_ask_for_scans_and_start_a_burst(
    autojump_clock: trio.testing.MockClock,
) -> None:
    hub = XenstoreHub.of(XenstoreDaemon())
    toolstack = hub.session()
    s = Signals()
    burst = Burst()
    async with trio.open_nursery() as nursery:
        transport = embedded_transport(hub, nursery)
        async with open_client(transport) as client:
            nursery.start_soon(sources.watch_xenstore, client, s, burst, 3.0)
            await trio.testing.wait_all_tasks_blocked()
            # the watches' registration events say nothing happened
            assert s.stats.posted == 0 and not burst.active
            toolstack.introduce_domain(5)
            toolstack.introduce_domain(6)
            await trio.testing.wait_all_tasks_blocked()
            # one quick look at the domains waiting, the second folded into it
            assert s.stats.posted == 2 and s.queued == 1
            assert s.drain() == {sources.DOMAINS}
            assert burst.active
            # dom0's backend subtree is the backend extension's to watch, and only its
            toolstack.write("/local/domain/0/backend/vbd/5/51712/state", "1")
            toolstack.write("/local/domain/0/name", "Domain-0")  # not watched
            await trio.testing.wait_all_tasks_blocked()
            assert s.stats.posted == 2
            nursery.cancel_scope.cancel()
