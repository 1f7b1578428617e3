"""Backend pinning on real processes, on a machine without Xen.

Child processes stand in for the backends (each names itself, as tapdisk or qemu
do, and runs a second thread); their pids are written where a real toolstack
writes them, in the embedded xenstored. The hypervisor is the simulator: a
2-node host whose dom0 has vCPU 0 pinned on node 0 and vCPU 1 on node 1, so dom0's
Linux CPU 0 is on node 0 and CPU 1 on node 1 (this machine's two CPUs). The
shipped rule decides, the tracker pins with ``sched_setaffinity``, and
``os.sched_getaffinity`` shows where each thread of each child may run. The
decoys (a guest pointing its qemu-pid at another guest's qemu, or at the test
itself) must stay untouched.

Real processes need trio's real clock; ``fail_after`` only guards against hangs.
"""

from __future__ import annotations

import os
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from subprocess import PIPE

import pytest
import trio
import trio.testing

from agent.audit.reader import read_entries
from agent.audit.writer import AuditWriter
from agent.backends.dom0 import Dom0Cpus
from agent.backends.procs import LinuxProcesses
from agent.backends.tracker import BackendTracker
from agent.rules import Memory, Outcome, PinBackend, decide, load_paths, make_event
from agent.rules.events import Event
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.spec import DomainSpec, HostSpec, Idle, NodeSpec
from agent.state import HostView, Observation, build_state
from agent.xenstore.client import Client, open_client
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream

RULES = Path(__file__).resolve().parent.parent / "rules"
HANG_GUARD = 60

pytestmark = pytest.mark.skipif(
    not hasattr(os, "sched_setaffinity") or len(os.sched_getaffinity(0)) < 2
    or not {0, 1} <= os.sched_getaffinity(0) or not os.path.exists("/proc/self/comm"),
    reason="needs Linux with CPUs 0 and 1 available to this process",
)

CHILD = r"""
import sys, threading, time
with open("/proc/self/comm", "w") as f:
    f.write(sys.argv[1])
threading.Thread(target=time.sleep, args=(3600,), daemon=True).start()
print("ready", flush=True)
sys.stdin.read()
"""


class Child:
    def __init__(self, proc: trio.Process) -> None:
        self.proc = proc
        self.pid = proc.pid

    def masks(self) -> set[frozenset[int]]:
        """The CPU mask of every thread."""
        return {frozenset(os.sched_getaffinity(int(t)))
                for t in os.listdir(f"/proc/{self.pid}/task")}


@asynccontextmanager
async def children(*specs: tuple[str, ...]) -> AsyncIterator[list[Child]]:
    """Start one child per (comm, *args); each has two threads when yielded."""
    started: list[Child] = []
    try:
        for comm, *args in specs:
            proc = await trio.lowlevel.open_process(
                [sys.executable, "-c", CHILD, comm, *args], stdin=PIPE, stdout=PIPE)
            assert proc.stdout is not None
            line = b""
            while not line.endswith(b"\n"):
                line += await proc.stdout.receive_some(64)
            assert line == b"ready\n"
            started.append(Child(proc))
        yield started
    finally:
        for c in started:
            if c.proc.stdin is not None:
                await c.proc.stdin.aclose()
        for c in started:
            with trio.move_on_after(10):
                await c.proc.wait()
            if c.proc.returncode is None:
                c.proc.kill()


def two_node_host() -> SimHost:
    """2 nodes x 2 pCPUs; dom0's vCPU 0 pinned to pCPU 0 (node 0), vCPU 1 to pCPU 2
    (node 1); A at home on node 0, B on node 1."""
    host = SimHost(HostSpec(nodes=(NodeSpec(2, 8192), NodeSpec(2, 8192))))
    host.create_domain(DomainSpec("Domain-0", 2, 1024, Idle(), is_dom0=True))
    host.set_affinity(0, 0, frozenset({0}), None)  # xl vcpu-pin Domain-0 0 0
    host.set_affinity(0, 1, frozenset({2}), None)  # xl vcpu-pin Domain-0 1 2
    host.create_domain(DomainSpec("A", 2, 2048, Idle(), soft=frozenset({0, 1}),
                                  memory_nodes=(0,)))
    host.create_domain(DomainSpec("B", 2, 2048, Idle(), soft=frozenset({2, 3}),
                                  memory_nodes=(1,)))
    return host


@asynccontextmanager
async def xenstore(hub: XenstoreHub) -> AsyncIterator[Client]:
    async with trio.open_nursery() as nursery:
        async def connect() -> trio.abc.Stream:
            mine, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_stream, hub, theirs)
            return mine

        async with open_client(connect) as xs:
            yield xs
        nursery.cancel_scope.cancel()


class Loop:
    """The agent's part for backends, by hand: observe, decide with the shipped
    rule, pin, record."""

    def __init__(self, hv: SimHypervisor, xs: Client, tracker: BackendTracker,
                 audit: AuditWriter) -> None:
        self.hv, self.xs, self.tracker, self.audit = hv, xs, tracker, audit
        self.rules = load_paths([RULES / "backend_placement.toml", RULES / "engine.toml"])
        self.memory = Memory()
        self.view: HostView | None = None
        self.now = 0.0

    async def step(self, *, tick: bool = False, after_s: float = 1.0) -> list[str]:
        """One observation ``after_s`` after the last; the outcomes of the pins made."""
        self.now += after_s
        domains = await self.hv.domains()
        scan = await self.tracker.scan(self.xs, [d.domid for d in domains])
        topo = await self.hv.topology()
        obs = Observation(self.now, topo, tuple(domains), tuple(await self.hv.vcpus()),
                          backends=scan.backends)
        self.view = build_state(obs, self.view)
        dom0 = Dom0Cpus.of(topo, await self.hv.vcpus(0))
        events: list[Event] = [make_event("backend.appear", domid=b.domid, pid=b.pid,
                                          kind=b.kind) for b in scan.appeared]
        if tick:
            events.append(make_event("tick"))
        outcomes = []
        for event in events:
            decisions, self.memory = decide(self.view, event, self.now, self.rules, self.memory)
            for d in decisions:
                if d.outcome is Outcome.ACT and isinstance(d.action, PinBackend):
                    result = self.tracker.pin(d.action, dom0)
                    self.audit.append(result.record())
                    outcomes.append(f"{result.process}:{result.outcome}")
        return outcomes


async def test_backends_of_each_guest_are_pinned_to_its_nodes_cpus(tmp_path: Path) -> None:
    host = two_node_host()
    hv = SimHypervisor(host)
    dom0 = Dom0Cpus.of(await hv.topology(), await hv.vcpus(0))
    assert dom0.by_node == {0: {0}, 1: {1}}  # dom0 vCPU 0 on node 0, vCPU 1 on node 1
    a, b = host.domid_of("A"), host.domid_of("B")
    hub = XenstoreHub.of(XenstoreDaemon())
    toolstack = hub.session()
    mine = set(os.sched_getaffinity(0))
    with trio.fail_after(HANG_GUARD):
        async with children(
            ("tapdisk",),                                       # A's disk
            ("qemu-system-i38", "-xen-domid", str(a)),          # A's device model
            ("qemu-system-i38", "-xen-domid", str(b)),          # B's qdisk backend
            ("tapdisk",),                                       # B's second disk
        ) as (tap_a, qemu_a, qdisk_b, tap_b), xenstore(hub) as xs:
            for child in (tap_a, qemu_a, qdisk_b, tap_b):
                assert child.masks() == {frozenset({0, 1})}
            toolstack.write(f"/local/domain/0/backend/vbd3/{a}/51712/kthread-pid",
                            str(tap_a.pid))
            toolstack.write(f"/local/domain/{a}/image/device-model-pid", str(qemu_a.pid))
            toolstack.write(f"/local/domain/0/libxl/{b}/qdisk-backend-pid", str(qdisk_b.pid))
            toolstack.write(f"/local/domain/0/backend/vbd3/{b}/51728/queue-0/kthread-pid",
                            str(tap_b.pid))
            # Decoys in the guests' own directories: B names A's qemu, A names the test.
            toolstack.write(f"/local/domain/{b}/qemu-pid", str(qemu_a.pid))
            toolstack.write(f"/local/domain/{a}/qemu-pid", str(os.getpid()))

            log = tmp_path / "audit.log"
            with AuditWriter(log) as audit:
                loop = Loop(hv, xs, BackendTracker(LinuxProcesses()), audit)
                outcomes = await loop.step()
                assert sorted(outcomes) == ["qemu-system-i38:ok", "qemu-system-i38:ok",
                                            "tapdisk:ok", "tapdisk:ok"]
                # Every thread of A's backends on CPU 0 (node 0), of B's on CPU 1 (node 1).
                assert tap_a.masks() == qemu_a.masks() == {frozenset({0})}
                assert qdisk_b.masks() == tap_b.masks() == {frozenset({1})}
                assert set(os.sched_getaffinity(0)) == mine  # the decoy: untouched
                assert await loop.step(tick=True) == []  # all home: nothing to do
                assert loop.view is not None  # the agent's view of them now:
                assert {(v.pid, v.node, v.on_home) for v in loop.view.backends} == {
                    (tap_a.pid, 0, True), (qemu_a.pid, 0, True),
                    (qdisk_b.pid, 1, True), (tap_b.pid, 1, True)}

                # B's home moves to node 0: its backends follow (once the rule's
                # one-minute cooldown per backend has passed).
                for vcpu in range(2):
                    host.set_affinity(b, vcpu, None, frozenset({0, 1}))
                assert sorted(await loop.step(tick=True, after_s=60)) == ["qemu-system-i38:ok",
                                                              "tapdisk:ok"]
                assert qdisk_b.masks() == tap_b.masks() == {frozenset({0})}
                assert tap_a.masks() == {frozenset({0})}

    pins = [e for e in read_entries(log) if e.kind == "action"]
    assert [(e.body["params"]["pid"], e.body["params"]["node"], e.body["params"]["cpus"],
             e.body["outcome"]) for e in pins] == [
        (tap_a.pid, 0, [0], "ok"), (qemu_a.pid, 0, [0], "ok"),
        (qdisk_b.pid, 1, [1], "ok"), (tap_b.pid, 1, [1], "ok"),
        (qdisk_b.pid, 0, [0], "ok"), (tap_b.pid, 0, [0], "ok")]
    assert all(e.body["params"]["threads"] == 2 for e in pins)
    assert pins[1].body["subject"] == {"domid": a, "backend": f"qemu-system-i38/{qemu_a.pid}"}
