"""xnuma's trio XenStore client.

    async with open_client() as xs:                 # $XENSTORED_PATH, socket or xenbus
        await xs.write("/vm/1/name", b"guest")
        print(await xs.read("/vm/1/name"))
        async with xs.watch("/vm") as events:       # fires once at once, as xenstored does
            async for path, token in events:
                ...
        await xs.transact(fn)                       # fn(tx), retried on EAGAIN

Concurrency: any number of tasks may call the client at once; requests are
multiplexed on one connection by req_id (see ``connection.py``).

Faults: when the connection drops, every pending request raises
``ConnectionLost`` at once. The client then reconnects in the background
with bounded backoff; requests made meanwhile wait for the new connection (or
raise ``ConnectionLost`` when the client gives up). Transactions die with
their connection and are not retried (a commit whose reply was lost may or
may not have happened). On reconnect every open watch is registered again
and its channel first receives a ``Reconnected`` event (``event.resync`` is
True) for the watched path, then the daemon's registration event: changes
made while disconnected are lost, so the reader must re-read its subtree.
The new connection serves requests only once all watches are back on it, so
a re-read after ``Reconnected`` cannot miss a later change. Code that caches
what it read outside any watch can follow ``generation`` and
``wait_reconnected()`` for the same purpose.

Closing (leaving ``open_client``) fails every pending request with
``ClientClosed`` and ends every watch channel; no task outlives it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import TypeVar

import tenacity
import trio

from agent.xenstore import wire
from agent.xenstore.backoff import Backoff
from agent.xenstore.connection import ClientClosed, Connection, ConnectionLost
from agent.xenstore.operations import Operations, PathArg, as_bytes
from agent.xenstore.transport import Transport, default_transport
from agent.xenstore.watch_channel import (
    Overflowed,
    Reconnected,
    Resync,
    WatchChannel,
    WatchEvent,
    WatchLost,
)
from agent.xenstore.wire import Op

__all__ = [
    "Backoff",
    "Client",
    "ClientClosed",
    "ConnectionLost",
    "Overflowed",
    "Reconnected",
    "Resync",
    "Transaction",
    "TransactionGaveUp",
    "WatchChannel",
    "WatchEvent",
    "WatchLost",
    "open_client",
]

T = TypeVar("T")

DEFAULT_RECONNECT = Backoff(attempts=10, initial=0.05, multiplier=2.0, maximum=2.0, jitter=0.5)
DEFAULT_TRANSACTION_RETRY = Backoff(attempts=8, initial=0.005, multiplier=2.0, maximum=0.5)
DEFAULT_WATCH_BUFFER = 1024
# Cleanup requests (UNWATCH, aborting a transaction) run shielded from
# cancellation; this bounds how long they may hold up the caller.
CLEANUP_TIMEOUT = 5.0


class TransactionGaveUp(wire.XenstoreError):
    """``transact`` met EAGAIN on every one of its attempts."""

    def __init__(self, attempts: int) -> None:
        super().__init__("EAGAIN", f"transaction still conflicting after {attempts} attempts")
        self.attempts = attempts


class Transaction(Operations):
    """Operations inside one XenStore transaction (bound to one connection)."""

    def __init__(self, conn: Connection, tx_id: int) -> None:
        self.tx_id = tx_id
        self._conn = conn
        self._ended = False

    async def _request(self, op: Op, payload: bytes) -> bytes:
        if self._ended:
            raise RuntimeError(f"transaction {self.tx_id} has already ended")
        return await self._conn.request(op, payload, self.tx_id)

    async def _end(self, commit: bool) -> None:
        self._ended = True
        await self._conn.request(Op.TRANSACTION_END, b"T\0" if commit else b"F\0", self.tx_id)


@dataclass(eq=False, slots=True)
class _Watch:
    channel: WatchChannel
    conn: Connection | None = None  # where it is registered now
    removed: bool = False


class Client(Operations):
    """Made by ``open_client``; not to be constructed directly."""

    def __init__(
        self,
        transport: Transport,
        *,
        reconnect: Backoff,
        transaction_retry: Backoff,
        watch_buffer: int,
    ) -> None:
        self._transport = transport
        self._reconnect = reconnect
        self._transaction_retry = transaction_retry
        self._watch_buffer = watch_buffer
        self._conn: Connection | None = None
        self._generation = 0
        self._changed = trio.Event()
        self._final: ConnectionLost | None = None
        self._watches: dict[bytes, list[_Watch]] = {}
        self._watch_lock = trio.Lock()  # registration vs re-registration
        self._tokens = itertools.count(1)

    # -- connection state -----------------------------------------------------

    @property
    def generation(self) -> int:
        """How many connections this client has made (1 until the first
        reconnect). A change means anything read before may be stale."""
        return self._generation

    @property
    def connected(self) -> bool:
        return self._conn is not None and self._conn.alive

    async def wait_reconnected(self, after: int) -> int:
        """Wait until ``generation > after`` and return it. Raises
        ``ConnectionLost`` once the client has given up or closed."""
        while self._generation <= after:
            if self._final is not None:
                raise type(self._final)(*self._final.args)
            await self._changed.wait()
        return self._generation

    def _notify(self) -> None:
        self._changed.set()
        self._changed = trio.Event()

    async def _connection(self) -> Connection:
        while True:
            if self._final is not None:
                raise type(self._final)(*self._final.args)
            if self._conn is not None and self._conn.alive:
                return self._conn
            await self._changed.wait()

    async def _request(self, op: Op, payload: bytes) -> bytes:
        conn = await self._connection()
        return await conn.request(op, payload)

    def _install(self, conn: Connection) -> None:
        self._conn = conn
        self._generation = conn.generation
        self._notify()

    async def _maintain(self, stream: trio.abc.Stream) -> None:
        """Serve the connection; when it drops, reconnect and re-register the
        watches; give up (failing everyone) after the reconnect budget.

        A new connection is handed to callers only once every watch is
        registered on it again, so whatever a caller reads on it afterwards,
        a later change fires its watches."""
        while True:
            conn = Connection(stream, self._on_event, self._generation + 1)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(conn.serve)
                if conn.generation == 1 or await self._reregister(conn):
                    self._install(conn)
            if self._final is not None:
                return
            self._conn = None
            self._notify()
            try:
                stream = await self._connect_with_backoff()
            except Exception as exc:
                self._finish(
                    ConnectionLost(
                        f"gave up reconnecting to xenstored after "
                        f"{self._reconnect.attempts} attempts: {exc!r}"
                    )
                )
                return

    async def _connect_with_backoff(self) -> trio.abc.Stream:
        retrying = self._reconnect.retrying(tenacity.retry_if_exception_type(Exception))
        stream: trio.abc.Stream | None = None
        async for attempt in retrying:
            with attempt:
                stream = await self._transport()
        assert stream is not None
        return stream

    def _finish(self, error: ConnectionLost) -> None:
        """The end: fail every waiter and every watch channel."""
        if self._final is None:
            self._final = error
        if self._conn is not None:
            self._conn.close(error)
        for watches in self._watches.values():
            for w in watches:
                w.channel.close(None if isinstance(error, ClientClosed) else error)
        self._notify()

    # -- watches --------------------------------------------------------------

    @asynccontextmanager
    async def watch(
        self, path: PathArg, token: PathArg | None = None
    ) -> AsyncIterator[WatchChannel]:
        """Register a watch and yield its event channel; unregister on exit.

        The daemon fires the watch once on registration (path = the watched
        path); that event is delivered like any other.
        """
        p = as_bytes(path)
        t = as_bytes(token, "token") if token is not None else b"xnuma-%d" % next(self._tokens)
        w = _Watch(WatchChannel(p, t, self._watch_buffer))
        # Registered before WATCH is sent: the first event follows the reply.
        self._watches.setdefault(t, []).append(w)
        try:
            while w.conn is None:
                conn = await self._connection()
                async with self._watch_lock:
                    if conn is self._conn and conn.alive:  # else: replaced meanwhile
                        await conn.request(Op.WATCH, wire.join(p, t))
                        w.conn = conn
        except BaseException:
            self._forget(w)
            raise
        try:
            yield w.channel
        finally:
            self._forget(w)
            with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                await self._unwatch(w)

    async def _unwatch(self, w: _Watch) -> None:
        async with self._watch_lock:
            conn = w.conn
            if conn is None or not conn.alive or conn is not self._conn:
                return
            with suppress(wire.XenstoreError, ConnectionLost):  # gone already: fine
                await conn.request(Op.UNWATCH, wire.join(w.channel.path, w.channel.token))

    def _forget(self, w: _Watch, error: BaseException | None = None) -> None:
        w.removed = True
        w.channel.close(error)
        watches = self._watches.get(w.channel.token, [])
        if w in watches:
            watches.remove(w)
            if not watches:
                del self._watches[w.channel.token]

    async def _reregister(self, conn: Connection) -> bool:
        """Register every watch again on ``conn``; False if it dropped meanwhile."""
        async with self._watch_lock:
            for w in [w for ws in self._watches.values() for w in ws]:
                if w.removed or w.conn is conn or w.conn is None:
                    continue
                w.channel.put(Reconnected(w.channel.path, w.channel.token))
                try:
                    await conn.request(Op.WATCH, wire.join(w.channel.path, w.channel.token))
                except ConnectionLost:
                    return False  # dropped again: the next connection retries
                except wire.XenstoreError as exc:
                    w.conn = None
                    self._forget(w, WatchLost(f"xenstored refused to re-register it: {exc}"))
                    continue
                w.conn = conn
        return True

    def _on_event(self, packet: wire.Packet) -> None:
        parts = wire.split(packet.payload)
        if len(parts) < 2:
            return  # malformed: nothing to route it by
        path, token = parts[0], parts[1]
        watches = self._watches.get(token)
        if not watches:
            return
        # Same token on several watches: route by path (events are children
        # of the watched path); if none matches, tell them all.
        targets = [w for w in watches if _under(path, w.channel.path)] or watches
        for w in targets:
            w.channel.put(WatchEvent(path, token))

    async def reset_watches(self) -> None:
        """RESET_WATCHES: the daemon drops all watches (and transactions) of
        this connection; their channels end with ``WatchLost``."""
        async with self._watch_lock:
            await self._request(Op.RESET_WATCHES, b"\0")
            for w in [w for ws in self._watches.values() for w in ws]:
                w.conn = None  # nothing left to UNWATCH
                self._forget(w, WatchLost("RESET_WATCHES dropped this watch"))

    # -- transactions ---------------------------------------------------------

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Transaction]:
        """Commit on normal exit (EAGAIN raises ``XenstoreError('EAGAIN')``),
        abort if the block raises."""
        conn = await self._connection()
        reply = await conn.request(Op.TRANSACTION_START, b"\0")
        tx = Transaction(conn, int(reply.rstrip(b"\0")))
        try:
            yield tx
        except BaseException:
            if conn.alive:
                with trio.move_on_after(CLEANUP_TIMEOUT, shield=True):
                    with suppress(wire.XenstoreError, ConnectionLost):
                        await tx._end(commit=False)
            raise
        await tx._end(commit=True)

    async def transact(
        self, fn: Callable[[Transaction], Awaitable[T]], *, retry: Backoff | None = None
    ) -> T:
        """Run ``fn(tx)`` in a transaction and commit; on EAGAIN (from the
        commit or any request in it) start over, at most ``retry.attempts``
        times in all, then raise ``TransactionGaveUp``."""
        policy = retry or self._transaction_retry
        retrying = policy.retrying(tenacity.retry_if_exception(_is_eagain), reraise=False)
        try:
            async for attempt in retrying:
                with attempt:
                    async with self.transaction() as tx:
                        result = await fn(tx)
                    return result
        except tenacity.RetryError as exc:
            raise TransactionGaveUp(policy.attempts) from exc.last_attempt.exception()
        raise AssertionError("tenacity ended without a result")  # pragma: no cover


def _is_eagain(exc: BaseException) -> bool:
    return isinstance(exc, wire.XenstoreError) and exc.name == "EAGAIN"


def _under(path: bytes, watched: bytes) -> bool:
    if path == watched or watched == b"/":
        return True
    return path.startswith(watched + b"/" if not watched.startswith(b"@") else watched)


@asynccontextmanager
async def open_client(
    transport: Transport | None = None,
    *,
    reconnect: Backoff = DEFAULT_RECONNECT,
    transaction_retry: Backoff = DEFAULT_TRANSACTION_RETRY,
    watch_buffer: int = DEFAULT_WATCH_BUFFER,
) -> AsyncIterator[Client]:
    """Connect (once: an unreachable daemon raises ``ConnectionLost`` at
    once) and yield a client whose tasks all live inside this block."""
    if watch_buffer < 1:
        raise ValueError(f"watch_buffer must be >= 1, got {watch_buffer}")
    connect = transport or default_transport()
    try:
        stream = await connect()
    except OSError as exc:
        name = getattr(connect, "__qualname__", repr(connect))
        raise ConnectionLost(f"cannot connect to xenstored via {name}: {exc}") from exc
    client = Client(
        connect, reconnect=reconnect, transaction_retry=transaction_retry, watch_buffer=watch_buffer
    )
    async with trio.open_nursery() as nursery:
        nursery.start_soon(client._maintain, stream)
        try:
            yield client
        finally:
            client._finish(ClientClosed("xenstore client closed"))
            nursery.cancel_scope.cancel()
