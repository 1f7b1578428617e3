"""The real-xenstored harness: Debian's C xenstored 4.17 and xenstore-utils, run without Xen."""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

try:  # tests/ on sys.path (pytest's default rootdir-less import mode)
    from realxs.harness import (
        RealXenstored,
        real_xenstored_available,
        start_real_xenstored,
        unavailable_reason,
        xenstore_util,
    )
except ImportError:  # repo root on sys.path (tests/ imported as a package)
    from tests.realxs.harness import (  # type: ignore[no-redef]
        RealXenstored,
        real_xenstored_available,
        start_real_xenstored,
        unavailable_reason,
        xenstore_util,
    )

pytestmark = [
    pytest.mark.realxs,
    pytest.mark.skipif(not real_xenstored_available(), reason=unavailable_reason()),
]

XS_READ = 2


@pytest.fixture
def xsd(tmp_path: Path) -> Iterator[RealXenstored]:
    with start_real_xenstored(tmp_path) as xs:
        yield xs


def raw_read(sock_path: Path, path: str) -> tuple[int, bytes]:
    """One XS_READ over the unix socket, returning (reply type, payload)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(5)
        s.connect(str(sock_path))
        payload = path.encode() + b"\0"
        s.sendall(struct.pack("<IIII", XS_READ, 7, 0, len(payload)) + payload)
        head = b""
        while len(head) < 16:
            chunk = s.recv(16 - len(head))
            assert chunk, "connection closed"
            head += chunk
        typ, req_id, tx_id, length = struct.unpack("<IIII", head)
        assert (req_id, tx_id) == (7, 0)
        body = b""
        while len(body) < length:
            chunk = s.recv(length - len(body))
            assert chunk, "connection closed"
            body += chunk
        return typ, body


def test_daemon_starts(xsd: RealXenstored) -> None:
    assert xsd.running
    assert xsd.pid > 0
    assert xsd.socket_path.is_socket()
    assert raw_read(xsd.socket_path, "/tool/xenstored") == (XS_READ, b"")


def test_write_then_read_round_trips(xsd: RealXenstored) -> None:
    w = xsd.util("xenstore-write", "/local/domain/0/name", "Domain-0", "/x/y", "v 2")
    assert w.returncode == 0, w.stderr
    r = xenstore_util("read", "/local/domain/0/name", "/x/y", socket=xsd.socket_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout == b"Domain-0\nv 2\n"
    missing = xsd.util("xenstore-read", "/nope")
    assert missing.returncode != 0
    exists = xsd.util("xenstore-exists", "/x")
    assert exists.returncode == 0
    assert xsd.util("xenstore-list", "/x").stdout == b"y\n"


def test_ls_shows_permissions(xsd: RealXenstored) -> None:
    assert xsd.util("write", "/vm/a", "1").returncode == 0
    chmod = xsd.util("chmod", "/vm/a", "n0", "r5", "b7")
    assert chmod.returncode == 0, chmod.stderr
    ls = xsd.util("ls", "-p", "/vm")
    assert ls.returncode == 0, ls.stderr
    line = ls.stdout.decode().splitlines()[0]
    assert line.startswith('a = "1"')
    assert line.endswith("(n0,r5,b7)")


def test_initial_tree(xsd: RealXenstored) -> None:
    ls = xsd.util("ls", "-f", "-p", "/")
    assert ls.returncode == 0, ls.stderr
    assert ls.stdout.decode().splitlines() == [
        '/tool = ""   (n0)',
        '/tool/xenstored = ""   (n0)',
    ]


def test_kill_stops_answering_and_restart_gives_fresh_tree(xsd: RealXenstored) -> None:
    assert xsd.util("write", "/keep/me", "x").returncode == 0
    old_pid = xsd.pid
    xsd.kill()
    assert not xsd.running
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s, pytest.raises(OSError):
        s.connect(str(xsd.socket_path))
    r = xsd.util("read", "/keep/me", timeout=10)
    assert r.returncode != 0

    xsd.restart()
    assert xsd.running
    assert xsd.pid != old_pid
    # The tree is in memory only: a fresh daemon starts from the initial tree.
    assert xsd.util("exists", "/keep").returncode != 0
    assert xsd.util("ls", "-f", "/").stdout.decode().splitlines() == [
        '/tool = ""',
        '/tool/xenstored = ""',
    ]
    assert xsd.util("write", "/again", "1").returncode == 0


def test_stop_is_idempotent(tmp_path: Path) -> None:
    xs = RealXenstored(tmp_path)
    xs.start()
    xs.stop()
    xs.stop()
    assert not xs.running
    xs.close()
