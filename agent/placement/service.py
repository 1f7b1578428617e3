"""Where placement requests from the socket and from xenstore are answered.

Both servers call a ``PlacementService``. Two of them:

- ``DirectService`` answers at once with a ``Placer`` against the latest host
  state (standalone use, tests, a host without the rule engine);
- ``RuledService`` is the agent's: ``place`` turns the request into a
  ``placement.request`` event (``emit``), and waits until the agent carries
  out the ``domain.place`` action a rule decided (``execute``) or, if no rule
  acts, gives up after ``answer_timeout_s`` with a refusal that says so.
"""

from __future__ import annotations

import itertools
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

import trio

from agent.audit.records import Body
from agent.placement.algorithm import HostCapacity
from agent.placement.audit import place_record, reservation_record
from agent.placement.ledger import Reservation
from agent.placement.placer import Placer
from agent.placement.request import PlacementReply, PlacementRequest
from agent.rules.actions import PlaceDomain
from agent.rules.events import Event, make_event
from agent.state import HostView

HostSource = Callable[[], HostView | HostCapacity | None]
AuditSink = Callable[[Body], None]
DEFAULT_ANSWER_TIMEOUT_S = 10.0
DEFAULT_MAX_PENDING = 256


class PlacementService(Protocol):
    async def place(self, request: PlacementRequest, source: str) -> PlacementReply: ...

    def cancel(self, request_id: str) -> Reservation | None: ...

    def reservations(self) -> Sequence[Reservation]: ...

    def now(self) -> float: ...


class _Base:
    def __init__(self, placer: Placer, host: HostSource, *,
                 clock: Callable[[], float] = trio.current_time,
                 audit: AuditSink | None = None) -> None:
        self.placer = placer
        self.host = host
        self.clock = clock
        self.audit = audit

    def now(self) -> float:
        return self.clock()

    def reservations(self) -> Sequence[Reservation]:
        return list(self.placer.ledger)

    def cancel(self, request_id: str) -> Reservation | None:
        gone = self.placer.cancel(request_id)
        if gone is not None and self.audit is not None:
            self.audit(reservation_record("cancelled", gone))
        return gone

    def _place_now(self, request: PlacementRequest) -> PlacementReply:
        host = self.host()
        if host is None:
            return PlacementReply(request.id, False, "the agent has not observed the host yet",
                                  policy=request.policy)
        return self.placer.place(request, host, self.clock())


class DirectService(_Base):
    """Answers each request at once, and records it."""

    async def place(self, request: PlacementRequest, source: str) -> PlacementReply:
        await trio.lowlevel.checkpoint()
        start = self.clock()
        reply = self._place_now(request)
        if self.audit is not None:
            self.audit(place_record(request, reply, source=source,
                                    duration=self.clock() - start))
        return reply


@dataclass(slots=True)
class _Waiting:
    request: PlacementRequest
    source: str
    done: trio.Event
    reply: PlacementReply | None = None


@dataclass(frozen=True, slots=True)
class Executed:
    """A ``domain.place`` action carried out: the request as the rule shaped
    it, the reply sent, and the audit record (the caller adds its decision seq
    or writes it as is)."""

    request: PlacementRequest
    reply: PlacementReply
    record: Body
    source: str


class RuledService(_Base):
    """Requests go through the rule engine; see the module docstring."""

    def __init__(self, placer: Placer, host: HostSource,
                 emit: Callable[[Event], Awaitable[None]], *,
                 clock: Callable[[], float] = trio.current_time,
                 answer_timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S,
                 max_pending: int = DEFAULT_MAX_PENDING,
                 audit: AuditSink | None = None) -> None:
        # ``audit`` records cancellations; placements are recorded by the agent.
        super().__init__(placer, host, clock=clock, audit=audit)
        self.emit = emit
        self.answer_timeout_s = answer_timeout_s
        self.max_pending = max_pending
        self._waiting: dict[str, _Waiting] = {}

    @property
    def pending(self) -> int:
        return len(self._waiting)

    async def place(self, request: PlacementRequest, source: str) -> PlacementReply:
        if request.id in self._waiting:
            return PlacementReply(request.id, False, f"request {request.id} is being answered",
                                  policy=request.policy)
        if len(self._waiting) >= self.max_pending:
            return PlacementReply(request.id, False, f"{len(self._waiting)} requests pending "
                                  f"(at most {self.max_pending}); try again",
                                  policy=request.policy)
        waiting = self._waiting[request.id] = _Waiting(request, source, trio.Event())
        try:
            await self.emit(request_event(request))
            with trio.move_on_after(self.answer_timeout_s):
                await waiting.done.wait()
        finally:
            del self._waiting[request.id]
        if waiting.reply is not None:
            return waiting.reply
        return PlacementReply(request.id, False, f"no rule answered within "
                              f"{self.answer_timeout_s:g} s (is a rule on placement.request "
                              "loaded and not suppressed?)", policy=request.policy)

    def decline(self, request_id: str, why: str) -> bool:
        """Answer a waiting requester with a refusal (a rule's decision was
        suppressed or dry-run, say) instead of letting it time out."""
        waiting = self._waiting.get(request_id)
        if waiting is None or waiting.reply is not None:
            return False
        waiting.reply = PlacementReply(request_id, False, why, policy=waiting.request.policy)
        waiting.done.set()
        return True

    def execute(self, action: PlaceDomain, decision_seq: int | None = None) -> Executed:
        """Carry out a rule's ``domain.place``: place, reserve, answer the waiting
        requester (if still there). The rule's policy, preferred nodes and
        max_nodes win over the request's."""
        waiting = self._waiting.get(action.request)
        base = waiting.request if waiting is not None else PlacementRequest(
            action.request, action.vcpus, action.memory_mib, name=action.name)
        request = replace(base, vcpus=action.vcpus, memory_mib=action.memory_mib,
                          policy=action.policy, preferred=action.preferred,
                          max_nodes=action.max_nodes, name=action.name or base.name)
        start = self.clock()
        reply = self._place_now(request)
        if waiting is not None and waiting.reply is None:
            waiting.reply = reply
            waiting.done.set()
        source = waiting.source if waiting is not None else "rule"
        record = place_record(request, reply, source=source, duration=self.clock() - start,
                              decision_seq=decision_seq)
        return Executed(request, reply, record, source)


def request_event(request: PlacementRequest) -> Event:
    """The ``placement.request`` event the rules see."""
    return make_event("placement.request", request=request.id, name=request.name,
                      vcpus=request.vcpus, memory_mib=request.memory_mib,
                      policy=request.policy, preferred=request.preferred)


_counter = itertools.count(1)


def next_id(prefix: str) -> str:
    """A fresh request id for a requester that gave none."""
    return f"{prefix}{next(_counter)}"
