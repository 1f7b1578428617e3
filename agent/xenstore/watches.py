"""Watches of ``xenstored_watch.c``: records, path rules, and firing events.

An event goes to every connection watching the node or an ancestor that may
read the node (or its parent); special ``@`` paths have their own
permissions. Inside a transaction firing is only noted for the commit.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.xenstore import output
from agent.xenstore.cstring import PERM_READ
from agent.xenstore.store import Node, Perms, get_parent, is_unprivileged, perm_for_conn

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection
    from agent.xenstore.daemon import XenstoreDaemon


@dataclass(eq=False, slots=True)
class Watch:
    node: bytes  # canonical (absolute or @special) path
    token: bytes
    relative_path: bytes | None  # the connection's home if registered relative


def is_child(child: bytes, parent: bytes) -> bool:
    """Is ``child`` the node ``parent`` or below it (everything is below /)?"""
    if parent == b"/":
        return True
    if not child.startswith(parent):
        return False
    return len(child) == len(parent) or child[len(parent)] == ord("/")


def watch_path(watch: Watch, name: bytes) -> bytes:
    """The path an event reports: relative to the connection's home when the
    watch was registered with a relative path."""
    if watch.relative_path is None:
        return name
    path = name[len(watch.relative_path) :]
    return path[1:] if path.startswith(b"/") else path


def event_payload(path: bytes, token: bytes) -> bytes:
    return path + b"\0" + token + b"\0"


def _watch_permitted(
    xsd: XenstoreDaemon, conn: Connection, name: bytes, node: Node | None, perms: Perms | None
) -> bool:
    st = xsd.store
    if perms is not None and perm_for_conn(conn, perms) & PERM_READ:
        return True
    if node is None:
        node = st.read_node(conn, name)
        if node is None:
            return False
    if perm_for_conn(conn, node.perms) & PERM_READ:
        return True
    parent = node.parent
    if parent is None:
        parent = st.read_node(conn, get_parent(node.name))
        if parent is None:
            return False
    return bool(perm_for_conn(conn, parent.perms) & PERM_READ)


def fire_watches(
    xsd: XenstoreDaemon,
    conn: Connection | None,
    name: bytes,
    node: Node | None,
    exact: bool,
    perms: Perms | None,
) -> None:
    """Queue an event for every watch on ``name`` (``exact``) or on it or
    an ancestor; inside a transaction only note it for the commit."""
    if conn is not None and conn.transaction is not None:
        acc = conn.transaction.accessed.get(name)
        if acc is None:
            conn.transaction.fail = True
        elif not acc.fire_watch:
            acc.fire_watch, acc.watch_exact = True, exact
        elif not exact:
            acc.watch_exact = False
        return
    req = conn.current if is_unprivileged(conn) and conn is not None else None
    special = name.startswith(b"@")
    for i in list(xsd.connections):
        if not i.watches:  # (C checks permissions first; same result, far cheaper)
            continue
        if special:
            p = xsd.special_perms.get(name)
            if p is None or not perm_for_conn(i, p) & PERM_READ:
                continue
        elif not _watch_permitted(xsd, i, name, node, perms):
            continue
        for w in list(i.watches):
            if name == w.node if exact else is_child(name, w.node):
                output.send_event(xsd, req, i, watch_path(w, name), w.token)
