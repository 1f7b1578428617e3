"""Finding the node a request names, with the errno the C daemon leaves.

Relative paths resolve against the connection's home; a node the connection
may not see is reported as its nearest readable ancestor allows (ENOENT or
EACCES), and numeric arguments set ERANGE like glibc ``atoi``.
"""

from __future__ import annotations

import errno as E
from typing import TYPE_CHECKING

from agent.xenstore.cstring import atoi, is_valid_nodename
from agent.xenstore.store import Node, get_parent, perm_for_conn

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection
    from agent.xenstore.daemon import XenstoreDaemon


def c_atoi(xsd: XenstoreDaemon, text: bytes) -> int:
    result = atoi(text)
    if result.overflow:
        xsd.store.errno = E.ERANGE
    return result.value


def implicit_path(conn: Connection) -> bytes:
    return conn.domain.path if conn.domain is not None else b"/local/domain/0"


def canonicalize(conn: Connection, node: bytes | None) -> bytes | None:
    if node is None or node.startswith((b"/", b"@")):
        return node
    return implicit_path(conn) + b"/" + node


def valid_name(xsd: XenstoreDaemon, name: bytes) -> bool:
    return is_valid_nodename(name, xsd.quotas.path_max)


def _get_node(xsd: XenstoreDaemon, conn: Connection, name: bytes | None, perm: int) -> Node | None:
    st = xsd.store
    if name is None or not valid_name(xsd, name):
        st.errno = E.EINVAL
        return None
    node = st.read_node(conn, name)
    if node is not None and (perm_for_conn(conn, node.perms) & perm) != perm:
        st.errno = E.EACCES
        node = None
    if node is None and not st.can_propagate_errno():
        st.errno = _errno_from_parents(xsd, conn, name, st.errno, perm)
    return node


def get_node_canonical(
    xsd: XenstoreDaemon, conn: Connection, name: bytes | None, perm: int
) -> tuple[Node | None, bytes | None]:
    canonical = canonicalize(conn, name)
    if canonical is None:
        return None, None  # errno is left as it was: C replies with it
    return _get_node(xsd, conn, canonical, perm), canonical


def _errno_from_parents(
    xsd: XenstoreDaemon, conn: Connection, name: bytes, errnum: int, perm: int
) -> int:
    """Do not tell a domain why it cannot see a node unless it may read the
    nearest existing ancestor."""
    st = xsd.store
    if errnum == E.ENOMEM:
        return errnum
    node = None
    while True:
        name = get_parent(name)
        node = st.read_node(conn, name)
        if node is not None:
            break
        if st.can_propagate_errno():
            return st.errno
        if name == b"/":
            break
    parent_perm = perm_for_conn(conn, node.perms) if node is not None else 0
    return errnum if parent_perm & perm else E.EACCES
