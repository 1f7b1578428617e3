"""Finding, for each guest, the dom0 processes and kernel threads that serve it.

Where the pids are (xenstore), and how far each is trusted:

- ``/local/domain/0/backend/<type>/<domid>/<devid>/kthread-pid`` and
  ``.../queue-<n>/kthread-pid``: written by dom0's blkback (XenServer's patch)
  or tapback; dom0's own tree. Still checked against ``/proc``: a kernel
  thread named as that guest's backend, or a tapdisk/tapback process (a stale
  pid may have been reused by anything).
- ``/local/domain/0/libxl/<domid>/qdisk-backend-pid``: libxl's qdisk qemu, dom0's
  tree; must be a qemu whose command line says ``-xen-domid <domid>``.
- ``/local/domain/<domid>/qemu-pid`` and ``/local/domain/<domid>/image/
  device-model-pid``: under the guest's own directory, so never trusted: only
  a qemu (not a kernel thread) whose command line says ``-xen-domid <domid>``
  is taken; a guest pointing at anything else gets nothing pinned.
- blkback and netback kernel threads found by name in ``/proc``
  (``agent.backends.names``), for kernels that publish no pid.

Every value read is bounded: a pid is 1..4194304 in decimal, at most so many
types, devices and queues are walked. What is found and not trusted is
returned as ``Rejected`` with the reason, for the log.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from agent.backends.names import (
    backend_thread,
    is_backend_kthread_for,
    is_qemu_for,
    is_tap,
)
from agent.backends.procs import PID_MAX, ProcessInfo, ProcessTable
from agent.state import BackendInfo
from agent.xenstore.operations import Operations
from agent.xenstore.wire import XenstoreError

BACKEND_ROOT = "/local/domain/0/backend"
MAX_TYPES = 32
MAX_DEVICES = 256  # per guest and type
MAX_QUEUES = 64
MAX_PID_TEXT = 10


@dataclass(frozen=True, slots=True)
class Candidate:
    """A pid read from xenstore, before it is checked."""

    pid: int
    kind: str  # backend type (vbd, vif, qdisk...), "qemu" or "qdisk-backend"
    domid: int
    devid: int
    source: str  # the xenstore path it came from
    trusted_path: bool  # dom0's tree (True) or the guest's (False)


@dataclass(frozen=True, slots=True)
class Rejected:
    source: str
    value: str
    why: str
    domid: int = -1  # the guest the entry was about


@dataclass(slots=True)
class Discovery:
    backends: list[BackendInfo] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)


def parse_pid(value: bytes) -> int | None:
    text = value.strip()
    if not text or len(text) > MAX_PID_TEXT or not text.isdigit():
        return None
    pid = int(text)
    return pid if 0 < pid <= PID_MAX else None


async def _read(xs: Operations, path: str) -> bytes | None:
    try:
        return await xs.read(path)
    except XenstoreError as exc:
        if exc.name in ("ENOENT", "EACCES", "EINVAL"):
            return None
        raise


async def _list(xs: Operations, path: str, limit: int) -> list[str]:
    try:
        names = await xs.directory(path)
    except XenstoreError as exc:
        if exc.name in ("ENOENT", "EACCES", "EINVAL"):
            return []
        raise
    return [n.decode("ascii", "replace") for n in names[:limit]]


async def read_candidates(
    xs: Operations, domid: int, rejected: list[Rejected]
) -> list[Candidate]:
    """Every backend pid xenstore names for guest ``domid``."""
    found: list[Candidate] = []

    async def take(path: str, kind: str, devid: int, trusted: bool) -> None:
        value = await _read(xs, path)
        if value is None:
            return
        pid = parse_pid(value)
        if pid is None:
            rejected.append(Rejected(path, value[:40].decode("ascii", "replace"),
                                     "not a pid", domid))
            return
        found.append(Candidate(pid, kind, domid, devid, path, trusted))

    for kind in await _list(xs, BACKEND_ROOT, MAX_TYPES):
        if not kind.replace("_", "").isalnum():
            continue
        base = f"{BACKEND_ROOT}/{kind}/{domid}"
        for dev in await _list(xs, base, MAX_DEVICES):
            if not dev.isdigit():
                continue
            await take(f"{base}/{dev}/kthread-pid", kind, int(dev), True)
            for q in await _list(xs, f"{base}/{dev}", MAX_QUEUES + 64):
                if q.startswith("queue-") and q[6:].isdigit() and int(q[6:]) < MAX_QUEUES:
                    await take(f"{base}/{dev}/{q}/kthread-pid", kind, int(dev), True)
    await take(f"/local/domain/0/libxl/{domid}/qdisk-backend-pid", "qdisk", -1, True)
    await take(f"/local/domain/{domid}/qemu-pid", "qemu", -1, False)
    await take(f"/local/domain/{domid}/image/device-model-pid", "qemu", -1, False)
    return found


def check(c: Candidate, procs: ProcessTable) -> ProcessInfo | Rejected:
    """The process, if it is what its xenstore entry says it is."""
    info = procs.info(c.pid)
    if info is None:
        return Rejected(c.source, str(c.pid), "no such process", c.domid)
    if c.kind in ("qemu", "qdisk"):
        if is_qemu_for(info, c.domid):
            return info
        return Rejected(c.source, str(c.pid),
                        f"'{info.comm}' is not a qemu serving domain {c.domid}", c.domid)
    if is_backend_kthread_for(info, c.domid) or is_tap(info):
        return info
    what = "kernel thread" if info.kthread else "process"
    return Rejected(c.source, str(c.pid),
                    f"{what} '{info.comm}' is not a backend of domain {c.domid}", c.domid)


class DiscoveryRun:
    """``discover`` a guest at a time, so that a caller may yield between guests
    (the backend extension's rescan task): ``guest`` for each, then ``by_name``
    once, then ``done``. Each pid is taken once in a run."""

    def __init__(self, procs: ProcessTable, *, by_name: bool = True) -> None:
        self.procs = procs
        self.by_name_too = by_name
        self.result = Discovery()
        self._all_cpus = procs.cpus()
        self._seen: set[int] = set()

    def _add(self, info: ProcessInfo, kind: str, domid: int, devid: int) -> None:
        if info.pid in self._seen:
            return
        self._seen.add(info.pid)
        try:
            cpus = self.procs.affinity(info.pid)
        except OSError:
            return  # gone meanwhile
        self.result.backends.append(BackendInfo(
            pid=info.pid, kind=kind, domid=domid, devid=devid, kthread=info.kthread,
            cpus=frozenset() if cpus >= self._all_cpus else cpus))

    async def guest(self, xs: Operations, domid: int) -> None:
        """The backends xenstore names for guest ``domid`` (dom0 itself: none)."""
        if domid <= 0:
            return
        for c in await read_candidates(xs, domid, self.result.rejected):
            checked = check(c, self.procs)
            if isinstance(checked, Rejected):
                self.result.rejected.append(checked)
                continue
            self._add(checked, "tapdisk" if is_tap(checked) else c.kind, domid, c.devid)

    def by_name(self, domids: Iterable[int]) -> None:
        """The kernel threads named as backends of ``domids`` (if the run looks by name)."""
        want = {d for d in domids if d > 0}
        if not self.by_name_too or not want:
            return
        for pid in self.procs.pids():
            if pid in self._seen:
                continue
            info = self.procs.info(pid)
            if info is None or not info.kthread:
                continue
            name = backend_thread(info.comm)
            if name is not None and name.domid in want:
                self._add(info, name.kind, name.domid, name.devid)

    def done(self) -> Discovery:
        self.result.backends.sort(key=lambda b: (b.domid, b.pid))
        return self.result


async def discover(
    xs: Operations | None, procs: ProcessTable, domids: Iterable[int], *, by_name: bool = True
) -> Discovery:
    """The backends of the guests ``domids`` (dom0 itself is skipped), each once,
    with the CPUs it may run on now (empty: all of them). Without xenstore
    (``xs`` None) only the kernel threads found by name."""
    wanted = sorted({d for d in domids if d > 0})
    run = DiscoveryRun(procs, by_name=by_name)
    if xs is not None:
        for domid in wanted:
            await run.guest(xs, domid)
    run.by_name(wanted)
    return run.done()


def backend_pids(found: Sequence[BackendInfo]) -> frozenset[int]:
    return frozenset(b.pid for b in found)
