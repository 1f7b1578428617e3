"""The project's client against real daemons: Debian's C xenstored 4.17
(``realxs``) and the project's embedded xenstored, the same scenarios for both.

The C daemon is a real process on a unix socket. The embedded one runs in
the test's own trio run, reached over in-memory streams (``serve_stream``)
so that the test can freeze it (stop reading, as SIGSTOP does to the real
one), kill it (drop every connection) and restart it (a fresh daemon); one
more test reaches it over its unix socket (``serve_unix``).

These run on trio's real clock (a real process cannot follow a MockClock);
``fail_after`` only guards against hangs, nothing here asserts on time.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest
import trio
import trio.testing

from agent.xenstore import wire
from agent.xenstore.backoff import Backoff
from agent.xenstore.client import (
    Client,
    ConnectionLost,
    Reconnected,
    Transaction,
    TransactionGaveUp,
    WatchChannel,
    WatchEvent,
    open_client,
)
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.server import serve_stream, serve_unix
from agent.xenstore.transport import Transport, unix_socket
from agent.xenstore.wire import Access, Perm

try:  # tests/ on sys.path (pytest's default import mode)
    from realxs.harness import RealXenstored, real_xenstored_available, unavailable_reason
except ImportError:  # repo root on sys.path
    from tests.realxs.harness import (  # type: ignore[no-redef]
        RealXenstored,
        real_xenstored_available,
        unavailable_reason,
    )

HANG_GUARD = 20  # seconds; generous for a loaded 2-core machine
FAST_RECONNECT = Backoff(attempts=60, initial=0.01, multiplier=1.5, maximum=0.2, jitter=0.5)


class Daemon(Protocol):
    name: str

    def transport(self) -> Transport: ...
    async def freeze(self) -> None: ...  # stop answering, keep the connection
    async def kill(self) -> None: ...  # abrupt death: connections drop
    async def restart(self) -> None: ...  # a fresh daemon (empty tree) on the same address


class RealDaemon:
    name = "real"

    def __init__(self, xs: RealXenstored) -> None:
        self.xs = xs

    def transport(self) -> Transport:
        return unix_socket(str(self.xs.socket_path))

    async def freeze(self) -> None:
        os.kill(self.xs.pid, signal.SIGSTOP)

    async def kill(self) -> None:
        await trio.to_thread.run_sync(self.xs.kill)

    async def restart(self) -> None:
        await trio.to_thread.run_sync(self.xs.restart)


class _FreezableStream(trio.abc.Stream):
    """The daemon's end of an in-memory connection; while frozen the daemon
    reads nothing, so requests wait unanswered."""

    def __init__(self, inner: trio.abc.Stream, owner: EmbeddedDaemon) -> None:
        self.inner = inner
        self.owner = owner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        await self.owner.thawed.wait()  # hold what arrived while frozen
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


class EmbeddedDaemon:
    name = "embedded"

    def __init__(self, nursery: trio.Nursery) -> None:
        self._nursery = nursery
        self._scopes: list[trio.CancelScope] = []
        self.thawed = trio.Event()
        self.thawed.set()
        self.daemon: XenstoreDaemon | None = None
        self.restart_now()

    def restart_now(self) -> None:
        self.daemon = XenstoreDaemon()
        self.thawed = trio.Event()
        self.thawed.set()

    def transport(self) -> Transport:
        async def connect() -> trio.abc.Stream:
            if self.daemon is None:
                raise ConnectionRefusedError("embedded xenstored is down")
            client_end, daemon_end = trio.testing.memory_stream_pair()
            scope = trio.CancelScope()
            self._scopes.append(scope)
            self._nursery.start_soon(self._serve, self.daemon, scope, daemon_end)
            return client_end

        return connect

    async def _serve(
        self, daemon: XenstoreDaemon, scope: trio.CancelScope, stream: trio.abc.Stream
    ) -> None:
        with scope:
            await serve_stream(daemon, _FreezableStream(stream, self))

    async def freeze(self) -> None:
        self.thawed = trio.Event()

    async def kill(self) -> None:
        self.daemon = None
        for scope in self._scopes:  # every connection task ends and closes its stream
            scope.cancel()
        self._scopes.clear()

    async def restart(self) -> None:
        await self.kill()
        await trio.sleep(0.05)
        self.restart_now()


REAL = pytest.param(
    "real",
    marks=[
        pytest.mark.realxs,
        pytest.mark.skipif(not real_xenstored_available(), reason=unavailable_reason()),
    ],
)


@pytest.fixture(params=[REAL, "embedded"])
async def daemon(
    request: pytest.FixtureRequest, nursery: trio.Nursery
) -> AsyncIterator[Daemon]:
    if request.param == "embedded":
        yield EmbeddedDaemon(nursery)
        return
    rundir = tempfile.mkdtemp(prefix="xnuma-client-", dir="/tmp")
    xs = RealXenstored(Path(rundir))
    xs.start()
    try:
        yield RealDaemon(xs)
    finally:
        xs.close()
        shutil.rmtree(rundir, ignore_errors=True)


@asynccontextmanager
async def connected(daemon: Daemon, **kwargs: Any) -> AsyncIterator[Client]:
    kwargs.setdefault("reconnect", FAST_RECONNECT)
    with trio.fail_after(HANG_GUARD):
        async with open_client(daemon.transport(), **kwargs) as client:
            yield client


async def next_event(events: WatchChannel) -> WatchEvent:
    return await events.receive()


# -- operations ----------------------------------------------------------------


async def test_values_are_bytes_of_any_kind(daemon: Daemon) -> None:
    value = bytes(range(256)) * 3
    async with connected(daemon) as xs:
        await xs.write("/bin/all", value)
        assert await xs.read("/bin/all") == value
        await xs.write(b"/bin/empty", b"")
        assert await xs.read("/bin/empty") == b""
        assert sorted(await xs.directory("/bin")) == [b"all", b"empty"]


async def test_tree_operations_and_errors(daemon: Daemon) -> None:
    async with connected(daemon) as xs:
        await xs.mkdir("/t/a/b")
        assert await xs.exists("/t/a/b")
        assert await xs.read("/t/a") == b""
        await xs.rm("/t/a")
        assert not await xs.exists("/t/a/b")
        assert await xs.directory("/t") == []
        for call, name in [
            (xs.read("/t/missing"), "ENOENT"),
            (xs.write("/t/bad path", b"x"), "EINVAL"),
            (xs.rm("/t/missing/child"), "ENOENT"),
            (xs.directory("/t/missing"), "ENOENT"),
        ]:
            with pytest.raises(wire.XenstoreError) as info:
                await call
            assert info.value.name == name


async def test_permissions_round_trip(daemon: Daemon) -> None:
    async with connected(daemon) as xs:
        await xs.write("/p", b"v")
        assert await xs.get_perms("/p") == [Perm(Access.NONE, 0)]
        perms = [Perm(Access.NONE, 0), Perm(Access.READ, 5), Perm(Access.BOTH, 7)]
        await xs.set_perms("/p", perms)
        assert await xs.get_perms("/p") == perms


async def test_domain_operations(daemon: Daemon) -> None:
    async with connected(daemon) as xs:
        assert await xs.get_domain_path(7) == b"/local/domain/7"
        assert await xs.is_domain_introduced(0) is True
        assert await xs.is_domain_introduced(5) is False
        async with xs.watch("@introduceDomain") as intro, xs.watch("@releaseDomain") as rel:
            assert await next_event(intro) == (b"@introduceDomain", intro.token)
            assert await next_event(rel) == (b"@releaseDomain", rel.token)
            await xs.introduce(5, 0x1234, 3)
            assert await xs.is_domain_introduced(5) is True
            assert (await next_event(intro)).path == b"@introduceDomain"
            await xs.set_target(5, 0)
            await xs.release(5)
            assert (await next_event(rel)).path == b"@releaseDomain"
            assert await xs.is_domain_introduced(5) is False
        with pytest.raises(wire.XenstoreError) as info:
            await xs.release(5)
        assert info.value.name == "ENOENT"


async def test_control_and_reset_watches(daemon: Daemon) -> None:
    async with connected(daemon) as xs:
        await xs.control("print", b"from the xnuma client")
        with pytest.raises(wire.XenstoreError) as info:
            await xs.control("no-such-command")
        assert info.value.name == "EINVAL"
        await xs.reset_watches()


async def test_directory_too_big_for_one_reply_uses_directory_part(daemon: Daemon) -> None:
    names = [b"child-with-a-long-name-%04d" % i for i in range(200)]  # ~5.6 kB of names
    async with connected(daemon) as xs:
        async with trio.open_nursery() as nursery:
            for name in names:
                nursery.start_soon(xs.write, b"/big/" + name, b"")
        with pytest.raises(wire.XenstoreError):  # proves the listing exceeds one reply
            await xs._request(wire.Op.DIRECTORY, b"/big\0")
        assert sorted(await xs.directory("/big")) == names


async def test_many_concurrent_requests_are_multiplexed(daemon: Daemon) -> None:
    async with connected(daemon) as xs:
        results: dict[int, bytes] = {}

        async def one(i: int) -> None:
            await xs.write(f"/m/{i}", b"%d" % (i * i))
            results[i] = await xs.read(f"/m/{i}")

        async with trio.open_nursery() as nursery:
            for i in range(200):
                nursery.start_soon(one, i)
    assert results == {i: b"%d" % (i * i) for i in range(200)}


# -- watches ---------------------------------------------------------------------


async def test_watch_fires_on_registration_then_for_the_subtree(daemon: Daemon) -> None:
    async with connected(daemon) as xs, xs.watch("/w", token="tok") as events:
        assert await next_event(events) == (b"/w", b"tok")  # even though /w is missing
        await xs.write("/w/a", b"1")
        assert await next_event(events) == (b"/w/a", b"tok")
        await xs.write("/elsewhere", b"1")
        await xs.rm("/w")
        assert await next_event(events) == (b"/w", b"tok")
        assert events.pending == 0


async def test_transaction_changes_fire_at_commit(daemon: Daemon) -> None:
    async with connected(daemon) as xs, xs.watch("/tx") as events:
        await next_event(events)
        async with xs.transaction() as tx:
            await tx.write("/tx/a", b"1")
            assert not await xs.exists("/tx/a")  # invisible outside until commit
            await trio.sleep(0.05)
            assert events.pending == 0
        assert await next_event(events) == (b"/tx/a", events.token)
        assert await xs.read("/tx/a") == b"1"


# -- transactions ---------------------------------------------------------------------


async def test_transact_retries_after_a_conflicting_write(daemon: Daemon) -> None:
    async with connected(daemon) as xs, connected(daemon) as other:
        await xs.write("/counter", b"0")
        attempts = 0

        async def increment(tx: Transaction) -> int:
            nonlocal attempts
            attempts += 1
            value = int(await tx.read("/counter"))
            if attempts == 1:  # someone else changes it under us, once
                await other.write("/counter", b"10")
            await tx.write("/counter", b"%d" % (value + 1))
            return value + 1

        assert await xs.transact(increment) == 11
        assert attempts == 2
        assert await xs.read("/counter") == b"11"


async def test_transact_gives_up_after_the_bound(daemon: Daemon) -> None:
    retry = Backoff(attempts=3, initial=0.001, jitter=0.0)
    async with connected(daemon) as xs, connected(daemon) as other:
        await xs.write("/hot", b"0")
        attempts = 0

        async def always_conflicting(tx: Transaction) -> None:
            nonlocal attempts
            attempts += 1
            await tx.read("/hot")
            await other.write("/hot", b"%d" % attempts)
            await tx.write("/hot", b"mine")

        with pytest.raises(TransactionGaveUp, match="after 3 attempts"):
            await xs.transact(always_conflicting, retry=retry)
        assert attempts == 3
        assert await xs.read("/hot") == b"3"


async def test_unrelated_write_does_not_conflict(daemon: Daemon) -> None:
    async with connected(daemon) as xs, connected(daemon) as other:
        await xs.write("/mine", b"0")
        async with xs.transaction() as tx:
            await tx.read("/mine")
            await other.write("/theirs", b"x")
            await tx.write("/mine", b"1")
        assert await xs.read("/mine") == b"1"


# -- faults -----------------------------------------------------------------------------


async def test_daemon_killed_mid_request_fails_every_pending_call(daemon: Daemon) -> None:
    outcomes: list[BaseException] = []
    async with connected(daemon) as xs:
        await xs.write("/k", b"v")

        async def pending_read() -> None:
            try:
                await xs.read("/k")
            except ConnectionLost as exc:
                outcomes.append(exc)

        await daemon.freeze()
        async with trio.open_nursery() as nursery:
            for _ in range(20):
                nursery.start_soon(pending_read)
            await trio.sleep(0.1)
            assert outcomes == []  # the daemon really held them
            await daemon.kill()
    assert len(outcomes) == 20


async def test_restarted_daemon_gets_watches_back_and_resync(daemon: Daemon) -> None:
    async with connected(daemon) as xs, xs.watch("/vm", token="vm") as events:
        assert await next_event(events) == (b"/vm", b"vm")
        await xs.write("/vm/1", b"before")
        assert await next_event(events) == (b"/vm/1", b"vm")
        assert xs.generation == 1

        await daemon.restart()
        # A client may also reach a dying daemon that still accepts for an
        # instant (SIGTERM): then it reconnects once more. Either is correct.
        assert await xs.wait_reconnected(1) >= 2
        while True:
            try:
                assert not await xs.exists("/vm/1")  # a fresh daemon: the tree is new
                await xs.write("/vm/2", b"after")
                break
            except ConnectionLost:
                continue
        seen = []
        while (event := await next_event(events)) != (b"/vm/2", b"vm"):
            seen.append(event)
        # Resync first, then the daemon's own registration event, per reconnect.
        assert isinstance(seen[0], Reconnected) and seen[0] == (b"/vm", b"vm")
        assert any(not e.resync for e in seen[1:])
        assert set(seen) == {(b"/vm", b"vm")}


async def test_killed_daemon_makes_waiting_calls_wait_for_the_restart(daemon: Daemon) -> None:
    async with connected(daemon) as xs:
        await daemon.kill()
        async with trio.open_nursery() as nursery:
            out: list[bytes] = []

            async def write_then_read() -> None:
                # Either this lands on the dead connection (ConnectionLost) or
                # waits for the next one: retry once to cover both.
                try:
                    await xs.write("/after", b"ok")
                except ConnectionLost:
                    await xs.write("/after", b"ok")
                out.append(await xs.read("/after"))

            nursery.start_soon(write_then_read)
            await trio.sleep(0.1)
            await daemon.restart()
        assert out == [b"ok"]


async def test_embedded_daemon_over_its_unix_socket(nursery: trio.Nursery) -> None:
    rundir = tempfile.mkdtemp(prefix="xnuma-client-", dir="/tmp")
    try:
        path = await nursery.start(serve_unix, XenstoreDaemon(), os.path.join(rundir, "socket"))
        async with open_client(unix_socket(path)) as xs, xs.watch("/u") as events:
            assert (await events.receive()).path == b"/u"
            await xs.write("/u/v", b"\xff\x00")
            assert await xs.read("/u/v") == b"\xff\x00"
            assert (await events.receive()).path == b"/u/v"
    finally:
        shutil.rmtree(rundir, ignore_errors=True)


async def test_embedded_daemon_in_memory_runs_on_virtual_time(
    autojump_clock: trio.testing.MockClock, nursery: trio.Nursery
) -> None:
    """How the simulator uses it: in-memory streams under a MockClock, so
    backoff and reconnects take exact virtual time."""
    embedded = EmbeddedDaemon(nursery)
    reconnect = Backoff(attempts=5, initial=1.0, multiplier=2.0, maximum=10.0, jitter=0.0)
    retry = Backoff(attempts=3, initial=0.25, jitter=0.0)
    async with (
        open_client(embedded.transport(), reconnect=reconnect) as xs,
        open_client(embedded.transport()) as other,
        xs.watch("/sim", token="s") as events,
    ):
        assert await events.receive() == (b"/sim", b"s")

        await xs.write("/sim/n", b"0")
        assert await events.receive() == (b"/sim/n", b"s")
        tries = 0

        async def bump(tx: Transaction) -> None:
            nonlocal tries
            tries += 1
            n = int(await tx.read("/sim/n"))
            if tries == 1:
                await other.write("/sim/n", b"5")
            await tx.write("/sim/n", b"%d" % (n + 1))

        start = trio.current_time()
        await xs.transact(bump, retry=retry)
        assert (tries, trio.current_time() - start) == (2, 0.25)
        assert await xs.read("/sim/n") == b"6"

        async def restart_later() -> None:
            await trio.sleep(2.5)
            embedded.restart_now()

        await embedded.kill()
        dropped = trio.current_time()
        nursery.start_soon(restart_later)
        assert await xs.wait_reconnected(1) == 2
        # refused at +0 and +1 (after a 1 s wait), connected at +3 (after 2 s more)
        assert trio.current_time() - dropped == 3.0
        seen = [await events.receive() for _ in range(4)]
        assert [e.path for e in seen[:2]] == [b"/sim/n", b"/sim/n"]  # the other write, the commit
        assert isinstance(seen[2], Reconnected) and seen[3] == (b"/sim", b"s")
        await xs.write("/sim/after", b"1")
        assert await events.receive() == (b"/sim/after", b"s")
