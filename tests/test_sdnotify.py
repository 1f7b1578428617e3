"""systemd notify over a real unix datagram socket the test owns."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest
import trio

from agent.sdnotify import Notifier, socket_address, watchdog_interval, watchdog_pinger


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    """systemd's end: a datagram socket bound to a path."""
    path = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    yield sock, str(path)
    sock.close()


def received(sock: socket.socket) -> list[str]:
    out: list[str] = []
    while True:
        try:
            out.append(sock.recv(4096, socket.MSG_DONTWAIT).decode())
        except BlockingIOError:
            return out


def test_messages_over_a_path_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    with Notifier(env={"NOTIFY_SOCKET": path}) as n:
        assert n.enabled
        assert n.ready("watching 3 domains")
        assert n.status("rules reloaded:\n12 rules")
        assert n.watchdog()
        assert n.stopping()
        assert n.reloading()
    got = received(sock)
    assert got[:4] == [
        "READY=1\nSTATUS=watching 3 domains",
        "STATUS=rules reloaded: 12 rules",
        "WATCHDOG=1",
        "STOPPING=1",
    ]
    reloading, monotonic = got[4].split("\n")
    assert reloading == "RELOADING=1" and int(monotonic.removeprefix("MONOTONIC_USEC=")) > 0


def test_abstract_namespace_socket() -> None:
    name = f"xnuma-test-{os.getpid()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    try:
        assert Notifier("@" + name).ready()
        assert received(sock) == ["READY=1"]
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_no_op() -> None:
    n = Notifier(env={})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping()


def test_a_vanished_socket_is_not_fatal(tmp_path: Path) -> None:
    n = Notifier(str(tmp_path / "nobody-listens"))
    assert n.enabled and not n.ready() and not n.watchdog()


def test_addresses_and_bad_assignments() -> None:
    assert socket_address("/run/systemd/notify") == "/run/systemd/notify"
    assert socket_address("@abc") == b"\0abc"
    with pytest.raises(ValueError, match="vsock"):
        socket_address("vsock:2:1234")
    assert not Notifier("vsock:2:1234").enabled
    with pytest.raises(ValueError, match="KEY=value"):
        Notifier("/x").send("READY=1\nEVIL=1")


def test_watchdog_interval() -> None:
    assert watchdog_interval({}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "42"}, pid=42) == 15.0
    assert watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "41"}, pid=42) is None
    assert watchdog_interval({"WATCHDOG_USEC": "soon"}) is None
    assert watchdog_interval({"WATCHDOG_USEC": "0"}) is None


async def test_pinger_pings_at_half_the_watchdog_period(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch, autojump_clock: object
) -> None:
    sock, path = listener
    monkeypatch.setenv("WATCHDOG_USEC", "2000000")
    monkeypatch.delenv("WATCHDOG_PID", raising=False)
    notifier = Notifier(path)
    async with trio.open_nursery() as nursery:
        interval = await nursery.start(watchdog_pinger, notifier)
        assert interval == 1.0
        await trio.sleep(5.5)
        assert received(sock) == ["WATCHDOG=1"] * 6  # at 0, 1, ..., 5 s
        nursery.cancel_scope.cancel()


async def test_pinger_stops_pinging_when_unhealthy(
    listener: tuple[socket.socket, str], autojump_clock: object
) -> None:
    sock, path = listener
    healthy = [True]
    async with trio.open_nursery() as nursery:
        pinger = partial(watchdog_pinger, Notifier(path), 2.0, healthy=lambda: healthy[0])
        await nursery.start(pinger)
        await trio.sleep(3)  # pings at 0 and 2
        healthy[0] = False
        await trio.sleep(10)
        assert received(sock) == ["WATCHDOG=1"] * 2
        nursery.cancel_scope.cancel()


async def test_pinger_returns_when_there_is_no_watchdog(
    listener: tuple[socket.socket, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("WATCHDOG_USEC", raising=False)
    async with trio.open_nursery() as nursery:
        assert await nursery.start(watchdog_pinger, Notifier(listener[1])) is None
    assert received(listener[0]) == []
