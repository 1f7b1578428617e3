"""dom0 backends: names, /proc parsing, dom0's CPUs per node, discovery from xenstore with
every trust check, and pinning (refusals included) on a table of processes."""

from __future__ import annotations

import errno
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.backends.discovery import Rejected, discover, parse_pid
from agent.backends.dom0 import Dom0Cpus, suggest_pins
from agent.backends.names import ThreadName, backend_thread, is_qemu_for
from agent.backends.pin import BackendPinner
from agent.backends.procs import LinuxProcesses, ProcessInfo, parse_cpu_list, parse_stat
from agent.backends.tracker import BackendTracker
from agent.hypervisor.model import Node, Topology, VcpuInfo, VcpuState
from agent.rules.actions import PinBackend
from agent.state import BackendInfo
from agent.xenstore.client import open_client
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream

# -- names ------------------------------------------------------------------------------


@pytest.mark.parametrize(("comm", "expected"), [
    ("blkback.5.xvda", ThreadName("vbd", 5, -1)),
    ("blkback.5.xvda-", ThreadName("vbd", 5, -1)),  # "blkback.5.xvda-0" cut to 15
    ("blkback.12345.x", ThreadName("vbd", 12345, -1)),
    ("blkback.1234567", None),  # the domid may be cut
    ("blkback.123456.", None),  # nothing after the domid: it may be cut too
    ("vif5.0-q0-guest", ThreadName("vif", 5, 0)),  # vif5.0-q0-guest-rx
    ("vif5.0-q1-deall", ThreadName("vif", 5, 0)),
    ("vif7.2", ThreadName("vif", 7, 2)),  # single-queue kernels
    ("vif12345.10-q1", ThreadName("vif", 12345, 10)),
    ("vif123456.12345", None),  # the devid runs to the cut
    ("vif5", None), ("kworker/0:1", None), ("blkback", None), ("qemu-system-i38", None),
])
def test_backend_thread_names(comm: str, expected: ThreadName | None) -> None:
    assert backend_thread(comm) == expected


def test_qemu_must_name_its_domain() -> None:
    qemu = ProcessInfo(10, "qemu-system-i38", False,
                       ("/usr/bin/qemu-system-i386", "-xen-domid", "5", "-xen-attach"))
    assert is_qemu_for(qemu, 5) and not is_qemu_for(qemu, 6)
    assert not is_qemu_for(ProcessInfo(10, "qemu-dm-5", False, ("qemu", "-xen-domid")), 5)
    assert not is_qemu_for(ProcessInfo(10, "bash", False, ("bash", "-xen-domid", "5")), 5)
    assert not is_qemu_for(ProcessInfo(10, "qemu", True, ()), 5)


# -- /proc ------------------------------------------------------------------------------


def fake_proc(root: Path, pid: int, comm: str, flags: int, cmdline: bytes = b"",
              tids: Iterable[int] = ()) -> None:
    d = root / str(pid)
    (d / "task").mkdir(parents=True)
    (d / "stat").write_bytes(f"{pid} ({comm}) S 2 0 0 0 -1 {flags} 0 0 0 0".encode())
    (d / "cmdline").write_bytes(cmdline)
    for tid in (pid, *tids):
        (d / "task" / str(tid)).mkdir()


def test_linux_processes_reads_proc(tmp_path: Path) -> None:
    fake_proc(tmp_path, 7, "blkback.3.xvda", 0x00208040)
    fake_proc(tmp_path, 42, "qemu (x) y", 0x00400100, b"qemu\0-xen-domid\x003\0", tids=(43, 44))
    (tmp_path / "self").mkdir()
    procs = LinuxProcesses(str(tmp_path), str(tmp_path / "online"))
    assert list(procs.pids()) == [7, 42]
    assert procs.info(7) == ProcessInfo(7, "blkback.3.xvda", True, ())
    assert procs.info(42) == ProcessInfo(42, "qemu (x) y", False, ("qemu", "-xen-domid", "3"))
    assert procs.threads(42) == [42, 43, 44] and procs.threads(99) == []
    assert procs.info(99) is None and procs.info(0) is None and procs.info(1 << 30) is None
    (tmp_path / "online").write_text("0-3,6\n")
    assert procs.cpus() == {0, 1, 2, 3, 6}


def test_parse_stat_and_cpu_lists() -> None:
    assert parse_stat(b"1 (a) b) S 0 1 1 0 -1 4194560 0") == ("a) b", 4194560)
    assert parse_stat(b"garbage") is None
    assert parse_stat(b"1 (x) S 0 1") is None
    assert parse_cpu_list("0-1,4\n") == {0, 1, 4} and parse_cpu_list("") == frozenset()
    with pytest.raises(ValueError):
        parse_cpu_list("3-1")


def test_parse_pid_bounds() -> None:
    assert parse_pid(b"1234") == 1234 and parse_pid(b" 7\n") == 7
    for bad in (b"", b"0", b"-5", b"12a", b"99999999999", b"4194305", b"1e3"):
        assert parse_pid(bad) is None


# -- dom0's CPUs ------------------------------------------------------------------------

TOPO = Topology((Node(0, frozenset({0, 1, 2, 3}), 1 << 24, 1 << 23),
                 Node(1, frozenset({4, 5, 6, 7}), 1 << 24, 1 << 23)), ((10, 20), (20, 10)))


def dom0_vcpu(v: int, hard: Iterable[int]) -> VcpuInfo:
    return VcpuInfo(0, v, min(hard), VcpuState.RUNNING, 0, frozenset(hard), frozenset(hard))


def test_dom0_cpus_by_node() -> None:
    d = Dom0Cpus.of(TOPO, [dom0_vcpu(0, {0}), dom0_vcpu(1, {5}), dom0_vcpu(2, {1, 2}),
                           dom0_vcpu(3, range(8))])
    assert d.by_node == {0: {0, 2}, 1: {1}} and d.unbound == (3,)
    assert d.node_bound and d.advice == "" and d.impossible(1) == ""
    assert d.node_of(frozenset({0, 2})) == 0 and d.node_of(frozenset({1})) == 1
    assert d.node_of(frozenset({0, 1})) == -1 and d.node_of(frozenset({3})) == -1
    assert d.node_of(frozenset()) == -1


def test_unpinned_dom0_makes_placement_impossible_and_says_how_to_fix_it() -> None:
    d = Dom0Cpus.of(TOPO, [dom0_vcpu(v, range(8)) for v in range(4)])
    assert not d.node_bound and d.cpus_for(0) == frozenset()
    why = d.impossible(0)
    assert why.startswith("backend placement is impossible: no dom0 vCPU is bound to a NUMA "
                          "node (dom0 vCPUs 0-3 may each run on several nodes)")
    assert ("xl vcpu-pin Domain-0 0 0; xl vcpu-pin Domain-0 1 4; xl vcpu-pin Domain-0 2 1; "
            "xl vcpu-pin Domain-0 3 5") in why
    assert "dom0_vcpus_pin" in why
    # dom0_vcpus_pin with 4 vCPUs: pCPUs 0-3, all on node 0.
    d = Dom0Cpus.of(TOPO, [dom0_vcpu(v, {v}) for v in range(4)])
    assert d.impossible(0) == ""
    assert d.impossible(1).startswith("backend placement on node 1 is impossible: no dom0 "
                                      "vCPU is bound to it (dom0 vCPUs by node: node 0: 0-3)")
    d = Dom0Cpus.of(TOPO, [dom0_vcpu(0, range(8))])
    assert "boot Xen with dom0_max_vcpus=2 or more" in d.impossible(1)


def test_suggest_pins_round_robin() -> None:
    assert suggest_pins(TOPO, 5) == [(0, 0), (1, 4), (2, 1), (3, 5), (4, 2)]


# -- a process table for unit tests --------------------------------------------------------


@dataclass
class FakeProcs:
    procs: dict[int, ProcessInfo] = field(default_factory=dict)
    tasks: dict[int, list[int]] = field(default_factory=dict)
    masks: dict[int, frozenset[int]] = field(default_factory=dict)
    refuse: dict[int, int] = field(default_factory=dict)  # tid -> errno
    all_cpus: frozenset[int] = frozenset({0, 1, 2, 3})

    def add(self, pid: int, comm: str, kthread: bool = False, cmdline: tuple[str, ...] = (),
            threads: tuple[int, ...] = ()) -> int:
        self.procs[pid] = ProcessInfo(pid, comm, kthread, cmdline)
        self.tasks[pid] = [pid, *threads]
        for t in self.tasks[pid]:
            self.masks[t] = self.all_cpus
        return pid

    def info(self, pid: int) -> ProcessInfo | None:
        return self.procs.get(pid)

    def pids(self) -> list[int]:
        return sorted(self.procs)

    def threads(self, pid: int) -> list[int]:
        return list(self.tasks.get(pid, []))

    def affinity(self, tid: int) -> frozenset[int]:
        if tid not in self.masks:
            raise OSError(errno.ESRCH, "No such process")
        return self.masks[tid]

    def set_affinity(self, tid: int, cpus: frozenset[int]) -> None:
        if tid in self.refuse:
            raise OSError(self.refuse[tid], "refused")
        self.affinity(tid)
        self.masks[tid] = cpus

    def cpus(self) -> frozenset[int]:
        return self.all_cpus


def qemu(domid: int) -> tuple[str, ...]:
    return ("/usr/lib/xen/bin/qemu-system-i386", "-xen-domid", str(domid), "-xen-attach")


# -- discovery from xenstore -------------------------------------------------------------


async def discover_with(writes: dict[str, str], procs: FakeProcs, domids: list[int],
                        by_name: bool = True) -> tuple[list[BackendInfo], list[Rejected]]:
    hub = XenstoreHub.of(XenstoreDaemon())
    s = hub.session()
    for path, value in writes.items():
        s.write(path, value)
    async with trio.open_nursery() as nursery:
        async def connect() -> trio.abc.Stream:
            mine, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_stream, hub, theirs)
            return mine

        async with open_client(connect) as xs:
            found = await discover(xs, procs, domids, by_name=by_name)
        nursery.cancel_scope.cancel()
    return found.backends, found.rejected


BE = "/local/domain/0/backend"


async def test_discovery_takes_what_checks_out_and_says_why_not_the_rest(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = FakeProcs()
    p.add(100, "blkback.5.xvda", kthread=True)
    p.add(101, "tapdisk")
    p.add(102, "qemu-system-i38", cmdline=qemu(0), threads=(103,))  # qdisk for 5: wrong domid
    p.add(104, "qemu-system-i38", cmdline=qemu(5))
    p.add(105, "qemu-dm-6", cmdline=qemu(6))
    p.add(106, "sshd", cmdline=("sshd",))
    p.add(107, "vif5.0-q0-guest", kthread=True)  # found by name only
    p.add(108, "vif6.0-q0-guest", kthread=True)
    p.add(109, "kworker/1:2", kthread=True)
    p.add(110, "blkback.6.xvda", kthread=True)
    backends, rejected = await discover_with({
        f"{BE}/vbd/5/51712/kthread-pid": "100",
        f"{BE}/vbd3/5/51728/queue-0/kthread-pid": "101",
        f"{BE}/vbd3/5/51728/queue-1/kthread-pid": "999",  # gone
        "/local/domain/0/libxl/5/qdisk-backend-pid": "102",
        "/local/domain/5/image/device-model-pid": "104",
        "/local/domain/5/qemu-pid": "105",  # the guest points at domain 6's qemu
        f"{BE}/vbd/6/51712/kthread-pid": "106",  # a reused pid
        "/local/domain/6/qemu-pid": "12abc",
        f"{BE}/vif/6/0/kthread-pid": "109",  # a kernel thread of no backend
    }, p, [0, 5, 6])
    assert [(b.pid, b.kind, b.domid, b.devid, b.kthread) for b in backends] == [
        (100, "vbd", 5, 51712, True),
        (101, "tapdisk", 5, 51728, False),
        (104, "qemu", 5, -1, False),
        (107, "vif", 5, 0, True),
        (108, "vif", 6, 0, True),
        (110, "vbd", 6, -1, True),
    ]
    assert all(b.cpus == frozenset() for b in backends)  # free to run anywhere
    assert {(r.source, r.value, r.why) for r in rejected} == {
        (f"{BE}/vbd3/5/51728/queue-1/kthread-pid", "999", "no such process"),
        ("/local/domain/0/libxl/5/qdisk-backend-pid", "102",
         "'qemu-system-i38' is not a qemu serving domain 5"),
        ("/local/domain/5/qemu-pid", "105", "'qemu-dm-6' is not a qemu serving domain 5"),
        (f"{BE}/vbd/6/51712/kthread-pid", "106", "process 'sshd' is not a backend of domain 6"),
        ("/local/domain/6/qemu-pid", "12abc", "not a pid"),
        (f"{BE}/vif/6/0/kthread-pid", "109",
         "kernel thread 'kworker/1:2' is not a backend of domain 6"),
    }
    # Without the name scan, the netback threads are not found; guests not asked for neither.
    backends, _ = await discover_with({f"{BE}/vbd/5/51712/kthread-pid": "100"}, p, [6],
                                      by_name=False)
    assert backends == []


async def test_tracker_reports_what_appeared_and_went(
    autojump_clock: trio.testing.MockClock,
) -> None:
    p = FakeProcs()
    p.add(100, "blkback.5.xvda", kthread=True)
    tracker = BackendTracker(p)
    hub = XenstoreHub.of(XenstoreDaemon())
    s = hub.session()
    async with trio.open_nursery() as nursery:
        async def connect() -> trio.abc.Stream:
            mine, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_stream, hub, theirs)
            return mine

        async with open_client(connect) as xs:
            first = await tracker.scan(xs, [5])
            assert [b.pid for b in first.appeared] == [100] and first.gone == []
            p.add(101, "vif5.0-q0-guest", kthread=True)
            p.masks[100] = frozenset({2, 3})
            second = await tracker.scan(xs, [5])
            assert [b.pid for b in second.appeared] == [101]
            assert [(b.pid, b.cpus) for b in second.backends] == [
                (100, frozenset({2, 3})), (101, frozenset())]
            del p.procs[100]
            third = await tracker.scan(xs, [5])
            assert [b.pid for b in third.gone] == [100] and third.appeared == []
            s.write(f"{BE}/vbd/5/51712/kthread-pid", "101")  # one pid, found twice: once
            assert [b.pid for b in (await tracker.scan(xs, [5])).backends] == [101]
        nursery.cancel_scope.cancel()


# -- pinning ------------------------------------------------------------------------------

DOM0 = Dom0Cpus.of(TOPO, [dom0_vcpu(0, {0}), dom0_vcpu(1, {1}), dom0_vcpu(2, {4}),
                          dom0_vcpu(3, {5})])


def test_pin_binds_every_thread_to_the_nodes_dom0_cpus() -> None:
    p = FakeProcs()
    p.add(104, "qemu-system-i38", cmdline=qemu(5), threads=(105, 106))
    result = BackendPinner(p).pin(104, 5, 1, DOM0)
    assert (result.outcome, result.cpus, result.threads, result.error) == (
        "ok", frozenset({2, 3}), 3, "")
    assert {p.masks[t] for t in (104, 105, 106)} == {frozenset({2, 3})}
    record = result.record(duration=0.002, decision_seq=7)
    assert record["type"] == "backend.pin" and record["outcome"] == "ok"
    assert record["params"] == {"pid": 104, "domid": 5, "node": 1, "cpus": [2, 3],
                                "process": "qemu-system-i38", "threads": 3, "refused": []}
    assert record["subject"] == {"domid": 5, "backend": "qemu-system-i38/104"}
    assert record["decision"] == 7


def test_a_refusing_kernel_thread_is_recorded_and_not_asked_again() -> None:
    p = FakeProcs()
    p.add(100, "blkback.5.xvda", kthread=True)
    p.refuse[100] = errno.EINVAL
    pinner = BackendPinner(p)
    first = pinner.pin(100, 5, 0, DOM0)
    assert first.outcome == "failed" and first.refused == (100,)
    assert first.error == "could not bind to CPUs 0-1: thread 100: EINVAL (refused)"
    assert first.record()["error"] == first.error
    again = pinner.pin(100, 5, 0, DOM0)
    assert again.outcome == "skipped" and "refused to move this thread before" in again.error
    # Some threads of a process refuse: the rest are bound, and the record says which.
    p.add(200, "tapdisk", threads=(201,))
    p.refuse[201] = errno.EPERM
    part = pinner.pin(200, 5, 1, DOM0)
    assert part.outcome == "ok" and part.refused == (201,) and p.masks[200] == {2, 3}
    assert "thread 201: EPERM" in part.error and "the other threads were bound" in part.error


def test_pin_checks_again_that_the_pid_is_still_that_backend() -> None:
    p = FakeProcs()
    p.add(100, "bash", cmdline=("bash",))
    gone = BackendPinner(p).pin(99, 5, 0, DOM0)
    assert gone.outcome == "skipped" and gone.error == "the process is gone"
    reused = BackendPinner(p).pin(100, 5, 0, DOM0)
    assert reused.outcome == "skipped" and "now 'bash', not a backend of domain 5" in reused.error
    assert p.masks[100] == p.all_cpus


def test_pin_where_dom0_has_no_cpu_says_why_and_changes_nothing() -> None:
    p = FakeProcs()
    p.add(100, "blkback.5.xvda", kthread=True)
    dom0 = Dom0Cpus.of(TOPO, [dom0_vcpu(v, range(8)) for v in range(2)])
    result = BackendTracker(p).pin(PinBackend(100, 5, 1), dom0)
    assert result.outcome == "skipped" and "impossible" in result.error
    assert "xl vcpu-pin Domain-0" in result.error and p.masks[100] == p.all_cpus
