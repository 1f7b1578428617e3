"""Creating and removing nodes, and walking the tree, as ``xenstored_core.c``.

A node is created with every missing ancestor (each charged to the domain's
node quota, all undone on failure); removal walks the subtree depth first,
firing watches on each node while its permissions can still be seen.
"""

from __future__ import annotations

import errno as E
from collections.abc import Callable
from typing import TYPE_CHECKING

from agent.xenstore import watches
from agent.xenstore.cstring import cstr
from agent.xenstore.store import DELETE, Node, get_parent, is_unprivileged

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection
    from agent.xenstore.daemon import XenstoreDaemon

# walk() results
SUCCESS_STOP = -100
ERROR_STOP = -1
OK = 0
SKIP_CHILDREN = 1
RM_CHILDENTRY = 2

WalkFunc = Callable[["Connection | None", Node], int]


def _construct_node(xsd: XenstoreDaemon, conn: Connection, name: bytes) -> Node | None:
    st = xsd.store
    names: list[bytes] = []
    parentname = name
    parent: Node | None = None
    while parent is None:
        names.append(parentname)
        parentname = get_parent(parentname)
        parent = st.read_node(conn, parentname)
        if parent is None and (st.errno != E.ENOENT or parentname == b"/"):
            return None
    node = parent
    for new_name in reversed(names):
        parent.children += new_name[new_name.rfind(b"/") + 1 :] + b"\0"
        perms = list(parent.perms)
        if is_unprivileged(conn):  # guests own what they create
            perms[0] = (perms[0][0], conn.id)
        node = Node(new_name, 0, perms, parent=parent)
        parent = node
    return node


def create_node(xsd: XenstoreDaemon, conn: Connection, name: bytes, data: bytes) -> Node | None:
    st = xsd.store
    node = _construct_node(xsd, conn, name)
    if node is None:
        return None
    if conn.transaction is not None:
        conn.transaction.node_created = True
    node.data = data
    i: Node | None = node
    ret = 0
    while i is not None:
        if i.parent is not None and st.entry_count(conn) >= xsd.quotas.nodes:
            ret = E.ENOSPC
            break
        ret = st.write_node(conn, i, False)
        if ret:
            break
        if i.parent is not None and st.entry_inc(conn, i):
            st.tdb_delete(i.key)
            return None
        i = i.parent
    else:
        return node
    j: Node | None = node
    while j is not None and j is not i:
        st.tdb_delete(j.key)
        st.entry_dec(conn, j)
        if conn.transaction is not None:
            conn.transaction.fail = True
        j = j.parent
    st.errno = ret
    return None


def _remove_child_entry(
    xsd: XenstoreDaemon, conn: Connection | None, node: Node, offset: int
) -> int:
    name_len = len(cstr(node.children, offset))
    node.children = node.children[:offset] + node.children[offset + name_len + 1 :]
    return xsd.store.write_node(conn, node, True)


def _delete_child(
    xsd: XenstoreDaemon, conn: Connection | None, node: Node, childname: bytes
) -> int:
    st = xsd.store
    i = 0
    while i < len(node.children):
        child = cstr(node.children, i)
        if child == childname:
            st.errno = E.EIO if _remove_child_entry(xsd, conn, node, i) else 0
            return st.errno
        i += len(child) + 1
    st.errno = E.EIO
    return E.EIO


def walk(
    xsd: XenstoreDaemon,
    conn: Connection | None,
    root: bytes,
    enter: WalkFunc | None = None,
    leave: WalkFunc | None = None,
) -> int:
    """``walk_node_tree``: depth first from ``root``, calling ``enter``
    before and ``leave`` after a node's children."""
    st = xsd.store
    ret = OK
    node: Node | None = None
    parent: Node | None = None
    name = root
    while ret >= 0:
        if node is not None:
            if ret or node.childoff >= len(node.children):
                parent = node.parent
                ret = _walk_call(xsd, conn, node, parent, leave)
                if parent is None:
                    break
                node = parent
                continue
            child = cstr(node.children, node.childoff)
            name = (node.name + b"/" if node.name != b"/" else b"/") + child
            node.childoff += len(child) + 1
            parent = node
        node = st.read_node(conn, name)
        if node is None:  # a child listed but missing: C stops the walk
            ret = ERROR_STOP
            break
        node.parent = parent
        node.childoff = 0
        ret = _walk_call(xsd, conn, node, parent, enter)
    return ret if ret < 0 else OK


def _walk_call(
    xsd: XenstoreDaemon,
    conn: Connection | None,
    node: Node,
    parent: Node | None,
    func: WalkFunc | None,
) -> int:
    if func is None:
        return OK
    ret = func(conn, node)
    if ret == RM_CHILDENTRY and parent is not None:
        off = parent.childoff - 1
        while off and parent.children[off - 1] != 0:
            off -= 1
        if _remove_child_entry(xsd, conn, parent, off):
            return ERROR_STOP
        parent.childoff = off
        return OK
    return ret


def rm_node(xsd: XenstoreDaemon, conn: Connection | None, name: bytes) -> int:
    st = xsd.store
    parent = st.read_node(conn, get_parent(name))
    if parent is None:
        return st.errno if st.can_propagate_errno() else E.EINVAL

    def delnode(c: Connection | None, node: Node) -> int:
        err, key = st.access_node(c, node, DELETE, want_key=True)
        if err > 0:
            return SUCCESS_STOP
        if not err and st.tdb_delete(key):
            return SUCCESS_STOP
        # Fire now, while the node's permissions can still be seen.
        watches.fire_watches(xsd, c, node.name, node, node.name != name, None)
        st.entry_dec(c, node)
        return RM_CHILDENTRY

    ret = walk(xsd, conn, name, leave=delnode)
    if ret < 0:
        if ret == ERROR_STOP:
            st.errno = E.EIO
        return st.errno
    if _delete_child(xsd, conn, parent, name[name.rfind(b"/") + 1 :]):
        return st.errno
    return 0
