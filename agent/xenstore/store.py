"""The node database of the embedded xenstored, with transactions.

A port of the data layer of xenstored 4.17 (``read_node``/``write_node`` in
``xenstored_core.c``, ``access_node`` and ``finalize_transaction`` in
``xenstored_transaction.c``), kept close to the C so that every observable
number matches: the global generation count (visible in DIRECTORY_PART
replies), per-domain node counts and memory (visible in ``CONTROL quota``),
and which commits conflict.

The database maps keys to records as the C daemon's TDB does: ``/path`` for
the live tree, ``<transaction generation>//path`` for a transaction's private
copy of a node it read or wrote. A transaction fails to commit (EAGAIN) only
if a node it *read* (and did not write) changed generation meanwhile.

The C code reports failures through ``errno``, and some request handlers
reply with whatever ``errno`` holds, even from an earlier request. To answer
byte for byte like it, the store keeps that ``errno`` (``Store.errno``) and
sets it exactly where the C code does.
"""

from __future__ import annotations

import errno as E
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.xenstore.cstring import (
    PERM_IGNORE,
    PERM_OWNER,
    PERM_READ,
    PERM_WRITE,
)
from agent.xenstore.domains import DomainTable, Quotas, domid_is_unprivileged

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection

NO_GENERATION = (1 << 64) - 1
RECORD_HEADER = 24  # sizeof(struct xs_tdb_record_hdr): u64 + 3 * u32, 8-aligned
PERM_SIZE = 8  # sizeof(struct xs_permissions)
ALL_PERMS = PERM_READ | PERM_WRITE | PERM_OWNER

Perms = list[tuple[int, int]]  # (XS_PERM_* bits, domid); entry 0 is the owner

# access_node() types
READ, WRITE, DELETE = 0, 1, 2


@dataclass(slots=True)
class Record:
    """One TDB record; ``acc_domid`` is the domain its memory is charged to."""

    generation: int
    perms: tuple[tuple[int, int], ...]
    data: bytes
    children: bytes
    acc_domid: int

    @property
    def size(self) -> int:
        return RECORD_HEADER + PERM_SIZE * len(self.perms) + len(self.data) + len(self.children)


@dataclass(eq=False, slots=True)
class Node:
    """``struct node``: a node as read, being changed by a request."""

    name: bytes
    generation: int
    perms: Perms
    data: bytes = b""
    children: bytes = b""  # NUL-terminated names, in creation order
    parent: Node | None = None
    key: bytes = b""
    childoff: int = 0  # walk_node_tree's cursor into children


@dataclass(eq=False, slots=True)
class AccessedNode:
    """A node a transaction read, wrote or deleted (``struct accessed_node``)."""

    trans_name: bytes  # key of the transaction's copy
    node: bytes
    generation: int = 0  # as read, for the conflict check
    perms: Perms | None = None  # as first seen, for watch permission checks
    check_gen: bool = False
    modified: bool = False
    ta_node: bool = False  # does the transaction's copy exist?
    fire_watch: bool = False
    watch_exact: bool = False


@dataclass(eq=False, slots=True)
class Transaction:
    conn: Connection
    id: int
    generation: int
    nodes: int = 0
    accessed: dict[bytes, AccessedNode] = field(default_factory=dict)  # in access order
    changed_domains: dict[int, int] = field(default_factory=dict)  # domid -> node delta
    node_created: bool = False
    fail: bool = False


def is_unprivileged(conn: Connection | None) -> bool:
    """``domain_is_unprivileged``: a domain's ring connection other than dom0."""
    return conn is not None and conn.domain is not None and domid_is_unprivileged(conn.domain.domid)


def perm_for_conn(conn: Connection, perms: Perms) -> int:
    """``perm_for_conn``: owners, their device models (target) and privileged
    connections get everything; else the first entry naming the domain, else
    the owner entry's access, which applies to everyone else."""
    target = conn.target.id if conn.target is not None else None
    owner = perms[0][1]
    if not is_unprivileged(conn) or owner == conn.id or owner == target:
        return ALL_PERMS
    for bits, domid in perms[1:]:
        if not bits & PERM_IGNORE and (domid == conn.id or domid == target):
            return bits & ALL_PERMS
    return perms[0][0] & ALL_PERMS


def get_parent(name: bytes) -> bytes:
    slash = name.rfind(b"/", 1)
    return name[:slash] if slash > 0 else b"/"


class Store:
    """The TDB, the generation count, the emulated errno and the domain
    accounting that node writes feed."""

    def __init__(self, quotas: Quotas, domain_exists: Callable[[int], bool]) -> None:
        self.db: dict[bytes, Record] = {}
        self.generation = 0
        # The real daemon starts with ENOENT left over from its start-up.
        self.errno = E.ENOENT
        self.quotas = quotas
        self.domains = DomainTable(lambda: self.generation, domain_exists, quotas)

    # -- raw records with memory accounting (do_tdb_write / do_tdb_delete) --------

    def tdb_write(self, conn: Connection | None, key: bytes, rec: Record, no_quota: bool) -> int:
        # Transaction copies are charged to the transaction's connection.
        private = conn is not None and not key.startswith(b"/")
        rec.acc_domid = conn.id if conn is not None and private else rec.perms[0][1]
        old = self.db.get(key)
        if old is not None:
            self.domains.memory_add(old.acc_domid, -(old.size + len(key)), True)
        ret = self.domains.memory_add(rec.acc_domid, rec.size + len(key), no_quota)
        if ret:
            if old is not None:
                self.domains.memory_add(old.acc_domid, old.size + len(key), True)
            return ret
        self.db[key] = rec
        return 0

    def tdb_delete(self, key: bytes) -> int:
        rec = self.db.pop(key, None)
        if rec is None:
            self.errno = E.EIO
            return E.EIO
        self.domains.memory_add(rec.acc_domid, -(rec.size + len(key)), True)
        return 0

    # -- nodes ----------------------------------------------------------------

    def adjust_node_perms(self, node: Node) -> None:
        """Ignore permission entries naming a domain younger than the node
        (the domid was reused by a new domain)."""
        for i in range(1, len(node.perms)):
            bits, domid = node.perms[i]
            if not bits & PERM_IGNORE and not self.domains.chk_generation(domid, node.generation):
                node.perms[i] = (bits | PERM_IGNORE, domid)

    def transaction_key(self, conn: Connection | None, name: bytes) -> bytes:
        """``transaction_prepend``: the transaction's copy once it touched the node."""
        if conn is not None and conn.transaction is not None:
            acc = conn.transaction.accessed.get(name)
            if acc is not None:
                return acc.trans_name
        return name

    def read_node(self, conn: Connection | None, name: bytes) -> Node | None:
        rec = self.db.get(self.transaction_key(conn, name))
        if rec is None:
            missing = Node(name, NO_GENERATION, [])
            err, _ = self.access_node(conn, missing, READ, want_key=False)
            self.errno = err if err else E.ENOENT
            return None
        node = Node(name, rec.generation, list(rec.perms), rec.data, rec.children)
        self.adjust_node_perms(node)
        err, _ = self.access_node(conn, node, READ, want_key=False)
        if err:
            return None
        return node

    def can_propagate_errno(self) -> bool:
        """``read_node_can_propagate_errno``."""
        return self.errno in (E.ENOMEM, E.ENOSPC)

    def write_node_raw(
        self, conn: Connection | None, key: bytes, node: Node, no_quota: bool
    ) -> int:
        self.adjust_node_perms(node)
        rec = Record(node.generation, tuple(node.perms), node.data, node.children, 0)
        if not no_quota and is_unprivileged(conn) and rec.size >= self.quotas.node_size:
            self.errno = E.ENOSPC
            return E.ENOSPC
        if self.tdb_write(conn, key, rec, no_quota):
            return E.EIO
        return 0

    def write_node(self, conn: Connection | None, node: Node, no_quota: bool) -> int:
        err, key = self.access_node(conn, node, WRITE, want_key=True)
        if err:
            return self.errno
        node.key = key
        ret = self.write_node_raw(conn, key, node, no_quota)
        if ret and conn is not None and conn.transaction is not None:
            conn.transaction.fail = True  # undoing access_node is hard: fail the commit
        return ret

    def access_node(
        self, conn: Connection | None, node: Node, kind: int, *, want_key: bool
    ) -> tuple[int, bytes]:
        """Note an access: writes and deletes take a new generation; inside a
        transaction the node joins its accessed set and a read copies the node
        into the transaction. Returns (0 | errno | -1, key to use); -1 means
        a delete of a node the transaction had not seen: nothing to delete."""
        if kind != READ:
            self.generation += 1
            node.generation = self.generation
        if conn is None or conn.transaction is None:
            return 0, node.name
        trans = conn.transaction
        acc = trans.accessed.get(node.name)
        introduce = False
        if acc is None:
            if trans.nodes >= self.quotas.transaction_nodes and is_unprivileged(conn):
                return self._access_failed(trans, E.ENOSPC)
            acc = AccessedNode(b"%d/%s" % (trans.generation, node.name), node.name)
            if node.generation != NO_GENERATION and node.perms:
                acc.perms = list(node.perms)
            introduce = True
            if kind == READ:
                acc.generation = node.generation
                acc.check_gen = True
                if node.generation != NO_GENERATION:
                    ret = self.write_node_raw(conn, acc.trans_name, node, True)
                    if ret:
                        return self._access_failed(trans, ret)
                    acc.ta_node = True
            trans.nodes += 1
            trans.accessed[node.name] = acc
        if kind != READ:
            acc.modified = True
        if introduce and kind == DELETE:
            return -1, acc.trans_name
        if want_key:
            if kind == WRITE:
                acc.ta_node = True
            elif kind == DELETE:
                acc.ta_node = False
        return 0, acc.trans_name

    def _access_failed(self, trans: Transaction, err: int) -> tuple[int, bytes]:
        trans.fail = True
        self.errno = err
        return err, b""

    # -- node counts per owner --------------------------------------------------

    def entry_inc(self, conn: Connection | None, node: Node) -> int:
        if not node.perms:
            return 0
        domid = node.perms[0][1]
        if conn is not None and conn.transaction is not None:
            delta = conn.transaction.changed_domains
            delta[domid] = delta.get(domid, 0) + 1
            return 0
        d = (
            conn.domain
            if conn is not None and domid == conn.id and conn.domain is not None
            else self.domains.find_or_alloc_existing(domid)
        )
        if d is None:
            return E.ENOMEM
        d.nbentry += 1
        return 0

    def entry_dec(self, conn: Connection | None, node: Node) -> None:
        if not node.perms:
            return
        domid = node.perms[0][1]
        if conn is not None and conn.transaction is not None:
            delta = conn.transaction.changed_domains
            delta[domid] = delta.get(domid, 0) - 1
            return
        d = (
            conn.domain
            if conn is not None and domid == conn.id and conn.domain is not None
            else self.domains.find(domid)
        )
        if d is not None:
            d.nbentry -= 1
        else:  # the C daemon logs a corrupt store here
            self.errno = E.ENOENT

    def entry_count(self, conn: Connection) -> int:
        """``domain_entry``: nodes owned, counted only for unprivileged domains."""
        return conn.domain.nbentry if is_unprivileged(conn) and conn.domain else 0

    # -- transactions -----------------------------------------------------------

    def start_transaction(self, conn: Connection, tx_id: int) -> Transaction:
        self.generation += 1
        return Transaction(conn, tx_id, self.generation)

    def discard_transaction(self, trans: Transaction) -> None:
        """``destroy_transaction``: drop the transaction's private copies."""
        for acc in trans.accessed.values():
            if acc.ta_node:
                self.tdb_delete(acc.trans_name)
        trans.accessed.clear()

    def fix_domains(self, trans: Transaction, chk_quota: bool, update: bool) -> int:
        """``transaction_fix_domains``: check, then apply, node-count deltas."""
        for domid, delta in trans.changed_domains.items():
            cnt = self.domains.entry_fix(domid, delta, update)
            if not update:
                if chk_quota and cnt >= self.quotas.nodes:
                    return E.ENOSPC
                if cnt < 0:
                    return E.ENOMEM
        return 0

    def finalize_transaction(
        self, conn: Connection, trans: Transaction, fire: Callable[[AccessedNode], None]
    ) -> int:
        """Check every node read against the live tree (EAGAIN if one changed),
        then publish the transaction's copies, firing watches node by node."""
        for name, acc in list(trans.accessed.items()):
            if acc.check_gen:
                live = self.db.get(acc.node)
                gen = NO_GENERATION if live is None else live.generation
                if acc.generation != gen:
                    return E.EAGAIN
            if not acc.modified:
                if acc.ta_node and self.tdb_delete(acc.trans_name):
                    return E.EIO
                del trans.accessed[name]
        while trans.accessed:
            name = next(iter(trans.accessed))
            acc = trans.accessed.pop(name)
            if acc.ta_node:
                copy = self.db.get(acc.trans_name)
                if copy is not None:
                    self.generation += 1
                    rec = Record(self.generation, copy.perms, copy.data, copy.children, 0)
                    self.tdb_write(conn, acc.node, rec, True)
                    self.tdb_delete(acc.trans_name)
            elif acc.generation != NO_GENERATION:
                self.tdb_delete(acc.node)
            if acc.fire_watch:
                fire(acc)
        return 0
