"""Placement requests through xenstore: the embedded xenstored, the agent's trio client
over in-memory streams, a toolstack writing requests through the in-process dom0 API,
and a guest trying to meddle through its own ring. Virtual time."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import pytest
import trio
import trio.testing

from agent.placement.algorithm import HostCapacity, NodeCapacity
from agent.placement.placer import Placer
from agent.placement.request import RequestError
from agent.placement.service import DirectService
from agent.placement.xs_requests import (
    BASE,
    XenstorePlacement,
    dom0_only,
    parse_request_value,
)
from agent.xenstore.client import open_client
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import Dom0Session, XenstoreHub
from agent.xenstore.server import serve_stream
from agent.xenstore.wire import Access, Op, Packet, Perm, XenstoreError, write_payload

GIB = 1024
GUEST = 5


def two_nodes() -> HostCapacity:
    return HostCapacity(
        (NodeCapacity(0, 4, 10 * GIB, cpu_set=frozenset(range(4))),
         NodeCapacity(1, 4, 10 * GIB, cpu_set=frozenset(range(4, 8)))),
        ((10, 21), (21, 10)))


class Guest:
    """A guest's own ring connection to the daemon."""

    def __init__(self, hub: XenstoreHub, domid: int) -> None:
        self.hub = hub
        self.replies: list[Packet] = []
        self.conn = hub.attach(self.replies.append, domid)

    def request(self, op: Op, payload: bytes) -> None:
        self.hub.handle(self.conn, Packet(op, 1, 0, payload))
        reply = self.replies.pop()
        name = reply.error_name()
        if name is not None:
            raise XenstoreError(name)

    def write(self, path: str, value: str) -> None:
        self.request(Op.WRITE, write_payload(path.encode(), value.encode()))

    def read(self, path: str) -> None:
        self.request(Op.READ, path.encode() + b"\0")


class World:
    def __init__(self) -> None:
        self.daemon = XenstoreDaemon(domain_exists=lambda domid: domid in (0, GUEST))
        self.hub = XenstoreHub.of(self.daemon)
        self.toolstack: Dom0Session = self.hub.session()
        self.toolstack.introduce_domain(GUEST)
        self.guest = Guest(self.hub, GUEST)
        self.placer = Placer()
        self.service = DirectService(self.placer, two_nodes)
        self.logged: list[str] = []
        self.agent: XenstorePlacement | None = None

    def ask(self, ident: str, value: str) -> None:
        self.toolstack.write(f"{BASE}/{ident}/request", value)

    async def answer(self, ident: str) -> dict[str, str]:
        """Wait for the result as a toolstack would, then read every key."""
        where = f"{BASE}/{ident}"
        with trio.fail_after(30):
            while not self.toolstack.exists(f"{where}/result"):
                await trio.sleep(0.01)
        return {k.decode(): self.toolstack.read(f"{where}/{k.decode()}").decode()
                for k in self.toolstack.directory(where)}


@asynccontextmanager
async def agent_running(world: World, **kw: float) -> AsyncIterator[XenstorePlacement]:
    async with trio.open_nursery() as nursery:
        async def connect() -> trio.abc.Stream:
            mine, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_stream, world.hub, theirs)
            return mine

        async with open_client(connect) as xs:
            agent = XenstorePlacement(xs, world.service, log=world.logged.append, **kw)  # type: ignore[arg-type]
            world.agent = agent
            await nursery.start(agent.run)
            yield agent
            nursery.cancel_scope.cancel()


async def test_two_requests_at_once_get_different_nodes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with agent_running(world):
        world.ask("a", "vcpus=2 memory_mib=8192 name=a")
        world.ask("b", "vcpus=2 memory_mib=8192 name=b")
        a, b = await world.answer("a"), await world.answer("b")
    assert a["result"] == b["result"] == "ok"
    assert sorted((a["nodes"], b["nodes"])) == ["0", "1"]
    assert a == {"request": "vcpus=2 memory_mib=8192 name=a", "result": "ok",
                 "nodes": a["nodes"], "cpus": "0-3" if a["nodes"] == "0" else "4-7",
                 "memory": "8192", "fallback": "0", "expires": "120", "shortfall": "0",
                 "reason": a["reason"]}
    assert sorted(r.request for r in world.placer.ledger) == ["xs-a", "xs-b"]


async def test_strict_failure_names_node_and_shortfall(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with agent_running(world):
        world.ask("big", "vcpus=2 memory_mib=12288 policy=strict preferred=1 name=big")
        got = await world.answer("big")
    assert got["result"] == "failed" and got["shortfall"] == "2048" and got["nodes"] == ""
    assert "preferred node 1" in got["reason"] and "short of 2048 MiB" in got["reason"]


async def test_requests_written_before_the_agent_starts_are_answered(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    world.toolstack.mkdir(BASE)
    world.ask("early", "vcpus=1 memory_mib=1024")
    async with agent_running(world):
        assert (await world.answer("early"))["result"] == "ok"


@pytest.mark.parametrize(("value", "reason"), [
    ("vcpus=2", "missing field 'memory_mib'"),
    ("vcpus=2 memory_mib=1 colour=red", "unknown key 'colour'"),
    ("vcpus=2 vcpus=3 memory_mib=1", "key 'vcpus' given twice"),
    ("vcpus=-2 memory_mib=1", "vcpus='-2' is not a whole number"),
    ("vcpus=2 memory_mib=99999999999", "memory_mib = 99999999999 is out of range"),
    ("vcpus=2 memory_mib=1 preferred=0,x", "nodes '0,x': bad item 'x'"),
    ("vcpus=2 memory_mib=1 policy=lax", "policy must be one of best-effort, strict"),
    ("vcpus memory_mib=1", "token 'vcpus' is not key=value"),
    ("vcpus=2 memory_mib=1 name=\u00e9t\u00e9", "not ASCII"),
    ("vcpus=2 memory_mib=1 name=" + "x" * 1100, "bytes (at most 1024)"),
])
async def test_invalid_requests_are_answered_invalid_with_the_reason(
    autojump_clock: trio.testing.MockClock, value: str, reason: str,
) -> None:
    world = World()
    async with agent_running(world):
        world.ask("bad", value)
        got = await world.answer("bad")
    assert got["result"] == "invalid" and reason in got["reason"]
    assert f"{BASE}/bad/request" in got["reason"]
    assert len(world.placer.ledger) == 0


async def test_guests_can_neither_ask_nor_read(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with agent_running(world):
        assert world.toolstack.get_perms(BASE) == [Perm(Access.NONE, 0)]
        world.ask("a", "vcpus=1 memory_mib=1024")
        await world.answer("a")
        with pytest.raises(XenstoreError) as info:
            world.guest.write(f"{BASE}/g/request", "vcpus=1 memory_mib=1")
        assert info.value.name == "EACCES"
        with pytest.raises(XenstoreError) as info:
            world.guest.read(f"{BASE}/a/result")
        assert info.value.name == "EACCES"


async def test_request_another_domain_may_write_is_refused(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with agent_running(world):
        t = world.toolstack.transaction_start()
        path = f"{BASE}/shared/request"
        world.toolstack.write(path, "vcpus=1 memory_mib=1024", t)
        world.toolstack.set_perms(path, [Perm(Access.NONE, 0), Perm(Access.WRITE, GUEST)], t)
        world.toolstack.transaction_end(t)
        got = await world.answer("shared")
    assert got["result"] == "invalid" and "another domain may write it" in got["reason"]


async def test_cancel_releases_the_reservation(autojump_clock: trio.testing.MockClock) -> None:
    world = World()
    async with agent_running(world):
        world.ask("c", "vcpus=1 memory_mib=4096")
        assert (await world.answer("c"))["result"] == "ok"
        assert world.placer.ledger.reserved_mib(2) == (4096, 0)
        world.toolstack.write(f"{BASE}/c/cancel", "1")
        with trio.fail_after(30):
            while world.toolstack.read(f"{BASE}/c/result") != b"cancelled":
                await trio.sleep(0.01)
        assert world.toolstack.read(f"{BASE}/c/reason") == b"reservation released"
        assert world.placer.ledger.reserved_mib(2) == (0, 0)


async def test_answered_entries_are_removed_after_keep_s(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with agent_running(world, keep_s=30.0):
        start = trio.current_time()
        world.ask("old", "vcpus=1 memory_mib=1024")
        await world.answer("old")
        with trio.fail_after(300):
            while world.toolstack.exists(f"{BASE}/old"):
                await trio.sleep(1)
        assert 30 <= trio.current_time() - start <= 60


async def test_a_name_that_is_no_request_id_is_ignored(
    autojump_clock: trio.testing.MockClock,
) -> None:
    world = World()
    async with agent_running(world):
        world.ask("x" * 61, "vcpus=1 memory_mib=1")
        world.ask("ok", "vcpus=1 memory_mib=1")
        await world.answer("ok")
    assert not world.toolstack.exists(f"{BASE}/{'x' * 61}/result")
    assert any("request id" in line for line in world.logged)


def test_parse_request_value_and_perms() -> None:
    assert parse_request_value(b"vcpus=8 memory_mib=16384 policy=strict preferred=0-1 "
                               b"name=web max_nodes=2", "p", "r") == {
        "vcpus": 8, "memory_mib": 16384, "policy": "strict", "preferred": [0, 1],
        "name": "web", "max_nodes": 2}
    with pytest.raises(RequestError, match="control character"):
        parse_request_value(b"vcpus=1\x00 memory_mib=1", "p", "r")
    assert dom0_only([Perm(Access.NONE, 0)])
    assert dom0_only([Perm(Access.READ, 0), Perm(Access.READ, 3)])
    assert not dom0_only([Perm(Access.WRITE, 0)])  # everyone else may write
    assert not dom0_only([Perm(Access.NONE, 3)])  # owned by a guest
    assert not dom0_only([Perm(Access.NONE, 0), Perm(Access.BOTH, 3)])
    assert not dom0_only([])
