"""Placement inside the agent: an extension of its loop (``agent.daemon.hooks``).

    hooks = PlacementHooks(recorder, socket_path="/run/xnuma/placement.sock")
    await nursery.start(hooks.run, xs, wake)      # servers; wake() asks for a scan
    obs, events = await hooks.augment(obs)        # each scan, before build_state
    handlers = hooks.handlers                     # {"domain.place": ...} for the actions
    hooks.after_scan()                            # each scan, after its actions ran

A request (socket or xenstore) becomes a ``placement.request`` event queued
here, and ``wake()`` makes the agent scan: ``augment`` hands the queued events
over, with ``reserved_mib`` filled in from the ledger (settled and expired
reservations recorded). The rules decide; the ``domain.place`` handler places,
reserves, records and answers the requester. A request no rule acted on in its
scan (no rule, suppressed, dry-run) is answered at once by ``after_scan``
rather than left to time out.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import trio

from agent.audit.records import Body
from agent.daemon.actions import Handler
from agent.daemon.hooks import ActionRecorder
from agent.placement.audit import place_fields, reservation_record
from agent.placement.placer import Placer
from agent.placement.server import serve_placement
from agent.placement.service import DEFAULT_ANSWER_TIMEOUT_S, RuledService
from agent.placement.xs_requests import XenstorePlacement
from agent.rules.actions import Action, PlaceDomain
from agent.rules.events import Event
from agent.state import HostView, Observation
from agent.xenstore.client import Client

log = logging.getLogger("xnuma.placement")

NOT_ACTED = ("no rule acted on this request (none listens to placement.request, or its "
             "decision was suppressed or dry-run: see the audit log)")


class PlacementSocketError(Exception):
    """The placement socket cannot be served; the message names it."""


class PlacementHooks:
    def __init__(
        self,
        recorder: ActionRecorder,
        *,
        placer: Placer | None = None,
        socket_path: str | None = None,
        xenstore_requests: bool = True,
        clock: Callable[[], float] = trio.current_time,
        answer_timeout_s: float = DEFAULT_ANSWER_TIMEOUT_S,
    ) -> None:
        self.recorder = recorder
        self.placer = placer if placer is not None else Placer()
        self.socket_path = socket_path
        self.xenstore_requests = xenstore_requests
        self.clock = clock
        self.service = RuledService(self.placer, lambda: self._view, self._emit, clock=clock,
                                    answer_timeout_s=answer_timeout_s, audit=self._audit)
        self._view: HostView | None = None
        self._wake: Callable[[], None] = lambda: None
        self._queued: list[Event] = []
        self._in_scan: list[str] = []
        self._answered: set[str] = set()

    @property
    def handlers(self) -> dict[str, Handler]:
        return {PlaceDomain.TYPE: self.place}

    def _audit(self, body: Body) -> None:
        self.recorder.append(body)

    async def _emit(self, event: Event) -> None:
        await trio.lowlevel.checkpoint()
        self._queued.append(event)
        self._wake()

    async def run(self, xs: Client | None, wake: Callable[[], None], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The socket and xenstore servers, until cancelled."""
        self._wake = wake
        async with trio.open_nursery() as nursery:
            if self.socket_path is not None:
                try:
                    await nursery.start(serve_placement, self.service, self.socket_path)
                except OSError as exc:
                    raise PlacementSocketError(
                        f"placement socket {self.socket_path}: cannot listen: "
                        f"{exc.strerror or exc}") from exc
            if xs is not None and self.xenstore_requests:
                await nursery.start(XenstorePlacement(xs, self.service, log=log.warning).run)
            task_status.started()

    async def augment(self, obs: Observation) -> tuple[Observation, list[Event]]:
        """Reservations into the observation; the requests queued since the last scan."""
        await trio.lowlevel.checkpoint()
        changes = self.placer.observe(obs.domains, obs.time)
        for s in changes.settled:
            self._audit(reservation_record("settled", s.reservation, domid=s.domid))
        for r in changes.expired:
            self._audit(reservation_record("expired", r))
        nodes = max((n.id for n in obs.topology.nodes), default=-1) + 1
        events, self._queued = self._queued, []
        self._in_scan = [e.request for e in events]
        return replace(obs, reserved_mib=self.placer.ledger.reserved_mib(nodes)), events

    async def place(self, action: Action, seq: int | None, view: HostView) -> str:
        """The ``domain.place`` handler."""
        await trio.lowlevel.checkpoint()
        assert isinstance(action, PlaceDomain)
        self._view = view
        start = self.clock()
        done = self.service.execute(action, seq)
        f = place_fields(done.request, done.reply, source=done.source)
        self.recorder.action(PlaceDomain.TYPE, f.params, f.subject, f.outcome, error=f.error,
                             duration=self.clock() - start, decision_seq=seq, **f.extra)
        self._answered.add(action.request)
        return f.outcome

    def after_scan(self) -> None:
        """Answer the requests of this scan that no action answered."""
        for request in self._in_scan:
            if request not in self._answered:
                self.service.decline(request, NOT_ACTED)
        self._in_scan = []
        self._answered.clear()
