"""The trio transport of the embedded xenstored: in-memory streams under
MockClock, a unix socket, and the ``xnuma xenstored`` command."""

from __future__ import annotations

import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream, serve_unix
from agent.xenstore.wire import Decoder, Op, Packet, encode_raw

HANG_GUARD = 20.0  # seconds of real time; only a guard against hangs


class StreamClient:
    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.decoder = Decoder()

    async def send(self, op: int, payload: bytes, req_id: int = 1, tx: int = 0) -> None:
        await self.stream.send_all(encode_raw(op, req_id, tx, payload))

    async def packet(self) -> Packet | None:
        while (p := self.decoder.next_packet()) is None:
            data = await self.stream.receive_some(65536)
            if not data:
                return None
            self.decoder.feed(data)
        return p


def _pair(nursery: trio.Nursery, hub: XenstoreHub) -> StreamClient:
    client, server = trio.testing.memory_stream_pair()
    nursery.start_soon(serve_stream, hub, server)
    return StreamClient(client)


async def test_requests_and_events_over_memory_streams(autojump_clock: trio.abc.Clock) -> None:
    hub = XenstoreHub()
    async with trio.open_nursery() as nursery:
        a, b = _pair(nursery, hub), _pair(nursery, hub)
        await b.send(Op.WATCH, b"/w\0tok\0", req_id=5)
        assert await b.packet() == Packet(Op.WATCH, 5, 0, b"OK\0")
        assert await b.packet() == Packet(Op.WATCH_EVENT, 0, 0, b"/w\0tok\0")
        # Two requests in one write, split across chunks.
        data = encode_raw(Op.WRITE, 6, 0, b"/w/x\0v") + encode_raw(Op.READ, 7, 0, b"/w/x\0")
        await a.stream.send_all(data[:10])
        await trio.sleep(1)
        await a.stream.send_all(data[10:])
        assert await a.packet() == Packet(Op.WRITE, 6, 0, b"OK\0")
        assert await a.packet() == Packet(Op.READ, 7, 0, b"v")
        assert await b.packet() == Packet(Op.WATCH_EVENT, 0, 0, b"/w/x\0tok\0")
        # An in-process session on the same hub sees socket clients' changes.
        session = hub.session()
        session.watch("/w", "s")
        await a.send(Op.RM, b"/w\0", req_id=8)
        assert await a.packet() == Packet(Op.RM, 8, 0, b"OK\0")
        assert session.take_events() == [(b"/w", b"s"), (b"/w", b"s")]
        await a.stream.aclose()
        await b.stream.aclose()
    assert hub.daemon.connections == [hub.daemon.connections[0], session.conn]  # + dom0's ring


async def test_oversized_header_drops_the_client(autojump_clock: trio.abc.Clock) -> None:
    hub = XenstoreHub()
    async with trio.open_nursery() as nursery:
        a, b = _pair(nursery, hub), _pair(nursery, hub)
        await b.send(Op.WATCH, b"/w\0k\0")
        await b.packet()
        await b.packet()
        await b.stream.send_all(struct.pack("<IIII", Op.READ, 1, 0, 4097))
        assert await b.packet() is None  # closed, no reply
        await a.send(Op.WRITE, b"/w\0x")
        assert (await a.packet()) == Packet(Op.WRITE, 1, 0, b"OK\0")
        assert len(hub.daemon.connections) == 2  # dom0's ring and a
        await a.stream.aclose()


async def test_client_hangup_forgets_its_watches(autojump_clock: trio.abc.Clock) -> None:
    hub = XenstoreHub()
    session = hub.session()
    async with trio.open_nursery() as nursery:
        a = _pair(nursery, hub)
        await a.send(Op.WATCH, b"/gone\0k\0")
        await a.packet()
        await a.stream.aclose()
        await trio.sleep(1)
    assert len(hub.daemon.connections) == 2  # dom0's ring and the session
    session.write("/gone", "x")


@pytest.fixture
def short_dir() -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix="xnuma-srv-"))
    yield d
    for p in d.iterdir():
        p.unlink()
    d.rmdir()


async def test_serve_unix(short_dir: Path) -> None:
    path = short_dir / "socket"
    path.write_bytes(b"")  # not a socket: refused, never deleted
    with pytest.raises(ExceptionGroup) as exc:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_unix, XenstoreDaemon(), path)
    assert exc.group_contains(OSError)
    assert path.read_bytes() == b""

    path.unlink()
    daemon = XenstoreDaemon()
    with trio.fail_after(HANG_GUARD):
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_unix, daemon, path)
            assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
            stream = await trio.open_unix_socket(str(path))
            client = StreamClient(stream)
            await client.send(Op.DIRECTORY, b"/\0")
            assert await client.packet() == Packet(Op.DIRECTORY, 1, 0, b"tool\0")
            await stream.aclose()
            nursery.cancel_scope.cancel()
    assert not path.exists()


def _wait_for_socket(path: Path, proc: subprocess.Popen[bytes]) -> None:
    """Until the daemon accepts connections (the socket file appears at bind
    time, a moment before listen)."""
    deadline = time.monotonic() + HANG_GUARD
    while True:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "xnuma xenstored did not start serving"
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                time.sleep(0.02)
                continue
        return


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_until_signalled(short_dir: Path, sig: signal.Signals) -> None:
    path = short_dir / "socket"
    argv = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]
    argv += ["xenstored", "--socket", str(path)]
    with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE) as proc:
        try:
            _wait_for_socket(path, proc)
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(HANG_GUARD)
                s.connect(str(path))
                s.sendall(encode_raw(Op.GET_DOMAIN_PATH, 3, 0, b"4\0"))
                reply = s.recv(100)
            assert reply == encode_raw(Op.GET_DOMAIN_PATH, 3, 0, b"/local/domain/4\0")
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=HANG_GUARD)
        finally:
            if proc.poll() is None:
                proc.kill()
    assert proc.returncode == 0, err
    assert b"stopping" in err
    assert not path.exists()


def test_cli_reports_a_bad_socket_path(short_dir: Path) -> None:
    argv = [sys.executable, "-c", "import sys; from agent.cli import main; sys.exit(main())"]
    argv += ["xenstored", "--socket", str(short_dir / "no" / "such" / "dir" / "socket")]
    proc = subprocess.run(argv, capture_output=True, timeout=HANG_GUARD, check=False)
    assert proc.returncode == 1
    assert b"cannot serve on" in proc.stderr
