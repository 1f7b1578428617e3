"""Domains as xenstored 4.17 knows them: quotas and per-domain accounting.

Follows ``xenstored_domain.c``. A domain record exists for every domain the
daemon has heard of: introduced ones (with a ring connection), and ones only
named in a permission or owning a node. Whether a domain "exists" at all is
the hypervisor's answer (``xc_domain_getinfo``); here a callable.

Dom0 (and the privileged domain, also 0) and every unix-socket connection are
privileged: no quota applies to them.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from agent.xenstore.cstring import PERM_NONE

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection

DOMID_FIRST_RESERVED = 0x7FF0
DOMID_SELF = 0x7FF0
DOM0 = 0
PRIV_DOMID = 0


@dataclass(slots=True)
class Quotas:
    """The C daemon's quota defaults (``xenstored_core.c``), settable at run
    time with ``CONTROL quota set`` like there."""

    nodes: int = 1000  # nodes owned per domain
    watches: int = 128  # watches per domain connection
    transactions: int = 10  # open transactions per domain connection
    outstanding: int = 20  # requests in flight per domain
    transaction_nodes: int = 1024  # nodes touched by one transaction
    memory: int = 2 * 1024 * 1024 + 512 * 1024  # hard memory quota per domain
    node_size: int = 2048  # bytes of one node record
    path_max: int = 2048  # path length after a /local/domain/<id>/ prefix
    permissions: int = 5  # entries of a node's permission list
    memory_soft: int = 2 * 1024 * 1024  # only logged by the C daemon


def default_domain_exists(domid: int) -> bool:
    """Without a hypervisor: every domid below the reserved range exists, as
    the test harness's shim answers."""
    return domid < DOMID_FIRST_RESERVED


def domid_is_unprivileged(domid: int) -> bool:
    return domid not in (DOM0, PRIV_DOMID)


@dataclass(eq=False, slots=True)
class Domain:
    """``struct domain``."""

    domid: int
    generation: int  # the store's generation count when the record was made
    introduced: bool = False
    shutdown: bool = False
    path: bytes = b""
    conn: Connection | None = None
    nbentry: int = 0
    memory: int = 0
    nbwatch: int = 0
    nboutstanding: int = 0


@dataclass(slots=True)
class DomainTable:
    """The daemon's list of domains and the accounting done against them."""

    generation: Callable[[], int]
    domain_exists: Callable[[int], bool] = default_domain_exists
    quotas: Quotas = field(default_factory=Quotas)
    domains: dict[int, Domain] = field(default_factory=dict)

    def find(self, domid: int) -> Domain | None:
        return self.domains.get(domid)

    def find_introduced(self, domid: int) -> Domain | None:
        d = self.domains.get(domid)
        return d if d is not None and d.introduced else None

    def alloc(self, domid: int) -> Domain:
        d = Domain(domid, self.generation())
        self.domains[domid] = d
        return d

    def find_or_alloc(self, domid: int) -> Domain:
        return self.domains.get(domid) or self.alloc(domid)

    def find_or_alloc_existing(self, domid: int) -> Domain | None:
        d = self.domains.get(domid)
        if d is None and self.domain_exists(domid):
            d = self.alloc(domid)
        return d

    def remove(self, domid: int) -> None:
        self.domains.pop(domid, None)

    def chk_generation(self, domid: int, gen: int) -> bool:
        """Is the domain older than a node of generation ``gen``? A permission
        naming a younger domain (same domid, new domain) is ignored."""
        d = self.domains.get(domid)
        return d is not None and d.generation <= gen

    # -- memory (nodes, watches, queued output) -------------------------------

    def _over_hard_quota(self, d: Domain, memory: int) -> bool:
        if not domid_is_unprivileged(d.domid) or (d.conn is not None and d.conn.is_ignored):
            return False
        return bool(self.quotas.memory) and memory >= self.quotas.memory

    def memory_add(self, domid: int, mem: int, no_quota_check: bool) -> int:
        """``domain_memory_add``: 0, ENOMEM over the hard quota, ENOENT for an
        unknown domain (the C daemon then also reports a corrupt store)."""
        d = self.domains.get(domid)
        if d is None:
            return errno.ENOENT
        if self._over_hard_quota(d, d.memory + mem) and not no_quota_check:
            return errno.ENOMEM
        d.memory += mem
        return 0

    def over_memory_quota(self, domid: int) -> bool:
        d = self.domains.get(domid)
        return d is not None and self._over_hard_quota(d, d.memory)

    # -- node counts ----------------------------------------------------------

    def entry_fix(self, domid: int, num: int, update: bool) -> int:
        """``domain_entry_fix``: apply (or, first, check) a transaction's
        change in a domain's node count; -1 if the domain cannot exist."""
        d = self.find(domid) if update else self.find_or_alloc_existing(domid)
        if d is None:
            return -1
        cnt = d.nbentry + num
        if update:
            d.nbentry = cnt
        elif cnt < 0:  # a concurrent change; the commit will conflict anyway
            cnt = 0
        return cnt if domid_is_unprivileged(domid) else 0


def default_special_perms() -> list[tuple[int, int]]:
    """``@introduceDomain``/``@releaseDomain`` start as ``n0``."""
    return [(PERM_NONE, DOM0)]

