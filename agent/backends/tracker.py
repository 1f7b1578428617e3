"""What the agent calls: scan for backends, say which appeared, carry out pins.

    tracker = BackendTracker(LinuxProcesses())        # or the simulator's table
    scan = await tracker.scan(xs, domids)             # on backend subtree changes, ticks
    observation.backends = scan.backends              # -> BackendView in the host state
    for b in scan.appeared: emit backend.appear       # new pids since the last scan
    dom0 = Dom0Cpus.of(topology, dom0_vcpus)          # from Hypervisor.vcpus(0)
    result = tracker.pin(action, dom0)                # for a rule's backend.pin
    audit(result.record(duration=..., decision_seq=...))

Re-placement when a guest's home node changes needs nothing here: the next
scan reports the backend's CPUs, the host state shows it off its guest's new
home node, and the rule asks to pin it again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from agent.backends.discovery import Discovery, Rejected, discover
from agent.backends.dom0 import Dom0Cpus
from agent.backends.pin import BackendPinner, PinResult
from agent.backends.procs import ProcessTable
from agent.rules.actions import PinBackend
from agent.state import BackendInfo
from agent.xenstore.operations import Operations


@dataclass(slots=True)
class Scan:
    backends: tuple[BackendInfo, ...]
    appeared: list[BackendInfo] = field(default_factory=list)
    gone: list[BackendInfo] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


class BackendTracker:
    def __init__(self, procs: ProcessTable, *, by_name: bool = True) -> None:
        self.procs = procs
        self.by_name = by_name
        self.pinner = BackendPinner(procs)
        self._known: dict[tuple[int, int], BackendInfo] = {}  # (pid, domid) -> last seen

    async def scan(self, xs: Operations | None, domids: Iterable[int]) -> Scan:
        found: Discovery = await discover(xs, self.procs, domids, by_name=self.by_name)
        now = {(b.pid, b.domid): b for b in found.backends}
        appeared = [b for k, b in now.items() if k not in self._known]
        gone = [b for k, b in self._known.items() if k not in now]
        for b in gone:
            self.pinner.refused.pop(b.pid, None)
        self._known = now
        return Scan(tuple(found.backends), appeared, gone, found.rejected)

    async def scan_some(
        self, xs: Operations | None, domids: Iterable[int], live: Iterable[int]
    ) -> Scan:
        """``scan`` for the guests ``domids`` only (new ones, or whose backend entries
        changed); the others' backends as ``refresh`` finds them (CPUs read again),
        those of guests not in ``live`` dropped."""
        some = frozenset(domids)
        found = await discover(xs, self.procs, some & frozenset(live), by_name=self.by_name)
        return self.apply(found, some, live)

    def apply(self, found: Discovery, domids: Iterable[int], live: Iterable[int]) -> Scan:
        """A discovery of the guests ``domids`` made earlier (no I/O here but the
        CPUs read again): their backends are now ``found``'s; the others' as
        ``refresh`` finds them, those of guests not in ``live`` dropped."""
        some, alive = frozenset(domids), frozenset(live)
        before = set(self._known)
        kept = self.refresh()
        all_cpus = self.procs.cpus()
        fresh: dict[tuple[int, int], BackendInfo] = {}
        for b in found.backends:  # found a while ago: its CPUs as they are now
            seen = self._reread(b, all_cpus) if b.domid in alive else None
            if seen is not None:
                fresh[(b.pid, b.domid)] = seen
        now = {(b.pid, b.domid): b for b in kept.backends
               if b.domid not in some and b.domid in alive}
        gone = kept.gone + [b for k, b in self._known.items() if k not in now and k not in fresh]
        for b in gone:
            self.pinner.refused.pop(b.pid, None)
        now.update(fresh)
        self._known = now
        return Scan(tuple(sorted(now.values(), key=lambda b: (b.domid, b.pid))),
                    [b for k, b in fresh.items() if k not in before], gone,
                    [r for r in found.rejected if r.domid < 0 or r.domid in alive])

    def refresh(self) -> Scan:
        """The backends of the last scan, with their CPUs read again; gone ones
        dropped (no xenstore reads: cheap enough for every poll)."""
        all_cpus = self.procs.cpus()
        now: dict[tuple[int, int], BackendInfo] = {}
        gone: list[BackendInfo] = []
        for key, b in self._known.items():
            seen = self._reread(b, all_cpus)
            if seen is None:
                gone.append(b)
                self.pinner.refused.pop(b.pid, None)
                continue
            now[key] = seen
        self._known = now
        return Scan(tuple(sorted(now.values(), key=lambda b: (b.domid, b.pid))), [], gone)

    def _reread(self, b: BackendInfo, all_cpus: frozenset[int]) -> BackendInfo | None:
        """``b`` with the CPUs it may run on now; None if its process is gone."""
        try:
            cpus = self.procs.affinity(b.pid) if self.procs.info(b.pid) else None
        except OSError:
            cpus = None
        if cpus is None:
            return None
        mask = frozenset() if cpus >= all_cpus else cpus
        return b if b.cpus == mask else replace(b, cpus=mask)

    @property
    def backends(self) -> tuple[BackendInfo, ...]:
        return tuple(self._known.values())

    def pin(self, action: PinBackend, dom0: Dom0Cpus) -> PinResult:
        return self.pinner.pin(action.pid, action.domid, action.node, dom0)
