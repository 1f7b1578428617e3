"""The part of the simulated host that plays Xen's ``sched/core.c``.

An event queue in integer nanoseconds; ``SCHEDULE_SOFTIRQ`` as a FIFO of pCPUs
to reschedule, drained after every event (a tickled pCPU reschedules at once:
IPI latency is not modelled); ``schedule()``'s context switch with its
accounting; ``vcpu_sleep``/``vcpu_wake``/``vcpu_block``; and
``sched_unit_migrate_start``/``_finish`` (pick a new pCPU through the
scheduler's ``pick_resource``, move, wake there). The scheduler models decide;
this module keeps time, runs what they decide and counts.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import Any, NamedTuple, Protocol

from agent.sim import workload as wl
from agent.sim.accounting import Accounting, VcpuAccounting
from agent.sim.objects import BLOCKED, DOWN, MIGRATING, PARKED, PAUSED, Pool, Topo, Vcpu
from agent.sim.spec import Workload

# Flags that stop a vCPU wanting a pCPU (MIGRATING is a transient of the model).
NO_DEMAND = BLOCKED | PAUSED | DOWN | PARKED


class VcpuView(NamedTuple):
    """A vCPU's state as the Hypervisor views need it."""

    pflags: int  # v->pause_flags (objects.BLOCKED, PAUSED, DOWN, ...)
    running: bool
    cpu: int  # v->processor
    run_ns: int  # run time so far, the current run included


class SimCore(Protocol):
    """What the engine asks of a core: HostCore here, or its C port (native_core.py).

    The engine's ``Vcpu`` objects are the handles; their masks (``hard``,
    ``soft``, ``hmask``) are kept by every core, the rest of their state only
    by HostCore: read it through ``vcpu_view``.
    """

    @property
    def now(self) -> int: ...

    @property
    def events_run(self) -> int: ...

    def start(self) -> None: ...

    def add_vcpu(self, v: Vcpu, hard: int, soft: int, cpu: int) -> None: ...

    def vcpu_sleep(self, v: Vcpu, bit: int) -> None: ...

    def vcpu_wake(self, v: Vcpu, bit: int) -> None: ...

    def flush(self) -> None: ...

    def shutdown_vcpu(self, v: Vcpu) -> None: ...

    def remove_vcpu(self, v: Vcpu) -> None: ...

    def set_workload(self, v: Vcpu, workload: Workload) -> None: ...

    def set_affinity(self, v: Vcpu, hard: int, soft: int) -> None: ...

    def vcpu_view(self, v: Vcpu) -> VcpuView: ...

    def run_until(self, until_ns: int) -> None: ...

    def take_accounting(self) -> Accounting: ...


class HostCore:
    def __init__(self, topo: Topo) -> None:
        self.topo = topo
        self.ncpus_online = topo.ncpus
        self.now = 0
        self.cur: list[Vcpu | None] = [None] * topo.ncpus
        self.pool_of: list[Pool] = []  # per pCPU
        self.pools: list[Pool] = []  # in the order their schedulers start
        # The event queue: simultaneous events run in the order queued.
        self._q: list[tuple[int, int, Callable[[Any, int], None], Any, int]] = []
        self._seq = 0
        self._slice_ver = [0] * topo.ncpus
        # A slice the scheduler called lazy is not queued until arm_slice(): its
        # end would change nothing unless something changes first.
        self._slice_start = [0] * topo.ncpus
        self._slice_len = [0] * topo.ncpus
        self._slice_lazy = [False] * topo.ncpus
        self._pend: list[int] = []
        self._pend_mask = 0
        self._touched: list[Vcpu] = []
        self._demanding: dict[Vcpu, None] = {}
        self._acct_from = 0
        self._busy = [0] * topo.nnodes  # per node, run time not yet taken
        self.events_run = 0

    # -- services for the scheduler models (objects.Core) ----------------------

    def timer(self, at_ns: int, fn: Callable[[Any, int], None], a: Any, b: int) -> None:
        self._seq += 1
        heapq.heappush(self._q, (at_ns, self._seq, fn, a, b))

    def raise_softirq(self, cpu: int) -> None:
        bit = 1 << cpu
        if not self._pend_mask & bit:
            self._pend_mask |= bit
            self._pend.append(cpu)

    def arm_slice(self, cpu: int) -> None:
        """Queue the end of ``cpu``'s lazy slice: the next boundary of its run from now."""
        if not self._slice_lazy[cpu]:
            return
        self._slice_lazy[cpu] = False
        start, length = self._slice_start[cpu], self._slice_len[cpu]
        now = self.now
        at = start + length
        if at < now:
            at += (now - at + length - 1) // length * length
        self.timer(at, self._slice_end, cpu, self._slice_ver[cpu])

    def set_migrating(self, v: Vcpu) -> None:
        """``sched_set_pause_flags(unit, _VPF_migrating)`` on a running unit."""
        v.pflags |= MIGRATING

    # -- time ------------------------------------------------------------------

    def run_until(self, until_ns: int) -> None:
        q = self._q
        pop = heapq.heappop
        n = 0
        while q and q[0][0] <= until_ns:
            t, _, fn, a, b = pop(q)
            self.now = t
            fn(a, b)
            n += 1
            if self._pend:
                self._flush()
        self.events_run += n
        self.now = until_ns

    def flush(self) -> None:
        """Run every raised SCHEDULE_SOFTIRQ, in the order raised."""
        if self._pend:
            self._flush()

    def _flush(self) -> None:
        pend = self._pend
        while pend:
            cpu = pend.pop(0)
            self._pend_mask &= ~(1 << cpu)
            self._do_schedule(cpu)

    # -- schedule(): pick next on a pCPU and switch ------------------------------

    def _do_schedule(self, cpu: int) -> None:
        prev = self.cur[cpu]
        sched = self.pool_of[cpu].sched
        nxt, tslice, lazy = sched.schedule(cpu, prev)
        now = self.now
        if nxt is not prev:
            if prev is not None:
                self._stop_running(prev)
            self.cur[cpu] = nxt
            if nxt is not None:
                self._start_running(nxt, cpu)
        ver = self._slice_ver[cpu] + 1
        self._slice_ver[cpu] = ver
        if lazy:
            self._slice_lazy[cpu] = True
            self._slice_start[cpu] = now
            self._slice_len[cpu] = tslice
        else:
            self._slice_lazy[cpu] = False
            if tslice >= 0:  # self.timer(now + tslice, self._slice_end, cpu, ver), inlined
                self._seq += 1
                heapq.heappush(self._q, (now + tslice, self._seq, self._slice_end, cpu, ver))
        if nxt is not prev and prev is not None:
            # sched_context_switched -> context_saved -> migrate_finish
            sched.context_saved(prev)
            if prev.pflags & MIGRATING:
                self.migrate_finish(prev)

    def _slice_end(self, cpu: int, ver: int) -> None:
        if ver == self._slice_ver[cpu]:
            if self._pend:
                self.raise_softirq(cpu)
            else:  # raise_softirq + the flush after this event, without the queue
                self._do_schedule(cpu)

    def _start_running(self, v: Vcpu, cpu: int) -> None:
        if v.cpu != cpu:
            raise AssertionError(f"{v} switched in on pCPU {cpu} but v->processor is {v.cpu}")
        now = self.now
        v.is_running = True
        v.state_entry = now
        v.run_start = now
        last = v.last_cpu
        if last != cpu:
            if last >= 0:
                v.acc_mig += 1
                node_of = self.topo.node_of
                if node_of[last] != node_of[cpu]:
                    v.acc_xmig += 1
            v.last_cpu = cpu
        if not v.touched:
            v.touched = True
            self._touched.append(v)
        v.work_mark = now
        if v.work_left > 0:
            self.timer(now + v.work_left, self._work_done, v, v.wl_ver)

    def _stop_running(self, v: Vcpu) -> None:
        now = self.now
        ran = now - v.run_start
        node = self.topo.node_of[v.cpu]
        v.acc_run[node] += ran
        self._busy[node] += ran
        v.total_run += ran
        v.run_start = -1
        v.is_running = False
        if v.work_left > 0:
            left = v.work_left - (now - v.work_mark)
            v.work_left = left if left > 0 else 1
            v.wl_ver += 1  # the pending block timer is for a run that ended

    # -- runnability and demand ------------------------------------------------

    def set_flag(self, v: Vcpu, bit: int) -> None:
        f = v.pflags
        if not f & NO_DEMAND and bit & NO_DEMAND:
            self._demand_end(v)
        v.pflags = f | bit

    def clear_flag(self, v: Vcpu, bit: int) -> None:
        f = v.pflags & ~bit
        if v.pflags & NO_DEMAND and not f & NO_DEMAND:
            self._demand_begin(v)
        v.pflags = f

    def _demand_begin(self, v: Vcpu) -> None:
        v.demand_start = self.now
        self._demanding[v] = None

    def _demand_end(self, v: Vcpu) -> None:
        v.acc_demand += self.now - v.demand_start
        v.demand_start = -1
        del self._demanding[v]
        if not v.touched:
            v.touched = True
            self._touched.append(v)

    def vcpu_sleep(self, v: Vcpu, bit: int) -> None:
        """vcpu_sleep_nosync: make it not runnable for ``bit``'s reason."""
        self.set_flag(v, bit)
        v.dom.pool.sched.sleep(v)

    def vcpu_wake(self, v: Vcpu, bit: int) -> None:
        """Clear ``bit``; vcpu_wake() hands the unit to the scheduler if now runnable."""
        self.clear_flag(v, bit)
        if not v.pflags:
            v.dom.pool.sched.wake(v)

    def migrate_start(self, v: Vcpu) -> None:
        """sched_unit_migrate_start: flag it and put it to sleep."""
        v.pflags |= MIGRATING
        v.dom.pool.sched.sleep(v)

    def migrate_finish(self, v: Vcpu) -> None:
        """sched_unit_migrate_finish: pick, move, wake; a running unit waits for its switch."""
        if v.is_running or not v.pflags & MIGRATING:
            return
        sched = v.dom.pool.sched
        sched.move(v, sched.pick_resource(v))
        v.pflags &= ~MIGRATING
        if not v.pflags:
            sched.wake(v)

    # -- what the engine asks per vCPU (the native core offers the same) --------

    def start(self) -> None:
        """Start each cpupool's scheduler (credit1's ticks)."""
        for pool in self.pools:
            pool.sched.start()

    def add_vcpu(self, v: Vcpu, hard: int, soft: int, cpu: int) -> None:
        """sched_init_vcpu: masks, first pCPU, workload start, insert_unit (still PAUSED)."""
        v.set_masks(hard, soft, v.dom.pool.cpus)
        v.cpu = cpu
        runnable, amount = wl.start(v.workload, v.rng)
        if runnable:
            v.work_left = amount
        else:
            v.pflags |= BLOCKED
            if amount != wl.NEVER:
                self.timer(self.now + amount, self._wake_timer, v, v.wl_ver)
        v.dom.pool.sched.insert(v)

    def shutdown_vcpu(self, v: Vcpu) -> None:
        v.wl_ver += 1
        self.vcpu_sleep(v, DOWN)

    def remove_vcpu(self, v: Vcpu) -> None:
        """Out of the scheduler; its last accounting still goes out."""
        v.dom.pool.sched.remove(v)
        if not v.touched:
            v.touched = True
            self._touched.append(v)

    def set_workload(self, v: Vcpu, workload: Workload) -> None:
        """A fresh on phase of ``workload`` starts now (Idle: it blocks)."""
        v.workload = workload
        v.wl_ver += 1  # drop the old workload's pending timers
        v.work_mark = self.now
        work = wl.on_ns(workload, v.rng)
        v.work_left = work
        if work != 0:
            if v.is_running and work > 0:
                self.timer(self.now + work, self._work_done, v, v.wl_ver)
            if v.pflags & BLOCKED:
                self.vcpu_wake(v, BLOCKED)
        elif not v.pflags & BLOCKED:
            if v.is_running:
                self.set_flag(v, BLOCKED)  # vcpu_block
                self.raise_softirq(v.cpu)
            else:
                self.vcpu_sleep(v, BLOCKED)

    def set_affinity(self, v: Vcpu, hard: int, soft: int) -> None:
        """vcpu_set_affinity: new masks, then sleep and re-pick (hard affinity always holds)."""
        v.set_masks(hard, soft, v.dom.pool.cpus)
        v.dom.pool.sched.affinity_changed(v)
        self.migrate_start(v)
        self.migrate_finish(v)

    def vcpu_view(self, v: Vcpu) -> VcpuView:
        run = v.total_run + (self.now - v.run_start if v.run_start >= 0 else 0)
        return VcpuView(v.pflags, v.is_running, v.cpu, run)

    # -- workload timers -------------------------------------------------------

    def _work_done(self, v: Vcpu, ver: int) -> None:
        """The on phase's work is done: the vCPU blocks (vcpu_block)."""
        if ver != v.wl_ver:
            return
        v.work_left = 0
        v.wl_ver += 1
        self.set_flag(v, BLOCKED)
        self.raise_softirq(v.cpu)
        off = wl.off_ns(v.workload, v.rng)
        if off != wl.NEVER:
            self.timer(self.now + off, self._wake_timer, v, v.wl_ver)

    def _wake_timer(self, v: Vcpu, ver: int) -> None:
        if ver != v.wl_ver:
            return
        v.work_left = wl.on_ns(v.workload, v.rng)
        self.vcpu_wake(v, BLOCKED)

    # -- accounting ------------------------------------------------------------

    def take_accounting(self) -> Accounting:
        """What happened since the previous call (or since the host started)."""
        now = self.now
        node_of = self.topo.node_of
        nnodes = self.topo.nnodes
        busy = self._busy
        todo = self._touched
        for v in self._demanding:
            if not v.touched:
                todo.append(v)
        self._touched = []
        rows: dict[tuple[int, int], VcpuAccounting] = {}
        for v in todo:
            v.touched = False
            start = v.run_start
            if start >= 0:
                ran = now - start
                node = node_of[v.cpu]
                v.acc_run[node] += ran
                busy[node] += ran
                v.total_run += ran
                v.run_start = now
            start = v.demand_start
            if start >= 0:
                v.acc_demand += now - start
                v.demand_start = now
            run = v.acc_run
            if v.acc_demand or v.acc_mig or sum(run):
                rows[(v.domid, v.vid)] = VcpuAccounting(
                    tuple(run), v.acc_demand, v.acc_mig, v.acc_xmig
                )
                v.acc_run = [0] * nnodes
                v.acc_demand = v.acc_mig = v.acc_xmig = 0
        self._busy = [0] * nnodes
        start, self._acct_from = self._acct_from, now
        return Accounting(start, now, dict(sorted(rows.items())), tuple(busy))
