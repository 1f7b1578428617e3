"""The sans-IO core of the embedded xenstored, without sockets or trio.

The byte-level agreement with the C daemon is in test_differential.py; these
tests pin the semantics the project relies on, and run without the cache.
"""

from __future__ import annotations

import struct

import pytest

from agent.xenstore.connections import Connection
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.wire import Op, Packet, encode_raw


def j(*parts: bytes) -> bytes:
    return b"".join(p + b"\0" for p in parts)


class Tool:
    """A privileged client of the daemon, seeing what its connection gets."""

    def __init__(self, daemon: XenstoreDaemon, conn: Connection | None = None) -> None:
        self.daemon = daemon
        self.conn = conn if conn is not None else daemon.connect()
        self.req_id = 0

    def send(self, op: int, payload: bytes, tx: int = 0) -> dict[Connection, list[Packet]]:
        self.req_id += 1
        out: dict[Connection, list[Packet]] = {}
        for conn, packet in self.daemon.handle(self.conn, Packet(op, self.req_id, tx, payload)):
            out.setdefault(conn, []).append(packet)
        return out

    def __call__(self, op: int, *args: bytes, tx: int = 0) -> bytes:
        """The reply payload of one request (``ERROR:<name>`` for errors)."""
        mine = [p for p in self.send(op, j(*args), tx).get(self.conn, []) if p.op != Op.WATCH_EVENT]
        assert len(mine) == 1
        assert mine[0].req_id == self.req_id and mine[0].tx_id == tx
        if mine[0].op == Op.ERROR:
            return b"ERROR:" + mine[0].payload.rstrip(b"\0")
        assert mine[0].op == op
        return mine[0].payload


def events(out: dict[Connection, list[Packet]], conn: Connection) -> list[bytes]:
    return [p.payload for p in out.get(conn, []) if p.op == Op.WATCH_EVENT]


def write(tool: Tool, path: bytes, value: bytes, tx: int = 0) -> dict[Connection, list[Packet]]:
    out = tool.send(Op.WRITE, path + b"\0" + value, tx)
    assert out[tool.conn][-1].payload == b"OK\0", out
    return out


@pytest.fixture
def xsd() -> XenstoreDaemon:
    return XenstoreDaemon()


def test_initial_tree(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    assert t(Op.DIRECTORY, b"/") == b"tool\0"
    assert t(Op.DIRECTORY, b"/tool") == b"xenstored\0"
    assert t(Op.READ, b"/tool/xenstored") == b""
    assert t(Op.GET_PERMS, b"/") == b"n0\0"
    assert t(Op.IS_DOMAIN_INTRODUCED, b"0") == b"T\0"
    assert t(Op.CONTROL, b"quota", b"0").startswith(b"Domain 0:\nnodes           :        3\n")


def test_write_read_mkdir_rm(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    write(t, b"/a/b/c", b"\x00\xffvalue")
    assert t(Op.READ, b"/a/b/c") == b"\x00\xffvalue"
    assert t(Op.READ, b"/a") == b""  # created on the way, empty
    write(t, b"/a/z", b"")
    write(t, b"/a/m", b"")
    assert t(Op.DIRECTORY, b"/a") == b"b\0z\0m\0"  # creation order
    assert t(Op.MKDIR, b"/a/b") == b"OK\0"
    assert t(Op.RM, b"/a/b") == b"OK\0"
    assert t(Op.READ, b"/a/b/c") == b"ERROR:ENOENT"
    assert t(Op.RM, b"/a/b") == b"OK\0"  # already gone, parent exists
    assert t(Op.RM, b"/a/b/c") == b"ERROR:ENOENT"
    assert t(Op.RM, b"/") == b"ERROR:EINVAL"
    write(t, b"rel", b"x")
    assert t(Op.READ, b"/local/domain/0/rel") == b"x"


@pytest.mark.parametrize(
    "path", [b"/a//b", b"/a/", b"/a b", b"", b"@x", b"/" + b"a" * 2048, b"/\xff"]
)
def test_bad_paths_are_einval(xsd: XenstoreDaemon, path: bytes) -> None:
    assert Tool(xsd)(Op.WRITE, path + b"\0x") == b"ERROR:EINVAL"


def test_path_length_excludes_the_local_domain_prefix(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    assert t(Op.WRITE, b"/" + b"a" * 2047 + b"\0x") == b"OK\0"
    assert t(Op.WRITE, b"/local/domain/7/" + b"b" * 2048 + b"\0x") == b"OK\0"
    assert t(Op.WRITE, b"/local/domain/7/" + b"b" * 2049 + b"\0x") == b"ERROR:EINVAL"


def test_errors_and_unknown_types(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    for op in (99, Op.WATCH_EVENT, Op.ERROR, 20):
        assert t(op, b"x") == b"ERROR:ENOSYS"
    assert t(Op.READ, b"/tool", tx=42) == b"ERROR:ENOENT"  # unknown transaction
    assert t(Op.TRANSACTION_END, b"T") == b"ERROR:ENOENT"
    assert t(Op.SET_PERMS, b"/tool", b"x1") == b"ERROR:EINVAL"
    assert t(Op.SET_PERMS, b"/tool", b"n40000") == b"ERROR:ENOENT"  # no such domain
    assert t(Op.WATCH, b"/w") == b"ERROR:EINVAL"
    assert t(Op.UNWATCH, b"/w", b"t") == b"ERROR:ENOENT"
    assert t(Op.RELEASE, b"0") == b"ERROR:EINVAL"
    assert t(Op.RELEASE, b"9") == b"ERROR:ENOENT"
    assert t(Op.INTRODUCE, b"9", b"0", b"0") == b"ERROR:EINVAL"
    assert t(Op.CONTROL, b"nonsense") == b"ERROR:EINVAL"


def test_malformed_arguments_get_the_stale_errno_like_c(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    assert t(Op.READ) == b"ERROR:ENOENT"  # empty payload: errno left from start-up
    assert t(Op.SET_PERMS, b"/tool", b"n0", b"r99999999999999999999") == b"OK\0"
    assert xsd.errno == 34  # ERANGE from strtol, untranslatable: EINVAL
    assert t(Op.READ) == b"ERROR:EINVAL"
    assert t(Op.WATCH, b"/w", b"k") == b"OK\0"  # sets errno to 0 ...
    assert xsd.c_daemon_crashes == 0
    assert t(Op.READ) == b"ERROR:EINVAL"  # ... where C aborts; we answer
    assert xsd.c_daemon_crashes == 1


def test_directory_part_and_e2big(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    names = [b"n%03d-" % i + b"x" * 40 for i in range(120)]
    for n in names:
        assert t(Op.MKDIR, b"/big/" + n) == b"OK\0"
    assert t(Op.DIRECTORY, b"/big") == b"ERROR:E2BIG"
    listing = b""
    offset = 0
    gen = None
    while True:
        part = t(Op.DIRECTORY_PART, b"/big", b"%d" % offset)
        g, _, rest = part.partition(b"\0")
        gen = gen or g
        assert g == gen and len(part) <= 4096
        if rest.endswith(b"\0\0") or rest == b"\0":
            listing += rest[:-1]
            break
        listing += rest
        offset += len(rest)
    assert listing == b"".join(n + b"\0" for n in names)


def test_watch_semantics(xsd: XenstoreDaemon) -> None:
    t, w = Tool(xsd), Tool(xsd)
    out = w.send(Op.WATCH, j(b"/d", b"tok"))
    assert [p.op for p in out[w.conn]] == [Op.WATCH, Op.WATCH_EVENT]  # OK, then the first fire
    assert events(out, w.conn) == [b"/d\0tok\0"]
    assert events(write(t, b"/d/x/y", b"1"), w.conn) == [b"/d/x/y\0tok\0"]
    assert events(write(t, b"/other", b"1"), w.conn) == []
    w(Op.WATCH, b"/d/x/y", b"deep")
    out = t.send(Op.RM, j(b"/d/x"))
    # Removing a subtree: the removed node fires for watches on it and above,
    # each removed descendant only for watches exactly on it.
    assert events(out, w.conn) == [b"/d/x/y\0deep\0", b"/d/x\0tok\0"]
    w(Op.WATCH, b"rel", b"r")
    assert events(write(t, b"/local/domain/0/rel/sub", b""), w.conn) == [b"rel/sub\0r\0"]


def test_event_before_the_reply_on_the_writers_own_connection(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    t(Op.WATCH, b"/self", b"me")
    out = write(t, b"/self", b"x")
    assert [p.op for p in out[t.conn]] == [Op.WATCH_EVENT, Op.WRITE]


def test_transaction_changes_fire_at_commit_and_conflicts(xsd: XenstoreDaemon) -> None:
    t, u, w = Tool(xsd), Tool(xsd), Tool(xsd)
    write(t, b"/tx/a", b"0")
    write(t, b"/tx/b", b"0")
    w(Op.WATCH, b"/tx", b"k")
    tx = int(t(Op.TRANSACTION_START, b"").rstrip(b"\0"))
    assert t(Op.READ, b"/tx/a", tx=tx) == b"0"
    assert events(write(t, b"/tx/c", b"new", tx=tx), w.conn) == []
    assert u(Op.READ, b"/tx/c") == b"ERROR:ENOENT"  # invisible outside
    write(u, b"/tx/b", b"unrelated")  # not read by the transaction: no conflict
    out = t.send(Op.TRANSACTION_END, b"T\0", tx)
    assert out[t.conn][-1].payload == b"OK\0"
    assert events(out, w.conn) == [b"/tx/c\0k\0"]
    tx = int(t(Op.TRANSACTION_START, b"").rstrip(b"\0"))
    t(Op.READ, b"/tx/a", tx=tx)
    write(t, b"/tx/d", b"x", tx=tx)
    write(u, b"/tx/a", b"changed")  # read by the transaction: conflict
    assert t(Op.TRANSACTION_END, b"T", tx=tx) == b"ERROR:EAGAIN"
    assert t(Op.READ, b"/tx/d") == b"ERROR:ENOENT"
    assert t(Op.TRANSACTION_START, b"") == b"3\0"  # ids count per connection
    assert u(Op.TRANSACTION_START, b"") == b"1\0"


def test_introduce_release_and_special_watches(xsd: XenstoreDaemon) -> None:
    t, w = Tool(xsd), Tool(xsd)
    w(Op.WATCH, b"@introduceDomain", b"i")
    w(Op.WATCH, b"@releaseDomain", b"r")
    out = t.send(Op.INTRODUCE, j(b"5", b"0", b"9"))
    assert events(out, w.conn) == [b"@introduceDomain\0i\0"]
    assert t(Op.IS_DOMAIN_INTRODUCED, b"5") == b"T\0"
    write(t, b"/local/domain/5/data", b"x")
    t(Op.SET_PERMS, b"/local/domain/5", b"n5", b"r0")
    write(t, b"/keep", b"y")
    out = t.send(Op.RELEASE, j(b"5"))
    assert events(out, w.conn) == [b"@releaseDomain\0r\0"]
    assert t(Op.READ, b"/local/domain/5/data") == b"ERROR:ENOENT"  # owned by 5: removed
    assert t(Op.READ, b"/keep") == b"y"
    assert t(Op.IS_DOMAIN_INTRODUCED, b"5") == b"F\0"


def test_receive_reassembles_chunks_and_drops_oversized_headers(xsd: XenstoreDaemon) -> None:
    conn = xsd.connect()
    data = encode_raw(Op.READ, 1, 0, b"/tool\0") + encode_raw(Op.DIRECTORY, 2, 0, b"/\0")
    out = []
    for i in range(len(data)):
        out += xsd.receive(conn, data[i : i + 1])
    assert [(p.req_id, p.payload) for _, p in out] == [(1, b""), (2, b"tool\0")]
    bad = encode_raw(Op.READ, 3, 0, b"/\0") + struct.pack("<IIII", Op.READ, 4, 0, 4097)
    assert xsd.receive(conn, bad) == []  # queued replies are freed unsent, as in C
    assert conn.closed and conn not in xsd.connections
    assert xsd.receive(conn, b"more") == []


def test_disconnect_drops_watches_and_transactions(xsd: XenstoreDaemon) -> None:
    t, w = Tool(xsd), Tool(xsd)
    w(Op.WATCH, b"/x", b"k")
    tx = int(w(Op.TRANSACTION_START, b"").rstrip(b"\0"))
    write(w, b"/x/in-tx", b"1", tx=tx)
    memory_before = t(Op.CONTROL, b"quota", b"0")
    assert xsd.disconnect(w.conn) == []
    assert events(write(t, b"/x", b"1"), w.conn) == []
    assert t(Op.CONTROL, b"quota", b"0") != memory_before  # watch and copies freed
    with pytest.raises(ValueError):
        xsd.connect(77)  # not introduced
