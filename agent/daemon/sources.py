"""Event sources as trio tasks, feeding one bounded channel that coalesces.

What reaches the agent's loop is a *wake-up*, not an event: ``SCAN`` (look at
the whole host now), ``TICK`` (the rules' periodic tick, after a scan),
``RESYNC`` (watch events were lost, to a reconnect or an overflowing buffer: a
full scan, whose diff against the last snapshot finds whatever they would have
said), ``DOMAINS`` (the domain list may have changed: a quick look at the
domains that did, against the last snapshot) or ``EVENTS`` (an extension has
events queued, a placement request say: decided against the last snapshot).
The events themselves come from diffing the scans (``diff``). A wake-up already
waiting in the channel is not queued again, so a thousand ``@introduceDomain``
watch events cost a few passes, not a thousand; the channel never holds more
than one wake-up of each kind.

- ``watch_xenstore``: ``@introduceDomain`` and ``@releaseDomain``; each change
  asks for a quick look at the domains and starts a burst (full scans every
  burst interval for a while); a lost and re-made connection (or an overflowed
  watch buffer) asks for a resync. dom0's backend subtree is the backend
  extension's to watch (``agent.backends.hooks``), not this one's;
- ``poll``: a scan every poll interval, every burst interval during a burst;
- ``tick``: the tick.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from agent.xenstore.client import Client, ConnectionLost, WatchLost

log = logging.getLogger("xnuma.sources")

SCAN = "scan"
TICK = "tick"
RESYNC = "resync"
DOMAINS = "domains"
EVENTS = "events"
KINDS = (SCAN, TICK, RESYNC, DOMAINS, EVENTS)
FULL = frozenset({SCAN, TICK, RESYNC})  # these need a full scan; the others a quick pass

WATCHED = ("@introduceDomain", "@releaseDomain")


@dataclass(slots=True)
class SignalStats:
    posted: int = 0
    coalesced: int = 0
    max_queued: int = 0


class Signals:
    """The one channel into the agent's loop. ``post`` never blocks."""

    def __init__(self) -> None:
        # One slot per kind: a kind already queued is never queued twice.
        self._send, self._receive = trio.open_memory_channel[str](len(KINDS))
        self._queued: set[str] = set()
        self.stats = SignalStats()

    def post(self, kind: str) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown wake-up {kind!r}")
        self.stats.posted += 1
        if kind in self._queued:
            self.stats.coalesced += 1
            return
        self._queued.add(kind)
        self._send.send_nowait(kind)  # cannot block: a slot per kind
        self.stats.max_queued = max(self.stats.max_queued, len(self._queued))

    @property
    def queued(self) -> int:
        return len(self._queued)

    async def receive(self) -> frozenset[str]:
        """Wait for a wake-up; return it with every other one already queued."""
        first = await self._receive.receive()
        self._queued.discard(first)
        return frozenset({first}) | self.drain()

    def drain(self) -> frozenset[str]:
        """The wake-ups queued now (none is waited for)."""
        kinds: set[str] = set()
        while True:
            try:
                kinds.add(self._receive.receive_nowait())
            except trio.WouldBlock:
                break
        self._queued -= kinds
        return frozenset(kinds)


class Burst:
    """Faster polling for a while after a domain event."""

    def __init__(self, clock: Callable[[], float] = trio.current_time) -> None:
        self._clock = clock
        self.until = -float("inf")
        self._changed = trio.Event()

    def start(self, seconds: float) -> None:
        until = self._clock() + seconds
        if until > self.until:
            self.until = until
            self._changed.set()
            self._changed = trio.Event()

    @property
    def active(self) -> bool:
        return self._clock() < self.until

    async def wait_started(self) -> None:
        await self._changed.wait()


async def poll(signals: Signals, burst: Burst, interval_s: float, burst_interval_s: float) -> None:
    """Ask for a scan every ``interval_s``, or ``burst_interval_s`` during a burst."""
    while True:
        if burst.active:
            await trio.sleep(burst_interval_s)
        else:
            with trio.move_on_after(interval_s):
                await burst.wait_started()  # a burst starting cuts the wait short
                await trio.sleep(burst_interval_s)
        signals.post(SCAN)


async def tick(signals: Signals, interval_s: float) -> None:
    while True:
        await trio.sleep(interval_s)
        signals.post(TICK)


async def watch_xenstore(
    client: Client, signals: Signals, burst: Burst, burst_s: float,
    paths: tuple[str, ...] = WATCHED,
) -> None:
    """Watch ``paths`` until cancelled; returns (logged) if the client gives up."""
    try:
        async with trio.open_nursery() as nursery:
            for path in paths:
                nursery.start_soon(_watch_one, client, path, signals, burst, burst_s)
    except* (ConnectionLost, WatchLost) as group:
        log.warning("xenstore watches lost (%s): polling only from now on", why(group))
        signals.post(RESYNC)


def why(group: BaseExceptionGroup[BaseException]) -> str:
    """The messages of the exceptions in ``group`` (nested groups flattened)."""
    out: list[str] = []
    for exc in group.exceptions:
        out.append(why(exc) if isinstance(exc, BaseExceptionGroup) else str(exc) or repr(exc))
    return "; ".join(out)


async def _watch_one(
    client: Client, path: str, signals: Signals, burst: Burst, burst_s: float
) -> None:
    async with client.watch(path) as events:
        first = True
        async for event in events:
            if event.resync:
                signals.post(RESYNC)
                burst.start(burst_s)
            elif not first:  # the registration event says nothing happened
                signals.post(DOMAINS)
                burst.start(burst_s)
            first = False
