"""Backend placement inside the agent: an extension of its loop (``agent.daemon.hooks``).

    hooks = BackendHooks(recorder, LinuxProcesses())   # the simulator: toolstack.dom0
    await nursery.start(hooks.run, xs, wake)           # watches dom0's backend subtree
    obs, events = await hooks.augment(obs)             # backends + backend.appear events
    handlers = hooks.handlers                          # {"backend.pin": ...}
    hooks.after_scan()                                 # nothing to do; for symmetry

``augment`` reads xenstore only when something may have changed, and then for
the guests concerned only: new guests, and guests whose backend entries
changed (the watch event's path names the guest). Every ``rescan_s`` (processes
can change without a xenstore write), or when a change names no guest (the
subtree itself, a lost watch), all guests are scanned, at most once every
``MIN_RESCAN_S``. Otherwise it re-reads the known backends' CPUs, which is
what re-placement after a guest's home node moves needs. A
pid that a xenstore entry names but that is not what the entry says is
recorded once as a ``backend.rejected`` event (a guest may write its own
qemu-pid) and never pinned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import replace

import trio

from agent.audit import records
from agent.backends.discovery import BACKEND_ROOT, Rejected
from agent.backends.dom0 import Dom0Cpus
from agent.backends.procs import ProcessTable
from agent.backends.tracker import BackendTracker, Scan
from agent.daemon.actions import Handler
from agent.daemon.hooks import ActionRecorder
from agent.rules.actions import Action, PinBackend
from agent.rules.events import Event, make_event
from agent.state import HostView, Observation
from agent.xenstore.client import Client, ConnectionLost
from agent.xenstore.wire import XenstoreError

log = logging.getLogger("xnuma.backends")

DEFAULT_RESCAN_S = 30.0
MIN_RESCAN_S = 1.0  # a busy backend subtree costs at most one full scan a second
MAX_REJECTED_REMEMBERED = 4096


class BackendHooks:
    def __init__(self, recorder: ActionRecorder, procs: ProcessTable, *,
                 rescan_s: float = DEFAULT_RESCAN_S, by_name: bool = True,
                 clock: Callable[[], float] = trio.current_time) -> None:
        self.recorder = recorder
        self.tracker = BackendTracker(procs, by_name=by_name)
        self.rescan_s = rescan_s
        self.clock = clock
        self.xs: Client | None = None
        self.scans = 0  # full scans (xenstore read), for tests and metrics
        self.partial_scans = 0  # scans of a few guests
        self._dirty = True  # every guest to scan (the first time, a lost watch)
        self._dirty_domids: set[int] = set()  # guests whose backend entries changed
        self._domids: frozenset[int] = frozenset()
        self._last_full = -float("inf")
        self._rejected: set[tuple[str, str]] = set()

    @property
    def handlers(self) -> dict[str, Handler]:
        return {PinBackend.TYPE: self.pin}

    async def run(self, xs: Client | None, wake: Callable[[], None], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow dom0's backend subtree (a change makes the next scan read it)."""
        self.xs = xs
        if xs is None:
            log.warning("no xenstore: backends are found by kernel thread name only")
            task_status.started()
            return
        async with xs.watch(BACKEND_ROOT) as events:
            task_status.started()
            async for event in events:
                domid = None if event.resync else guest_of(event.path)
                if domid is None:
                    self._dirty = True
                else:
                    self._dirty_domids.add(domid)
                wake()

    async def augment(self, obs: Observation) -> tuple[Observation, list[Event]]:
        domids = frozenset(d.domid for d in obs.domains)
        now = self.clock()
        scan: Scan | None = None
        since = now - self._last_full
        some = (domids - self._domids) | (self._dirty_domids & domids)
        try:
            if (self._dirty and since >= MIN_RESCAN_S) or since >= self.rescan_s:
                self._dirty = False
                self._dirty_domids.clear()
                scan = await self.tracker.scan(self.xs, domids)
                self.scans += 1
                self._last_full = now
                self._domids = domids
            elif some or domids != self._domids:
                self._dirty_domids -= some
                scan = await self.tracker.scan_some(self.xs, some, domids)
                self.partial_scans += 1
                self._domids = domids
        except (XenstoreError, ConnectionLost) as exc:
            log.warning("backend scan failed (%s); keeping the last one", exc)
            self._dirty = True
        if scan is None:
            scan = self.tracker.refresh()
        for r in scan.rejected:
            self._reject(r)
        events = [make_event("backend.appear", domid=b.domid, pid=b.pid, kind=b.kind)
                  for b in scan.appeared]
        return replace(obs, backends=scan.backends), events

    def _reject(self, r: Rejected) -> None:
        key = (r.source, r.value)
        if key in self._rejected:
            return
        if len(self._rejected) >= MAX_REJECTED_REMEMBERED:
            self._rejected.clear()
        self._rejected.add(key)
        log.warning("ignored %s = %s: %s", r.source, r.value, r.why)
        subject = {"domid": r.domid} if r.domid >= 0 else None
        self.recorder.append(records.event(
            "backend.rejected", subject, {"source": r.source, "value": r.value, "why": r.why}))

    async def pin(self, action: Action, seq: int | None, view: HostView) -> str:
        """The ``backend.pin`` handler."""
        await trio.lowlevel.checkpoint()
        assert isinstance(action, PinBackend)
        start = self.clock()
        result = self.tracker.pin(action, Dom0Cpus.from_view(view))
        self.recorder.action(PinBackend.TYPE, result.params(), result.subject(),
                             result.outcome, error=result.error or None,
                             duration=self.clock() - start, decision_seq=seq)
        return result.outcome

    def after_scan(self) -> None:
        return None


def guest_of(path: bytes) -> int | None:
    """The guest a backend entry's path names (``BACKEND_ROOT/<type>/<domid>/...``),
    or None (the subtree or a type's directory itself, or not a domid)."""
    text = path.decode("ascii", "replace")
    if not text.startswith(BACKEND_ROOT + "/"):
        return None
    parts = text[len(BACKEND_ROOT) + 1:].split("/")
    if len(parts) < 2 or not parts[1].isdigit() or len(parts[1]) > 5:
        return None
    return int(parts[1])
