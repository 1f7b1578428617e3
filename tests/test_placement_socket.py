"""The placement socket (msgpack over a unix socket), its client, ``xnuma place``, and
the rule-engine path (``RuledService``) with the shipped rules/placement.toml.

Socket tests run on trio's real clock (I/O, not timers); ``fail_after`` only guards
against hangs. The rule path runs on virtual time."""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import msgpack
import pytest
import trio
import trio.testing

from agent.audit.records import Body
from agent.cli import place_cmd
from agent.hypervisor.model import Node, Topology
from agent.placement import client, wire
from agent.placement.algorithm import HostCapacity, NodeCapacity
from agent.placement.placer import Placer
from agent.placement.request import PlacementRequest
from agent.placement.server import serve_placement
from agent.placement.service import DirectService, RuledService
from agent.rules import Memory, Outcome, PlaceDomain, decide, load_paths
from agent.rules.events import Event
from agent.state import Observation, build_state

GIB = 1024
HANG_GUARD = 20
RULES = Path(__file__).resolve().parent.parent / "rules"


def two_nodes(free_gib: int = 10) -> HostCapacity:
    return HostCapacity(
        (NodeCapacity(0, 4, free_gib * GIB, cpu_set=frozenset(range(4))),
         NodeCapacity(1, 4, free_gib * GIB, cpu_set=frozenset(range(4, 8)))),
        ((10, 21), (21, 10)))


@asynccontextmanager
async def running(tmp_path: Path, service: Any) -> AsyncIterator[str]:
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            path = await nursery.start(serve_placement, service, tmp_path / "run" / "p.sock")
            try:
                yield path
            finally:
                nursery.cancel_scope.cancel()


@pytest.fixture
def audit() -> list[Body]:
    return []


@pytest.fixture
def service(audit: list[Body]) -> DirectService:
    return DirectService(Placer(), lambda: two_nodes(), audit=audit.append)


async def test_place_list_cancel(tmp_path: Path, service: DirectService,
                                 audit: list[Body]) -> None:
    async with running(tmp_path, service) as path:
        assert os.stat(path).st_mode & 0o777 == 0o600
        reply = await client.place(path, {"vcpus": 2, "memory_mib": 8 * GIB, "name": "web"})
        assert reply.ok and reply.nodes == (0,) and reply.request == "sock-" + reply.request[5:]
        assert reply.cpus == frozenset(range(4)) and reply.memory_mib == (8 * GIB,)
        listed = await client.reservations(path)
        assert [(r["request"], r["name"], r["nodes"], r["memory_mib"]) for r in listed] == [
            (reply.request, "web", [0], [8 * GIB])]
        assert 0 < listed[0]["expires_in_s"] <= 120
        assert await client.cancel(path, reply.request) is True
        assert await client.cancel(path, reply.request) is False
        assert await client.reservations(path) == []
    assert [(a["type"], a["outcome"], a["source"]) for a in audit if a["kind"] == "action"] == [
        ("domain.place", "ok", "socket")]
    assert [a["type"] for a in audit if a["kind"] == "event"] == ["reservation.cancelled"]
    assert not (tmp_path / "run" / "p.sock").exists()


async def test_two_clients_at_once_get_different_nodes(tmp_path: Path,
                                                       service: DirectService) -> None:
    """The race over the socket: both ask at the same time; each fits one node only."""
    replies: dict[str, Any] = {}
    async with running(tmp_path, service) as path:
        async def ask(name: str) -> None:
            replies[name] = await client.place(path, {"vcpus": 2, "memory_mib": 8 * GIB,
                                                      "name": name, "id": name})
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ask, "a")
            nursery.start_soon(ask, "b")
    assert sorted(r.nodes for r in replies.values()) == [(0,), (1,)]
    assert {r.request for r in replies.values()} == {"sock-a", "sock-b"}


async def test_refusal_is_a_reply_not_an_error(tmp_path: Path, service: DirectService) -> None:
    async with running(tmp_path, service) as path:
        reply = await client.place(path, {"vcpus": 2, "memory_mib": 12 * GIB,
                                          "policy": "strict", "preferred": [1]})
    assert not reply.ok and reply.shortfall_mib == 2 * GIB
    assert "preferred node 1" in reply.reason and "short of 2048 MiB" in reply.reason


@pytest.mark.parametrize(("message", "error"), [
    ({"op": "place", "vcpus": 0, "memory_mib": 1}, "socket: vcpus = 0 is out of range"),
    ({"op": "place", "vcpus": 1, "memory_mib": 1, "id": "../x"}, "request id '../x'"),
    ({"op": "place", "vcpus": 1, "memory_mib": 1, "colour": "red"}, "unknown field(s) colour"),
    ({"op": "explode"}, "unknown op 'explode'"),
    ({"op": "cancel"}, "cancel takes one field, id"),
])
async def test_bad_requests_get_an_error_naming_the_field(
    tmp_path: Path, service: DirectService, message: dict[str, Any], error: str
) -> None:
    async with running(tmp_path, service) as path:
        with pytest.raises(client.PlacementError, match="refused the request") as info:
            await client.call(path, message)
        assert error in str(info.value)
        # The connection broke nothing: the next request is answered.
        assert (await client.place(path, {"vcpus": 1, "memory_mib": 1})).ok


async def raw_exchange(path: str, data: bytes) -> list[Any]:
    stream = await trio.open_unix_socket(path)
    async with stream:
        await stream.send_all(data)
        got = b""
        while chunk := await stream.receive_some(65536):
            got += chunk
    reader = wire.unpacker()
    reader.feed(got)
    return list(reader)


@pytest.mark.parametrize(("data", "error"), [
    (msgpack.packb([1, 2]), "expected a map, got list"),
    (msgpack.packb({"v": 9, "op": "list"}), "protocol version 9 is not supported"),
    (b"\xc1", "unreadable message"),  # 0xc1 is never used in msgpack
    (msgpack.packb({"v": 1, "op": "place", "name": "x" * (wire.MAX_MESSAGE + 10)}),
     "unreadable message"),
])
async def test_protocol_breakers_get_one_error_and_are_dropped(
    tmp_path: Path, service: DirectService, data: bytes, error: str
) -> None:
    async with running(tmp_path, service) as path:
        replies = await raw_exchange(path, data + wire.pack({"op": "list"}))
    assert len(replies) == 1 and error in replies[0]["error"]


async def test_unreachable_agent(tmp_path: Path) -> None:
    with pytest.raises(client.PlacementError, match="cannot reach the agent"):
        await client.place(tmp_path / "none.sock", {"vcpus": 1, "memory_mib": 1})


async def test_several_requests_on_one_connection(tmp_path: Path,
                                                  service: DirectService) -> None:
    batch = b"".join(wire.pack({"op": "place", "vcpus": 1, "memory_mib": GIB, "id": f"r{i}"})
                     for i in range(3))
    async with running(tmp_path, service) as path:
        stream = await trio.open_unix_socket(path)
        async with stream:
            await stream.send_all(batch)
            reader = wire.unpacker()
            got: list[Any] = []
            while len(got) < 3:
                reader.feed(await stream.receive_some(65536))
                got.extend(reader)
    assert [g["reply"]["request"] for g in got] == ["sock-r0", "sock-r1", "sock-r2"]
    # Most memory available first: the nodes alternate as reservations pile up.
    assert [g["reply"]["nodes"] for g in got] == [[0], [1], [0]]


# -- xnuma place ----------------------------------------------------------------------


def cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="xnuma")
    place_cmd.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


async def test_cli_places_and_prints(tmp_path: Path, service: DirectService,
                                     capsys: pytest.CaptureFixture[str]) -> None:
    async with running(tmp_path, service) as path:
        code = await trio.to_thread.run_sync(cli, [
            "place", "--vcpus", "2", "--memory", "8G", "--name", "web", "--socket", path,
            "--id", "w1"])
        out = capsys.readouterr().out
        assert code == 0
        assert out.splitlines()[0] == "sock-w1: node 0 (pCPUs 0-3)"
        assert "memory: 8192 MiB on node 0, reserved for 120 s" in out
        code = await trio.to_thread.run_sync(cli, [
            "place", "--vcpus", "2", "--memory", "9G", "--strict", "--preferred", "0",
            "--socket", path, "--json"])
        out = capsys.readouterr().out
        assert code == 1
        assert '"shortfall_mib": 7168' in out and '"ok": false' in out
        code = await trio.to_thread.run_sync(cli, ["place", "--list", "--socket", path])
        assert code == 0 and "sock-w1  web  nodes 0  8192 MiB" in capsys.readouterr().out
        code = await trio.to_thread.run_sync(cli, ["place", "--cancel", "sock-w1",
                                                   "--socket", path])
        assert code == 0 and "reservation released" in capsys.readouterr().out


def test_cli_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(["place", "--vcpus", "2"]) == 2
    assert "needs both --vcpus and --memory" in capsys.readouterr().err
    assert cli(["place", "--list", "--vcpus", "2"]) == 2
    with pytest.raises(SystemExit):
        cli(["place", "--vcpus", "2", "--memory", "lots"])
    assert "memory 'lots'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli(["place", "--vcpus", "2", "--memory", "1G", "--preferred", "a"])
    assert cli(["place", "--vcpus", "1", "--memory", "1G",
                "--socket", str(tmp_path / "x.sock")]) == 1
    assert "cannot reach the agent" in capsys.readouterr().err


# -- through the rule engine ---------------------------------------------------------


def host_view() -> Any:
    topo = Topology((Node(0, frozenset(range(4)), 16 * GIB * 1024, 10 * GIB * 1024),
                     Node(1, frozenset(range(4, 8)), 16 * GIB * 1024, 10 * GIB * 1024)),
                    ((10, 21), (21, 10)))
    return build_state(Observation(0.0, topo, (), ()))


async def test_requests_go_through_the_shipped_placement_rule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    """The agent's path: request -> placement.request event -> rules/placement.toml ->
    domain.place action -> RuledService.execute -> reply. The rule turns an unknown
    policy into best-effort; strict stays strict."""
    rules = load_paths([RULES / "placement.toml", RULES / "engine.toml"])
    view = host_view()
    send, events = trio.open_memory_channel[Event](16)
    service = RuledService(Placer(), lambda: view, send.send)
    records: list[Body] = []

    async def agent() -> None:
        memory = Memory()
        async for event in events:
            decisions, memory = decide(view, event, trio.current_time(), rules, memory)
            for d in decisions:
                assert d.outcome is Outcome.ACT and isinstance(d.action, PlaceDomain)
                records.append(service.execute(d.action).record)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent)
        a = await service.place(PlacementRequest("xs-a", 2, 8 * GIB, name="a"), "xenstore")
        b = await service.place(PlacementRequest("sock-b", 2, 8 * GIB, "strict",
                                                 frozenset({0}), name="b"), "socket")
        nursery.cancel_scope.cancel()
    assert a.ok and a.nodes == (0,)
    assert not b.ok and "preferred node 0" in b.reason and b.policy == "strict"
    assert [(r["params"]["request"], r["outcome"], r["source"]) for r in records] == [
        ("xs-a", "ok", "xenstore"), ("sock-b", "failed", "socket")]
    assert service.pending == 0


async def test_no_rule_answers_then_the_requester_hears_so(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async def drop(event: Event) -> None:
        await trio.lowlevel.checkpoint()
    service = RuledService(Placer(), host_view, drop, answer_timeout_s=5.0)
    start = trio.current_time()
    reply = await service.place(PlacementRequest("r", 1, GIB), "socket")
    assert not reply.ok and "no rule answered within 5 s" in reply.reason
    assert trio.current_time() - start == pytest.approx(5.0)


async def test_declined_request_is_answered_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    service: RuledService

    async def suppress(event: Event) -> None:
        await trio.lowlevel.checkpoint()
        assert service.decline(event.request, "suppressed (budget)")
        assert not service.decline(event.request, "twice")
    service = RuledService(Placer(), host_view, suppress)
    reply = await service.place(PlacementRequest("r", 1, GIB), "socket")
    assert not reply.ok and reply.reason == "suppressed (budget)"
    # Too many waiting: refused at once.
    service.max_pending = 0
    reply = await service.place(PlacementRequest("r2", 1, GIB), "socket")
    assert not reply.ok and "try again" in reply.reason
