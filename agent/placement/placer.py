"""The placement service: the algorithm, the reservation ledger, and the reply.

``Placer.place`` answers one request against the host as last observed plus
every reservation still pending, and reserves what it granted. The agent feeds
it each fresh domain list (``observe``) so reservations settle when their
domain appears, or expire. ``use_ledger=False`` turns reservations off: that is
what every toolstack without this agent does, and what the tests use to show
the race the ledger removes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.hypervisor.model import DomainInfo, DomainState
from agent.placement.algorithm import (
    DEFAULT_GRANULARITY_MIB,
    Choice,
    HostCapacity,
    capacity_of,
    choose,
)
from agent.placement.ledger import LedgerFull, Reservation, ReservationLedger, Settled
from agent.placement.request import PlacementReply, PlacementRequest
from agent.state import HostView


@dataclass(frozen=True, slots=True)
class LedgerChanges:
    settled: list[Settled] = field(default_factory=list)
    expired: list[Reservation] = field(default_factory=list)


class Placer:
    def __init__(
        self,
        ledger: ReservationLedger | None = None,
        *,
        use_ledger: bool = True,
        granularity_mib: int = DEFAULT_GRANULARITY_MIB,
    ) -> None:
        self.ledger = ledger if ledger is not None else ReservationLedger()
        self.use_ledger = use_ledger
        self.granularity_mib = granularity_mib
        self._domains: tuple[DomainInfo, ...] = ()

    def observe(self, domains: Sequence[DomainInfo], now: float) -> LedgerChanges:
        """A fresh domain list: settle the reservations whose domain holds its
        memory now, expire the overdue ones."""
        self._domains = tuple(domains)
        return LedgerChanges(self.ledger.settle(domains), self.ledger.expire(now))

    def capacity(self, host: HostView | HostCapacity) -> HostCapacity:
        """What placement sees: the host with every pending reservation taken out."""
        cap = capacity_of(host) if isinstance(host, HostView) else host
        if not self.use_ledger:
            return cap
        n = max((node.id for node in cap.nodes), default=-1) + 1
        return cap.with_reservations(self.ledger.reserved_mib(n), self.ledger.reserved_vcpus(n))

    def place(
        self, req: PlacementRequest, host: HostView | HostCapacity, now: float
    ) -> PlacementReply:
        """Choose nodes for ``req`` and reserve its memory there."""
        if isinstance(host, HostView):
            self._domains = tuple(_infos(host)) or self._domains
        if self.use_ledger:
            self.ledger.expire(now)
            # A request id asked again replaces its earlier answer.
            self.ledger.release(req.id)
        found = choose(req, self.capacity(host), granularity_mib=self.granularity_mib)
        if not isinstance(found, Choice):
            return PlacementReply(req.id, False, found.reason, policy=req.policy,
                                  shortfall_mib=found.shortfall_mib)
        expires = 0.0
        if self.use_ledger:
            try:
                self.ledger.reserve(req.id, name=req.name, uuid=req.uuid, nodes=found.nodes,
                                    memory_mib=found.memory_mib, vcpus=found.vcpus, now=now,
                                    domains=self._domains)
            except LedgerFull as exc:
                return PlacementReply(req.id, False, f"cannot reserve: {exc}",
                                      policy=req.policy)
            expires = self.ledger.ttl_s
        return PlacementReply(
            req.id, True, found.reason, nodes=found.nodes, cpus=found.cpus,
            memory_mib=found.memory_mib, policy=req.policy, fallback=found.fallback,
            expires_s=expires,
        )

    def cancel(self, request_id: str) -> Reservation | None:
        return self.ledger.release(request_id)


def _infos(view: HostView) -> list[DomainInfo]:
    """Enough of each domain for ledger matching (domid, name, uuid)."""
    return [
        DomainInfo(d.domid, d.name, d.uuid, DomainState(d.state), d.vcpu_count,
                   d.memory_mib * 1024)
        for d in view.domains
    ]
