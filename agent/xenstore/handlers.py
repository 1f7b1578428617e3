"""The request handlers of the embedded xenstored, one per message type.

Each ``do_*`` follows the function of the same name in the C xenstored 4.17
(``xenstored_core.c``, ``xenstored_watch.c``, ``xenstored_domain.c``,
``xenstored_transaction.c``): it answers through ``output.send_reply`` and
returns 0, or returns the errno to answer with. Some return ``errno`` as the
C code does even where nothing set it (``xsd.store.errno``).
"""

from __future__ import annotations

import errno as E
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from agent.xenstore import (
    connections,
    control,
    domain_lifecycle,
    lookup,
    output,
    tree,
    watches,
)
from agent.xenstore.cstring import (
    PERM_IGNORE,
    PERM_OWNER,
    PERM_READ,
    PERM_WRITE,
    U32,
    count_strings,
    cstr,
    get_strings,
    onearg,
    perm_to_string,
    strings_to_perms,
)
from agent.xenstore.domains import DOMID_SELF
from agent.xenstore.store import AccessedNode, get_parent, is_unprivileged, perm_for_conn
from agent.xenstore.watches import Watch, watch_path
from agent.xenstore.wire import PAYLOAD_MAX, REL_PATH_MAX, Op

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection
    from agent.xenstore.daemon import XenstoreDaemon

Handler = Callable[["XenstoreDaemon", "Connection", bytes], int]


def do_directory(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    node, _ = lookup.get_node_canonical(xsd, conn, onearg(payload), PERM_READ)
    if node is None:
        return xsd.store.errno
    output.send_reply(xsd, conn, Op.DIRECTORY, node.children)
    return 0

def do_directory_part(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    if count_strings(payload) != 2:
        return E.EINVAL
    first = cstr(payload)
    node, _ = lookup.get_node_canonical(xsd, conn, first, PERM_READ)
    if node is None:
        return xsd.store.errno
    off = lookup.c_atoi(xsd, cstr(payload, len(first) + 1)) & U32
    gen = b"%d\0" % node.generation
    children = node.children
    if off >= len(children):
        output.send_reply(xsd, conn, Op.DIRECTORY_PART, gen + b"\0")
        return 0
    size, maxlen = 0, PAYLOAD_MAX - len(gen) - 1
    while size + len(cstr(children, off + size)) < maxlen:
        size += len(cstr(children, off + size)) + 1
        if off + size == len(children):
            break
    data = gen + children[off : off + size]
    if off + size == len(children):
        data += b"\0"
    output.send_reply(xsd, conn, Op.DIRECTORY_PART, data)
    return 0

def do_read(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    node, _ = lookup.get_node_canonical(xsd, conn, onearg(payload), PERM_READ)
    if node is None:
        return xsd.store.errno
    output.send_reply(xsd, conn, Op.READ, node.data)
    return 0

def do_get_perms(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    node, _ = lookup.get_node_canonical(xsd, conn, onearg(payload), PERM_READ)
    if node is None:
        return xsd.store.errno
    strings = b""
    for bits, domid in node.perms:
        text = perm_to_string(bits, domid)
        if text is None:
            xsd.store.errno = E.EINVAL
            return E.EINVAL
        strings += text + b"\0"
    output.send_reply(xsd, conn, Op.GET_PERMS, strings)
    return 0

def do_write(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    st = xsd.store
    count, vec = get_strings(payload, 1)
    if count < 1:
        return E.EINVAL
    value = payload[len(vec[0]) + 1 :]
    node, name = lookup.get_node_canonical(xsd, conn, vec[0], PERM_WRITE)
    assert name is not None
    if node is None:
        if st.errno != E.ENOENT:
            return st.errno
        node = tree.create_node(xsd, conn, name, value)
        if node is None:
            return st.errno
    else:
        node.data = value
        if st.write_node(conn, node, False):
            return st.errno
    watches.fire_watches(xsd, conn, name, node, False, None)
    output.send_ack(xsd, conn, Op.WRITE)
    return 0

def do_mkdir(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    st = xsd.store
    node, name = lookup.get_node_canonical(xsd, conn, onearg(payload), PERM_WRITE)
    if node is None:
        if st.errno != E.ENOENT:
            return st.errno
        if name is None:
            return E.ENOMEM
        node = tree.create_node(xsd, conn, name, b"")
        if node is None:
            return st.errno
        watches.fire_watches(xsd, conn, name, node, False, None)
    output.send_ack(xsd, conn, Op.MKDIR)
    return 0

def do_rm(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    st = xsd.store
    node, name = lookup.get_node_canonical(xsd, conn, onearg(payload), PERM_WRITE)
    if node is None:
        if st.errno == E.ENOENT:
            if name is None:
                return E.ENOMEM
            if st.read_node(conn, get_parent(name)) is not None:
                output.send_ack(xsd, conn, Op.RM)  # already gone: fine if the parent exists
                return 0
            if not st.can_propagate_errno():
                st.errno = E.ENOENT
        return st.errno
    if name == b"/":
        return E.EINVAL
    assert name is not None
    ret = tree.rm_node(xsd, conn, name)
    if ret:
        return ret
    output.send_ack(xsd, conn, Op.RM)
    return 0

def do_set_perms(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    st = xsd.store
    num = count_strings(payload) - 1
    if num < 1:
        return E.EINVAL
    if is_unprivileged(conn) and num > xsd.quotas.permissions:
        return E.ENOSPC
    first = cstr(payload)
    parsed = strings_to_perms(payload.split(b"\0")[1 : 1 + num])
    if parsed.overflow:
        st.errno = E.ERANGE
    if parsed.perms is None:
        st.errno = E.EINVAL
        return E.EINVAL
    perms = parsed.perms
    for i, (bits, domid) in enumerate(perms):  # domain_alloc_permrefs
        if st.domains.find(domid) is None:
            if not st.domains.domain_exists(domid):
                perms[i] = (bits | PERM_IGNORE, domid)
            else:
                st.domains.alloc(domid)
    if perms[0][0] & PERM_IGNORE:
        return E.ENOENT
    if first.startswith(b"@"):
        special = xsd.special_perms.get(first)
        want = PERM_WRITE | PERM_OWNER
        if special is None or (perm_for_conn(conn, special) & want) != want:
            return st.errno  # C returns errno here, not the error it computed
        xsd.special_perms[first] = perms
        output.send_ack(xsd, conn, Op.SET_PERMS)
        return 0
    node, name = lookup.get_node_canonical(xsd, conn, first, PERM_WRITE | PERM_OWNER)
    if node is None:
        return st.errno
    assert name is not None
    if is_unprivileged(conn) and perms[0][1] != node.perms[0][1]:
        return E.EPERM
    old_perms = node.perms
    st.entry_dec(conn, node)
    node.perms = perms
    if st.entry_inc(conn, node):
        node.perms = old_perms
        st.entry_inc(conn, node)
        return E.ENOMEM
    if st.write_node(conn, node, False):
        saved = st.errno
        st.entry_dec(conn, node)
        node.perms = old_perms
        st.entry_inc(conn, node)
        st.errno = saved
        return saved
    watches.fire_watches(xsd, conn, name, node, False, old_perms)
    output.send_ack(xsd, conn, Op.SET_PERMS)
    return 0

def do_watch(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    st = xsd.store
    count, vec = get_strings(payload, 2)
    if count != 2:
        return E.EINVAL
    path, token = vec
    relative = False
    if path.startswith(b"@"):
        valid = len(path) <= REL_PATH_MAX
    else:
        relative = not path.startswith(b"/")
        path = lookup.canonicalize(conn, path) or b""
        valid = lookup.valid_name(xsd, path)
    st.errno = 0 if valid else E.EINVAL
    if not valid:
        return E.EINVAL
    if any(w.node == path and w.token == token for w in conn.watches):
        return E.EEXIST
    if is_unprivileged(conn) and conn.domain and conn.domain.nbwatch > xsd.quotas.watches:
        return E.E2BIG
    if st.domains.memory_add(conn.id, len(path) + len(token), False):
        st.errno = E.ENOMEM
        return E.ENOMEM
    watch = Watch(path, token, lookup.implicit_path(conn) if relative else None)
    if conn.domain is not None:
        conn.domain.nbwatch += 1
    conn.watches.append(watch)
    output.send_ack(xsd, conn, Op.WATCH)
    # Fire once up front, even for a missing node.
    output.send_event(xsd, None, conn, watch_path(watch, path), token)
    return 0

def do_unwatch(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    count, vec = get_strings(payload, 2)
    if count != 2:
        return E.EINVAL
    node = lookup.canonicalize(conn, vec[0])
    for w in conn.watches:
        if w.node == node and w.token == vec[1]:
            conn.watches.remove(w)
            xsd.store.domains.memory_add(conn.id, -(len(w.node) + len(w.token)), True)
            if conn.domain is not None and conn.domain.nbwatch:
                conn.domain.nbwatch -= 1
            output.send_ack(xsd, conn, Op.UNWATCH)
            return 0
    return E.ENOENT

def do_reset_watches(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    connections.delete_all_watches(xsd, conn)
    connections.delete_all_transactions(xsd, conn)
    output.send_ack(xsd, conn, Op.RESET_WATCHES)
    return 0

def do_transaction_start(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    if conn.transaction is not None:
        return E.EBUSY  # no nesting
    if is_unprivileged(conn) and len(conn.transactions) > xsd.quotas.transactions:
        return E.ENOSPC
    trans = xsd.store.start_transaction(conn, 0)
    while True:  # the next unused non-zero id of this connection
        trans.id = conn.next_transaction_id
        conn.next_transaction_id = (conn.next_transaction_id + 1) & U32
        if trans.id and trans.id not in conn.transactions:
            break
    conn.transactions[trans.id] = trans
    output.send_reply(xsd, conn, Op.TRANSACTION_START, b"%d\0" % trans.id)
    return 0

def do_transaction_end(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    st = xsd.store
    arg = onearg(payload)
    if arg not in (b"T", b"F"):
        return E.EINVAL
    trans = conn.transaction
    if trans is None:
        return E.ENOENT
    conn.transaction = None
    del conn.transactions[trans.id]
    try:
        if arg == b"T":
            if trans.fail:
                return E.ENOMEM
            chk_quota = trans.node_created and is_unprivileged(conn)
            ret = st.fix_domains(trans, chk_quota, False)
            if ret:
                return ret
            ret = st.finalize_transaction(conn, trans, lambda acc: _fire_commit(xsd, conn, acc))
            if ret:
                return ret
            st.fix_domains(trans, False, True)
        output.send_ack(xsd, conn, Op.TRANSACTION_END)
        return 0
    finally:
        st.discard_transaction(trans)

def _fire_commit(xsd: XenstoreDaemon, conn: Connection, acc: AccessedNode) -> None:
    watches.fire_watches(xsd, conn, acc.node, None, acc.watch_exact, acc.perms)

def do_get_domain_path(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    arg = onearg(payload)
    if arg is None:
        return E.EINVAL
    domid = lookup.c_atoi(xsd, arg) & U32
    output.send_reply(xsd, conn, Op.GET_DOMAIN_PATH, b"/local/domain/%d\0" % domid)
    return 0

def do_is_domain_introduced(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    arg = onearg(payload)
    if arg is None:
        return E.EINVAL
    domid = lookup.c_atoi(xsd, arg) & U32
    known = domid == DOMID_SELF or xsd.store.domains.find_introduced(domid) is not None
    output.send_reply(xsd, conn, Op.IS_DOMAIN_INTRODUCED, b"T\0" if known else b"F\0")
    return 0

def do_introduce(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    count, vec = get_strings(payload, 3)
    if count < 3:
        return E.EINVAL
    domid = lookup.c_atoi(xsd, vec[0]) & U32
    port = lookup.c_atoi(xsd, vec[2]) & U32  # vec[1], the ring's gfn, is not needed
    if not port:
        return E.EINVAL
    d = domain_lifecycle.introduce_domain(xsd, domid)
    if d.conn is not None:  # domain_conn_reset: a re-introduced ring starts afresh
        connections.delete_all_watches(xsd, d.conn)
        connections.delete_all_transactions(xsd, d.conn)
        output.free_buffered(xsd, d.conn)
    output.send_ack(xsd, conn, Op.INTRODUCE)
    return 0

def do_release(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    d = domain_lifecycle.onearg_domain(xsd, payload)
    if isinstance(d, int):
        return d
    assert d.conn is not None
    connections.talloc_free(xsd, d.conn)
    output.send_ack(xsd, conn, Op.RELEASE)
    return 0

def do_resume(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    d = domain_lifecycle.onearg_domain(xsd, payload)
    if isinstance(d, int):
        return d
    d.shutdown = False
    output.send_ack(xsd, conn, Op.RESUME)
    return 0

def do_set_target(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    count, vec = get_strings(payload, 2)
    if count < 2:
        return E.EINVAL
    domid = lookup.c_atoi(xsd, vec[0]) & U32
    tdomid = lookup.c_atoi(xsd, vec[1]) & U32
    d = domain_lifecycle.connected_domain(xsd, domid)
    if isinstance(d, int):
        return d
    target = domain_lifecycle.connected_domain(xsd, tdomid)
    if isinstance(target, int):
        return target
    assert d.conn is not None and target.conn is not None
    target.conn.refs.insert(0, d.conn)
    d.conn.target = target.conn
    output.send_ack(xsd, conn, Op.SET_TARGET)
    return 0

def do_control(xsd: XenstoreDaemon, conn: Connection, payload: bytes) -> int:
    if not conn.privileged:
        return E.EACCES
    result = control.run(xsd, payload)
    if isinstance(result, int):
        return result
    output.send_reply(xsd, conn, Op.CONTROL, result)
    return 0



# type -> (handler, ignores tx_id, privileged only); types not listed: ENOSYS
WIRE_FUNCS: Final[dict[int, tuple[Handler, bool, bool]]] = {
    Op.CONTROL: (do_control, False, True),
    Op.DIRECTORY: (do_directory, False, False),
    Op.READ: (do_read, False, False),
    Op.GET_PERMS: (do_get_perms, False, False),
    Op.WATCH: (do_watch, True, False),
    Op.UNWATCH: (do_unwatch, True, False),
    Op.TRANSACTION_START: (do_transaction_start, False, False),
    Op.TRANSACTION_END: (do_transaction_end, False, False),
    Op.INTRODUCE: (do_introduce, False, True),
    Op.RELEASE: (do_release, False, True),
    Op.GET_DOMAIN_PATH: (do_get_domain_path, False, False),
    Op.WRITE: (do_write, False, False),
    Op.MKDIR: (do_mkdir, False, False),
    Op.RM: (do_rm, False, False),
    Op.SET_PERMS: (do_set_perms, False, False),
    Op.IS_DOMAIN_INTRODUCED: (do_is_domain_introduced, False, True),
    Op.RESUME: (do_resume, False, True),
    Op.SET_TARGET: (do_set_target, False, True),
    Op.RESET_WATCHES: (do_reset_watches, False, False),
    Op.DIRECTORY_PART: (do_directory_part, False, False),
}
