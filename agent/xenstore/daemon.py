"""The embedded xenstored: a sans-IO port of the C xenstored 4.17.

``XenstoreDaemon`` knows connections, packets and the tree, never sockets.
A transport calls ``connect()`` for each client, feeds it ``receive()`` (raw
bytes) or ``handle()`` (one packet), and sends the ``(connection, packet)``
pairs it gets back, in order: replies and watch events exactly as the C
daemon queues them (an event caused by a request is queued before that
request's reply). See ``server.py`` for the trio transport and ``hub.py`` for
the in-process dom0 API.

This module is the core: the daemon's state, the transport API and request
dispatch. Everything follows ``xenstored_core.c``, ``xenstored_watch.c``,
``xenstored_domain.c`` and ``xenstored_transaction.c`` closely, including the
odd corners a differential test against the real daemon exposes (replies that
carry a stale ``errno``, permission-dependent error names, generation counts
in DIRECTORY_PART). The parts, by what they are:

- ``handlers.py``: one request handler per message type (``control.py``: CONTROL)
- ``connections.py``: the ``Connection`` record and its lifecycle
- ``output.py``: queuing replies and watch events, delivery accounting
- ``lookup.py``: resolving the node a request names, and the errno it leaves
- ``tree.py``: creating, removing and walking nodes
- ``watches.py``: watch records and firing events
- ``domain_lifecycle.py``: introducing, releasing and the death of domains
- ``store.py``: the node database and transactions; ``domains.py``: the
  domain table and quotas

Deliberate differences from the C daemon are listed in ``differences.py``
(``DIFFERENCES``).
"""

from __future__ import annotations

import errno as E
import logging
from collections.abc import Callable

from agent.xenstore import connections, domain_lifecycle, handlers, output
from agent.xenstore.connections import Connection, Outgoing, Request
from agent.xenstore.domain_lifecycle import DomainStatus
from agent.xenstore.domains import (
    DOM0,
    Quotas,
    default_domain_exists,
    default_special_perms,
)
from agent.xenstore.store import Perms, Store
from agent.xenstore.wire import (
    INTRODUCE_DOMAIN,
    PAYLOAD_MAX,
    RELEASE_DOMAIN,
    Packet,
    ProtocolError,
)

log = logging.getLogger(__name__)


class XenstoreDaemon:
    """The daemon state: tree, domains, connections.

    The request handlers drive it through the modules named in this
    module's docstring; they share the state kept here.
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
        self.serial = 0  # of the last connection made
        self.pending: list[Outgoing] = []  # output of the call in progress
        # The connection the C main loop visits next (see handle()), and the
        # ones whose freeing is put off until it does.
        self.loop_next: Connection | None = None
        self.deferred_free: list[Connection] = []
        # Requests that would crash the C daemon (see differences.py).
        self.c_daemon_crashes = 0
        # dom0_init(): dom0 is introduced through its ring, which builds the tree.
        domain_lifecycle.introduce_domain(self, DOM0)

    # -- transport API ------------------------------------------------------------

    def connect(self, domid: int = 0) -> Connection:
        """A new unix-socket style connection (``domid`` 0, privileged), or
        the ring connection of an introduced domain ``domid``."""
        if domid == 0:
            return connections.new_connection(self, 0, None)
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
            connections.destroy_connection(self, conn)
        else:
            connections.ignore_connection(self, conn)
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
                connections.ignore_connection(self, conn)
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
        conn.current = Request(conn)
        conn.current_packet = packet
        # The C main loop holds a reference on the connection after this one
        # while it processes a request: freeing that one is put off until the
        # loop reaches it, after this request's reply.
        i = self.connections.index(conn) + 1
        self.loop_next = self.connections[i] if i < len(self.connections) else None
        self.deferred_free = []
        self._process_message(conn, packet)
        self.loop_next = None
        for deferred in self.deferred_free:
            connections.talloc_free(self, deferred)
        if conn.current is not None:
            # C replies with errno 0 here, i.e. not at all, and then aborts on
            # an assertion (see differences.py). Answer instead.
            self.c_daemon_crashes += 1
            output.send_error(self, conn, E.EINVAL)
        conn.current_packet = None
        return self._finish()

    def delivered(self, conn: Connection, count: int = 1) -> None:
        """A transport with ``conn.track_delivery`` reports packets written."""
        for _ in range(min(count, len(conn.out))):
            output.free_out(self, conn, conn.out.popleft())

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

    # -- hypervisor events ----------------------------------------------------------

    def check_domains(self, status: Callable[[int], DomainStatus | None]) -> list[Outgoing]:
        """A domain state change (VIRQ_DOM_EXC): see
        ``domain_lifecycle.check_domains``."""
        self._begin()
        domain_lifecycle.check_domains(self, status)
        return self._finish()

    # -- output ---------------------------------------------------------------------

    def _begin(self) -> None:
        self.pending = []

    def _finish(self) -> list[Outgoing]:
        out, self.pending = self.pending, []
        for conn in dict.fromkeys(c for c, _ in out):
            if not conn.track_delivery:
                self.delivered(conn, len(conn.out))
        return out

    # -- dispatch ------------------------------------------------------------------

    def _process_message(self, conn: Connection, packet: Packet) -> None:
        entry = handlers.WIRE_FUNCS.get(packet.op)
        if entry is None:
            output.send_error(self, conn, E.ENOSYS)
            return
        handler, notid, priv = entry
        if priv and not conn.privileged:
            output.send_error(self, conn, E.EACCES)
            return
        trans = None
        if not notid and packet.tx_id:
            trans = conn.transactions.get(packet.tx_id)
            if trans is None:
                output.send_error(self, conn, E.ENOENT)
                return
        conn.transaction = trans
        try:
            ret = handler(self, conn, packet.payload)
        finally:
            conn.transaction = None
        if ret:
            output.send_error(self, conn, ret)
