"""The XenStore client against a scripted peer over trio's in-memory streams.

The peer plays xenstored by hand (decodes each request, answers what the test
says, when it says), which makes multiplexing, cancellation and connection
faults exact and deterministic under the autojump clock.
"""

from __future__ import annotations

import math
import os
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing

from agent.xenstore import wire
from agent.xenstore.backoff import Backoff
from agent.xenstore.client import (
    Client,
    ClientClosed,
    ConnectionLost,
    Overflowed,
    Reconnected,
    Transaction,
    TransactionGaveUp,
    WatchEvent,
    WatchLost,
    open_client,
)
from agent.xenstore.transport import socket_path, unix_socket, xenbus_device
from agent.xenstore.wire import Op, Packet

OK = b"OK\0"


class Peer:
    """The daemon side of one connection, driven by the test."""

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = wire.Decoder()

    async def recv(self) -> Packet:
        while (packet := self.decoder.next_packet()) is None:
            data = await self.stream.receive_some(65536)
            if not data:
                raise EOFError("client closed the connection")
            self.decoder.feed(bytes(data))
        return packet

    async def expect(self, op: Op, payload: bytes | None = None, tx_id: int = 0) -> Packet:
        packet = await self.recv()
        assert (packet.op_name, packet.tx_id) == (op.name, tx_id), packet
        if payload is not None:
            assert packet.payload == payload
        return packet

    async def reply(self, request: Packet, payload: bytes = OK) -> None:
        await self.stream.send_all(
            Packet(request.op, request.req_id, request.tx_id, payload).encode()
        )

    async def error(self, request: Packet, name: str) -> None:
        reply = Packet(Op.ERROR, request.req_id, request.tx_id, name.encode() + b"\0")
        await self.stream.send_all(reply.encode())

    async def event(self, path: bytes, token: bytes) -> None:
        await self.stream.send_all(Packet(Op.WATCH_EVENT, 0, 0, wire.join(path, token)).encode())

    async def answer(self, op: Op, payload: bytes = OK) -> Packet:
        """Expect one request of type ``op`` and acknowledge it."""
        request = await self.expect(op)
        await self.reply(request, payload)
        return request


class Switchboard:
    """A transport: each connect makes a stream pair and queues the peer half."""

    def __init__(self) -> None:
        self._send, self._recv = trio.open_memory_channel[Peer](math.inf)
        self.refuse = False
        self.connects = 0

    async def connect(self) -> trio.abc.Stream:
        self.connects += 1
        if self.refuse:
            raise ConnectionRefusedError("xenstored is down")
        client_side, daemon_side = trio.testing.memory_stream_pair()
        self._send.send_nowait(Peer(daemon_side))
        return client_side

    async def accept(self) -> Peer:
        return await self._recv.receive()


NO_JITTER = Backoff(attempts=4, initial=0.1, multiplier=2.0, maximum=1.0, jitter=0.0)


@asynccontextmanager
async def scripted(**kwargs: Any) -> AsyncIterator[tuple[Client, Switchboard, Peer]]:
    board = Switchboard()
    kwargs.setdefault("reconnect", NO_JITTER)
    async with open_client(board.connect, **kwargs) as client:
        yield client, board, await board.accept()


async def concurrently(nursery: trio.Nursery, fn: Callable[[], Awaitable[Any]]) -> list[Any]:
    """Start ``fn`` in the nursery; the list receives its result or exception."""
    out: list[Any] = []

    async def run() -> None:
        try:
            out.append(await fn())
        except Exception as exc:
            out.append(exc)

    nursery.start_soon(run)
    return out


# -- requests ----------------------------------------------------------------


async def test_replies_out_of_order_reach_their_callers() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        results = [await concurrently(nursery, lambda i=i: client.read(f"/k{i}")) for i in range(5)]
        requests = [await peer.expect(Op.READ) for _ in range(5)]
        assert len({r.req_id for r in requests}) == 5
        for request in reversed(requests):
            await peer.reply(request, b"value of " + request.payload[:-1])
    assert [r[0] for r in results] == [b"value of /k%d" % i for i in range(5)]


CASES: list[tuple[str, tuple[Any, ...], Op, bytes, bytes, Any]] = [
    # method, args, request type, request payload, reply payload, result
    ("read", ("/a",), Op.READ, b"/a\0", b"\x00\xff bin\0", b"\x00\xff bin\0"),
    ("write", (b"/a", b"\0\xfe\x80"), Op.WRITE, b"/a\0\0\xfe\x80", OK, None),
    ("write", ("/a", b""), Op.WRITE, b"/a\0", OK, None),
    ("mkdir", ("/d",), Op.MKDIR, b"/d\0", OK, None),
    ("rm", ("/d",), Op.RM, b"/d\0", OK, None),
    ("directory", ("/d",), Op.DIRECTORY, b"/d\0", b"x\0y\0", [b"x", b"y"]),
    ("directory", ("/e",), Op.DIRECTORY, b"/e\0", b"", []),
    ("exists", ("/d",), Op.GET_PERMS, b"/d\0", b"n0\0", True),
    (
        "get_perms",
        ("/d",),
        Op.GET_PERMS,
        b"/d\0",
        b"n0\0r5\0",
        [wire.Perm(wire.Access.NONE, 0), wire.Perm(wire.Access.READ, 5)],
    ),
    (
        "set_perms",
        ("/d", [wire.Perm(wire.Access.BOTH, 3), wire.Perm(wire.Access.WRITE, 7)]),
        Op.SET_PERMS,
        b"/d\0b3\0w7\0",
        OK,
        None,
    ),
    ("get_domain_path", (7,), Op.GET_DOMAIN_PATH, b"7\0", b"/local/domain/7\0", b"/local/domain/7"),
    ("introduce", (3, -2, 15), Op.INTRODUCE, wire.join(b"3", b"-2", b"15"), OK, None),
    ("release", (3,), Op.RELEASE, b"3\0", OK, None),
    ("resume", (3,), Op.RESUME, b"3\0", OK, None),
    ("is_domain_introduced", (3,), Op.IS_DOMAIN_INTRODUCED, b"3\0", b"T\0", True),
    ("is_domain_introduced", (4,), Op.IS_DOMAIN_INTRODUCED, b"4\0", b"F\0", False),
    ("set_target", (5, 6), Op.SET_TARGET, wire.join(b"5", b"6"), OK, None),
    ("control", ("check",), Op.CONTROL, b"check\0", b"OK\0", b"OK"),
    ("control", ("log", b"on"), Op.CONTROL, b"log\0on\0", b"OK\0", b"OK"),
    ("reset_watches", (), Op.RESET_WATCHES, b"\0", OK, None),
]


@pytest.mark.parametrize(("method", "args", "op", "sent", "reply", "result"), CASES)
async def test_typed_operation_encoding(
    method: str, args: tuple[Any, ...], op: Op, sent: bytes, reply: bytes, result: Any
) -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        out = await concurrently(nursery, lambda: getattr(client, method)(*args))
        await peer.reply(await peer.expect(op, sent), reply)
    assert out == [result]


async def test_error_reply_raises_xenstore_error_with_errno_name() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        out = await concurrently(nursery, lambda: client.read("/missing"))
        await peer.error(await peer.expect(Op.READ), "ENOENT")
        exists = await concurrently(nursery, lambda: client.exists("/missing"))
        await peer.error(await peer.expect(Op.GET_PERMS), "ENOENT")
    assert isinstance(out[0], wire.XenstoreError) and out[0].name == "ENOENT"
    assert exists == [False]


async def test_exists_raises_on_errors_other_than_enoent() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        out = await concurrently(nursery, lambda: client.exists("/secret"))
        await peer.error(await peer.expect(Op.GET_PERMS), "EACCES")
    assert isinstance(out[0], wire.XenstoreError) and out[0].name == "EACCES"


async def test_oversized_request_is_refused_locally_and_connection_survives() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        with pytest.raises(wire.XenstoreError) as info:
            await client.write("/big", b"x" * 4096)
        assert info.value.name == "E2BIG"
        out = await concurrently(nursery, lambda: client.write("/ok", b"x" * (4096 - 4)))
        await peer.answer(Op.WRITE)
    assert out == [None]


async def test_bad_arguments_raise_clear_errors() -> None:
    async with scripted() as (client, _, _peer):
        with pytest.raises(TypeError, match="write value must be bytes"):
            await client.write("/a", "text")  # type: ignore[arg-type]
        with pytest.raises(TypeError, match="domid must be an int"):
            await client.release("3")  # type: ignore[arg-type]
        with pytest.raises(ValueError, match="at least one permission"):
            await client.set_perms("/a", [])
        with pytest.raises(wire.ProtocolError, match="NUL"):
            await client.read(b"/a\0b")


# -- DIRECTORY_PART ------------------------------------------------------------


def part_req(offset: int) -> bytes:
    return wire.join(b"/big", b"%d" % offset)


def _part(gen: bytes, names: list[bytes], last: bool) -> bytes:
    return gen + b"\0" + b"".join(n + b"\0" for n in names) + (b"\0" if last else b"")


async def test_big_directory_is_fetched_in_parts() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        out = await concurrently(nursery, lambda: client.directory("/big"))
        await peer.error(await peer.expect(Op.DIRECTORY), "E2BIG")
        await peer.reply(
            await peer.expect(Op.DIRECTORY_PART, part_req(0)), _part(b"9", [b"aa", b"b"], False)
        )
        await peer.reply(
            await peer.expect(Op.DIRECTORY_PART, part_req(5)), _part(b"9", [b"c"], True)
        )
    assert out == [[b"aa", b"b", b"c"]]


async def test_directory_part_restarts_when_the_node_changes() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        out = await concurrently(nursery, lambda: client.directory("/big"))
        await peer.error(await peer.expect(Op.DIRECTORY), "E2BIG")
        await peer.reply(
            await peer.expect(Op.DIRECTORY_PART, part_req(0)), _part(b"1", [b"a"], False)
        )
        await peer.reply(
            await peer.expect(Op.DIRECTORY_PART, part_req(2)), _part(b"2", [b"z"], True)
        )
        await peer.reply(
            await peer.expect(Op.DIRECTORY_PART, part_req(0)), _part(b"2", [b"a", b"z"], True)
        )
    assert out == [[b"a", b"z"]]


async def test_directory_without_directory_part_support_raises_e2big() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        out = await concurrently(nursery, lambda: client.directory("/big"))
        await peer.error(await peer.expect(Op.DIRECTORY), "E2BIG")
        await peer.error(await peer.expect(Op.DIRECTORY_PART), "ENOSYS")
    assert isinstance(out[0], wire.XenstoreError) and out[0].name == "E2BIG"


# -- faults --------------------------------------------------------------------


async def test_dropped_connection_fails_every_pending_request_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    failed_at: list[float] = []

    async with scripted() as (client, _, peer):

        async def pending_read(i: int) -> None:
            with pytest.raises(ConnectionLost):
                await client.read(f"/k{i}")
            failed_at.append(trio.current_time())

        async with trio.open_nursery() as nursery:
            for i in range(8):
                nursery.start_soon(pending_read, i)
            for _ in range(8):
                await peer.expect(Op.READ)
            await trio.sleep(3)  # nobody answers; nothing times out either
            assert failed_at == []
            dropped_at = trio.current_time()
            await peer.stream.aclose()
    assert failed_at == [dropped_at] * 8


async def test_reconnect_reregisters_watches_and_signals_resync(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, board, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/vm", token="tok") as events:
            await peer.event(b"/vm", b"tok")  # the registration event
            assert await events.receive() == (b"/vm", b"tok")
            assert client.generation == 1

            await peer.stream.aclose()
            second = await board.accept()
            rewatch = await second.expect(Op.WATCH, b"/vm\0tok\0")
            await second.reply(rewatch)
            await second.event(b"/vm", b"tok")
            assert await client.wait_reconnected(1) == 2

            resync = await events.receive()
            assert isinstance(resync, Reconnected) and resync.resync
            assert resync == (b"/vm", b"tok")
            fired = await events.receive()
            assert fired == (b"/vm", b"tok") and not fired.resync

            # and the new connection serves requests and later events
            nursery.start_soon(second.answer, Op.READ, b"v")
            assert await client.read("/vm/x") == b"v"
            await second.event(b"/vm/x", b"tok")
            assert await events.receive() == (b"/vm/x", b"tok")
            nursery.start_soon(second.answer, Op.UNWATCH)


async def test_new_connection_serves_requests_only_after_watches_are_back(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, board, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/vm", token="tok") as events:
            await peer.stream.aclose()
            await trio.testing.wait_all_tasks_blocked()  # the client saw the drop
            assert not client.connected
            out = await concurrently(nursery, lambda: client.read("/vm/x"))
            second = await board.accept()
            rewatch = await second.expect(Op.WATCH, b"/vm\0tok\0")
            await trio.sleep(1)
            assert out == [] and client.generation == 1  # the read is held back...
            await second.reply(rewatch)
            await second.answer(Op.READ, b"v")  # ...until the watch is registered
            await trio.testing.wait_all_tasks_blocked()
            assert out == [b"v"] and client.generation == 2
            assert isinstance(await events.receive(), Reconnected)
            nursery.start_soon(second.answer, Op.UNWATCH)


async def test_requests_made_while_disconnected_wait_for_the_new_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, board, peer), trio.open_nursery() as nursery:
        board.refuse = True
        await peer.stream.aclose()
        await trio.sleep(0.05)  # first reconnect attempt refused, backing off
        assert not client.connected
        out = await concurrently(nursery, lambda: client.read("/a"))
        board.refuse = False
        second = await board.accept()
        await second.answer(Op.READ, b"after")
    assert out == [b"after"]
    assert board.connects == 3


async def test_client_gives_up_after_reconnect_budget(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, board, peer):
        nursery_out: list[Any] = []
        async with trio.open_nursery() as nursery:
            nursery.start_soon(peer.answer, Op.WATCH)
            async with client.watch("/vm") as events:
                board.refuse = True
                start = trio.current_time()
                await peer.stream.aclose()
                nursery_out = await concurrently(nursery, lambda: client.read("/a"))
                with pytest.raises(ConnectionLost, match=r"gave up reconnecting .* 4 attempts"):
                    async for _ in events:
                        pass
                # 4 attempts, 3 waits with no jitter: 0.1 + 0.2 + 0.4
                assert trio.current_time() - start == pytest.approx(0.7)
        assert isinstance(nursery_out[0], ConnectionLost)
        assert board.connects == 1 + 4
        with pytest.raises(ConnectionLost, match="gave up"):
            await client.read("/b")


async def test_malformed_bytes_from_daemon_drop_the_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, board, peer), trio.open_nursery() as nursery:
        out = await concurrently(nursery, lambda: client.read("/a"))
        await peer.expect(Op.READ)
        await peer.stream.send_all(wire.HEADER.pack(Op.READ, 1, 0, 5000))
        second = await board.accept()
        out2 = await concurrently(nursery, lambda: client.read("/a"))
        await second.answer(Op.READ, b"fine")
    assert isinstance(out[0], ConnectionLost) and "malformed" in str(out[0])
    assert out2 == [b"fine"]


async def test_closing_the_client_wakes_every_waiter(
    autojump_clock: trio.testing.MockClock,
) -> None:
    outcomes: dict[str, Any] = {}
    async with trio.open_nursery() as outer:
        async with scripted() as (client, _, peer):

            async def reader() -> None:
                try:
                    await client.read("/never")
                except ClientClosed as exc:
                    outcomes["read"] = exc

            async def watcher(events: Any) -> None:
                outcomes["events"] = [e async for e in events]

            outer.start_soon(reader)
            await peer.expect(Op.READ)
            watch_cm = client.watch("/w", token="t")
            outer.start_soon(peer.answer, Op.WATCH)
            events = await watch_cm.__aenter__()
            outer.start_soon(watcher, events)
            await trio.sleep(1)
        # leaving open_client: no task of the client is left, the waiters woke
        await trio.sleep(0)
        assert isinstance(outcomes["read"], ClientClosed)
        assert outcomes["events"] == []
        await watch_cm.__aexit__(None, None, None)  # late exit is harmless
    with pytest.raises(ClientClosed):
        await client.read("/after")


async def test_unreachable_daemon_raises_at_open() -> None:
    async def refuse() -> trio.abc.Stream:
        raise FileNotFoundError(2, "No such file", "/nowhere/socket")

    with pytest.raises(ConnectionLost, match="cannot connect to xenstored"):
        async with open_client(refuse):
            pass


# -- watches -------------------------------------------------------------------


async def test_cancelled_receiver_loses_no_event(autojump_clock: trio.testing.MockClock) -> None:
    """Receivers keep timing out at random moments while events arrive at
    random moments: every event still arrives, in order, exactly once."""
    rng = random.Random(20240517)
    sent = [b"/w/%d" % i for i in range(300)]
    got: list[bytes] = []
    timeouts = 0
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/w", token="t") as events:

            async def feed() -> None:
                for path in sent:
                    await trio.sleep(rng.choice([0, 0, 0.001, 0.003]))
                    await peer.event(path, b"t")

            nursery.start_soon(feed)
            while len(got) < len(sent):
                with trio.move_on_after(rng.choice([0, 0.0005, 0.001, 0.002])) as scope:
                    event = await events.receive()
                    got.append(event.path)
                timeouts += scope.cancelled_caught
            nursery.start_soon(peer.answer, Op.UNWATCH)
    assert got == sent
    assert timeouts > 50  # the receivers really were cancelled, many times


async def test_cancelled_receive_keeps_the_event_for_the_next_one(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/w", token="t") as events:
            with trio.move_on_after(1):
                await events.receive()
                pytest.fail("no event was sent")
            await peer.event(b"/w/a", b"t")
            await trio.testing.wait_all_tasks_blocked()
            assert events.pending == 1
            with trio.CancelScope() as scope:
                scope.cancel()
                await events.receive()  # cancelled before it can take anything
            assert events.pending == 1
            assert await events.receive() == (b"/w/a", b"t")
            nursery.start_soon(peer.answer, Op.UNWATCH)


async def test_full_buffer_folds_into_one_overflowed_event() -> None:
    async with scripted(watch_buffer=4) as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/w", token="t") as events:
            for i in range(6):
                await peer.event(b"/w/%d" % i, b"t")
            await trio.testing.wait_all_tasks_blocked()
            # events 0-3 filled the buffer; 4 folded them into a resync; 5 follows
            assert events.overflows == 1
            first = await events.receive()
            assert isinstance(first, Overflowed) and first == (b"/w", b"t") and first.resync
            assert await events.receive() == (b"/w/5", b"t")
            assert events.pending == 0
            nursery.start_soon(peer.answer, Op.UNWATCH)


async def test_watch_registration_event_is_delivered_and_unwatch_on_exit() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:

        async def daemon() -> None:
            request = await peer.expect(Op.WATCH, b"/w\0tk\0")
            await peer.reply(request)
            await peer.event(b"/w", b"tk")
            await peer.answer(Op.UNWATCH)

        nursery.start_soon(daemon)
        async with client.watch(b"/w", token=b"tk") as events:
            assert await events.receive() == WatchEvent(b"/w", b"tk")


async def test_events_are_routed_by_token_then_path() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/a", token="same") as a:
            nursery.start_soon(peer.answer, Op.WATCH)
            async with client.watch("/b", token="same") as b:
                nursery.start_soon(peer.answer, Op.WATCH)
                async with client.watch("/a") as other:
                    await peer.event(b"/a/x", b"same")
                    await peer.event(b"/b", b"same")
                    await peer.event(b"/a/x", b"unknown")
                    await trio.testing.wait_all_tasks_blocked()
                    assert (a.pending, b.pending, other.pending) == (1, 1, 0)
                    assert await a.receive() == (b"/a/x", b"same")
                    assert await b.receive() == (b"/b", b"same")
                    nursery.start_soon(peer.answer, Op.UNWATCH)
                nursery.start_soon(peer.answer, Op.UNWATCH)
            nursery.start_soon(peer.answer, Op.UNWATCH)


async def test_watch_refused_on_reregistration_ends_with_watch_lost(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, board, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/w", token="t") as events:
            await peer.stream.aclose()
            second = await board.accept()
            await second.error(await second.expect(Op.WATCH), "EACCES")
            assert isinstance(await events.receive(), Reconnected)
            with pytest.raises(WatchLost, match="EACCES"):
                await events.receive()


async def test_reset_watches_ends_every_channel_with_watch_lost() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.WATCH)
        async with client.watch("/w") as events:
            nursery.start_soon(peer.answer, Op.RESET_WATCHES)
            await client.reset_watches()
            with pytest.raises(WatchLost, match="RESET_WATCHES"):
                await events.receive()
        # the watch is already gone on the daemon: no UNWATCH is sent
        nursery.start_soon(peer.answer, Op.READ, b"v")
        assert await client.read("/next") == b"v"


# -- transactions ----------------------------------------------------------------


async def test_transaction_tags_requests_and_commits() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:

        async def daemon() -> None:
            await peer.answer(Op.TRANSACTION_START, b"42\0")
            await peer.reply(await peer.expect(Op.READ, b"/a\0", tx_id=42), b"1")
            await peer.reply(await peer.expect(Op.WRITE, wire.write_payload(b"/a", b"2"), tx_id=42))
            await peer.reply(await peer.expect(Op.TRANSACTION_END, b"T\0", tx_id=42))

        nursery.start_soon(daemon)
        async with client.transaction() as tx:
            assert tx.tx_id == 42
            await tx.write("/a", str(int(await tx.read("/a")) + 1).encode())
        with pytest.raises(RuntimeError, match="already ended"):
            await tx.read("/a")


async def test_transaction_aborts_when_the_block_raises() -> None:
    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:

        async def daemon() -> None:
            await peer.answer(Op.TRANSACTION_START, b"7\0")
            await peer.reply(await peer.expect(Op.TRANSACTION_END, b"F\0", tx_id=7))

        nursery.start_soon(daemon)
        with pytest.raises(KeyError):
            async with client.transaction():
                raise KeyError("boom")


async def _transact_daemon(peer: Peer, outcomes: list[str]) -> None:
    """Serves transactions; commit outcomes come from ``outcomes`` in turn."""
    for n, outcome in enumerate(outcomes, start=1):
        await peer.answer(Op.TRANSACTION_START, b"%d\0" % n)
        await peer.reply(await peer.expect(Op.WRITE, tx_id=n))
        end = await peer.expect(Op.TRANSACTION_END, b"T\0", tx_id=n)
        if outcome == "ok":
            await peer.reply(end)
        else:
            await peer.error(end, outcome)


async def test_transact_retries_on_eagain(autojump_clock: trio.testing.MockClock) -> None:
    calls: list[int] = []

    async def bump(tx: Transaction) -> str:
        calls.append(tx.tx_id)
        await tx.write("/n", b"x")
        return "done"

    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_transact_daemon, peer, ["EAGAIN", "EAGAIN", "ok"])
        start = trio.current_time()
        assert await client.transact(bump, retry=NO_JITTER) == "done"
        assert trio.current_time() - start == pytest.approx(0.1 + 0.2)
    assert calls == [1, 2, 3]


async def test_transact_gives_up_after_the_bound(autojump_clock: trio.testing.MockClock) -> None:
    async def touch(tx: Transaction) -> None:
        await tx.write("/n", b"x")

    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_transact_daemon, peer, ["EAGAIN"] * 4)
        with pytest.raises(TransactionGaveUp, match="after 4 attempts") as info:
            await client.transact(touch, retry=NO_JITTER)
        assert info.value.name == "EAGAIN" and info.value.attempts == 4
        assert isinstance(info.value.__cause__, wire.XenstoreError)
        # the bound is exact: a fifth transaction was never started
        nursery.start_soon(peer.answer, Op.READ, b"still here")
        assert await client.read("/x") == b"still here"


async def test_transact_does_not_retry_other_errors() -> None:
    async def touch(tx: Transaction) -> None:
        await tx.write("/n", b"x")

    async with scripted() as (client, _, peer), trio.open_nursery() as nursery:
        nursery.start_soon(_transact_daemon, peer, ["EACCES"])
        with pytest.raises(wire.XenstoreError) as info:
            await client.transact(touch, retry=NO_JITTER)
        assert info.value.name == "EACCES" and not isinstance(info.value, TransactionGaveUp)


async def test_transaction_dies_with_its_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with scripted() as (client, board, peer), trio.open_nursery() as nursery:
        nursery.start_soon(peer.answer, Op.TRANSACTION_START, b"3\0")
        with pytest.raises(ConnectionLost):
            async with client.transaction() as tx:
                await peer.stream.aclose()
                second = await board.accept()
                await client.wait_reconnected(1)
                await tx.read("/a")  # tx 3 belonged to the old connection
        nursery.start_soon(second.answer, Op.READ, b"v")
        assert await client.read("/a") == b"v"


async def test_cancelled_transaction_start_is_ended_by_the_client() -> None:
    async with scripted() as (client, _, peer):
        with trio.CancelScope() as scope:
            async with trio.open_nursery() as nursery:

                async def start() -> None:
                    async with client.transaction():
                        pytest.fail("the start was cancelled")

                nursery.start_soon(start)
                request = await peer.expect(Op.TRANSACTION_START)
                scope.cancel()
        await peer.reply(request, b"11\0")
        await peer.expect(Op.TRANSACTION_END, b"F\0", tx_id=11)


# -- backoff and transports ----------------------------------------------------------


def test_backoff_is_bounded_and_replayable() -> None:
    policy = Backoff(attempts=6, initial=0.1, multiplier=3.0, maximum=1.0, jitter=0.5, seed=9)
    delays = policy.delays()
    assert len(delays) == 5 and delays == policy.delays()
    for n, delay in enumerate(delays):
        ceiling = min(1.0, 0.1 * 3.0**n)
        assert ceiling * 0.5 <= delay <= ceiling
    assert Backoff(attempts=4, initial=0.1, jitter=0.0).delays() == pytest.approx([0.1, 0.2, 0.4])
    with pytest.raises(ValueError, match="attempts"):
        Backoff(attempts=0)
    with pytest.raises(ValueError, match="jitter"):
        Backoff(jitter=2)


def test_socket_path_follows_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XENSTORED_PATH", "/tmp/xs/socket")
    assert socket_path() == "/tmp/xs/socket"
    monkeypatch.delenv("XENSTORED_PATH")
    assert socket_path() == "/var/run/xenstored/socket"


async def test_unix_socket_transport(tmp_path: Path) -> None:
    path = str(tmp_path / "socket")
    listener = trio.socket.socket(trio.socket.AF_UNIX)
    await listener.bind(path)
    listener.listen()

    async def daemon() -> None:
        sock, _ = await listener.accept()
        peer = Peer(trio.SocketStream(sock))
        await peer.answer(Op.READ, b"over a socket")
        await peer.stream.aclose()

    async with trio.open_nursery() as nursery:
        nursery.start_soon(daemon)
        async with open_client(unix_socket(path)) as client:
            assert await client.read("/a") == b"over a socket"
    listener.close()


async def test_xenbus_device_transport_reads_and_writes_the_fd(tmp_path: Path) -> None:
    """A FIFO opened read-write echoes every request back: the echo has the
    request's type and req_id, so the client takes it for the reply."""
    fifo = tmp_path / "xenbus"
    os.mkfifo(fifo)
    async with open_client(xenbus_device(str(fifo))) as client:
        assert await client.read("/echo") == b"/echo\0"
        assert await client.is_domain_introduced(12) is False  # "12\0" is not "T"
