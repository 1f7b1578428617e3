"""The per-watch channel alone: cancellation never loses an event, and the
overflow policy folds a full buffer into one resync event."""

from __future__ import annotations

import random

import pytest
import trio
import trio.testing

from agent.xenstore.watch_channel import Overflowed, WatchChannel, WatchEvent, WatchLost


def _ev(i: int) -> WatchEvent:
    return WatchEvent(b"/w/%d" % i, b"t")


async def test_cancel_arriving_just_after_the_event_loses_nothing() -> None:
    """The receiver is woken by an event and cancelled before it runs again:
    the nastiest moment. It either returns the event or leaves it queued."""
    channel = WatchChannel(b"/w", b"t", 16)
    got: list[WatchEvent] = []
    scope = trio.CancelScope()

    async def receiver() -> None:
        with scope:
            got.append(await channel.receive())

    async with trio.open_nursery() as nursery:
        nursery.start_soon(receiver)
        await trio.testing.wait_all_tasks_blocked()
        channel.put(_ev(1))  # wakes the receiver...
        scope.cancel()  # ...and cancels it before it has run
    left = [channel.receive_nowait() for _ in range(channel.pending)]
    assert got + left == [_ev(1)]


async def test_random_cancellations_lose_and_duplicate_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    rng = random.Random(7)
    channel = WatchChannel(b"/w", b"t", 10_000)
    sent = [_ev(i) for i in range(2000)]
    got: list[WatchEvent] = []
    current: list[trio.CancelScope] = []
    cancels = 0

    async def feeder() -> None:
        nonlocal cancels
        for event in sent:
            if rng.random() < 0.5:
                await trio.sleep(rng.choice([0, 0.001]))
            channel.put(event)
            if current and rng.random() < 0.5:
                current[-1].cancel()
                cancels += 1
        channel.close()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(feeder)
        while True:
            with trio.CancelScope() as scope:
                current.append(scope)
                try:
                    got.append(await channel.receive())
                except trio.EndOfChannel:
                    break
            if rng.random() < 0.3:
                await trio.sleep(0.0005)
    assert got == sent
    assert cancels > 500


async def test_overflow_folds_the_buffer_into_one_resync() -> None:
    channel = WatchChannel(b"/w", b"t", 3)
    for i in range(3):
        channel.put(_ev(i))
    assert channel.overflows == 0
    channel.put(_ev(3))
    assert (channel.pending, channel.overflows) == (1, 1)
    channel.put(_ev(4))
    channel.put(_ev(5))
    assert channel.overflows == 1
    first = channel.receive_nowait()
    assert isinstance(first, Overflowed) and first == (b"/w", b"t") and first.resync
    assert [channel.receive_nowait() for _ in range(2)] == [_ev(4), _ev(5)]
    # full again: the new event is folded in as well, nothing is ever dropped silently
    for i in range(6, 10):
        channel.put(_ev(i))
    assert (channel.overflows, channel.pending) == (2, 1)
    assert isinstance(channel.receive_nowait(), Overflowed)
    with pytest.raises(trio.WouldBlock):
        channel.receive_nowait()


async def test_close_delivers_what_is_buffered_then_ends() -> None:
    channel = WatchChannel(b"/w", b"t", 8)
    channel.put(_ev(1))
    channel.close()
    channel.put(_ev(2))  # after close: dropped
    assert [e async for e in channel] == [_ev(1)]
    with pytest.raises(trio.EndOfChannel):
        await channel.receive()


async def test_close_with_error_raises_it_after_the_buffer() -> None:
    channel = WatchChannel(b"/w", b"t", 8)
    channel.put(_ev(1))
    channel.close(WatchLost("gone"))
    assert await channel.receive() == _ev(1)
    with pytest.raises(WatchLost, match="gone"):
        await channel.receive()


def test_capacity_must_be_positive() -> None:
    with pytest.raises(ValueError, match="capacity"):
        WatchChannel(b"/w", b"t", 0)
