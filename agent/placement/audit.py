"""Audit records for placements and reservations (``agent.audit.records`` bodies)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from agent.audit import records
from agent.audit.records import Body, Subject
from agent.placement.ledger import Reservation
from agent.placement.request import PlacementReply, PlacementRequest


def _subject(name: str, uuid: str, domid: int | None = None) -> Subject:
    return Subject(domain=name or None, uuid=uuid or None, domid=domid)


@dataclass(frozen=True, slots=True)
class PlaceFields:
    """The parts of a ``domain.place`` action record (for ``records.action`` or a
    recorder's ``action(...)``)."""

    params: dict[str, Any]
    subject: Subject
    outcome: str
    error: str | None
    extra: dict[str, Any]


def place_fields(req: PlacementRequest, reply: PlacementReply, *, source: str) -> PlaceFields:
    params = {
        "request": req.id,
        "name": req.name,
        "vcpus": req.vcpus,
        "memory_mib": req.memory_mib,
        "policy": req.policy,
        "preferred": sorted(req.preferred),
        "max_nodes": req.max_nodes,
        "nodes": list(reply.nodes),
        "reserved_mib": list(reply.memory_mib),
        "fallback": reply.fallback,
    }
    return PlaceFields(params, _subject(req.name, req.uuid), "ok" if reply.ok else "failed",
                       None if reply.ok else reply.reason,
                       {"source": source, "reason": reply.reason,
                        "shortfall_mib": reply.shortfall_mib})


def place_record(
    req: PlacementRequest, reply: PlacementReply, *, source: str, duration: float = 0.0,
    decision_seq: int | None = None,
) -> Body:
    """The ``domain.place`` action: what was asked, what was granted or why not."""
    f = place_fields(req, reply, source=source)
    return records.action("domain.place", f.params, f.subject, f.outcome, error=f.error,
                          duration=duration, decision_seq=decision_seq, **f.extra)


def reservation_record(what: str, res: Reservation, *, domid: int | None = None) -> Body:
    """An event: a reservation ``settled`` (its domain holds the memory),
    ``expired`` or was ``cancelled``."""
    if what not in ("settled", "expired", "cancelled"):
        raise ValueError(f"unknown reservation change {what!r}")
    data = {
        "request": res.request,
        "nodes": list(res.nodes),
        "memory_mib": list(res.memory_mib),
        "age_s": round(res.expires - res.created, 3) if what == "expired" else None,
    }
    return records.event(f"reservation.{what}", _subject(res.name, res.uuid, domid),
                         {k: v for k, v in data.items() if v is not None})
