"""Per-watch event channels of the XenStore client.

Each watch owns a bounded buffer filled by the client's reader task and
drained by its user with ``receive()`` or ``async for``. Two guarantees:

- Cancellation loses nothing: ``receive()`` only takes an event off the
  buffer after its last checkpoint, so a receiver cancelled while waiting
  leaves every event for the next ``receive()``.
- The reader never blocks on a slow user. When an event arrives and the
  buffer already holds ``capacity`` events, the buffer is emptied and
  replaced by one ``Overflowed`` event for the watch's own path: in XenStore
  terms "something under this path changed, re-read the subtree", which
  covers every event it replaced. ``overflows`` counts how often.

Events are ``(path, token)`` named tuples. ``Resync`` events (``Overflowed``
from this buffer, ``Reconnected`` after the client reconnected) carry the
watched path itself and ``resync`` is True on them: whoever reads the
channel must re-read the whole watched subtree, because changes in between
were not reported one by one.
"""

from __future__ import annotations

from collections import deque
from typing import NamedTuple

import trio


class WatchEvent(NamedTuple):
    """A WATCH_EVENT: ``path`` changed (or is the watch's own path, as on
    registration), for the watch registered with ``token``."""

    path: bytes
    token: bytes

    @property
    def resync(self) -> bool:
        """True when individual events were lost and the subtree must be re-read."""
        return False


class Resync(WatchEvent):
    """Synthetic event for the watched path: re-read the whole subtree."""

    __slots__ = ()

    @property
    def resync(self) -> bool:
        return True


class Overflowed(Resync):
    """The buffer was full; the events it held were folded into this one."""

    __slots__ = ()


class Reconnected(Resync):
    """The connection was lost and re-made; the watch is registered again
    (the daemon's own registration event follows, as on any new watch)."""

    __slots__ = ()


class WatchLost(Exception):
    """The daemon no longer holds this watch (it refused to re-register it
    after a reconnect, or RESET_WATCHES dropped it)."""


class WatchChannel:
    """The receive side of one watch. Iterating ends when the watch or the
    client is closed; if the watch was lost, the reason is raised instead."""

    def __init__(self, path: bytes, token: bytes, capacity: int) -> None:
        if capacity < 1:
            raise ValueError(f"watch buffer capacity must be >= 1, got {capacity}")
        self.path = path
        self.token = token
        self.capacity = capacity
        self.overflows = 0
        self._events: deque[WatchEvent] = deque()
        self._lot = trio.lowlevel.ParkingLot()
        self._closed = False
        self._error: BaseException | None = None

    # -- producer side (the client) ------------------------------------------

    def put(self, event: WatchEvent) -> None:
        """Never blocks; see the module docstring for the overflow policy."""
        if self._closed:
            return
        if len(self._events) >= self.capacity:
            self._events.clear()
            self.overflows += 1
            event = Overflowed(self.path, self.token)
        self._events.append(event)
        self._lot.unpark_all()

    def close(self, error: BaseException | None = None) -> None:
        """No more events. Buffered ones are still delivered; after them
        ``receive`` raises ``error`` if given, else ``trio.EndOfChannel``."""
        if not self._closed:
            self._closed = True
            self._error = error
        self._lot.unpark_all()

    # -- consumer side --------------------------------------------------------

    @property
    def pending(self) -> int:
        return len(self._events)

    def receive_nowait(self) -> WatchEvent:
        if self._events:
            return self._events.popleft()
        if self._closed:
            if self._error is not None:
                raise self._error
            raise trio.EndOfChannel
        raise trio.WouldBlock

    async def receive(self) -> WatchEvent:
        await trio.lowlevel.checkpoint_if_cancelled()
        while True:
            try:
                event = self.receive_nowait()
            except trio.WouldBlock:
                await self._lot.park()
                continue
            # A checkpoint that cannot cancel: yield to the scheduler without
            # risking the event we already hold.
            await trio.lowlevel.cancel_shielded_checkpoint()
            return event

    def __aiter__(self) -> WatchChannel:
        return self

    async def __anext__(self) -> WatchEvent:
        try:
            return await self.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
