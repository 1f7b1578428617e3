"""The embedded xenstored's connections: the record and its lifecycle.

(The daemon side; ``connection.py`` is the client's link to a xenstored.)
Creating, ignoring and freeing a connection follow ``xenstored_core.c``,
including talloc's reference rules for SET_TARGET.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.xenstore import domain_lifecycle, output
from agent.xenstore.domains import Domain
from agent.xenstore.store import Transaction, is_unprivileged
from agent.xenstore.wire import Decoder, Packet

if TYPE_CHECKING:
    from agent.xenstore.daemon import XenstoreDaemon
    from agent.xenstore.watches import Watch

Outgoing = tuple["Connection", Packet]


@dataclass(eq=False, slots=True)
class Request:
    """A request whose reply, or whose watch events, are not yet delivered
    (``struct buffered_data`` reused for the reply in the C daemon)."""

    conn: Connection
    event_cnt: int = 0
    on_out_list: bool = False
    on_ref_list: bool = False


@dataclass(eq=False, slots=True)
class Queued:
    """A reply or watch event waiting in a connection's output queue."""

    packet: Packet
    is_event: bool
    req: Request | None


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
        self.out: deque[Queued] = deque()
        self.ref_list: list[Request] = []
        self.current: Request | None = None
        self.current_packet: Packet | None = None

    @property
    def privileged(self) -> bool:
        return not is_unprivileged(self)

    def __repr__(self) -> str:
        kind = "socket" if self.domain is None else f"domain {self.id}"
        return f"<xenstored connection #{self.serial} ({kind})>"


def new_connection(xsd: XenstoreDaemon, domid: int, domain: Domain | None) -> Connection:
    xsd.serial += 1
    conn = Connection(xsd.serial, domid, domain)
    xsd.connections.append(conn)
    return conn


def delete_all_watches(xsd: XenstoreDaemon, conn: Connection) -> None:
    for w in conn.watches:
        xsd.store.domains.memory_add(conn.id, -(len(w.node) + len(w.token)), True)
        if conn.domain is not None and conn.domain.nbwatch:
            conn.domain.nbwatch -= 1
    conn.watches.clear()


def delete_all_transactions(xsd: XenstoreDaemon, conn: Connection) -> None:
    for trans in conn.transactions.values():
        xsd.store.discard_transaction(trans)
    conn.transactions.clear()
    conn.transaction = None


def ignore_connection(xsd: XenstoreDaemon, conn: Connection) -> None:
    """``ignore_connection``: a socket is dropped, a ring is ignored."""
    conn.is_ignored = True
    delete_all_watches(xsd, conn)
    delete_all_transactions(xsd, conn)
    output.free_buffered(xsd, conn)
    if conn.domain is None:
        destroy_connection(xsd, conn)


def talloc_free(xsd: XenstoreDaemon, conn: Connection) -> None:
    """``talloc_free(conn)`` as the C daemon's memory allocator does it."""
    if conn.closed:
        return
    if conn is xsd.loop_next:
        xsd.loop_next = None
        xsd.deferred_free.append(conn)
    elif conn.refs:
        del conn.refs[0]
    else:
        destroy_connection(xsd, conn)


def destroy_connection(xsd: XenstoreDaemon, conn: Connection) -> None:
    """``destroy_conn`` and, for a ring, ``destroy_domain``."""
    if conn.target is not None and conn.target.closed:
        xsd.c_daemon_crashes += 1  # C unlinks its freed target: use after free
    for other in xsd.connections:  # the references this one held go
        other.refs = [r for r in other.refs if r is not conn]
    output.free_buffered(xsd, conn)
    delete_all_watches(xsd, conn)
    for req in conn.ref_list:
        req.on_ref_list = False
    conn.ref_list.clear()
    delete_all_transactions(xsd, conn)
    xsd.connections.remove(conn)
    conn.closed = True
    if conn.domain is not None:
        domain_lifecycle.destroy_domain(xsd, conn.domain)
    for child in [c for c in xsd.connections if c.owner is conn]:
        destroy_connection(xsd, child)
