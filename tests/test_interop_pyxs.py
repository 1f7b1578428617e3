"""pyxs 0.4.1, a third-party XenStore client, against the embedded xenstored.

pyxs runs a router thread per client, so every call that could hang runs in
a helper thread with a generous join timeout: a failure reports, never hangs.
"""

from __future__ import annotations

import errno
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest
from pyxs import Client, PyXSError

T = TypeVar("T")


class Embedded(Protocol):
    """The ``embedded_xenstored`` fixture (tests/conftest.py)."""

    socket_path: Path
HANG_GUARD = 20.0


def guarded(func: Callable[[], T]) -> T:
    box: list[Any] = []

    def run() -> None:
        try:
            box.append(("ok", func()))
        except BaseException as exc:
            box.append(("err", exc))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(HANG_GUARD)
    assert box, f"pyxs call did not return within {HANG_GUARD}s"
    kind, value = box[0]
    if kind == "err":
        raise value
    return value  # type: ignore[no-any-return]


@pytest.fixture
def client(embedded_xenstored: Embedded) -> Iterator[Client]:
    c = Client(unix_socket_path=str(embedded_xenstored.socket_path))
    guarded(c.connect)
    try:
        yield c
    finally:
        guarded(c.close)


def test_tree_operations(client: Client) -> None:
    def scenario() -> None:
        client.write(b"/vm/1/name", b"guest")
        assert client.read(b"/vm/1/name") == b"guest"
        assert client.read(b"/vm/1/missing", b"default") == b"default"
        client.mkdir(b"/vm/2")
        assert sorted(client.list(b"/vm")) == [b"1", b"2"]
        assert client.exists(b"/vm/2")
        assert not client.exists(b"/vm/3")
        client.set_perms(b"/vm/1", [b"n0", b"r5"])
        assert client.get_perms(b"/vm/1") == [b"n0", b"r5"]
        walked = [path for path, _, _ in client.walk(b"/vm")]
        assert walked == [b"/vm", b"/vm/1", b"/vm/1/name", b"/vm/2"]
        client.delete(b"/vm/1")
        assert not client.exists(b"/vm/1/name")
        with pytest.raises(PyXSError) as exc:
            client.read(b"/vm/1")
        assert exc.value.args[0] == errno.ENOENT
        assert client.get_domain_path(7) == b"/local/domain/7"
        assert client.is_domain_introduced(0)

    guarded(scenario)


def test_transactions(client: Client, embedded_xenstored: Embedded) -> None:
    def scenario() -> None:
        client.write(b"/t/a", b"0")
        client.transaction()
        assert client.read(b"/t/a") == b"0"
        client.write(b"/t/b", b"in-tx")
        assert client.commit()
        assert client.read(b"/t/b") == b"in-tx"
        # A conflicting write by another client: the commit fails.
        other = Client(unix_socket_path=str(embedded_xenstored.socket_path))
        other.connect()
        try:
            client.transaction()
            client.read(b"/t/a")
            other.write(b"/t/a", b"1")
            client.write(b"/t/c", b"lost")
            assert not client.commit()
            assert not client.exists(b"/t/c")
        finally:
            other.close()
        client.transaction()
        client.write(b"/t/d", b"rolled back")
        client.rollback()
        assert not client.exists(b"/t/d")

    guarded(scenario)


def test_watches_and_domains(client: Client, monkeypatch: pytest.MonkeyPatch) -> None:
    # pyxs refuses RELEASE unless /proc/xen/capabilities says this is dom0.
    monkeypatch.setattr(Client, "SU", True)

    def scenario() -> list[tuple[bytes, bytes]]:
        seen = []
        with client.monitor() as m:
            m.watch(b"/w", b"tok")
            m.watch(b"@introduceDomain", b"intro")
            m.watch(b"@releaseDomain", b"release")
            events = m.wait()
            seen += [next(events) for _ in range(3)]  # each new watch fires once
            client.write(b"/w/x", b"1")
            seen.append(next(events))
            client.introduce_domain(3, 0x1234, 7)
            seen.append(next(events))
            assert client.is_domain_introduced(3)
            client.release_domain(3)
            seen.append(next(events))
            m.unwatch(b"/w", b"tok")
            client.write(b"/w/y", b"not seen")
            client.delete(b"/w")
        return seen

    assert guarded(scenario) == [
        (b"/w", b"tok"),
        (b"@introduceDomain", b"intro"),
        (b"@releaseDomain", b"release"),
        (b"/w/x", b"tok"),
        (b"@introduceDomain", b"intro"),
        (b"@releaseDomain", b"release"),
    ]
