"""Guest (unprivileged domain) connections of the embedded xenstored:
permissions, ownership and the per-domain quotas of C xenstored 4.17.

Unix-socket clients are always privileged, so the differential test cannot
reach these paths; the expectations here come from reading the C source
(xenstored_core.c perm_for_conn/get_node/construct_node, xenstored_domain.c,
the quota checks) and are pinned one by one.
"""

from __future__ import annotations

import pytest

from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.domain_lifecycle import DomainStatus
from agent.xenstore.wire import Op, Packet

try:
    from test_xenstored_core import Tool, events, j, write
except ImportError:  # repo root on sys.path
    from tests.test_xenstored_core import Tool, events, j, write  # type: ignore[no-redef]


@pytest.fixture
def xsd() -> XenstoreDaemon:
    return XenstoreDaemon()


def guest(xsd: XenstoreDaemon, tool: Tool, domid: int) -> Tool:
    """Introduce ``domid`` with a home it owns, as the toolstack does."""
    assert tool(Op.INTRODUCE, b"%d" % domid, b"0", b"1") == b"OK\0"
    assert tool(Op.MKDIR, b"/local/domain/%d" % domid) == b"OK\0"
    assert tool(Op.SET_PERMS, b"/local/domain/%d" % domid, b"n%d" % domid, b"r0") == b"OK\0"
    return Tool(xsd, xsd.connect(domid))


def test_permissions(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    write(t, b"/secret/inner", b"s")
    write(t, b"/shared", b"v")
    t(Op.SET_PERMS, b"/shared", b"n0", b"r5")
    assert g(Op.READ, b"/secret/inner") == b"ERROR:EACCES"
    assert g(Op.READ, b"/secret/missing") == b"ERROR:EACCES"  # parent unreadable: no ENOENT
    assert g(Op.READ, b"/shared") == b"v"
    assert g(Op.WRITE, b"/shared\0x") == b"ERROR:EACCES"
    assert g(Op.READ, b"/local/domain/5/missing") == b"ERROR:ENOENT"
    assert g(Op.WRITE, b"data/x\0mine") == b"OK\0"  # relative to its home
    assert t(Op.GET_PERMS, b"/local/domain/5/data/x") == b"n5\0r0\0"  # it owns what it creates
    assert g(Op.SET_PERMS, b"data/x", b"n0") == b"ERROR:EPERM"  # cannot give it away
    assert g(Op.SET_PERMS, b"data/x", b"n5", b"r1", b"r2", b"r3", b"r4", b"r6") == b"ERROR:ENOSPC"
    assert g(Op.SET_PERMS, b"data/x", b"n5", b"r1") == b"OK\0"
    for op, args in ((Op.CONTROL, (b"help",)), (Op.INTRODUCE, (b"6", b"0", b"1"))):
        assert g(op, *args) == b"ERROR:EACCES"
    assert g(Op.GET_DOMAIN_PATH, b"5") == b"/local/domain/5\0"


def test_device_model_target_acts_for_its_guest(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    guest(xsd, t, 5)
    dm = guest(xsd, t, 6)
    assert dm(Op.READ, b"/local/domain/5") == b"ERROR:EACCES"
    assert t(Op.SET_TARGET, b"6", b"5") == b"OK\0"
    assert dm(Op.READ, b"/local/domain/5") == b""
    assert dm(Op.WRITE, b"/local/domain/5/dm\0x") == b"OK\0"


def test_watch_events_respect_permissions(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    write(t, b"/pub", b"")
    t(Op.SET_PERMS, b"/pub", b"n0", b"r5")
    write(t, b"/priv", b"")
    g(Op.WATCH, b"/pub", b"p")
    g(Op.WATCH, b"/priv", b"q")
    g(Op.WATCH, b"@introduceDomain", b"i")
    assert events(write(t, b"/pub", b"1"), g.conn) == [b"/pub\0p\0"]
    assert events(write(t, b"/priv", b"1"), g.conn) == []
    # Losing access still tells the watcher (old permissions count).
    assert events(t.send(Op.SET_PERMS, j(b"/pub", b"n0")), g.conn) == [b"/pub\0p\0"]
    assert events(t.send(Op.INTRODUCE, j(b"7", b"0", b"1")), g.conn) == []
    t(Op.SET_PERMS, b"@introduceDomain", b"n0", b"r5")
    assert events(t.send(Op.INTRODUCE, j(b"8", b"0", b"1")), g.conn) == [b"@introduceDomain\0i\0"]


def test_node_and_size_quotas(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    assert g(Op.WRITE, b"big\0" + b"x" * 2000) == b"OK\0"
    assert g(Op.WRITE, b"big\0" + b"x" * 2100) == b"ERROR:ENOSPC"  # record >= 2048 bytes
    assert t(Op.CONTROL, b"quota", b"set", b"nodes", b"3") == b"OK\0"
    assert g(Op.WRITE, b"a\0") == b"OK\0"  # home + big + a = 3 owned
    assert g(Op.WRITE, b"b\0") == b"ERROR:ENOSPC"
    assert t(Op.WRITE, b"/local/domain/5/by-dom0\0") == b"OK\0"  # dom0 is never limited
    tx = int(g(Op.TRANSACTION_START, b"").rstrip(b"\0"))
    assert g(Op.WRITE, b"c\0", tx=tx) == b"ERROR:ENOSPC"  # 4 owned (by-dom0 inherits 5)
    assert t(Op.CONTROL, b"quota", b"set", b"nodes", b"5") == b"OK\0"
    assert g(Op.WRITE, b"c\0", tx=tx) == b"OK\0"  # 4 + 1 in the transaction ...
    assert g(Op.TRANSACTION_END, b"T", tx=tx) == b"ERROR:ENOSPC"  # ... checked at commit


def test_watch_and_transaction_quotas(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    for i in range(129):  # the C check is "more than 128 already": 129 fit
        assert g(Op.WATCH, b"w%d" % i, b"k") == b"OK\0"
    assert g(Op.WATCH, b"w-last", b"k") == b"ERROR:E2BIG"
    for _ in range(11):
        assert g(Op.TRANSACTION_START, b"") != b"ERROR:ENOSPC"
    assert g(Op.TRANSACTION_START, b"") == b"ERROR:ENOSPC"
    assert g(Op.RESET_WATCHES) == b"OK\0"  # drops watches and transactions
    assert g(Op.TRANSACTION_START, b"") == b"12\0"
    assert t(Op.CONTROL, b"quota", b"5").split(b"\n")[1:3] == [
        b"nodes           :        1",
        b"watches         :        0",
    ]


def test_outstanding_requests_stall_a_guest_until_delivered(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    g.conn.track_delivery = True
    watcher = Tool(xsd)
    watcher.conn.track_delivery = True
    watcher(Op.WATCH, b"/local/domain/5", b"k")
    xsd.delivered(watcher.conn, 2)
    for i in range(20):
        assert xsd.can_read(g.conn)
        g(Op.WRITE, b"n%d\0" % i)
    assert not xsd.can_read(g.conn)  # 20 replies not yet taken by its transport
    xsd.delivered(g.conn, 20)
    # Replies gone, but each write still waits for the watcher to get its event.
    assert not xsd.can_read(g.conn)
    xsd.delivered(watcher.conn, 19)
    assert xsd.can_read(g.conn)
    assert xsd.can_read(t.conn)  # privileged connections are never held back


def test_memory_quota(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    assert t(Op.CONTROL, b"quota", b"set", b"memory", b"1500") == b"OK\0"
    assert g(Op.WRITE, b"a\0" + b"x" * 1000) == b"OK\0"
    assert g(Op.WRITE, b"b\0" + b"x" * 1000) == b"ERROR:EIO"  # C: the store refused
    assert xsd.can_read(g.conn)
    assert t(Op.CONTROL, b"quota", b"set", b"memory", b"1000") == b"OK\0"
    assert not xsd.can_read(g.conn)  # over the hard quota: not read until below


def test_release_removes_owned_nodes_and_forgets_the_domain(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    g(Op.WRITE, b"data\0x")
    write(t, b"/grant", b"g")
    t(Op.SET_PERMS, b"/grant", b"n0", b"r5")
    assert g(Op.READ, b"/grant") == b"g"
    w = Tool(xsd)
    w(Op.WATCH, b"/local/domain/5", b"home")
    out = t.send(Op.RELEASE, j(b"5"))
    assert events(out, w.conn) == [b"/local/domain/5\0home\0"]
    assert g.conn.closed
    assert t(Op.DIRECTORY, b"/local/domain") == b""
    # A new domain 5 does not inherit what was granted to the old one.
    g2 = guest(xsd, t, 5)
    assert t(Op.GET_PERMS, b"/grant") == b"n0\0r5\0"
    assert g2(Op.READ, b"/grant") == b"ERROR:EACCES"


def test_guest_event_payloads_are_relative_to_its_home(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    out = g.send(Op.WATCH, j(b"device", b"d"))
    assert events(out, g.conn) == [b"device\0d\0"]
    assert events(write(t, b"/local/domain/5/device/vif", b""), g.conn) == [b"device/vif\0d\0"]
    assert isinstance(out[g.conn][0], Packet)


def test_transaction_node_quota(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    for name in (b"a", b"b", b"c"):
        g(Op.MKDIR, name)
    assert t(Op.CONTROL, b"quota", b"set", b"transaction-nodes", b"2") == b"OK\0"
    tx = int(g(Op.TRANSACTION_START, b"").rstrip(b"\0"))
    assert g(Op.READ, b"a", tx=tx) == b""
    assert g(Op.READ, b"b", tx=tx) == b""
    assert g(Op.READ, b"c", tx=tx) == b"ERROR:ENOSPC"  # a third node in one transaction
    assert g(Op.TRANSACTION_END, b"T", tx=tx) == b"ERROR:ENOMEM"  # the failure sticks
    tx = int(t(Op.TRANSACTION_START, b"").rstrip(b"\0"))
    for name in (b"a", b"b", b"c"):  # dom0 is not limited
        assert t(Op.READ, b"/local/domain/5/" + name, tx=tx) == b""


def test_hypervisor_domain_state_changes(xsd: XenstoreDaemon) -> None:
    t = Tool(xsd)
    g = guest(xsd, t, 5)
    g(Op.WRITE, b"data\0x")
    write(t, b"/perm-only", b"")
    t(Op.SET_PERMS, b"/perm-only", b"n9")  # domain 9 is known only from this
    w = Tool(xsd)
    w(Op.WATCH, b"@releaseDomain", b"r")
    states: dict[int, DomainStatus] = {0: DomainStatus(), 5: DomainStatus(), 9: DomainStatus()}

    def release_events() -> list[bytes]:
        out = xsd.check_domains(states.get)
        return [p.payload for c, p in out if c is w.conn]

    assert release_events() == []  # nothing changed
    states[5] = DomainStatus(shutdown=True)
    assert release_events() == [b"@releaseDomain\0r\0"]  # shut down: fired once
    assert release_events() == []
    assert t(Op.IS_DOMAIN_INTRODUCED, b"5") == b"T\0"  # still there until it dies
    states[5] = DomainStatus(shutdown=True, dying=True)
    assert release_events() == [b"@releaseDomain\0r\0"]
    assert g.conn.closed
    assert t(Op.READ, b"/local/domain/5/data") == b"ERROR:ENOENT"  # it owned them
    assert t(Op.IS_DOMAIN_INTRODUCED, b"5") == b"F\0"
    del states[9]
    assert release_events() == []  # never introduced: no event, but its nodes go
    assert t(Op.READ, b"/perm-only") == b"ERROR:ENOENT"
