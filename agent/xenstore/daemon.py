"""The embedded xenstored: a sans-IO port of the C xenstored 4.17.

``XenstoreDaemon`` knows connections, packets and the tree, never sockets.
A transport calls ``connect()`` for each client, feeds it ``receive()`` (raw
bytes) or ``handle()`` (one packet), and sends the ``(connection, packet)``
pairs it gets back, in order: replies and watch events exactly as the C
daemon queues them (an event caused by a request is queued before that
request's reply). See ``server.py`` for the trio transport and ``hub.py`` for
the in-process dom0 API.

The request handlers live in ``handlers.py``, the node database with its
transactions in ``store.py``. Everything follows ``xenstored_core.c``,
``xenstored_watch.c``, ``xenstored_domain.c`` and ``xenstored_transaction.c``
closely, including the
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

from agent.xenstore import handlers
from agent.xenstore.cstring import (
    PERM_READ,
    U32,
    atoi,
    cstr,
    is_valid_nodename,
    onearg,
)
from agent.xenstore.domains import (
    DOM0,
    PRIV_DOMID,
    Domain,
    Quotas,
    default_domain_exists,
    default_special_perms,
)
from agent.xenstore.store import (
    DELETE,
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
- Output counts as delivered when the transport takes it (C: when write()
  took it); this bounds the window in which an identical watch event is
  dropped as a duplicate, and the memory that ``CONTROL quota`` shows.
- Domains whose device model (SET_TARGET) holds a reference are adopted by
  it on death instead of being kept by talloc's reference chain; the visible
  effect (the domain lives on until its device model goes) is the same.
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

@dataclass(frozen=True, slots=True)
class DomainStatus:
    """The hypervisor's view of a domain (flags of ``xc_domain_getinfo``)."""

    shutdown: bool = False  # shut down or crashed
    dying: bool = False


# walk_node_tree() results
_SUCCESS_STOP = -100
_ERROR_STOP = -1
_OK = 0
_SKIP_CHILDREN = 1
_RM_CHILDENTRY = 2

_WalkFunc = Callable[["Connection | None", Node], int]


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
        self.owner: Connection | None = None  # freed with it (talloc parent)
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


class XenstoreDaemon:
    """The daemon state: tree, domains, connections.

    Public methods without a docstring section of their own (``send_reply``,
    ``get_node_canonical``, ``create_node``, ``fire_watches`` ...) are the
    engine the request handlers of ``handlers.py`` drive.
    """

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
        self.introduce_domain(DOM0)

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
            self.talloc_free(deferred)
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

    def send_reply(self, conn: Connection, op: int, data: bytes) -> None:
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

    def send_ack(self, conn: Connection, op: int) -> None:
        self.send_reply(conn, op, b"OK\0")

    def _send_error(self, conn: Connection, err: int) -> None:
        self.send_reply(conn, Op.ERROR, _ERRNO_NAMES.get(err, b"EINVAL") + b"\0")

    def send_event(
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

    def free_buffered(self, conn: Connection) -> None:
        while conn.out:
            self._free_out(conn, conn.out.popleft())

    def delete_all_watches(self, conn: Connection) -> None:
        for w in conn.watches:
            self.store.domains.memory_add(conn.id, -(len(w.node) + len(w.token)), True)
            if conn.domain is not None and conn.domain.nbwatch:
                conn.domain.nbwatch -= 1
        conn.watches.clear()

    def delete_all_transactions(self, conn: Connection) -> None:
        for trans in conn.transactions.values():
            self.store.discard_transaction(trans)
        conn.transactions.clear()
        conn.transaction = None

    def _ignore_connection(self, conn: Connection) -> None:
        """``ignore_connection``: a socket is dropped, a ring is ignored."""
        conn.is_ignored = True
        self.delete_all_watches(conn)
        self.delete_all_transactions(conn)
        self.free_buffered(conn)
        if conn.domain is None:
            self._destroy_connection(conn)

    def talloc_free(self, conn: Connection) -> None:
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
        self.free_buffered(conn)
        self.delete_all_watches(conn)
        for req in conn.ref_list:
            req.on_ref_list = False
        conn.ref_list.clear()
        self.delete_all_transactions(conn)
        self.connections.remove(conn)
        conn.closed = True
        if conn.domain is not None:
            self._destroy_domain(conn.domain)
        for child in [c for c in self.connections if c.owner is conn]:
            self._destroy_connection(child)

    # -- dispatch ------------------------------------------------------------------

    def _process_message(self, conn: Connection, packet: Packet) -> None:
        entry = handlers.WIRE_FUNCS.get(packet.op)
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

    def implicit_path(self, conn: Connection) -> bytes:
        return conn.domain.path if conn.domain is not None else b"/local/domain/0"

    def canonicalize(self, conn: Connection, node: bytes | None) -> bytes | None:
        if node is None or node.startswith((b"/", b"@")):
            return node
        return self.implicit_path(conn) + b"/" + node

    def valid_name(self, name: bytes) -> bool:
        return is_valid_nodename(name, self.quotas.path_max)

    def _get_node(self, conn: Connection, name: bytes | None, perm: int) -> Node | None:
        st = self.store
        if name is None or not self.valid_name(name):
            st.errno = E.EINVAL
            return None
        node = st.read_node(conn, name)
        if node is not None and (perm_for_conn(conn, node.perms) & perm) != perm:
            st.errno = E.EACCES
            node = None
        if node is None and not st.can_propagate_errno():
            st.errno = self._errno_from_parents(conn, name, st.errno, perm)
        return node

    def get_node_canonical(
        self, conn: Connection, name: bytes | None, perm: int
    ) -> tuple[Node | None, bytes | None]:
        canonical = self.canonicalize(conn, name)
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

    def create_node(self, conn: Connection, name: bytes, data: bytes) -> Node | None:
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
        enter: _WalkFunc | None = None,
        leave: _WalkFunc | None = None,
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
        self, conn: Connection | None, node: Node, parent: Node | None, func: _WalkFunc | None
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

    def rm_node(self, conn: Connection | None, name: bytes) -> int:
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
            self.fire_watches(c, node.name, node, node.name != name, None)
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

    def fire_watches(
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
            if not i.watches:  # (C checks permissions first; same result, far cheaper)
                continue
            if special:
                p = self.special_perms.get(name)
                if p is None or not perm_for_conn(i, p) & PERM_READ:
                    continue
            elif not self._watch_permitted(i, name, node, perms):
                continue
            for w in list(i.watches):
                if name == w.node if exact else is_child(name, w.node):
                    self.send_event(req, i, watch_path(w, name), w.token)

    # -- domains ------------------------------------------------------------------

    def introduce_domain(self, domid: int) -> Domain:
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
                self.fire_watches(None, INTRODUCE_DOMAIN, None, True, None)
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
            self.rm_node(None, node.name)
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
            self.fire_watches(None, RELEASE_DOMAIN, None, True, None)

    def check_domains(self, status: Callable[[int], DomainStatus | None]) -> list[Outgoing]:
        """What xenstored does when the hypervisor signals a domain state
        change (VIRQ_DOM_EXC). ``status(domid)`` answers like
        ``xc_domain_getinfo``: None if there is no such domain. A domain that
        shut down or crashed fires @releaseDomain once; a dying one loses its
        connection and the nodes it owns, and fires @releaseDomain; a domain
        known only from permissions is forgotten once gone."""
        self._begin()
        domains = self.store.domains.domains
        notify, again = False, True
        while again:
            again = False
            for d in reversed(list(domains.values())):  # C adds at the list head
                st = status(d.domid)
                if not d.introduced:
                    if st is None:
                        self._destroy_domain(d)
                        again = True
                        break
                    continue
                if st is not None:
                    if st.shutdown and not d.shutdown:
                        d.shutdown = notify = True
                    if not st.dying:
                        continue
                if d.conn is not None:
                    conn, d.conn = d.conn, None
                    notify = False  # destroying the domain fires the watch
                    if conn.refs:  # talloc_unlink: the referencing connection adopts it
                        conn.owner = conn.refs.pop(0)
                    else:
                        self._destroy_connection(conn)
                    again = True
                    break
        if notify:
            self.fire_watches(None, RELEASE_DOMAIN, None, True, None)
        return self._finish()

    def connected_domain(self, domid: int) -> Domain | int:
        d = self.store.domains.find_introduced(domid)
        if d is None:
            return E.ENOENT
        if d.conn is None:
            return E.EINVAL
        return d

    def onearg_domain(self, payload: bytes) -> Domain | int:
        arg = onearg(payload)
        if arg is None:
            return E.EINVAL
        domid = self.c_atoi(arg) & U32
        if not domid:
            return E.EINVAL
        return self.connected_domain(domid)
