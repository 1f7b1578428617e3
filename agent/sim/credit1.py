"""Xen 4.17's credit scheduler (xen/common/sched/credit.c), one per cpupool.

Modelled, by the function each part follows:

- priorities BOOST/UNDER/OVER/IDLE and per-pCPU runqueues ordered by them
  (``__runq_insert``, ``runq_remove``, ``csched_runq_sort``);
- ``csched_acct`` every 30 ms: credits shared by weight among the active
  vCPUs, priorities recomputed, a vCPU with more than a timeslice of credit
  leaves the active list with half of it, caps are not modelled;
- ``csched_tick`` every 10 ms on each busy pCPU: ``csched_unit_acct`` ends a
  BOOST, puts an idle-listed vCPU back on the active list, and re-picks the
  running vCPU's pCPU with ``_csched_cpu_pick``; a different answer (which
  needs an idle pCPU) migrates it;
- ``csched_unit_wake``: BOOST unless waking from a migration, then
  ``__runq_tickle``: an idle pCPU in the soft-affinity step, else in the hard
  one, else preempt the current vCPU if of lower priority;
- ``_csched_cpu_pick``: soft-affinity step then hard, the vCPU's own pCPU
  first, idle pCPUs preferred, on SMT fully idle cores, across sockets only to
  one at least twice as idle;
- ``csched_schedule``: ratelimit (1 ms), 30 ms timeslice, and when the best
  local candidate is OVER or idle ``csched_load_balance``/``csched_runq_steal``:
  steal a *queued* (never a running) vCPU of strictly higher priority from a
  busy peer with more than one runnable, soft-affinity work first, own node
  first; ``vcpu_migration_delay`` 0 by default.

Simplifications, none of which changes a decision: credits are burnt exactly
(1 per 100 us, no double-counted residual) and lazily, when they are read;
every pCPU's tick fires on the same 10 ms grid (Xen re-aligns ticks to it
whenever a pCPU leaves idle), the busy pCPUs ticking in a seeded random
order; a tick visits only the pCPUs where it can change something (see
``_tick``); the timeslice end of a lone vCPU is queued only when it could
change something (``Core.arm_slice``).
"""

from __future__ import annotations

import random

from agent.sim.cpumask import cycle, iter_cyclic
from agent.sim.objects import Core, Domain, Pool, Vcpu

TICK_NS = 10_000_000  # tick_period_us: 30 ms / CSCHED_TICKS_PER_TSLICE
TSLICE_NS = 30_000_000  # CSCHED_DEFAULT_TSLICE_MS
CREDITS_PER_TSLICE = 300  # CSCHED_CREDITS_PER_MSEC * 30
RATELIMIT_NS = 1_000_000  # sched_ratelimit_us default
MIN_TIMER_NS = 100_000  # CSCHED_MIN_TIMER = XEN_SYSCTL_SCHED_RATELIMIT_MIN
NS_PER_CREDIT = 100_000

PRI_BOOST = 0
PRI_UNDER = -1
PRI_OVER = -2
PRI_IDLE = -64

F_YIELD = 1  # CSCHED_FLAG_UNIT_YIELD (never set: guests do not yield here)
F_MIGRATING = 2  # CSCHED_FLAG_UNIT_MIGRATING: picked by csched_res_pick, no boost
F_PINNED = 4  # CSCHED_FLAG_UNIT_PINNED: hard affinity of one pCPU

SOFT, HARD = 0, 1


class SDom:
    """struct csched_dom."""

    __slots__ = ("active", "dom", "weight")

    def __init__(self, dom: Domain) -> None:
        self.dom = dom
        self.weight = dom.weight
        self.active: dict[Vcpu, None] = {}  # list head = the end


class Credit1:
    name = "credit1"

    def __init__(
        self, core: Core, pool: Pool, seed: int, *, migration_delay_ns: int = 0
    ) -> None:
        topo = core.topo
        n = topo.ncpus
        self.core = core
        self.pool = pool
        self.cpus = pool.cpus
        self.topo = topo
        self.migr_delay = migration_delay_ns
        self.rng = random.Random(f"credit1:{pool.name}:{seed}")
        self.runq: list[list[Vcpu]] = [[] for _ in range(n)]
        self.nr_runnable = [0] * n
        self.idle_bias = [n - 1] * n
        self.last_tickle = [0] * n
        self.idlers = pool.cpus  # prv->idlers: every pCPU starts idle
        # balance_bias[node]: init_pdata sets it to the node's first pCPU.
        self.balance_bias = [0] * topo.nnodes
        for node in range(topo.nnodes):
            m = topo.node_mask[node] & pool.cpus
            if m:
                self.balance_bias[node] = (m & -m).bit_length() - 1
        self.active_sdom: dict[SDom, None] = {}  # head = the end
        self.weight = 0
        self.credit = CREDITS_PER_TSLICE * pool.cpus.bit_count()
        self.credit_balance = 0
        self.runq_sort = 0
        self.sorted_epoch = 0
        # Derived masks and counts, kept in step so the hot paths need no scans.
        self.busy = 0  # pCPUs running one of our vCPUs
        self.overloaded = 0  # nr_runnable > 1
        self.queued = 0  # runqueue not empty
        self.nq = 0  # queued vCPUs in the pool
        self.nq_hi = 0  # ... of priority UNDER or BOOST
        self.boosted = 0  # running a BOOST vCPU (may be stale: checked at tick)
        self.inactive = 0  # running a vCPU off the active list (may be stale)
        self.outside_soft = 0  # running a vCPU outside its soft-affinity step
        self.spread = 0  # running a vCPU whose pick mask reaches other sockets
        self.lazy = 0  # lone runner whose slice end is deferred
        self.lazy_over = 0  # ... whose vCPU is OVER (may steal once work queues)
        self.smt = any(m & (m - 1) for m in topo.sib_mask)

    def start(self) -> None:
        core = self.core
        now = core.now
        core.timer(now - now % TICK_NS + TICK_NS, self._tick, None, 0)
        # The master ticker starts one timeslice after the first pCPU joins:
        # any phase against the tick grid.
        phase = self.rng.randrange(1, TSLICE_NS)
        core.timer(now + phase, self._acct, None, 0)

    # -- runqueue -------------------------------------------------------------

    def _nr_inc(self, cpu: int) -> None:
        n = self.nr_runnable[cpu] + 1
        self.nr_runnable[cpu] = n
        if n == 2:
            self.overloaded |= 1 << cpu

    def _nr_dec(self, cpu: int) -> None:
        n = self.nr_runnable[cpu] - 1
        self.nr_runnable[cpu] = n
        if n == 1:
            self.overloaded &= ~(1 << cpu)

    def _runq_insert(self, cpu: int, v: Vcpu) -> None:
        """__runq_insert: after every vCPU of equal or higher priority."""
        rq = self.runq[cpu]
        pri = v.pri
        i = 0
        n = len(rq)
        while i < n and rq[i].pri >= pri:
            i += 1
        rq.insert(i, v)
        v.on_runq = True
        self.queued |= 1 << cpu
        self.nq += 1
        if pri >= PRI_UNDER:
            if not self.nq_hi:
                self._arm_lazy_over()
            self.nq_hi += 1
        if self.lazy >> cpu & 1:
            self.lazy &= ~(1 << cpu)
            self.lazy_over &= ~(1 << cpu)
            self.core.arm_slice(cpu)

    def _runq_remove(self, cpu: int, v: Vcpu) -> None:
        """__runq_remove."""
        rq = self.runq[cpu]
        rq.remove(v)
        v.on_runq = False
        if not rq:
            self.queued &= ~(1 << cpu)
        self.nq -= 1
        if v.pri >= PRI_UNDER:
            self.nq_hi -= 1

    def _arm_lazy_over(self) -> None:
        """A vCPU of priority UNDER/BOOST is queued: lone OVER runners may steal it."""
        m = self.lazy_over
        self.lazy &= ~m
        self.lazy_over = 0
        arm = self.core.arm_slice
        while m:
            low = m & -m
            m ^= low
            arm(low.bit_length() - 1)

    # -- hooks called by the engine (struct scheduler) --------------------------

    def insert(self, v: Vcpu) -> None:
        """csched_unit_insert."""
        dom = v.dom
        if dom.sdom is None:
            dom.sdom = SDom(dom)
        v.pri = PRI_UNDER
        v.credit = 0
        v.residual = 0
        v.flags = 0
        v.active = False
        self.affinity_changed(v)
        v.cpu = self.pick_resource(v)
        if not v.on_runq and not v.pflags and not v.is_running:
            self._runq_insert(v.cpu, v)
            self._nr_inc(v.cpu)

    def remove(self, v: Vcpu) -> None:
        """csched_unit_remove."""
        if v.active:
            self._acct_stop(v)

    def sleep(self, v: Vcpu) -> None:
        """csched_unit_sleep."""
        if self.core.cur[v.cpu] is v:
            self.core.raise_softirq(v.cpu)
        elif v.on_runq:
            self._runq_remove(v.cpu, v)
            self._nr_dec(v.cpu)

    def wake(self, v: Vcpu) -> None:
        """csched_unit_wake: BOOST (unless migrating), queue, tickle."""
        if self.core.cur[v.cpu] is v or v.on_runq:
            return
        migrating = v.flags & F_MIGRATING
        v.flags &= ~F_MIGRATING
        if not migrating and v.pri == PRI_UNDER:
            v.pri = PRI_BOOST
        self._runq_insert(v.cpu, v)
        self._nr_inc(v.cpu)
        self._tickle(v)

    def context_saved(self, v: Vcpu) -> None:
        pass

    def pick_resource(self, v: Vcpu) -> int:
        """csched_res_pick: remember the move so the wake after it does not boost."""
        v.flags |= F_MIGRATING
        return self._pick(v, True)

    def move(self, v: Vcpu, cpu: int) -> None:
        v.cpu = cpu  # no migrate hook: sched_set_res()

    def affinity_changed(self, v: Vcpu) -> None:
        """csched_aff_cntl."""
        if v.hard.bit_count() == 1:
            v.flags |= F_PINNED
        else:
            v.flags &= ~F_PINNED

    # -- __runq_tickle -------------------------------------------------------------

    def _tickle(self, new: Vcpu) -> None:
        core = self.core
        cpu = new.cpu
        cur = core.cur[cpu]
        cur_pri = PRI_IDLE if cur is None else cur.pri
        idle_mask = self.idlers
        mask = 0
        if (
            (new.flags & F_PINNED and idle_mask >> cpu & 1)
            or cur_pri == PRI_IDLE
            or (not idle_mask and new.pri > cur_pri)
        ):
            # Exclusively pinned and its pCPU idle; or its pCPU idle; or no
            # idler anywhere and new outranks cur: run it where it is.
            mask = 1 << cpu
        elif idle_mask:
            for step in (SOFT, HARD):
                if step == SOFT:
                    if not new.has_soft:
                        continue
                    new_idlers = new.smask & idle_mask
                    if not new_idlers:
                        continue
                else:
                    new_idlers = new.hmask & idle_mask
                if not new_idlers:
                    # No idler for new: preempt cur if new is more urgent. (The
                    # _VPF_migrating kick of cur tests new's hard affinity against
                    # the idlers, which is empty here: it never fires.)
                    if new.pri > cur_pri:
                        mask = 1 << cpu
                else:
                    # opt_tickle_one_idle: one idler, cycling from the last one.
                    t = cycle(self.last_tickle[cpu], new_idlers)
                    self.last_tickle[cpu] = t
                    mask = 1 << t
                if mask:
                    break
        if mask:
            self.idlers &= ~mask
            core.raise_softirq(mask.bit_length() - 1)

    # -- _csched_cpu_pick ----------------------------------------------------------

    def _pick(self, v: Vcpu, commit: bool) -> int:
        topo = self.topo
        sib = topo.sib_mask
        core_mask = topo.core_mask
        vcpu_cpu = v.cpu
        spc = -1
        cpu = vcpu_cpu
        idlers = self.idlers
        for step in (SOFT, HARD):
            if step == SOFT:
                if not v.has_soft or not v.smask:
                    continue
                cpus = v.smask
            else:
                cpus = v.hmask
            # If present, prefer the vCPU's current pCPU.
            cpu = vcpu_cpu if cpus >> vcpu_cpu & 1 else cycle(vcpu_cpu, cpus)
            idlers = self.idlers
            if cpu == vcpu_cpu and not self.runq[cpu]:
                idlers |= 1 << cpu  # discount the vCPU itself: is_runq_idle()
            cpus &= idlers
            if not cpus >> cpu & 1 and cpus:
                cpu = cycle(cpu, cpus)
            cpus &= ~(1 << cpu)
            while cpus:
                nxt = cycle(cpu, cpus)
                if core_mask[cpu] >> nxt & 1:
                    # Same socket: compare idle threads of the two cores.
                    cpu_idlers = idlers & sib[cpu]
                    if cpu_idlers == sib[cpu]:
                        # cpu's core is wholly idle: no core of this socket beats
                        # it, so every same-socket candidate would just be dropped.
                        cpus &= ~core_mask[cpu]
                        continue
                    factor = 1
                    nxt_idlers = idlers & sib[nxt]
                else:
                    # Different sockets: migrate only to one twice as idle.
                    factor = 2
                    cpu_idlers = idlers & core_mask[cpu]
                    nxt_idlers = idlers & core_mask[nxt]
                if cpu_idlers.bit_count() * factor < nxt_idlers.bit_count():
                    nxt_idlers &= cpus
                    spc = nxt
                    cpu = cycle(self.idle_bias[nxt], nxt_idlers)
                    cpus &= ~sib[cpu]
                else:
                    cpus &= ~nxt_idlers
            if idlers >> cpu & 1:
                break
        if commit and spc >= 0:
            self.idle_bias[spc] = cpu
        return cpu

    # -- csched_schedule -------------------------------------------------------------

    def schedule(self, cpu: int, prev: Vcpu | None) -> tuple[Vcpu | None, int, bool]:
        core = self.core
        now = core.now
        bit = 1 << cpu
        self.lazy &= ~bit
        self.lazy_over &= ~bit
        if prev is not None:
            self._burn(prev, now)
            runtime = now - prev.state_entry
            prev.last_sched = now
            if not prev.pflags and runtime < RATELIMIT_NS:
                # Rate limiting: keep prev until it has run RATELIMIT_NS.
                tslice = RATELIMIT_NS - runtime
                return prev, (MIN_TIMER_NS if runtime < MIN_TIMER_NS else tslice), False
            if not prev.pflags:
                self._runq_insert(cpu, prev)
            else:
                self._nr_dec(cpu)
        rq = self.runq[cpu]
        snext = rq[0] if rq else None
        pri = PRI_IDLE if snext is None else snext.pri
        if pri > PRI_OVER:
            assert snext is not None
            self._runq_remove(cpu, snext)
        else:
            stolen = self._load_balance(cpu, pri)
            if stolen is not None:
                snext = stolen
            elif snext is not None:
                self._runq_remove(cpu, snext)
        if snext is None:
            self.idlers |= bit
            self.busy &= ~bit
            return None, -1, False
        self.idlers &= ~bit
        self.busy |= bit
        if snext is not prev:
            snext.start_time = now
        if snext.pri == PRI_BOOST:
            self.boosted |= bit
        if not snext.active:
            self.inactive |= bit
        if snext.has_soft and snext.smask >> cpu & 1:
            self.outside_soft &= ~bit
            step_mask = snext.smask
        else:
            if snext.has_soft:
                self.outside_soft |= bit
            else:
                self.outside_soft &= ~bit
            step_mask = snext.hmask
        if step_mask & ~self.topo.core_mask[cpu]:
            self.spread |= bit
        else:
            self.spread &= ~bit
        # A lone vCPU's slice end changes nothing unless a peer has queued work
        # it could steal (only if OVER) or someone queues here: defer it.
        if not rq and (snext.pri != PRI_OVER or not self.nq_hi):
            self.lazy |= bit
            if snext.pri == PRI_OVER:
                self.lazy_over |= bit
            return snext, TSLICE_NS, True
        return snext, TSLICE_NS, False

    def _load_balance(self, cpu: int, pri: int) -> Vcpu | None:
        """csched_load_balance: steal soft-affine work first, from our node first."""
        if not (self.nq_hi if pri == PRI_OVER else self.nq):
            return None  # nothing queued anywhere that could be stolen
        topo = self.topo
        nnodes = topo.nnodes
        node = topo.node_of[cpu]
        workers_all = self.cpus & ~self.idlers & ~(1 << cpu)
        for step in (SOFT, HARD):
            peer_node = node
            while True:
                workers = workers_all & topo.node_mask[peer_node]
                cand = workers & self.overloaded
                if cand:
                    first_cpu = cycle(self.balance_bias[peer_node], workers)
                    for peer in iter_cyclic(first_cpu, cand):
                        v = self._runq_steal(peer, cpu, pri, step)
                        if v is not None:
                            self.balance_bias[peer_node] = peer
                            return v
                peer_node = peer_node + 1 if peer_node + 1 < nnodes else 0
                if peer_node == node:
                    break
        return None

    def _runq_steal(self, peer: int, cpu: int, pri: int, step: int) -> Vcpu | None:
        """csched_runq_steal: only queued vCPUs, only of strictly higher priority."""
        core = self.core
        if core.cur[peer] is None:
            return None  # an idle peer is about to take its own work
        for v in self.runq[peer]:
            if v.pri <= pri:
                break
            if v.is_running:
                continue
            if step == SOFT:
                if not v.has_soft:
                    continue
                mask = v.smask
            else:
                mask = v.hmask
            if not mask >> cpu & 1:
                continue
            if self.migr_delay and core.now - v.last_sched < self.migr_delay:
                continue  # __csched_vcpu_is_cache_hot
            self._runq_remove(peer, v)
            self._nr_dec(peer)
            v.cpu = cpu
            self._nr_inc(cpu)
            return v
        return None

    # -- credits ------------------------------------------------------------------

    def _burn(self, v: Vcpu, now: int) -> None:
        """burn_credits: one credit per 100 us run since start_time."""
        delta = now - v.start_time
        if delta <= 0:
            return
        credits, v.residual = divmod(delta * 10 + v.residual, 1_000_000)
        v.credit -= credits
        v.start_time = now

    def _acct_start(self, v: Vcpu) -> None:
        """__csched_unit_acct_start."""
        sdom: SDom = v.dom.sdom
        v.active = True
        sdom.active[v] = None
        self.weight += sdom.weight
        if sdom not in self.active_sdom:
            self.active_sdom[sdom] = None

    def _acct_stop(self, v: Vcpu) -> None:
        """__csched_unit_acct_stop_locked."""
        sdom: SDom = v.dom.sdom
        v.active = False
        del sdom.active[v]
        self.weight -= sdom.weight
        if not sdom.active:
            del self.active_sdom[sdom]

    def _acct(self, _a: object, _b: int) -> None:
        """csched_acct: hand out a timeslice of credits by weight, recompute priorities."""
        core = self.core
        now = core.now
        core.timer(now + TSLICE_NS, self._acct, None, 0)
        weight_total = self.weight
        credit_total = self.credit
        if self.credit_balance < 0:
            credit_total -= self.credit_balance
        if weight_total == 0:
            self.credit_balance = 0
            return
        # Running vCPUs have been burnt up to their pCPU's last tick.
        last_tick = now - now % TICK_NS
        for v in core.cur:
            if v is not None and v.dom.pool is self.pool and v.active:
                self._burn(v, max(last_tick, v.start_time))
        weight_left = weight_total
        credit_balance = 0
        credit_xtra = False
        prev_balance = self.credit_balance
        cur = core.cur
        for sdom in list(reversed(self.active_sdom)):
            n_act = len(sdom.active)
            weight_left -= sdom.weight * n_act
            credit_peak = n_act * CREDITS_PER_TSLICE
            if prev_balance < 0:
                credit_peak += (
                    -prev_balance * sdom.weight * n_act + weight_total - 1
                ) // weight_total
            credit_fair = (credit_total * sdom.weight * n_act + weight_total - 1) // weight_total
            if credit_fair < credit_peak:
                credit_xtra = True
            else:
                if weight_left != 0:
                    credit_total += (
                        (credit_fair - credit_peak) * weight_total + weight_left - 1
                    ) // weight_left
                if credit_xtra:
                    # Keep domains with extra credits at the head of the queue.
                    del self.active_sdom[sdom]
                    self.active_sdom[sdom] = None
                credit_fair = credit_peak
            credit_fair = (credit_fair + n_act - 1) // n_act
            stopped: list[Vcpu] = []
            for v in sdom.active:  # (same credit for each: their order does not matter)
                credit = v.credit + credit_fair
                old_hi = v.pri >= PRI_UNDER
                if credit < 0:
                    v.pri = PRI_OVER
                    if credit < -CREDITS_PER_TSLICE:
                        credit = -CREDITS_PER_TSLICE
                else:
                    v.pri = PRI_UNDER
                    if credit > CREDITS_PER_TSLICE:
                        # Upper bound: it stops earning, with half its credit.
                        stopped.append(v)
                        credit //= 2
                        if v.is_running:
                            self.inactive |= 1 << v.cpu
                v.credit = credit
                credit_balance += credit
                new_hi = v.pri >= PRI_UNDER
                if v.on_runq and old_hi != new_hi:
                    if new_hi:
                        if not self.nq_hi:
                            self._arm_lazy_over()
                        self.nq_hi += 1
                    else:
                        self.nq_hi -= 1
                elif v.is_running and cur[v.cpu] is v and self.lazy >> v.cpu & 1:
                    bit = 1 << v.cpu
                    if new_hi:
                        self.lazy_over &= ~bit
                    elif self.nq_hi:
                        self.lazy &= ~bit
                        self.lazy_over &= ~bit
                        core.arm_slice(v.cpu)
                    else:
                        self.lazy_over |= bit
            for v in stopped:
                self._acct_stop(v)
        self.credit_balance = credit_balance
        self.runq_sort += 1

    # -- csched_tick ------------------------------------------------------------------

    def _tick(self, _a: object, _b: int) -> None:
        """csched_tick on every busy pCPU, visiting only those it can change."""
        core = self.core
        now = core.now
        core.timer(now + TICK_NS, self._tick, None, 0)
        busy = self.busy
        if not busy:
            return
        if self.sorted_epoch != self.runq_sort:
            self.sorted_epoch = self.runq_sort
            self._sort_runqs()
        todo = (self.boosted | self.inactive) & busy
        self.boosted = 0
        self.inactive = 0
        if self.idlers:
            todo |= self._repick_candidates(busy)
        if not todo:
            return
        start = self.rng.randrange(self.topo.ncpus)
        cur = core.cur
        for cpu in iter_cyclic(start, todo):
            v = cur[cpu]
            if v is None or v.dom.pool is not self.pool:
                continue
            self._unit_acct(cpu, v)
            core.flush()

    def _unit_acct(self, cpu: int, v: Vcpu) -> None:
        """csched_unit_acct."""
        if v.pri == PRI_BOOST:
            v.pri = PRI_UNDER
        if not v.active:
            self._acct_start(v)
            return
        if self._pick(v, False) != cpu:
            self.core.set_migrating(v)
            self.core.raise_softirq(cpu)

    def _repick_candidates(self, busy: int) -> int:
        """Busy pCPUs where ``_csched_cpu_pick`` may not answer "stay" (a superset).

        With no idler in its masks a running vCPU's pick is its own pCPU. With
        idlers it moves if work is queued behind it, if it runs outside its
        soft affinity and an idler is inside, if its pick mask reaches another
        socket more than twice as idle as its own, or (SMT) if its core is
        wholly busy while a core of its socket is wholly idle. Anything else
        picks its own pCPU (tests/test_credit1.py checks this against _pick).
        """
        topo = self.topo
        idle = self.idlers
        todo = busy & (self.queued | self.outside_soft)
        counts = [(idle & m).bit_count() for m in topo.node_mask]
        ordered = sorted(counts, reverse=True)
        top, second = ordered[0], ordered[1] if len(ordered) > 1 else 0
        for node, m in enumerate(topo.node_mask):
            if not busy & m:
                continue
            others = second if counts[node] == top else top
            if others > 2 * (counts[node] + 1):
                todo |= busy & m & self.spread
        if self.smt:
            sib = topo.sib_mask
            for m in topo.node_mask:
                nb = busy & m & ~todo
                if not nb or not idle & m:
                    continue
                whole_idle_core = False
                rest = idle & m
                while rest:
                    low = rest & -rest
                    c = low.bit_length() - 1
                    if idle & sib[c] == sib[c]:
                        whole_idle_core = True
                        break
                    rest &= ~sib[c]
                if not whole_idle_core:
                    continue
                while nb:
                    low = nb & -nb
                    nb ^= low
                    c = low.bit_length() - 1
                    if not idle & sib[c] & ~low:
                        todo |= low
        return todo

    def _sort_runqs(self) -> None:
        """csched_runq_sort: UNDER (and BOOST) ahead of OVER, order kept otherwise."""
        m = self.queued
        runq = self.runq
        while m:
            low = m & -m
            m ^= low
            rq = runq[low.bit_length() - 1]
            if len(rq) > 1:
                rq[:] = [v for v in rq if v.pri >= PRI_UNDER] + [v for v in rq if v.pri < PRI_UNDER]
