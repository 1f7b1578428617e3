"""The reservation ledger, request checks, and the audit records of placement."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.audit.reader import read_entries
from agent.audit.why import action_phrase
from agent.audit.writer import AuditWriter
from agent.hypervisor.model import DomainInfo, DomainState
from agent.placement.algorithm import HostCapacity, NodeCapacity
from agent.placement.audit import place_record, reservation_record
from agent.placement.ledger import LedgerFull, ReservationLedger
from agent.placement.placer import Placer
from agent.placement.request import (
    PlacementReply,
    PlacementRequest,
    RequestError,
    check_request,
    parse_memory,
    parse_nodes,
)

GIB = 1024
UUID = "6f1c2e0a-1b2c-4d5e-8f90-0123456789ab"


def dom(domid: int, name: str, memory_mib: int, uuid: str = "") -> DomainInfo:
    return DomainInfo(domid, name, uuid or f"00000000-0000-0000-0000-{domid:012d}",
                      DomainState.RUNNING, 2, memory_mib * 1024)


def reserve(ledger: ReservationLedger, request: str, now: float = 0.0, *, name: str = "",
            uuid: str = "", mib: int = 4 * GIB, domains: list[DomainInfo] | None = None) -> None:
    ledger.reserve(request, name=name, uuid=uuid, nodes=(0, 1), memory_mib=(mib, mib),
                   vcpus=(1, 1), now=now, domains=domains or [])


def test_reserved_sums_per_node_and_expiry() -> None:
    ledger = ReservationLedger(ttl_s=10.0)
    reserve(ledger, "a", 0.0)
    ledger.reserve("b", name="", uuid="", nodes=(1,), memory_mib=(GIB,), vcpus=(3,), now=5.0)
    assert ledger.reserved_mib(3) == (4 * GIB, 5 * GIB, 0)
    assert ledger.reserved_vcpus(2) == (1, 4)
    assert ledger.expire(9.999) == []
    assert [r.request for r in ledger.expire(10.0)] == ["a"]
    assert ledger.reserved_mib(2) == (0, GIB)
    assert ledger.release("b") is not None and ledger.release("b") is None
    assert len(ledger) == 0


def test_settle_by_uuid_or_name_once_the_memory_is_held() -> None:
    ledger = ReservationLedger()
    reserve(ledger, "by-uuid", name="web", uuid=UUID)
    reserve(ledger, "by-name", name="db")
    # Being built: 10 % of its memory so far; a namesake with another uuid.
    assert ledger.settle([dom(3, "db", 800), dom(4, "web", 8 * GIB)]) == []
    done = ledger.settle([dom(3, "db", 8 * GIB), dom(5, "x", 8 * GIB, uuid=UUID)])
    assert sorted((s.reservation.request, s.domid) for s in done) == [
        ("by-name", 3), ("by-uuid", 5)]
    assert len(ledger) == 0


def test_a_domain_that_existed_before_never_settles_it() -> None:
    ledger = ReservationLedger()
    old = dom(7, "web", 8 * GIB)
    reserve(ledger, "r", name="web", domains=[old, dom(8, "other", GIB)])
    assert ledger.get("r") is not None and ledger.get("r").not_domids == frozenset({7})  # type: ignore[union-attr]
    assert ledger.settle([old]) == []
    assert [s.domid for s in ledger.settle([old, dom(9, "web", 8 * GIB)])] == [9]


def test_one_domain_settles_one_reservation() -> None:
    ledger = ReservationLedger()
    reserve(ledger, "r1", name="web")
    reserve(ledger, "r2", name="web", now=1.0)
    assert [s.reservation.request for s in ledger.settle([dom(3, "web", 8 * GIB)])] == ["r1"]
    assert "r2" in ledger


def test_bounds() -> None:
    ledger = ReservationLedger(max_entries=2)
    reserve(ledger, "a")
    reserve(ledger, "b")
    reserve(ledger, "a", 1.0)  # replacing is not growing
    with pytest.raises(LedgerFull):
        reserve(ledger, "c")
    with pytest.raises(ValueError):
        ReservationLedger(ttl_s=0)
    with pytest.raises(ValueError):
        ledger.reserve("d", name="", uuid="", nodes=(0,), memory_mib=(1, 2), vcpus=(1,), now=0)


def test_placer_reports_a_full_ledger_as_a_refusal() -> None:
    h = HostCapacity((NodeCapacity(0, 4, 64 * GIB),), ((10,),))
    placer = Placer(ReservationLedger(max_entries=1))
    assert placer.place(PlacementRequest("a", 1, GIB), h, 0.0).ok
    reply = placer.place(PlacementRequest("b", 1, GIB), h, 0.0)
    assert not reply.ok and "1 reservations pending" in reply.reason
    # Asking again under the same id replaces the first answer's reservation.
    again = placer.place(PlacementRequest("a", 1, 2 * GIB), h, 0.0)
    assert again.ok and placer.ledger.reserved_mib(1) == (2 * GIB,)
    assert placer.cancel("a") is not None and placer.ledger.reserved_mib(1) == (0,)


# -- request checks ------------------------------------------------------------------


def test_check_request_accepts_a_full_request() -> None:
    r = check_request({"vcpus": 8, "memory_mib": 16 * GIB, "policy": "strict",
                       "preferred": [0, 1], "name": "web-1", "uuid": UUID, "max_nodes": 2},
                      "socket", "sock-1")
    assert r == PlacementRequest("sock-1", 8, 16 * GIB, "strict", frozenset({0, 1}),
                                 "web-1", UUID, 2)
    assert check_request({"vcpus": 1, "memory_mib": 1}, "x", "a").policy == "best-effort"


@pytest.mark.parametrize(("fields", "message"), [
    ({"memory_mib": 1}, "socket: missing field 'vcpus'"),
    ({"vcpus": 0, "memory_mib": 1}, "socket: vcpus = 0 is out of range 1..4096"),
    ({"vcpus": True, "memory_mib": 1}, "socket: vcpus must be an integer, got True"),
    ({"vcpus": 1, "memory_mib": 1 << 40}, "memory_mib = 1099511627776 is out of range"),
    ({"vcpus": 1, "memory_mib": 1, "policy": "lax"}, "policy must be one of best-effort, strict"),
    ({"vcpus": 1, "memory_mib": 1, "preferred": [0, 99]}, "preferred item 99 is not an integer"),
    ({"vcpus": 1, "memory_mib": 1, "preferred": list(range(65))}, "preferred has 65 items"),
    ({"vcpus": 1, "memory_mib": 1, "name": "a/b"}, "control character or '/'"),
    ({"vcpus": 1, "memory_mib": 1, "name": "x" * 129}, "name is 129 characters long"),
    ({"vcpus": 1, "memory_mib": 1, "uuid": "ABC"}, "uuid 'ABC' is not a lower-case UUID"),
    ({"vcpus": 1, "memory_mib": 1, "evil": 1}, "unknown field(s) evil"),
])
def test_check_request_names_the_bad_field(fields: dict[str, object], message: str) -> None:
    with pytest.raises(RequestError, match=None) as info:
        check_request(fields, "socket", "r")
    assert message in str(info.value)


def test_check_request_id() -> None:
    for bad in ("", "-x", "a/b", "x" * 65, "a b"):
        with pytest.raises(RequestError, match="request id"):
            check_request({"vcpus": 1, "memory_mib": 1}, "xs", bad)


def test_parse_memory_and_nodes() -> None:
    assert parse_memory("16G") == 16 * GIB
    assert parse_memory("512M") == 512 and parse_memory("512MiB") == 512
    assert parse_memory("1.5g") == 1536 and parse_memory("2048") == 2048
    assert parse_memory("1T") == 1024 * GIB and parse_memory("1536K") == 2
    for bad in ("", "G", "-1G", "1X", "0"):
        with pytest.raises(RequestError):
            parse_memory(bad)
    assert parse_nodes("0,1") == {0, 1} and parse_nodes("0-2,5") == {0, 1, 2, 5}
    for bad in ("", "a", "2-1", "64", "1,,2"):
        with pytest.raises(RequestError):
            parse_nodes(bad)


def test_reply_round_trips_and_rejects_garbage() -> None:
    reply = PlacementReply("r", True, "fits", (1,), frozenset({4, 5}), (GIB,), "strict",
                           False, 0, 120.0)
    assert PlacementReply.from_wire(reply.to_wire()) == reply
    with pytest.raises(RequestError, match="reply: nodes item 'x'"):
        PlacementReply.from_wire({**reply.to_wire(), "nodes": ["x"]})
    with pytest.raises(RequestError, match="expected a map"):
        PlacementReply.from_wire([1])


# -- audit ----------------------------------------------------------------------------


def test_audit_records_of_a_placement_and_its_reservation(tmp_path: Path) -> None:
    h = HostCapacity((NodeCapacity(0, 4, 2 * GIB), NodeCapacity(1, 4, 16 * GIB)),
                     ((10, 20), (20, 10)))
    placer = Placer(ReservationLedger(ttl_s=30.0))
    ok_req = PlacementRequest("r1", 2, 8 * GIB, name="web", uuid=UUID)
    ok = placer.place(ok_req, h, 0.0)
    bad_req = PlacementRequest("r2", 2, 8 * GIB, "strict", frozenset({0}), name="db")
    bad = placer.place(bad_req, h, 0.0)
    (expired,) = placer.observe([], now=30.0).expired
    log = tmp_path / "audit.log"
    with AuditWriter(log) as writer:
        writer.append(place_record(ok_req, ok, source="socket", duration=0.001))
        writer.append(place_record(bad_req, bad, source="xenstore"))
        writer.append(reservation_record("expired", expired))
    first, second, third = read_entries(log)
    assert first.body["type"] == "domain.place" and first.body["outcome"] == "ok"
    assert first.body["params"]["nodes"] == [1] and first.body["params"]["reserved_mib"] == [
        8 * GIB]
    assert first.subject == {"domain": "web", "uuid": UUID}
    assert action_phrase(first) == "web was placed on node 1"
    assert second.body["outcome"] == "failed" and "short of 6144 MiB" in second.body["error"]
    assert second.body["shortfall_mib"] == 6 * GIB and second.body["source"] == "xenstore"
    assert third.body["type"] == "reservation.expired"
    assert third.body["data"] == {"request": "r1", "nodes": [1], "memory_mib": [8 * GIB],
                                  "age_s": 30.0}
    with pytest.raises(ValueError):
        reservation_record("lost", expired)
