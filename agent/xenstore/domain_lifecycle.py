"""Domains coming and going: INTRODUCE, death and release, as ``xenstored_domain.c``.

Introducing a domain gives it a ring connection (dom0's builds the initial
tree); a domain that dies loses its connection and the nodes it owns, and
@releaseDomain fires. The hypervisor's view arrives as ``DomainStatus``.
"""

from __future__ import annotations

import errno as E
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from agent.xenstore import connections, lookup, tree, watches
from agent.xenstore.cstring import U32, onearg
from agent.xenstore.domains import DOM0, PRIV_DOMID, Domain
from agent.xenstore.store import Node
from agent.xenstore.wire import INTRODUCE_DOMAIN, RELEASE_DOMAIN

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection
    from agent.xenstore.daemon import XenstoreDaemon


@dataclass(frozen=True, slots=True)
class DomainStatus:
    """The hypervisor's view of a domain (flags of ``xc_domain_getinfo``)."""

    shutdown: bool = False  # shut down or crashed
    dying: bool = False


def introduce_domain(xsd: XenstoreDaemon, domid: int) -> Domain:
    domains = xsd.store.domains
    d = domains.find_or_alloc(domid)
    if not d.introduced:
        d.path = b"/local/domain/%d" % domid
        d.introduced = True
        d.shutdown = False
        d.conn = connections.new_connection(xsd, domid, d)
        if domid == DOM0:
            _setup_structure(xsd)
        else:
            watches.fire_watches(xsd, None, INTRODUCE_DOMAIN, None, True, None)
    return d


def _setup_structure(xsd: XenstoreDaemon) -> None:
    """The initial tree: /, /tool, /tool/xenstored, all ``n0``."""
    st = xsd.store
    initial = ((b"/", b"tool\0"), (b"/tool", b"xenstored\0"), (b"/tool/xenstored", b""))
    for name, child in initial:
        node = Node(name, 0, [(0, DOM0)], b"", child)
        st.write_node(None, node, False)
    st.domains.entry_fix(DOM0, 3, True)


def destroy_domain(xsd: XenstoreDaemon, d: Domain) -> None:
    """Remove the nodes the domain owns, forget it, fire @releaseDomain."""
    st = xsd.store

    def remove_owned(conn: Connection | None, node: Node) -> int:
        if node.perms[0][1] != d.domid:
            return tree.OK
        tree.rm_node(xsd, None, node.name)
        return tree.SKIP_CHILDREN if d.nbentry > 0 else tree.SUCCESS_STOP

    if d.nbentry > 0:
        tree.walk(xsd, None, b"/", enter=remove_owned)
    for name, perms in xsd.special_perms.items():
        kept = [perms[0] if perms[0][1] != d.domid else (perms[0][0], PRIV_DOMID)]
        kept += [p for p in perms[1:] if p[1] != d.domid]
        xsd.special_perms[name] = kept
    st.domains.remove(d.domid)
    d.conn = None
    if d.introduced:
        watches.fire_watches(xsd, None, RELEASE_DOMAIN, None, True, None)


def check_domains(xsd: XenstoreDaemon, status: Callable[[int], DomainStatus | None]) -> None:
    """What xenstored does when the hypervisor signals a domain state
    change (VIRQ_DOM_EXC). ``status(domid)`` answers like
    ``xc_domain_getinfo``: None if there is no such domain. A domain that
    shut down or crashed fires @releaseDomain once; a dying one loses its
    connection and the nodes it owns, and fires @releaseDomain; a domain
    known only from permissions is forgotten once gone."""
    domains = xsd.store.domains.domains
    notify, again = False, True
    while again:
        again = False
        for d in reversed(list(domains.values())):  # C adds at the list head
            st = status(d.domid)
            if not d.introduced:
                if st is None:
                    destroy_domain(xsd, d)
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
                    connections.destroy_connection(xsd, conn)
                again = True
                break
    if notify:
        watches.fire_watches(xsd, None, RELEASE_DOMAIN, None, True, None)


def connected_domain(xsd: XenstoreDaemon, domid: int) -> Domain | int:
    d = xsd.store.domains.find_introduced(domid)
    if d is None:
        return E.ENOENT
    if d.conn is None:
        return E.EINVAL
    return d


def onearg_domain(xsd: XenstoreDaemon, payload: bytes) -> Domain | int:
    arg = onearg(payload)
    if arg is None:
        return E.EINVAL
    domid = lookup.c_atoi(xsd, arg) & U32
    if not domid:
        return E.EINVAL
    return connected_domain(xsd, domid)
