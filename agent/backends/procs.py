"""dom0's processes and threads, as backend placement needs them.

``ProcessTable`` is the interface; ``LinuxProcesses`` reads ``/proc`` and
calls ``sched_setaffinity``; the simulator has its own table of simulated
backend threads (``agent.sim.dom0_procs``). CPU numbers are dom0's Linux CPUs,
which are dom0's vCPU ids.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol

PF_KTHREAD = 0x00200000  # include/linux/sched.h
PID_MAX = 4_194_304  # PID_MAX_LIMIT on 64-bit Linux
MAX_CMDLINE = 64 * 1024
MAX_ARGS = 1024


@dataclass(frozen=True, slots=True)
class ProcessInfo:
    pid: int
    comm: str  # at most 15 characters (TASK_COMM_LEN): names may be cut short
    kthread: bool
    cmdline: tuple[str, ...] = ()  # empty for kernel threads


class ProcessTable(Protocol):
    def info(self, pid: int) -> ProcessInfo | None:
        """The process or thread, None if there is none with that id."""
        ...

    def pids(self) -> Iterable[int]:
        """Every process (thread-group leader and kernel thread)."""
        ...

    def threads(self, pid: int) -> list[int]:
        """The thread ids of a process (itself included); [] if gone."""
        ...

    def affinity(self, tid: int) -> frozenset[int]:
        """CPUs the thread may run on (``OSError`` if it is gone)."""
        ...

    def set_affinity(self, tid: int, cpus: frozenset[int]) -> None:
        """Bind the thread to ``cpus``; ``OSError`` if refused (EINVAL for a
        kernel thread bound to its CPU, EPERM, ESRCH...)."""
        ...

    def cpus(self) -> frozenset[int]:
        """CPUs the OS runs on (dom0's vCPUs)."""
        ...


class LinuxProcesses:
    """``ProcessTable`` on Linux ``/proc`` (``proc_root`` for tests)."""

    def __init__(self, proc_root: str = "/proc",
                 sys_cpu_online: str = "/sys/devices/system/cpu/online") -> None:
        self.root = proc_root
        self.sys_cpu_online = sys_cpu_online

    def info(self, pid: int) -> ProcessInfo | None:
        if not 0 < pid <= PID_MAX:
            return None
        try:
            with open(f"{self.root}/{pid}/stat", "rb") as f:
                stat = f.read(4096)
        except OSError:
            return None
        parsed = parse_stat(stat)
        if parsed is None:
            return None
        comm, flags = parsed
        kthread = bool(flags & PF_KTHREAD)
        cmdline: tuple[str, ...] = ()
        if not kthread:
            try:
                with open(f"{self.root}/{pid}/cmdline", "rb") as f:
                    raw = f.read(MAX_CMDLINE)
            except OSError:
                return None
            cmdline = tuple(a.decode("utf-8", "replace")
                            for a in raw.split(b"\0")[:MAX_ARGS] if a)
        return ProcessInfo(pid, comm, kthread, cmdline)

    def pids(self) -> Iterable[int]:
        try:
            names = os.listdir(self.root)
        except OSError:
            return []
        return sorted(int(n) for n in names if n.isdigit())

    def threads(self, pid: int) -> list[int]:
        try:
            return sorted(int(n) for n in os.listdir(f"{self.root}/{pid}/task") if n.isdigit())
        except OSError:
            return []

    def affinity(self, tid: int) -> frozenset[int]:
        return frozenset(os.sched_getaffinity(tid))

    def set_affinity(self, tid: int, cpus: frozenset[int]) -> None:
        os.sched_setaffinity(tid, cpus)

    def cpus(self) -> frozenset[int]:
        try:
            with open(self.sys_cpu_online) as f:
                return parse_cpu_list(f.read())
        except (OSError, ValueError):
            return frozenset(range(os.cpu_count() or 1))


def parse_stat(stat: bytes) -> tuple[str, int] | None:
    """``(comm, flags)`` from ``/proc/<pid>/stat``; the comm is between the first
    ``(`` and the last ``)`` (it may itself hold parentheses and spaces)."""
    start, end = stat.find(b"("), stat.rfind(b")")
    if start < 0 or end < start:
        return None
    fields = stat[end + 2:].split()
    # after the comm: state ppid pgrp session tty_nr tpgid flags ...
    if len(fields) < 7 or not fields[6].isdigit():
        return None
    return stat[start + 1:end].decode("utf-8", "replace"), int(fields[6])


def parse_cpu_list(text: str) -> frozenset[int]:
    """``0-3,8`` (sysfs cpu lists) -> CPU ids."""
    cpus: set[int] = set()
    for part in text.strip().split(","):
        if not part:
            continue
        lo, sep, hi = part.partition("-")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first:
            raise ValueError(f"descending range {part!r}")
        cpus.update(range(first, last + 1))
    return frozenset(cpus)
