"""One live connection to a xenstored: requests multiplexed by req_id.

A writer task sends queued messages (so a cancelled caller never leaves half
a message on the stream) and a reader task decodes replies and hands each one
to the caller waiting on its req_id; WATCH_EVENTs go to a callback. When the
stream ends or breaks, every pending request fails at once with
``ConnectionLost`` and the connection is dead for good: the client makes a
new one.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from agent.xenstore import wire


class ConnectionLost(Exception):
    """The connection to xenstored broke (or was closed) before the reply came."""


class ClientClosed(ConnectionLost):
    """The client was closed."""


@dataclass(slots=True)
class _Pending:
    op: int
    done: trio.Event = field(default_factory=trio.Event)
    reply: wire.Packet | None = None
    error: ConnectionLost | None = None
    abandoned: bool = False


EventSink = Callable[[wire.Packet], None]


class Connection:
    """Owns a stream; run ``serve()`` in a task, call ``request()`` from any."""

    def __init__(self, stream: trio.abc.Stream, on_event: EventSink, generation: int) -> None:
        self.generation = generation
        self._stream = stream
        self._on_event = on_event
        self._pending: dict[int, _Pending] = {}
        self._ids = itertools.count(1)
        self._out_send, self._out_recv = trio.open_memory_channel[bytes](math.inf)
        self._error: ConnectionLost | None = None
        self._scope = trio.CancelScope()
        self.closed = trio.Event()

    @property
    def alive(self) -> bool:
        return self._error is None

    # -- callers ------------------------------------------------------------

    async def request(self, op: int, payload: bytes, tx_id: int = 0) -> bytes:
        """Send one request and return the reply payload. An ERROR reply raises
        ``wire.XenstoreError``; a lost connection raises ``ConnectionLost``."""
        if len(payload) > wire.PAYLOAD_MAX:
            # The C daemon drops a client that sends more; refuse it here.
            raise wire.XenstoreError(
                "E2BIG", f"{_name(op)} payload of {len(payload)} bytes exceeds {wire.PAYLOAD_MAX}"
            )
        if self._error is not None:
            raise _copy(self._error)
        req_id = self._next_id()
        pending = _Pending(op)
        self._pending[req_id] = pending
        self._out_send.send_nowait(wire.encode_raw(op, req_id, tx_id, payload))
        try:
            await pending.done.wait()
        except BaseException:
            # Cancelled: the request may still be served; its reply is dropped
            # (or undone, see _abandoned_reply).
            if not pending.done.is_set():
                pending.abandoned = True
            raise
        if pending.error is not None:
            raise _copy(pending.error)
        assert pending.reply is not None
        reply = pending.reply
        if reply.op == wire.Op.ERROR:
            raise wire.XenstoreError(reply.error_name() or "EIO", _name(op))
        return reply.payload

    def _next_id(self) -> int:
        while True:
            req_id = next(self._ids) & 0xFFFFFFFF
            if req_id and req_id not in self._pending:
                return req_id

    # -- the tasks ------------------------------------------------------------

    async def serve(self) -> None:
        """Read and write until the stream breaks or ``close`` is called; then
        fail whatever is still pending and close the stream."""
        try:
            with self._scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._guarded, self._writer, nursery.cancel_scope)
                    await self._guarded(self._reader, nursery.cancel_scope)
        finally:
            self._fail(ConnectionLost("xenstored closed the connection"))
            with trio.CancelScope(shield=True):
                await self._stream.aclose()
            self.closed.set()

    async def _guarded(self, task: Callable[[], Awaitable[None]], scope: trio.CancelScope) -> None:
        # Whichever side stops first takes the other down with it.
        try:
            await task()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(ConnectionLost(f"xenstored connection broke: {exc!r}"))
        except wire.ProtocolError as exc:
            self._fail(ConnectionLost(f"xenstored sent malformed data: {exc}"))
        finally:
            scope.cancel()

    async def _reader(self) -> None:
        decoder = wire.Decoder()
        while True:
            data = await self._stream.receive_some(65536)
            if not data:
                return
            decoder.feed(bytes(data))
            for packet in decoder.packets():
                self._dispatch(packet)

    async def _writer(self) -> None:
        async for first in self._out_recv:
            batch = [first]
            while True:
                try:
                    batch.append(self._out_recv.receive_nowait())
                except trio.WouldBlock:
                    break
            await self._stream.send_all(b"".join(batch))

    def _dispatch(self, packet: wire.Packet) -> None:
        if packet.op == wire.Op.WATCH_EVENT:
            self._on_event(packet)
            return
        pending = self._pending.pop(packet.req_id, None)
        if pending is None:
            return  # a reply nobody asked for: ignore, as libxenstore does
        if pending.abandoned:
            self._abandoned_reply(pending, packet)
            return
        pending.reply = packet
        pending.done.set()

    def _abandoned_reply(self, pending: _Pending, packet: wire.Packet) -> None:
        # A transaction started for a caller that was cancelled would hold a
        # daemon slot (and its quota) forever: end it.
        if pending.op == wire.Op.TRANSACTION_START and packet.op == wire.Op.TRANSACTION_START:
            try:
                tx_id = int(packet.payload.rstrip(b"\0"))
            except ValueError:
                return
            req_id = self._next_id()
            self._pending[req_id] = _Pending(wire.Op.TRANSACTION_END, abandoned=True)
            self._out_send.send_nowait(
                wire.encode_raw(wire.Op.TRANSACTION_END, req_id, tx_id, b"F\0")
            )

    # -- shutdown -----------------------------------------------------------

    def _fail(self, error: ConnectionLost) -> None:
        """Fail every pending request now; later requests fail at once."""
        if self._error is None:
            self._error = error
        pending, self._pending = self._pending, {}
        for p in pending.values():
            p.error = self._error
            p.done.set()

    def close(self, error: ConnectionLost | None = None) -> None:
        """Fail everything pending and stop ``serve`` (which closes the stream)."""
        self._fail(error or ClientClosed("xenstore client closed"))
        self._scope.cancel()


def _copy(error: ConnectionLost) -> ConnectionLost:
    # One exception object per waiter: raising a shared one from many tasks
    # would splice their tracebacks together.
    return type(error)(*error.args)


def _name(op: int) -> str:
    try:
        return wire.Op(op).name
    except ValueError:
        return f"type {op}"
