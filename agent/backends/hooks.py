"""Backend placement inside the agent: an extension of its loop (``agent.daemon.hooks``).

    hooks = BackendHooks(recorder, LinuxProcesses())   # the simulator: toolstack.dom0
    await nursery.start(hooks.run, xs, wake)           # watch + rescan task (below)
    obs, events = await hooks.augment(obs)             # backends + backend.appear events
    handlers = hooks.handlers                          # {"backend.pin": ...}
    hooks.after_scan()                                 # nothing to do; for symmetry

xenstore is read by the extension's own rescan task (started by ``run``), never
inside the agent's scan: about 20 reads a guest, over a second of CPU at 1,000
guests, during which the loop would answer nothing. The task reads at its own
pace, yielding between guests, each rescan bounded in time (``rescan_budget_s``),
and backs off on its own when xenstored is slow or gone. It rescans the guests
``augment`` saw that it has not read yet, and those whose backend entries changed
(the watch event's path names the guest; then it wakes the loop); every
``rescan_s`` (processes can change without a xenstore write), or when a change
names no guest (the subtree itself, a reconnect's resync), all guests, at most
once every ``MIN_RESCAN_S``. Each rescan's result is published whole when it
ends; ``augment`` takes what was published since the last call (no I/O but the
known backends' CPUs read again, which is what re-placement after a guest's home
node moves needs), so that pins are decided against the scan's own snapshot.

A pid that a xenstore entry names but that is not what the entry says is
recorded once as a ``backend.rejected`` event (a guest may write its own
qemu-pid) and never pinned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace

import trio

from agent.audit import records
from agent.backends.discovery import BACKEND_ROOT, Discovery, DiscoveryRun, Rejected
from agent.backends.dom0 import Dom0Cpus
from agent.backends.procs import ProcessTable
from agent.backends.tracker import BackendTracker, Scan
from agent.daemon.actions import Handler
from agent.daemon.hooks import ActionRecorder
from agent.rules.actions import Action, PinBackend
from agent.rules.events import Event, make_event
from agent.state import BackendInfo, HostView, Observation
from agent.xenstore.client import Client, ConnectionLost
from agent.xenstore.wire import XenstoreError

log = logging.getLogger("xnuma.backends")

DEFAULT_RESCAN_S = 30.0
MIN_RESCAN_S = 1.0  # a busy backend subtree costs at most one full rescan a second
DEFAULT_RESCAN_BUDGET_S = 20.0  # one rescan at most this long (a hung xenstored)
MAX_BACKOFF_S = 30.0  # between rescans that failed or ran out of time
GUESTS_PER_CHECKPOINT = 1  # guests read between two yields to the loop
MAX_REJECTED_REMEMBERED = 4096


@dataclass(frozen=True, slots=True)
class Rescan:
    """One rescan's result, as the task publishes it: the guests read, and what was
    found for them (their backends replace those known before)."""

    domids: frozenset[int]
    found: Discovery
    full: bool


class BackendHooks:
    def __init__(self, recorder: ActionRecorder, procs: ProcessTable, *,
                 rescan_s: float = DEFAULT_RESCAN_S,
                 rescan_budget_s: float = DEFAULT_RESCAN_BUDGET_S, by_name: bool = True,
                 clock: Callable[[], float] = trio.current_time) -> None:
        if rescan_budget_s <= 0:
            raise ValueError(f"BackendHooks: rescan_budget_s must be > 0, got {rescan_budget_s}")
        self.recorder = recorder
        self.procs = procs
        self.by_name = by_name
        self.tracker = BackendTracker(procs, by_name=by_name)
        self.rescan_s = rescan_s
        self.rescan_budget_s = rescan_budget_s
        self.clock = clock
        self.xs: Client | None = None
        self.scans = 0  # full rescans published, for tests and metrics
        self.partial_scans = 0  # rescans of a few guests published
        self.cut_short = 0  # rescans that failed or ran out of time
        self.watch_events = 0  # dom0's backend subtree changes seen
        self.wakes = 0  # passes asked of the loop (once per rescan a change asked for)
        self.rescanning: str | None = None  # "full" or "partial" while one is under way
        self._live: frozenset[int] | None = None  # the guests the last augment saw
        self._read: set[int] = set()  # guests the task has read (or is reading)
        self._dirty = True  # every guest to read again (the first time, a resync)
        self._dirty_domids: set[int] = set()  # guests whose backend entries changed
        self._last_full = -float("inf")
        self._published: list[Rescan] = []  # since the last augment
        self._work = trio.Event()  # something for the task to look at
        self._rejected: set[tuple[str, str]] = set()

    @property
    def handlers(self) -> dict[str, Handler]:
        return {PinBackend.TYPE: self.pin}

    async def run(self, xs: Client | None, wake: Callable[[], None], *,
                  task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Follow dom0's backend subtree and rescan in a task of its own; ``wake``
        asks the loop for a pass once a rescan a change asked for is published."""
        self.xs = xs
        self._dirty = True  # a new client (or none): read everything again
        self._read.clear()
        async with trio.open_nursery() as nursery:
            if xs is None:
                log.warning("no xenstore: backends are found by kernel thread name only")
            else:
                await nursery.start(self._watch, xs)
            nursery.start_soon(self._rescans, xs, wake)
            task_status.started()

    async def _watch(self, xs: Client, *, task_status: trio.TaskStatus[None]) -> None:
        async with xs.watch(BACKEND_ROOT) as events:
            task_status.started()
            async for event in events:
                self.watch_events += 1
                domid = None if event.resync else guest_of(event.path)
                if domid is None:
                    self._dirty = True
                else:
                    self._dirty_domids.add(domid)
                self._work.set()

    # -- the rescan task ------------------------------------------------------------

    def _due(self) -> tuple[frozenset[int], bool, float]:
        """The guests to read now and whether that is a full rescan; else (nothing,
        False, how long until a full one is due)."""
        live = self._live
        if live is None:
            return frozenset(), False, float("inf")  # no snapshot yet
        since = self.clock() - self._last_full
        if (self._dirty and since >= MIN_RESCAN_S) or since >= self.rescan_s:
            return live, True, 0.0
        some = ((live - self._read) | self._dirty_domids) & live
        if some:
            return frozenset(some), False, 0.0
        return frozenset(), False, (MIN_RESCAN_S if self._dirty else self.rescan_s) - since

    async def _rescans(self, xs: Client | None, wake: Callable[[], None]) -> None:
        backoff = MIN_RESCAN_S
        while True:
            self._work = trio.Event()
            domids, full, wait = self._due()
            if not domids and not full:
                with trio.move_on_after(max(wait, 0.0)):
                    await self._work.wait()
                continue
            if full:
                self._dirty = False
                self._last_full = self.clock()
            self._dirty_domids -= domids
            self._read |= domids
            if await self._rescan(xs, domids, full):
                backoff = MIN_RESCAN_S
                if not full:
                    self.wakes += 1
                    wake()  # a change or a new guest: the loop takes it at once
            else:
                self.cut_short += 1
                log.warning("backend rescan of %d guests cut short; again in %.0f s",
                            len(domids), backoff)
                await trio.sleep(backoff)
                backoff = min(2 * backoff, MAX_BACKOFF_S)

    async def _rescan(self, xs: Client | None, domids: frozenset[int], full: bool) -> bool:
        """Read ``domids``' backends, yielding between guests, and publish what was
        read; False if it failed or ran out of time (the rest is read again later)."""
        run = DiscoveryRun(self.procs, by_name=self.by_name)
        todo = sorted(domids)
        done: list[int] = []
        ok = False
        self.rescanning = "full" if full else "partial"
        try:
            with trio.move_on_after(self.rescan_budget_s):
                for i, domid in enumerate(todo):
                    if xs is not None:
                        await run.guest(xs, domid)
                    done.append(domid)
                    if i % GUESTS_PER_CHECKPOINT == GUESTS_PER_CHECKPOINT - 1:
                        await trio.sleep(0)  # the loop's turn
                ok = True
        except (XenstoreError, ConnectionLost) as exc:
            log.warning("backend rescan failed (%s)", exc)
        finally:
            self.rescanning = None
        left = domids - frozenset(done)
        self._dirty_domids |= left
        self._read -= left
        run.by_name(done)
        # Whole, at once: a scan sees a rescan's result entirely or not at all.
        self._published.append(Rescan(frozenset(done), run.done(), full and ok))
        if full and ok:
            self.scans += 1
        else:
            self.partial_scans += 1
        return ok

    # -- in the agent's scan ----------------------------------------------------------

    async def augment(self, obs: Observation) -> tuple[Observation, list[Event]]:
        """``obs`` with the backends as last published (no xenstore read), and a
        ``backend.appear`` event for each one new since the last call."""
        await trio.lowlevel.checkpoint()
        domids = frozenset(d.domid for d in obs.domains)
        if domids != self._live:
            self._live = domids
            self._read &= domids
            if domids - self._read:
                self._work.set()
        published, self._published = self._published, []
        scan: Scan = self._apply(published, domids) if published else self.tracker.refresh()
        for r in scan.rejected:
            self._reject(r)
        events = [make_event("backend.appear", domid=b.domid, pid=b.pid, kind=b.kind)
                  for b in scan.appeared]
        return replace(obs, backends=scan.backends), events

    def _apply(self, published: list[Rescan], live: frozenset[int]) -> Scan:
        """The rescans published since the last scan, later ones over earlier ones."""
        domids: set[int] = set()
        by_guest: dict[int, list[BackendInfo]] = {}
        rejected: list[Rejected] = []
        for r in published:
            domids |= r.domids
            for d in r.domids:
                by_guest[d] = []
            for b in r.found.backends:
                by_guest.setdefault(b.domid, []).append(b)
            rejected += r.found.rejected
        found = Discovery([b for d in sorted(by_guest) for b in by_guest[d]], rejected)
        return self.tracker.apply(found, domids, live)

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
