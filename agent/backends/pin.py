"""Binding a backend to dom0's CPUs on its guest's node (``sched_setaffinity``).

A user process (qemu, tapdisk) is bound thread by thread: its I/O threads
matter as much as its main one. A kernel thread may refuse (per-CPU threads
carry PF_NO_SETAFFINITY and get EINVAL): that is recorded, remembered so it is
not retried every minute, and the agent goes on. Before binding, the pid is
checked again to still be a backend of that guest (pids get reused).
"""

from __future__ import annotations

import errno
from dataclasses import dataclass, field
from typing import Any

from agent.audit import records
from agent.audit.records import Body, Subject
from agent.backends.dom0 import Dom0Cpus
from agent.backends.names import is_backend_kthread_for, is_qemu_for, is_tap
from agent.backends.procs import ProcessTable
from agent.hypervisor.model import format_cpuset

OK, FAILED, SKIPPED = "ok", "failed", "skipped"


@dataclass(frozen=True, slots=True)
class PinResult:
    pid: int
    domid: int
    node: int
    outcome: str  # ok | failed | skipped
    process: str = ""
    cpus: frozenset[int] = frozenset()
    threads: int = 0  # threads bound
    refused: tuple[int, ...] = ()  # thread ids that refused
    error: str = ""

    def params(self) -> dict[str, Any]:
        return {"pid": self.pid, "domid": self.domid, "node": self.node,
                "cpus": sorted(self.cpus), "process": self.process,
                "threads": self.threads, "refused": list(self.refused)}

    def subject(self) -> Subject:
        return Subject(domid=self.domid, backend=f"{self.process or '?'}/{self.pid}")

    def record(self, *, duration: float = 0.0, decision_seq: int | None = None) -> Body:
        """The ``backend.pin`` audit record."""
        return records.action("backend.pin", self.params(), self.subject(), self.outcome,
                              error=self.error or None, duration=duration,
                              decision_seq=decision_seq)


@dataclass(slots=True)
class BackendPinner:
    procs: ProcessTable
    # pid -> comm of kernel threads that refused: not asked again while that
    # thread lives (a new process under the pid has another comm).
    refused: dict[int, str] = field(default_factory=dict)

    def pin(self, pid: int, domid: int, node: int, dom0: Dom0Cpus) -> PinResult:
        cpus = dom0.cpus_for(node)
        if not cpus:
            return PinResult(pid, domid, node, SKIPPED, error=dom0.impossible(node))
        info = self.procs.info(pid)
        if info is None:
            return PinResult(pid, domid, node, SKIPPED, error="the process is gone")
        if not (is_backend_kthread_for(info, domid) or is_tap(info)
                or is_qemu_for(info, domid)):
            return PinResult(pid, domid, node, SKIPPED, process=info.comm,
                             error=f"pid {pid} is now '{info.comm}', not a backend of "
                             f"domain {domid}")
        if self.refused.get(pid) == info.comm:
            return PinResult(pid, domid, node, SKIPPED, process=info.comm, cpus=cpus,
                             error="the kernel refused to move this thread before")
        tids = self.procs.threads(pid) or [pid]
        done = 0
        refused: list[int] = []
        errors: list[str] = []
        for tid in tids:
            try:
                self.procs.set_affinity(tid, cpus)
                done += 1
            except OSError as exc:
                if exc.errno == errno.ESRCH:
                    continue  # a thread that just ended
                refused.append(tid)
                name = errno.errorcode.get(exc.errno or 0, str(exc.errno))
                errors.append(f"thread {tid}: {name} ({exc.strerror or exc})")
        if done == 0:
            if info.kthread:
                self.refused[pid] = info.comm
            return PinResult(pid, domid, node, FAILED, info.comm, cpus, 0, tuple(refused),
                             f"could not bind to CPUs {format_cpuset(cpus)}: "
                             + "; ".join(errors or ["no thread left"]))
        error = ("; ".join(errors) + " (the other threads were bound)") if errors else ""
        return PinResult(pid, domid, node, OK, info.comm, cpus, done, tuple(refused), error)
