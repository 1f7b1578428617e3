"""The in-process dom0 API of the embedded xenstored (what the simulator uses
where xl/libxl would use libxenstore)."""

from __future__ import annotations

import pytest

from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.domain_lifecycle import DomainStatus
from agent.xenstore.hub import Dom0Session, XenstoreHub
from agent.xenstore.wire import Access, Op, Packet, Perm, XenstoreError


@pytest.fixture
def hub() -> XenstoreHub:
    return XenstoreHub()


def test_tree_api(hub: XenstoreHub) -> None:
    s = hub.session()
    s.write("/vm/1/name", "guest")
    s.write(b"/vm/1/raw", b"\x00\xff")
    s.mkdir("/vm/2")
    assert s.read("/vm/1/name") == b"guest"
    assert s.read("/vm/1/raw") == b"\x00\xff"
    assert s.directory("/vm") == [b"1", b"2"]
    assert s.exists("/vm/2") and not s.exists("/vm/3")
    s.set_perms("/vm/1", [Perm(Access.NONE, 0), Perm(Access.READ, 1)])
    assert s.get_perms("/vm/1") == [Perm(Access.NONE, 0), Perm(Access.READ, 1)]
    s.rm("/vm/1")
    with pytest.raises(XenstoreError) as exc:
        s.read("/vm/1/name")
    assert exc.value.name == "ENOENT"
    with pytest.raises(XenstoreError) as exc:
        s.write("/bad path", "x")
    assert exc.value.name == "EINVAL"
    with pytest.raises(XenstoreError) as exc:
        s.write("/big", b"x" * 4096)
    assert exc.value.name == "E2BIG"
    assert s.get_domain_path(4) == b"/local/domain/4"
    assert s.control("quota", "0").startswith(b"Domain 0:")


def test_transactions(hub: XenstoreHub) -> None:
    a, b = hub.session(), hub.session()
    a.write("/t/x", "0")
    tx = a.transaction_start()
    assert a.read("/t/x", tx) == b"0"
    a.write("/t/y", "1", tx)
    assert not b.exists("/t/y")
    a.transaction_end(tx)
    assert b.read("/t/y") == b"1"
    tx = a.transaction_start()
    a.read("/t/x", tx)
    b.write("/t/x", "changed")
    with pytest.raises(XenstoreError) as exc:
        a.transaction_end(tx)
    assert exc.value.name == "EAGAIN"


def test_watches_queue_or_call_back(hub: XenstoreHub) -> None:
    queued = hub.session()
    called: list[tuple[bytes, bytes]] = []
    pushed = hub.session(on_event=lambda path, token: called.append((path, token)))
    queued.watch("/w", "q")
    pushed.watch("@introduceDomain", "intro")
    pushed.watch("@releaseDomain", "release")
    writer = hub.session()
    writer.write("/w/a", "1")
    writer.introduce_domain(3)
    assert writer.is_domain_introduced(3)
    writer.write("/local/domain/3/x", "")
    writer.set_perms("/local/domain/3", [Perm(Access.NONE, 3)])
    writer.release_domain(3)
    assert not writer.exists("/local/domain/3")
    assert queued.take_events() == [(b"/w", b"q"), (b"/w/a", b"q")]
    assert queued.take_events() == []
    assert called == [
        (b"@introduceDomain", b"intro"),
        (b"@releaseDomain", b"release"),
        (b"@introduceDomain", b"intro"),
        (b"@releaseDomain", b"release"),
    ]
    queued.unwatch("/w", "q")
    writer.write("/w/b", "2")
    assert queued.take_events() == []


def test_events_from_other_transports_reach_sessions(hub: XenstoreHub) -> None:
    session = hub.session()
    session.watch("/x", "k")
    session.take_events()
    received: list[Packet] = []
    conn = hub.attach(received.append)
    hub.handle(conn, Packet(Op.WRITE, 9, 0, b"/x/y\0v"))
    assert [p.payload for p in received] == [b"OK\0"]
    assert session.take_events() == [(b"/x/y", b"k")]
    hub.detach(conn)
    assert conn.closed


def test_one_hub_per_daemon() -> None:
    daemon = XenstoreDaemon()
    hub = XenstoreHub.of(daemon)
    assert XenstoreHub.of(daemon) is hub
    with pytest.raises(ValueError):
        XenstoreHub(daemon)


def test_closed_session(hub: XenstoreHub) -> None:
    s: Dom0Session = hub.session()
    s.watch("/a", "k")
    s.close()
    with pytest.raises(XenstoreError):
        s.read("/a")
    hub.session().write("/a", "1")  # no event for the closed session, no error


def test_domain_death_reaches_subscribers(hub: XenstoreHub) -> None:
    toolstack = hub.session()
    toolstack.watch("@releaseDomain", "gone")
    toolstack.introduce_domain(4)
    toolstack.take_events()
    hub.check_domains({0: DomainStatus(), 4: DomainStatus(dying=True)}.get)
    assert toolstack.take_events() == [(b"@releaseDomain", b"gone")]
    assert not toolstack.is_domain_introduced(4)
