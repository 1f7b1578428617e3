"""The embedded xenstored: a sans-IO port of the C xenstored 4.17.

``XenstoreDaemon`` knows connections, packets and the tree, never sockets.
A transport calls ``connect()`` for each client, feeds it ``receive()`` (raw
bytes) or ``handle()`` (one packet), and sends the ``(connection, packet)``
pairs it gets back, in order: replies and watch events exactly as the C
daemon queues them (an event caused by a request is queued before that
request's reply). See ``server.py`` for the trio transport and ``hub.py`` for
the in-process dom0 API.

Request handling follows ``xenstored_core.c``, ``xenstored_watch.c``,
``xenstored_domain.c`` and ``xenstored_transaction.c`` closely, including the
odd corners a differential test against the real daemon exposes (replies that
carry a stale ``errno``, permission-dependent error names, generation counts
in DIRECTORY_PART). Deliberate differences are listed in ``DIFFERENCES``.
"""

from __future__ import annotations

import errno as E
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from agent.xenstore import control
from agent.xenstore.cstring import (
    PERM_IGNORE,
    PERM_OWNER,
    PERM_READ,
    PERM_WRITE,
    U32,
    atoi,
    count_strings,
    cstr,
    get_strings,
    is_valid_nodename,
    onearg,
    perm_to_string,
    strings_to_perms,
)
from agent.xenstore.domains import (
    DOM0,
    DOMID_SELF,
    PRIV_DOMID,
    Domain,
    Quotas,
    default_domain_exists,
    default_special_perms,
)
from agent.xenstore.store import (
    DELETE,
    AccessedNode,
    Node,
    Perms,
    Store,
    Transaction,
    get_parent,
    is_unprivileged,
    perm_for_conn,
)
from agent.xenstore.watches import Watch, event_payload, is_child, watch_path
from agent.xenstore.wire import (
    HEADER_SIZE,
    INTRODUCE_DOMAIN,
    PAYLOAD_MAX,
    REL_PATH_MAX,
    RELEASE_DOMAIN,
    Decoder,
    Op,
    Packet,
    ProtocolError,
)

log = logging.getLogger(__name__)

Outgoing = tuple["Connection", Packet]

DIFFERENCES: Final = """\
Where the embedded xenstored deliberately differs from C xenstored 4.17:
- Two requests crash the C daemon; we answer them (``c_daemon_crashes``
  counts them). A request answered with a stale errno of 0 (e.g. READ with a
  malformed payload right after a successful WATCH or RM) is left unanswered
  and C aborts on an assertion: we reply EINVAL. Releasing a domain whose
  SET_TARGET target was released before makes C unlink freed memory (SIGSEGV):
  we release it.
- CONTROL logfile/memreport/live-update -f never touch files: logfile and
  print are acknowledged, memreport <file> and live-update -f fail.
- No write rate limiting and no 20 s expiry of undelivered watch events for
  guest connections (both are wall-clock policies of the C daemon).
- A client closing its socket never sets the emulated errno to EBADF (the C
  daemon does so when it reads EOF on a half-closed socket).
"""

_ERRNO_NAMES: Final = {
    E.EINVAL: b"EINVAL",
    E.EACCES: b"EACCES",
    E.EEXIST: b"EEXIST",
    E.EISDIR: b"EISDIR",
    E.ENOENT: b"ENOENT",
    E.ENOMEM: b"ENOMEM",
    E.ENOSPC: b"ENOSPC",
    E.EIO: b"EIO",
    E.ENOTEMPTY: b"ENOTEMPTY",
    E.ENOSYS: b"ENOSYS",
    E.EROFS: b"EROFS",
    E.EBUSY: b"EBUSY",
    E.EAGAIN: b"EAGAIN",
    E.EISCONN: b"EISCONN",
    E.E2BIG: b"E2BIG",
    E.EPERM: b"EPERM",
}

_DEFAULT_BUFFER_SIZE = 16

# walk_node_tree() results
_SUCCESS_STOP = -100
_ERROR_STOP = -1
_OK = 0
_SKIP_CHILDREN = 1
_RM_CHILDENTRY = 2

_ENTER = Callable[["Connection | None", Node], int]


@dataclass(eq=False, slots=True)
class _Request:
    """A request whose reply, or whose watch events, are not yet delivered
    (``struct buffered_data`` reused for the reply in the C daemon)."""

    conn: Connection
    event_cnt: int = 0
    on_out_list: bool = False
    on_ref_list: bool = False


@dataclass(eq=False, slots=True)
class _Out:
    packet: Packet
    is_event: bool
    req: _Request | None


class Connection:
    """A client: a unix-socket tool (privileged, id 0, no domain) or the ring
    of an introduced domain (privileged only for dom0)."""

    def __init__(self, serial: int, domid: int, domain: Domain | None) -> None:
        self.serial = serial
        self.id = domid
        self.domain = domain
        self.is_ignored = False
        self.closed = False
        self.target: Connection | None = None
        # Connections holding a talloc reference to this one (SET_TARGET),
        # most recent first: freeing a referenced connection only drops one.
        self.refs: list[Connection] = []
        self.transactions: dict[int, Transaction] = {}
        self.next_transaction_id = 0
        self.transaction: Transaction | None = None  # of the request in progress
        self.watches: list[Watch] = []
        self.decoder = Decoder()
        # With track_delivery the transport calls delivered() per packet sent;
        # else everything handed out counts as delivered when the call returns.
        self.track_delivery = False
        self.out: deque[_Out] = deque()
        self.ref_list: list[_Request] = []
        self.current: _Request | None = None
        self.current_packet: Packet | None = None

    @property
    def privileged(self) -> bool:
        return not is_unprivileged(self)

    def __repr__(self) -> str:
        kind = "socket" if self.domain is None else f"domain {self.id}"
        return f"<xenstored connection #{self.serial} ({kind})>"


_Handler = Callable[["XenstoreDaemon", Connection, bytes], int]


class XenstoreDaemon:
    """The daemon state: tree, domains, connections."""

    def __init__(
        self,
        *,
        quotas: Quotas | None = None,
        domain_exists: Callable[[int], bool] = default_domain_exists,
    ) -> None:
        self.quotas = quotas or Quotas()
        self.store = Store(self.quotas, domain_exists)
        self.connections: list[Connection] = []
        self.special_perms: dict[bytes, Perms] = {
            RELEASE_DOMAIN: default_special_perms(),
            INTRODUCE_DOMAIN: default_special_perms(),
        }
        self._serial = 0
        self._pending: list[Outgoing] = []
        self._loop_next: Connection | None = None
        self._deferred_free: list[Connection] = []
        # Requests that would crash the C daemon (see DIFFERENCES).
        self.c_daemon_crashes = 0
        # dom0_init(): dom0 is introduced through its ring, which builds the tree.
        self._introduce_domain(DOM0)

    # -- transport API ------------------------------------------------------------

    def connect(self, domid: int = 0) -> Connection:
        """A new unix-socket style connection (``domid`` 0, privileged), or
        the ring connection of an introduced domain ``domid``."""
        if domid == 0:
            return self._new_connection(0, None)
        d = self.store.domains.find_introduced(domid)
        if d is None or d.conn is None:
            raise ValueError(f"domain {domid} is not introduced: INTRODUCE it first")
        return d.conn

    def domain_connection(self, domid: int) -> Connection | None:
        d = self.store.domains.find_introduced(domid)
        return None if d is None else d.conn

    def disconnect(self, conn: Connection) -> list[Outgoing]:
        """The client went away. A domain's ring cannot go away: it is
        ignored from now on (as after a protocol error) until released."""
        if conn.closed:
            return []
        self._begin()
        if conn.domain is None:
            self._destroy_connection(conn)
        else:
            self._ignore_connection(conn)
        return self._finish()

    def receive(self, conn: Connection, data: bytes) -> list[Outgoing]:
        """Raw bytes from a client, in chunks of any size. A header announcing
        more than 4096 bytes gets what the C daemon does: the connection is
        dropped without a reply (``conn.closed`` is then set)."""
        out: list[Outgoing] = []
        if conn.closed or conn.is_ignored:
            return out
        conn.decoder.feed(data)
        while True:
            try:
                packet = conn.decoder.next_packet()
            except ProtocolError as exc:
                log.info("%r: %s; dropping it like xenstored does", conn, exc)
                # C frees the replies still queued for it, unsent.
                out = [(c, p) for c, p in out if c is not conn]
                self._begin()
                self._ignore_connection(conn)
                out += self._finish()
                return out
            if packet is None:
                return out
            out += self.handle(conn, packet)

    def handle(self, conn: Connection, packet: Packet) -> list[Outgoing]:
        """Process one request; the replies and watch events it causes."""
        if conn.closed or conn.is_ignored:
            return []
        if len(packet.payload) > PAYLOAD_MAX:
            raise ValueError(f"payload of {len(packet.payload)} bytes exceeds {PAYLOAD_MAX}")
        self._begin()
        conn.current = _Request(conn)
        conn.current_packet = packet
        # The C main loop holds a reference on the connection after this one
        # while it processes a request: freeing that one is put off until the
        # loop reaches it, after this request's reply.
        i = self.connections.index(conn) + 1
        self._loop_next = self.connections[i] if i < len(self.connections) else None
        self._deferred_free = []
        self._process_message(conn, packet)
        self._loop_next = None
        for deferred in self._deferred_free:
            self._talloc_free(deferred)
        if conn.current is not None:
            # C replies with errno 0 here, i.e. not at all, and then aborts on
            # an assertion (see DIFFERENCES). Answer instead.
            self.c_daemon_crashes += 1
            self._send_error(conn, E.EINVAL)
        conn.current_packet = None
        return self._finish()

    def delivered(self, conn: Connection, count: int = 1) -> None:
        """A transport with ``conn.track_delivery`` reports packets written."""
        for _ in range(min(count, len(conn.out))):
            self._free_out(conn, conn.out.popleft())

    def can_read(self, conn: Connection) -> bool:
        """Would the C daemon read the next request of this connection now?
        Guests stall while 20 requests are outstanding or over memory quota."""
        if conn.closed or conn.is_ignored:
            return False
        if conn.domain is None or conn.privileged:
            return True
        return (
            conn.domain.nboutstanding < self.quotas.outstanding
            and not self.store.domains.over_memory_quota(conn.id)
        )

    @property
    def errno(self) -> int:
        """The emulated C errno (what a malformed request is answered with)."""
        return self.store.errno

    # -- output ---------------------------------------------------------------------

    def _begin(self) -> None:
        self._pending = []

    def _finish(self) -> list[Outgoing]:
        out, self._pending = self._pending, []
        for conn in dict.fromkeys(c for c, _ in out):
            if not conn.track_delivery:
                self.delivered(conn, len(conn.out))
        return out

    def _send_reply(self, conn: Connection, op: int, data: bytes) -> None:
        if len(data) > PAYLOAD_MAX:
            self._send_error(conn, E.E2BIG)
            return
        req, packet = conn.current, conn.current_packet
        if req is None or packet is None:
            return
        # Short replies fit the request's buffer; longer ones need memory.
        big = len(data) > _DEFAULT_BUFFER_SIZE
        if self.store.domains.memory_add(conn.id, len(data) + HEADER_SIZE, not big) and big:
            self._send_error(conn, E.ENOMEM)
            return
        conn.current = None
        req.on_out_list = True
        reply = Packet(op, packet.req_id, packet.tx_id, data)
        conn.out.append(_Out(reply, False, req))
        if conn.domain is not None:
            conn.domain.nboutstanding += 1
        self._pending.append((conn, reply))

    def _send_ack(self, conn: Connection, op: int) -> None:
        self._send_reply(conn, op, b"OK\0")

    def _send_error(self, conn: Connection, err: int) -> None:
        self._send_reply(conn, Op.ERROR, _ERRNO_NAMES.get(err, b"EINVAL") + b"\0")

    def _send_event(
        self, req: _Request | None, conn: Connection, path: bytes, token: bytes
    ) -> None:
        payload = event_payload(path, token)
        if len(payload) > PAYLOAD_MAX or conn.closed or conn.is_ignored:
            return
        if not path.startswith(b"@") and any(
            o.is_event and o.packet.payload == payload for o in conn.out
        ):
            return  # an identical event is still queued: C drops the duplicate
        if self.store.domains.memory_add(conn.id, len(payload) + HEADER_SIZE, False):
            return
        event = Packet(Op.WATCH_EVENT, 0, 0, payload)
        conn.out.append(_Out(event, True, req))
        if req is not None:
            req.event_cnt += 1
        self._pending.append((conn, event))

    def _free_out(self, conn: Connection, out: _Out) -> None:
        """``free_buffered_data``: a request stays outstanding for its domain
        until its reply and every watch event it caused are delivered."""
        self.store.domains.memory_add(conn.id, -(len(out.packet.payload) + HEADER_SIZE), True)
        req = out.req
        if out.is_event:
            if req is not None:
                req.event_cnt -= 1
                if not req.event_cnt and not req.on_out_list and req.on_ref_list:
                    req.on_ref_list = False
                    req.conn.ref_list.remove(req)
                    d = self.store.domains.find_introduced(req.conn.id)
                    if d is not None:
                        d.nboutstanding -= 1
            return
        if req is None:
            return
        req.on_out_list = False
        if req.event_cnt:
            req.on_ref_list = True
            conn.ref_list.append(req)
        elif conn.domain is not None:
            conn.domain.nboutstanding -= 1

    # -- connections ------------------------------------------------------------------

    def _new_connection(self, domid: int, domain: Domain | None) -> Connection:
        self._serial += 1
        conn = Connection(self._serial, domid, domain)
        self.connections.append(conn)
        return conn

    def _free_buffered(self, conn: Connection) -> None:
        while conn.out:
            self._free_out(conn, conn.out.popleft())

    def _delete_all_watches(self, conn: Connection) -> None:
        for w in conn.watches:
            self.store.domains.memory_add(conn.id, -(len(w.node) + len(w.token)), True)
            if conn.domain is not None and conn.domain.nbwatch:
                conn.domain.nbwatch -= 1
        conn.watches.clear()

    def _delete_all_transactions(self, conn: Connection) -> None:
        for trans in conn.transactions.values():
            self.store.discard_transaction(trans)
        conn.transactions.clear()
        conn.transaction = None

    def _ignore_connection(self, conn: Connection) -> None:
        """``ignore_connection``: a socket is dropped, a ring is ignored."""
        conn.is_ignored = True
        self._delete_all_watches(conn)
        self._delete_all_transactions(conn)
        self._free_buffered(conn)
        if conn.domain is None:
            self._destroy_connection(conn)

    def _talloc_free(self, conn: Connection) -> None:
        """``talloc_free(conn)`` as the C daemon's memory allocator does it."""
        if conn.closed:
            return
        if conn is self._loop_next:
            self._loop_next = None
            self._deferred_free.append(conn)
        elif conn.refs:
            del conn.refs[0]
        else:
            self._destroy_connection(conn)

    def _destroy_connection(self, conn: Connection) -> None:
        """``destroy_conn`` and, for a ring, ``destroy_domain``."""
        if conn.target is not None and conn.target.closed:
            self.c_daemon_crashes += 1  # C unlinks its freed target: use after free
        for other in self.connections:  # the references this one held go
            other.refs = [r for r in other.refs if r is not conn]
        self._free_buffered(conn)
        self._delete_all_watches(conn)
        for req in conn.ref_list:
            req.on_ref_list = False
        conn.ref_list.clear()
        self._delete_all_transactions(conn)
        self.connections.remove(conn)
        conn.closed = True
        if conn.domain is not None:
            self._destroy_domain(conn.domain)

    # -- dispatch ------------------------------------------------------------------

    def _process_message(self, conn: Connection, packet: Packet) -> None:
        entry = _WIRE_FUNCS.get(packet.op)
        if entry is None:
            self._send_error(conn, E.ENOSYS)
            return
        handler, notid, priv = entry
        if priv and not conn.privileged:
            self._send_error(conn, E.EACCES)
            return
        trans = None
        if not notid and packet.tx_id:
            trans = conn.transactions.get(packet.tx_id)
            if trans is None:
                self._send_error(conn, E.ENOENT)
                return
        conn.transaction = trans
        try:
            ret = handler(self, conn, packet.payload)
        finally:
            conn.transaction = None
        if ret:
            self._send_error(conn, ret)

    # -- helpers shared by the requests ---------------------------------------------

    def c_atoi(self, text: bytes) -> int:
        result = atoi(text)
        if result.overflow:
            self.store.errno = E.ERANGE
        return result.value

    def _implicit_path(self, conn: Connection) -> bytes:
        return conn.domain.path if conn.domain is not None else b"/local/domain/0"

    def _canonicalize(self, conn: Connection, node: bytes | None) -> bytes | None:
        if node is None or node.startswith((b"/", b"@")):
            return node
        return self._implicit_path(conn) + b"/" + node

    def _valid_name(self, name: bytes) -> bool:
        return is_valid_nodename(name, self.quotas.path_max)

    def _get_node(self, conn: Connection, name: bytes | None, perm: int) -> Node | None:
        st = self.store
        if name is None or not self._valid_name(name):
            st.errno = E.EINVAL
            return None
        node = st.read_node(conn, name)
        if node is not None and (perm_for_conn(conn, node.perms) & perm) != perm:
            st.errno = E.EACCES
            node = None
        if node is None and not st.can_propagate_errno():
            st.errno = self._errno_from_parents(conn, name, st.errno, perm)
        return node

    def _get_node_canonical(
        self, conn: Connection, name: bytes | None, perm: int
    ) -> tuple[Node | None, bytes | None]:
        canonical = self._canonicalize(conn, name)
        if canonical is None:
            return None, None  # errno is left as it was: C replies with it
        return self._get_node(conn, canonical, perm), canonical

    def _errno_from_parents(self, conn: Connection, name: bytes, errnum: int, perm: int) -> int:
        """Do not tell a domain why it cannot see a node unless it may read the
        nearest existing ancestor."""
        st = self.store
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

    # -- node creation and removal ----------------------------------------------------

    def _construct_node(self, conn: Connection, name: bytes) -> Node | None:
        st = self.store
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

    def _create_node(self, conn: Connection, name: bytes, data: bytes) -> Node | None:
        st = self.store
        node = self._construct_node(conn, name)
        if node is None:
            return None
        if conn.transaction is not None:
            conn.transaction.node_created = True
        node.data = data
        i: Node | None = node
        ret = 0
        while i is not None:
            if i.parent is not None and st.entry_count(conn) >= self.quotas.nodes:
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

    def _remove_child_entry(self, conn: Connection | None, node: Node, offset: int) -> int:
        name_len = len(cstr(node.children, offset))
        node.children = node.children[:offset] + node.children[offset + name_len + 1 :]
        return self.store.write_node(conn, node, True)

    def _delete_child(self, conn: Connection | None, node: Node, childname: bytes) -> int:
        st = self.store
        i = 0
        while i < len(node.children):
            child = cstr(node.children, i)
            if child == childname:
                st.errno = E.EIO if self._remove_child_entry(conn, node, i) else 0
                return st.errno
            i += len(child) + 1
        st.errno = E.EIO
        return E.EIO

    def _walk(
        self,
        conn: Connection | None,
        root: bytes,
        enter: _ENTER | None = None,
        leave: _ENTER | None = None,
    ) -> int:
        """``walk_node_tree``: depth first from ``root``, calling ``enter``
        before and ``leave`` after a node's children."""
        st = self.store
        ret = _OK
        node: Node | None = None
        parent: Node | None = None
        name = root
        while ret >= 0:
            if node is not None:
                if ret or node.childoff >= len(node.children):
                    parent = node.parent
                    ret = self._walk_call(conn, node, parent, leave)
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
                ret = _ERROR_STOP
                break
            node.parent = parent
            node.childoff = 0
            ret = self._walk_call(conn, node, parent, enter)
        return ret if ret < 0 else _OK

    def _walk_call(
        self, conn: Connection | None, node: Node, parent: Node | None, func: _ENTER | None
    ) -> int:
        if func is None:
            return _OK
        ret = func(conn, node)
        if ret == _RM_CHILDENTRY and parent is not None:
            off = parent.childoff - 1
            while off and parent.children[off - 1] != 0:
                off -= 1
            if self._remove_child_entry(conn, parent, off):
                return _ERROR_STOP
            parent.childoff = off
            return _OK
        return ret

    def _rm_node(self, conn: Connection | None, name: bytes) -> int:
        st = self.store
        parent = st.read_node(conn, get_parent(name))
        if parent is None:
            return st.errno if st.can_propagate_errno() else E.EINVAL

        def delnode(c: Connection | None, node: Node) -> int:
            err, key = st.access_node(c, node, DELETE, want_key=True)
            if err > 0:
                return _SUCCESS_STOP
            if not err and st.tdb_delete(key):
                return _SUCCESS_STOP
            # Fire now, while the node's permissions can still be seen.
            self._fire_watches(c, node.name, node, node.name != name, None)
            st.entry_dec(c, node)
            return _RM_CHILDENTRY

        ret = self._walk(conn, name, leave=delnode)
        if ret < 0:
            if ret == _ERROR_STOP:
                st.errno = E.EIO
            return st.errno
        if self._delete_child(conn, parent, name[name.rfind(b"/") + 1 :]):
            return st.errno
        return 0

    # -- watches ------------------------------------------------------------------

    def _watch_permitted(
        self, conn: Connection, name: bytes, node: Node | None, perms: Perms | None
    ) -> bool:
        st = self.store
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

    def _fire_watches(
        self,
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
        for i in list(self.connections):
            if special:
                p = self.special_perms.get(name)
                if p is None or not perm_for_conn(i, p) & PERM_READ:
                    continue
            elif not self._watch_permitted(i, name, node, perms):
                continue
            for w in list(i.watches):
                if name == w.node if exact else is_child(name, w.node):
                    self._send_event(req, i, watch_path(w, name), w.token)

    # -- domains ------------------------------------------------------------------

    def _introduce_domain(self, domid: int) -> Domain:
        domains = self.store.domains
        d = domains.find_or_alloc(domid)
        if not d.introduced:
            d.path = b"/local/domain/%d" % domid
            d.introduced = True
            d.shutdown = False
            d.conn = self._new_connection(domid, d)
            if domid == DOM0:
                self._setup_structure()
            else:
                self._fire_watches(None, INTRODUCE_DOMAIN, None, True, None)
        return d

    def _setup_structure(self) -> None:
        """The initial tree: /, /tool, /tool/xenstored, all ``n0``."""
        st = self.store
        initial = ((b"/", b"tool\0"), (b"/tool", b"xenstored\0"), (b"/tool/xenstored", b""))
        for name, child in initial:
            node = Node(name, 0, [(0, DOM0)], b"", child)
            st.write_node(None, node, False)
        st.domains.entry_fix(DOM0, 3, True)

    def _destroy_domain(self, d: Domain) -> None:
        """Remove the nodes the domain owns, forget it, fire @releaseDomain."""
        st = self.store

        def remove_owned(conn: Connection | None, node: Node) -> int:
            if node.perms[0][1] != d.domid:
                return _OK
            self._rm_node(None, node.name)
            return _SKIP_CHILDREN if d.nbentry > 0 else _SUCCESS_STOP

        if d.nbentry > 0:
            self._walk(None, b"/", enter=remove_owned)
        for name, perms in self.special_perms.items():
            kept = [perms[0] if perms[0][1] != d.domid else (perms[0][0], PRIV_DOMID)]
            kept += [p for p in perms[1:] if p[1] != d.domid]
            self.special_perms[name] = kept
        st.domains.remove(d.domid)
        d.conn = None
        if d.introduced:
            self._fire_watches(None, RELEASE_DOMAIN, None, True, None)

    def _connected_domain(self, domid: int) -> Domain | int:
        d = self.store.domains.find_introduced(domid)
        if d is None:
            return E.ENOENT
        if d.conn is None:
            return E.EINVAL
        return d

    def _onearg_domain(self, payload: bytes) -> Domain | int:
        arg = onearg(payload)
        if arg is None:
            return E.EINVAL
        domid = self.c_atoi(arg) & U32
        if not domid:
            return E.EINVAL
        return self._connected_domain(domid)

    # -- requests -------------------------------------------------------------------

    def do_directory(self, conn: Connection, payload: bytes) -> int:
        node, _ = self._get_node_canonical(conn, onearg(payload), PERM_READ)
        if node is None:
            return self.store.errno
        self._send_reply(conn, Op.DIRECTORY, node.children)
        return 0

    def do_directory_part(self, conn: Connection, payload: bytes) -> int:
        if count_strings(payload) != 2:
            return E.EINVAL
        first = cstr(payload)
        node, _ = self._get_node_canonical(conn, first, PERM_READ)
        if node is None:
            return self.store.errno
        off = self.c_atoi(cstr(payload, len(first) + 1)) & U32
        gen = b"%d\0" % node.generation
        children = node.children
        if off >= len(children):
            self._send_reply(conn, Op.DIRECTORY_PART, gen + b"\0")
            return 0
        size, maxlen = 0, PAYLOAD_MAX - len(gen) - 1
        while size + len(cstr(children, off + size)) < maxlen:
            size += len(cstr(children, off + size)) + 1
            if off + size == len(children):
                break
        data = gen + children[off : off + size]
        if off + size == len(children):
            data += b"\0"
        self._send_reply(conn, Op.DIRECTORY_PART, data)
        return 0

    def do_read(self, conn: Connection, payload: bytes) -> int:
        node, _ = self._get_node_canonical(conn, onearg(payload), PERM_READ)
        if node is None:
            return self.store.errno
        self._send_reply(conn, Op.READ, node.data)
        return 0

    def do_get_perms(self, conn: Connection, payload: bytes) -> int:
        node, _ = self._get_node_canonical(conn, onearg(payload), PERM_READ)
        if node is None:
            return self.store.errno
        strings = b""
        for bits, domid in node.perms:
            text = perm_to_string(bits, domid)
            if text is None:
                self.store.errno = E.EINVAL
                return E.EINVAL
            strings += text + b"\0"
        self._send_reply(conn, Op.GET_PERMS, strings)
        return 0

    def do_write(self, conn: Connection, payload: bytes) -> int:
        st = self.store
        count, vec = get_strings(payload, 1)
        if count < 1:
            return E.EINVAL
        value = payload[len(vec[0]) + 1 :]
        node, name = self._get_node_canonical(conn, vec[0], PERM_WRITE)
        assert name is not None
        if node is None:
            if st.errno != E.ENOENT:
                return st.errno
            node = self._create_node(conn, name, value)
            if node is None:
                return st.errno
        else:
            node.data = value
            if st.write_node(conn, node, False):
                return st.errno
        self._fire_watches(conn, name, node, False, None)
        self._send_ack(conn, Op.WRITE)
        return 0

    def do_mkdir(self, conn: Connection, payload: bytes) -> int:
        st = self.store
        node, name = self._get_node_canonical(conn, onearg(payload), PERM_WRITE)
        if node is None:
            if st.errno != E.ENOENT:
                return st.errno
            if name is None:
                return E.ENOMEM
            node = self._create_node(conn, name, b"")
            if node is None:
                return st.errno
            self._fire_watches(conn, name, node, False, None)
        self._send_ack(conn, Op.MKDIR)
        return 0

    def do_rm(self, conn: Connection, payload: bytes) -> int:
        st = self.store
        node, name = self._get_node_canonical(conn, onearg(payload), PERM_WRITE)
        if node is None:
            if st.errno == E.ENOENT:
                if name is None:
                    return E.ENOMEM
                if st.read_node(conn, get_parent(name)) is not None:
                    self._send_ack(conn, Op.RM)  # already gone: fine if the parent exists
                    return 0
                if not st.can_propagate_errno():
                    st.errno = E.ENOENT
            return st.errno
        if name == b"/":
            return E.EINVAL
        assert name is not None
        ret = self._rm_node(conn, name)
        if ret:
            return ret
        self._send_ack(conn, Op.RM)
        return 0

    def do_set_perms(self, conn: Connection, payload: bytes) -> int:
        st = self.store
        num = count_strings(payload) - 1
        if num < 1:
            return E.EINVAL
        if is_unprivileged(conn) and num > self.quotas.permissions:
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
            special = self.special_perms.get(first)
            want = PERM_WRITE | PERM_OWNER
            if special is None or (perm_for_conn(conn, special) & want) != want:
                return st.errno  # C returns errno here, not the error it computed
            self.special_perms[first] = perms
            self._send_ack(conn, Op.SET_PERMS)
            return 0
        node, name = self._get_node_canonical(conn, first, PERM_WRITE | PERM_OWNER)
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
        self._fire_watches(conn, name, node, False, old_perms)
        self._send_ack(conn, Op.SET_PERMS)
        return 0

    def do_watch(self, conn: Connection, payload: bytes) -> int:
        st = self.store
        count, vec = get_strings(payload, 2)
        if count != 2:
            return E.EINVAL
        path, token = vec
        relative = False
        if path.startswith(b"@"):
            valid = len(path) <= REL_PATH_MAX
        else:
            relative = not path.startswith(b"/")
            path = self._canonicalize(conn, path) or b""
            valid = self._valid_name(path)
        st.errno = 0 if valid else E.EINVAL
        if not valid:
            return E.EINVAL
        if any(w.node == path and w.token == token for w in conn.watches):
            return E.EEXIST
        if is_unprivileged(conn) and conn.domain and conn.domain.nbwatch > self.quotas.watches:
            return E.E2BIG
        if st.domains.memory_add(conn.id, len(path) + len(token), False):
            st.errno = E.ENOMEM
            return E.ENOMEM
        watch = Watch(path, token, self._implicit_path(conn) if relative else None)
        if conn.domain is not None:
            conn.domain.nbwatch += 1
        conn.watches.append(watch)
        self._send_ack(conn, Op.WATCH)
        # Fire once up front, even for a missing node.
        self._send_event(None, conn, watch_path(watch, path), token)
        return 0

    def do_unwatch(self, conn: Connection, payload: bytes) -> int:
        count, vec = get_strings(payload, 2)
        if count != 2:
            return E.EINVAL
        node = self._canonicalize(conn, vec[0])
        for w in conn.watches:
            if w.node == node and w.token == vec[1]:
                conn.watches.remove(w)
                self.store.domains.memory_add(conn.id, -(len(w.node) + len(w.token)), True)
                if conn.domain is not None and conn.domain.nbwatch:
                    conn.domain.nbwatch -= 1
                self._send_ack(conn, Op.UNWATCH)
                return 0
        return E.ENOENT

    def do_reset_watches(self, conn: Connection, payload: bytes) -> int:
        self._delete_all_watches(conn)
        self._delete_all_transactions(conn)
        self._send_ack(conn, Op.RESET_WATCHES)
        return 0

    def do_transaction_start(self, conn: Connection, payload: bytes) -> int:
        if conn.transaction is not None:
            return E.EBUSY  # no nesting
        if is_unprivileged(conn) and len(conn.transactions) > self.quotas.transactions:
            return E.ENOSPC
        trans = self.store.start_transaction(conn, 0)
        while True:  # the next unused non-zero id of this connection
            trans.id = conn.next_transaction_id
            conn.next_transaction_id = (conn.next_transaction_id + 1) & U32
            if trans.id and trans.id not in conn.transactions:
                break
        conn.transactions[trans.id] = trans
        self._send_reply(conn, Op.TRANSACTION_START, b"%d\0" % trans.id)
        return 0

    def do_transaction_end(self, conn: Connection, payload: bytes) -> int:
        st = self.store
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
                ret = st.finalize_transaction(conn, trans, lambda acc: self._fire_commit(conn, acc))
                if ret:
                    return ret
                st.fix_domains(trans, False, True)
            self._send_ack(conn, Op.TRANSACTION_END)
            return 0
        finally:
            st.discard_transaction(trans)

    def _fire_commit(self, conn: Connection, acc: AccessedNode) -> None:
        self._fire_watches(conn, acc.node, None, acc.watch_exact, acc.perms)

    def do_get_domain_path(self, conn: Connection, payload: bytes) -> int:
        arg = onearg(payload)
        if arg is None:
            return E.EINVAL
        domid = self.c_atoi(arg) & U32
        self._send_reply(conn, Op.GET_DOMAIN_PATH, b"/local/domain/%d\0" % domid)
        return 0

    def do_is_domain_introduced(self, conn: Connection, payload: bytes) -> int:
        arg = onearg(payload)
        if arg is None:
            return E.EINVAL
        domid = self.c_atoi(arg) & U32
        known = domid == DOMID_SELF or self.store.domains.find_introduced(domid) is not None
        self._send_reply(conn, Op.IS_DOMAIN_INTRODUCED, b"T\0" if known else b"F\0")
        return 0

    def do_introduce(self, conn: Connection, payload: bytes) -> int:
        count, vec = get_strings(payload, 3)
        if count < 3:
            return E.EINVAL
        domid = self.c_atoi(vec[0]) & U32
        port = self.c_atoi(vec[2]) & U32  # vec[1], the ring's gfn, is not needed
        if not port:
            return E.EINVAL
        d = self._introduce_domain(domid)
        if d.conn is not None:  # domain_conn_reset: a re-introduced ring starts afresh
            self._delete_all_watches(d.conn)
            self._delete_all_transactions(d.conn)
            self._free_buffered(d.conn)
        self._send_ack(conn, Op.INTRODUCE)
        return 0

    def do_release(self, conn: Connection, payload: bytes) -> int:
        d = self._onearg_domain(payload)
        if isinstance(d, int):
            return d
        assert d.conn is not None
        self._talloc_free(d.conn)
        self._send_ack(conn, Op.RELEASE)
        return 0

    def do_resume(self, conn: Connection, payload: bytes) -> int:
        d = self._onearg_domain(payload)
        if isinstance(d, int):
            return d
        d.shutdown = False
        self._send_ack(conn, Op.RESUME)
        return 0

    def do_set_target(self, conn: Connection, payload: bytes) -> int:
        count, vec = get_strings(payload, 2)
        if count < 2:
            return E.EINVAL
        domid = self.c_atoi(vec[0]) & U32
        tdomid = self.c_atoi(vec[1]) & U32
        d = self._connected_domain(domid)
        if isinstance(d, int):
            return d
        target = self._connected_domain(tdomid)
        if isinstance(target, int):
            return target
        assert d.conn is not None and target.conn is not None
        target.conn.refs.insert(0, d.conn)
        d.conn.target = target.conn
        self._send_ack(conn, Op.SET_TARGET)
        return 0

    def do_control(self, conn: Connection, payload: bytes) -> int:
        if not conn.privileged:
            return E.EACCES
        result = control.run(self, payload)
        if isinstance(result, int):
            return result
        self._send_reply(conn, Op.CONTROL, result)
        return 0


# type -> (handler, ignores tx_id, privileged only); types not listed: ENOSYS
_WIRE_FUNCS: Final[dict[int, tuple[_Handler, bool, bool]]] = {
    Op.CONTROL: (XenstoreDaemon.do_control, False, True),
    Op.DIRECTORY: (XenstoreDaemon.do_directory, False, False),
    Op.READ: (XenstoreDaemon.do_read, False, False),
    Op.GET_PERMS: (XenstoreDaemon.do_get_perms, False, False),
    Op.WATCH: (XenstoreDaemon.do_watch, True, False),
    Op.UNWATCH: (XenstoreDaemon.do_unwatch, True, False),
    Op.TRANSACTION_START: (XenstoreDaemon.do_transaction_start, False, False),
    Op.TRANSACTION_END: (XenstoreDaemon.do_transaction_end, False, False),
    Op.INTRODUCE: (XenstoreDaemon.do_introduce, False, True),
    Op.RELEASE: (XenstoreDaemon.do_release, False, True),
    Op.GET_DOMAIN_PATH: (XenstoreDaemon.do_get_domain_path, False, False),
    Op.WRITE: (XenstoreDaemon.do_write, False, False),
    Op.MKDIR: (XenstoreDaemon.do_mkdir, False, False),
    Op.RM: (XenstoreDaemon.do_rm, False, False),
    Op.SET_PERMS: (XenstoreDaemon.do_set_perms, False, False),
    Op.IS_DOMAIN_INTRODUCED: (XenstoreDaemon.do_is_domain_introduced, False, True),
    Op.RESUME: (XenstoreDaemon.do_resume, False, True),
    Op.SET_TARGET: (XenstoreDaemon.do_set_target, False, True),
    Op.RESET_WATCHES: (XenstoreDaemon.do_reset_watches, False, False),
    Op.DIRECTORY_PART: (XenstoreDaemon.do_directory_part, False, False),
}
