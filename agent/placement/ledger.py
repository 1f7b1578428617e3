"""Memory reserved for domains placed but not built yet.

Free memory is racy: two toolstacks asking at the same instant read the same
free memory and would both be sent to the same node. The ledger closes the
race: a placement reserves its memory (and counts its vCPUs) on its nodes, and
later placements see the node with that much less, until the domain appears
(matched by uuid, else by name) holding the memory, or the reservation expires
(a build that failed or never happened), or the requester cancels it.

A domain "holds the memory" once its current allocation (``xl list``'s Mem,
``DomainInfo.memory_kib``) reaches ``SETTLED_SHARE`` of the reservation: from
then on the hypervisor's free memory already has it out. Until then the memory
may be counted twice (reserved and partly allocated), which errs on the safe
side. A domain that existed under that name or uuid when the reservation was
made never matches it (a name reused after a destroy is a different domain).

Pure bookkeeping on the agent's clock (seconds): no I/O, no time source.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from agent.hypervisor.model import DomainInfo

DEFAULT_TTL_S = 120.0
DEFAULT_MAX_ENTRIES = 4096
SETTLED_SHARE = 0.9


class LedgerFull(Exception):
    """More reservations pending than the ledger holds."""


@dataclass(frozen=True, slots=True)
class Reservation:
    request: str
    name: str
    uuid: str
    nodes: tuple[int, ...]
    memory_mib: tuple[int, ...]  # per node of ``nodes``
    vcpus: tuple[int, ...]  # per node of ``nodes``
    created: float
    expires: float
    # domids that already carried this name or uuid when it was made
    not_domids: frozenset[int] = frozenset()

    @property
    def total_mib(self) -> int:
        return sum(self.memory_mib)

    def matches(self, info: DomainInfo) -> bool:
        if info.domid in self.not_domids:
            return False
        if self.uuid:
            return info.uuid == self.uuid
        return bool(self.name) and info.name == self.name


@dataclass(frozen=True, slots=True)
class Settled:
    reservation: Reservation
    domid: int


class ReservationLedger:
    """Pending reservations by request id."""

    def __init__(self, *, ttl_s: float = DEFAULT_TTL_S,
                 max_entries: int = DEFAULT_MAX_ENTRIES) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be > 0, got {ttl_s}")
        if max_entries < 1:
            raise ValueError(f"max_entries must be >= 1, got {max_entries}")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._by_request: dict[str, Reservation] = {}

    def __len__(self) -> int:
        return len(self._by_request)

    def __iter__(self) -> Iterator[Reservation]:
        return iter(sorted(self._by_request.values(), key=lambda r: (r.created, r.request)))

    def __contains__(self, request: object) -> bool:
        return request in self._by_request

    def get(self, request: str) -> Reservation | None:
        return self._by_request.get(request)

    def reserve(
        self, request: str, *, name: str, uuid: str, nodes: tuple[int, ...],
        memory_mib: tuple[int, ...], vcpus: tuple[int, ...], now: float,
        domains: Iterable[DomainInfo] = (),
    ) -> Reservation:
        """Hold memory for ``request`` (replacing an earlier hold of the same id).
        ``domains``: the domains that exist now (so none of them can match it)."""
        if len(nodes) != len(memory_mib) or len(nodes) != len(vcpus):
            raise ValueError("nodes, memory_mib and vcpus must have one entry per node")
        if request not in self._by_request and len(self._by_request) >= self.max_entries:
            raise LedgerFull(f"{len(self._by_request)} reservations pending "
                             f"(at most {self.max_entries})")
        probe = Reservation(request, name, uuid, nodes, memory_mib, vcpus, now, now)
        taken = frozenset(d.domid for d in domains if probe.matches(d))
        res = Reservation(request, name, uuid, nodes, memory_mib, vcpus, now,
                          now + self.ttl_s, taken)
        self._by_request[request] = res
        return res

    def release(self, request: str) -> Reservation | None:
        """Drop a reservation (cancelled by its requester); None if unknown."""
        return self._by_request.pop(request, None)

    def expire(self, now: float) -> list[Reservation]:
        """Drop and return the reservations whose time is up."""
        gone = [r for r in self if r.expires <= now]
        for r in gone:
            del self._by_request[r.request]
        return gone

    def settle(self, domains: Iterable[DomainInfo]) -> list[Settled]:
        """Drop and return the reservations whose domain now holds its memory."""
        done: list[Settled] = []
        pending = list(self)
        for info in sorted(domains, key=lambda d: d.domid):
            for res in pending:
                if res.request in self._by_request and res.matches(info) and (
                    info.memory_kib >= SETTLED_SHARE * res.total_mib * 1024
                ):
                    del self._by_request[res.request]
                    done.append(Settled(res, info.domid))
                    break
        return done

    def reserved_mib(self, node_count: int) -> tuple[int, ...]:
        """MiB held on each node (index = node id), as ``Observation.reserved_mib``."""
        out = [0] * node_count
        for res in self._by_request.values():
            for node, mib in zip(res.nodes, res.memory_mib, strict=True):
                if 0 <= node < node_count:
                    out[node] += mib
        return tuple(out)

    def reserved_vcpus(self, node_count: int) -> tuple[int, ...]:
        out = [0] * node_count
        for res in self._by_request.values():
            for node, n in zip(res.nodes, res.vcpus, strict=True):
                if 0 <= node < node_count:
                    out[node] += n
        return tuple(out)
