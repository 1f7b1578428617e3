"""Xen 4.17's credit2 scheduler (xen/common/sched/credit2.c), one per cpupool.

Modelled, by the function each part follows:

- runqueues per socket (``credit2_runqueue=socket``, the default; a socket is
  a NUMA node here), at most ``sched_credit2_max_cpus_runqueue`` (16) pCPUs
  each and spread evenly (``cpu_add_to_runqueue``): 28 pCPUs of a socket on a
  56-pCPU host make two runqueues of 14;
- credits in nanoseconds burnt at ``max_weight/weight`` per ns
  (``burn_credits``/``t2c_update``), a runqueue ordered by credit
  (``runq_insert``), and the reset when the best candidate's credit is <= 0:
  everyone gets ``CSCHED2_CREDIT_INIT`` more, clipped (``reset_credit``);
- ``runq_tickle``: an idle core, then an idle pCPU, soft-affinity step before
  the hard one, then the busy pCPU with the best ``tickle_score`` (credit
  difference, migration resistance, soft-affinity bonuses);
- ``runq_candidate``: ratelimit (1 ms), leave the current vCPU if it runs
  outside its soft affinity and an idle pCPU of it is free, skip vCPUs tickled
  for another pCPU, resist pulling from another pCPU (500 us);
- ``csched2_runtime``: run until credit 0 or the next waiter's credit, within
  [max(500 us, ratelimit left), 10 ms];
- ``csched2_res_pick``: the least loaded runqueue among those with soft
  affinity, else among hard affinity (a balance-requested runqueue first);
- ``balance_load`` after each credit reset: the runqueue whose average load
  differs most; push, pull or swap the vCPUs that minimise the difference,
  checking only hard affinity (``unit_is_migrateable``), through ``migrate``;
- load averages exactly as ``update_runq_load``/``update_svc_load``
  (fixed point, 2^18 precision, ~1 s window in 1024 ns units).

Caps (budgets) and yield are not modelled; the engine rejects capped domains.
"""

from __future__ import annotations

from agent.sim.cpumask import cycle, test_or_cycle
from agent.sim.objects import Core, Pool, Vcpu

CREDIT_INIT = 10_000_000
CREDIT_MIN = -CREDIT_INIT
IDLE_CREDIT = CREDIT_MIN - 1
MIN_TIMER = 500_000
CARRYOVER_MAX = MIN_TIMER
MIGRATE_RESIST = 500_000
MIGRATE_COMPENSATION = 50_000
RATELIMIT_TICKLE_TOLERANCE = 50_000
MAX_TIMER = CREDIT_INIT
RATELIMIT_NS = 1_000_000
MAX_CPUS_RUNQ = 16
GRAN_SHIFT = 10  # LOADAVG_GRANULARITY_SHIFT
W = 30 - GRAN_SHIFT  # load_window_shift
P = 18  # load_precision_shift
UNDERLOAD_TOLERANCE = 0
OVERLOAD_TOLERANCE = -3

F_SCHEDULED = 1
F_DELAYED_RUNQ_ADD = 2
F_RUNQ_MIGRATE_REQUEST = 4
F_PINNED = 8

SOFT, HARD = 0, 1


class Runq:
    """struct csched2_runqueue_data."""

    __slots__ = (
        "active",
        "avgload",
        "b_avgload",
        "id",
        "idle",
        "load",
        "load_last",
        "max_weight",
        "nr_cpus",
        "pick_bias",
        "refcnt",
        "runq",
        "smt_idle",
        "svc",
        "tickled",
    )

    def __init__(self, rid: int, cpu: int) -> None:
        self.id = rid
        self.runq: list[Vcpu] = []
        self.svc: dict[Vcpu, None] = {}  # units assigned here, in order
        self.refcnt = 0
        self.nr_cpus = 0
        self.load = 0
        self.load_last = 0
        self.avgload = 0
        self.b_avgload = 0
        self.active = 0
        self.idle = 0
        self.tickled = 0
        self.smt_idle = 0
        self.max_weight = 1
        self.pick_bias = cpu

    def __repr__(self) -> str:
        return f"rq{self.id}"


class Credit2:
    name = "credit2"

    def __init__(self, core: Core, pool: Pool, seed: int) -> None:
        self.core = core
        self.pool = pool
        self.cpus = pool.cpus
        topo = core.topo
        self.topo = topo
        self.rqds: list[Runq] = []
        self.rqd_of: list[Runq | None] = [None] * topo.ncpus
        self.sibling: list[int] = [0] * topo.ncpus  # SMT siblings in the same runqueue
        m = pool.cpus
        while m:
            low = m & -m
            m ^= low
            self._add_cpu(low.bit_length() - 1)

    def start(self) -> None:
        pass  # credit2 has no periodic timer: resets and balancing ride on schedules

    # -- cpu_add_to_runqueue + init_cpu_runqueue ----------------------------------

    def _add_cpu(self, cpu: int) -> None:
        topo = self.topo
        online = self.core.ncpus_online
        min_rqs = (online - 1) // MAX_CPUS_RUNQ + 1
        max_cpus_runq = online // min_rqs
        sib = topo.sib_mask
        valid: Runq | None = None
        for rqd in self.rqds:
            if topo.node_of[rqd.pick_bias] != topo.node_of[cpu]:  # same_socket
                continue
            if rqd.active & sib[cpu]:
                valid = rqd  # keep SMT siblings together, whatever the limit
                break
            if (
                rqd.refcnt < max_cpus_runq
                and self._siblings_fit(rqd, cpu, max_cpus_runq)
                and (valid is None or rqd.refcnt < valid.refcnt)
            ):
                valid = rqd  # fits; and spread evenly: the least full one
        if valid is None:
            valid = Runq(len(self.rqds), cpu)
            self.rqds.append(valid)
        rqd = valid
        rqd.refcnt += 1
        self.rqd_of[cpu] = rqd
        self.sibling[cpu] = 1 << cpu
        for r in _bits(sib[cpu] & rqd.active):
            self.sibling[r] |= 1 << cpu
            self.sibling[cpu] |= 1 << r
        rqd.idle |= 1 << cpu
        rqd.active |= 1 << cpu
        rqd.smt_idle |= 1 << cpu
        rqd.nr_cpus += 1
        if rqd.nr_cpus == 1:
            rqd.pick_bias = cpu

    def _siblings_fit(self, rqd: Runq, cpu: int, max_cpus: int) -> bool:
        """cpu_runqueue_siblings_match: room for cpu and all its siblings."""
        sib = self.topo.sib_mask
        seen = 0
        total = 0
        for r in _bits(rqd.active):
            if not sib[r] & seen:
                seen |= sib[r]
                total += sib[r].bit_count()
        return total + sib[cpu].bit_count() <= max_cpus

    def runqueues(self) -> list[frozenset[int]]:
        """The pCPUs of each runqueue, by id (for tests and reports)."""
        return [frozenset(_bits(r.active)) for r in self.rqds]

    # -- load tracking -----------------------------------------------------------------

    def _update_runq_load(self, rqd: Runq, change: int, now: int) -> None:
        now >>= GRAN_SHIFT
        load = rqd.load
        last = rqd.load_last
        if last + (1 << W) < now:
            rqd.avgload = rqd.b_avgload = load << P
        elif last < now:  # (no time passed: nothing to average)
            delta = now - last
            lp = (delta * (load << P)) >> W
            rqd.avgload += lp - ((delta * rqd.avgload) >> W)
            rqd.b_avgload += lp - ((delta * rqd.b_avgload) >> W)
        rqd.load = load + change
        rqd.load_last = now

    def _update_svc_load(self, svc: Vcpu, change: int, now: int) -> None:
        if change == -1:
            unit_load = 1
        elif change == 1:
            unit_load = 0
        else:
            unit_load = 0 if svc.pflags else 1
        now >>= GRAN_SHIFT
        last = svc.load_last
        if last + (1 << W) < now:
            svc.avgload = unit_load << P
        elif last < now:
            delta = now - last
            svc.avgload += ((delta * (unit_load << P)) >> W) - ((delta * svc.avgload) >> W)
        svc.load_last = now

    def _update_load(self, rqd: Runq, svc: Vcpu | None, change: int, now: int) -> None:
        self._update_runq_load(rqd, change, now)
        if svc is not None:
            self._update_svc_load(svc, change, now)

    # -- runqueue membership (runq_assign / _runq_deassign) ---------------------------

    def _update_max_weight(self, rqd: Runq, new_weight: int, old_weight: int) -> None:
        if new_weight > rqd.max_weight:
            rqd.max_weight = new_weight
        elif old_weight == rqd.max_weight:
            rqd.max_weight = max([1, *(s.dom.weight for s in rqd.svc)])

    def _assign(self, svc: Vcpu, rqd: Runq) -> None:
        svc.rqd = rqd
        rqd.svc[svc] = None
        self._update_max_weight(rqd, svc.dom.weight, 0)
        rqd.b_avgload += svc.avgload

    def _deassign(self, svc: Vcpu) -> None:
        rqd: Runq = svc.rqd
        del rqd.svc[svc]
        self._update_max_weight(rqd, 0, svc.dom.weight)
        rqd.b_avgload = max(rqd.b_avgload - svc.avgload, 0)
        svc.rqd = None

    def _runq_insert(self, svc: Vcpu) -> None:
        """runq_insert: ordered by credit, after those with as much or more."""
        rq = self.rqd_of[svc.cpu].runq  # type: ignore[union-attr]
        credit = svc.credit
        i = 0
        n = len(rq)
        while i < n and rq[i].credit >= credit:
            i += 1
        rq.insert(i, svc)
        svc.on_runq = True

    def _runq_remove(self, svc: Vcpu) -> None:
        svc.rqd.runq.remove(svc)
        svc.on_runq = False

    # -- credits ---------------------------------------------------------------------

    def _burn(self, rqd: Runq, svc: Vcpu, now: int) -> None:
        """burn_credits / t2c_update."""
        delta = now - svc.start_time
        if delta <= 0:
            return
        val, svc.residual = divmod(delta * rqd.max_weight + svc.residual, svc.dom.weight)
        credit = svc.credit - val
        svc.credit = credit if credit > CREDIT_MIN else CREDIT_MIN
        svc.start_time = now

    def _reset_credit(self, rqd: Runq, now: int, snext: Vcpu) -> None:
        """reset_credit: everyone in the runqueue gets CREDIT_INIT more, clipped."""
        reset = CREDIT_INIT
        if snext.credit == CREDIT_MIN:
            reset += CREDIT_INIT
        cur = self.core.cur
        top = CREDIT_INIT + CARRYOVER_MAX
        for svc in rqd.svc:
            if cur[svc.cpu] is svc:
                self._burn(rqd, svc, now)
            credit = svc.credit + reset
            svc.credit = credit if credit < top else top
            svc.start_time = now

    # -- hooks ---------------------------------------------------------------------

    def insert(self, v: Vcpu) -> None:
        """csched2_alloc_udata + csched2_unit_insert."""
        now = self.core.now
        v.credit = CREDIT_INIT
        v.residual = 0
        v.flags = 0
        v.avgload = 1 << (P - 1)  # starting load of 50%
        v.load_last = now >> GRAN_SHIFT
        v.tickled_cpu = -1
        v.rqd = None
        self.affinity_changed(v)
        v.cpu = self.pick_resource(v)
        self._assign(v, self.rqd_of[v.cpu])  # type: ignore[arg-type]

    def remove(self, v: Vcpu) -> None:
        """csched2_unit_remove."""
        if v.rqd is not None:
            self._deassign(v)

    def sleep(self, v: Vcpu) -> None:
        """csched2_unit_sleep."""
        if self.core.cur[v.cpu] is v:
            self._tickle_cpu(v.cpu, v.rqd)
        elif v.on_runq:
            self._update_load(v.rqd, v, -1, self.core.now)
            self._runq_remove(v)
        else:
            v.flags &= ~F_DELAYED_RUNQ_ADD

    def wake(self, v: Vcpu) -> None:
        """csched2_unit_wake."""
        if self.core.cur[v.cpu] is v or v.on_runq:
            return
        if v.flags & F_SCHEDULED:
            v.flags |= F_DELAYED_RUNQ_ADD
            return
        if v.rqd is None:
            self._assign(v, self.rqd_of[v.cpu])  # type: ignore[arg-type]
        now = self.core.now
        self._update_load(v.rqd, v, 1, now)
        self._runq_insert(v)
        self._runq_tickle(v, now)

    def context_saved(self, v: Vcpu) -> None:
        """csched2_context_saved."""
        now = self.core.now
        v.flags &= ~F_SCHEDULED
        if v.flags & F_DELAYED_RUNQ_ADD:
            v.flags &= ~F_DELAYED_RUNQ_ADD
            if not v.pflags:
                self._runq_insert(v)
                self._runq_tickle(v, now)
                return
        self._update_runq_load(v.rqd, -1, now)
        self._update_svc_load(v, -1, now)

    def move(self, v: Vcpu, cpu: int) -> None:
        """csched2_unit_migrate."""
        trqd = self.rqd_of[cpu]
        assert trqd is not None
        if trqd is not v.rqd:
            self._migrate(v, trqd, self.core.now)
        else:
            v.cpu = cpu

    def affinity_changed(self, v: Vcpu) -> None:
        """csched2_aff_cntl."""
        if v.hard.bit_count() == 1:
            v.flags |= F_PINNED
        else:
            v.flags &= ~F_PINNED

    # -- tickling ---------------------------------------------------------------------

    def _tickle_cpu(self, cpu: int, rqd: Runq) -> None:
        rqd.tickled |= 1 << cpu
        sibs = self.sibling[cpu]
        if rqd.smt_idle & sibs == sibs:
            rqd.smt_idle &= ~sibs
        self.core.raise_softirq(cpu)

    def _smt_idle_set(self, cpu: int, idlers: int, rqd: Runq) -> None:
        sibs = self.sibling[cpu]
        if idlers & sibs == sibs:
            rqd.smt_idle |= sibs

    def _tickle_score(self, new: Vcpu, cpu: int, now: int) -> int:
        cur = self.core.cur[cpu]
        if cur is None or now - cur.state_entry <= RATELIMIT_NS - RATELIMIT_TICKLE_TOLERANCE:
            return -1  # idle (tasklet), or not preemptable yet
        self._burn(self.rqd_of[cpu], cur, now)  # type: ignore[arg-type]
        score = new.credit - cur.credit
        if new.cpu != cpu:
            score -= MIGRATE_RESIST
        if score > 0:
            if new.soft >> cpu & 1:
                score += CREDIT_INIT
            if not cur.soft >> cpu & 1:
                score += CREDIT_INIT
        return score

    def _best_to_preempt(
        self, new: Vcpu, rqd: Runq, mask: int, now: int, best: int
    ) -> tuple[int, int]:
        """The rest of runq_tickle's scan: tickle_score() over ``mask``, inlined."""
        cur = self.core.cur
        cut = now - (RATELIMIT_NS - RATELIMIT_TICKLE_TOLERANCE)
        ncredit = new.credit
        ncpu = new.cpu
        nsoft = new.soft
        max_weight = rqd.max_weight
        ipid = -1
        while mask:
            low = mask & -mask
            mask ^= low
            c = cur[low.bit_length() - 1]
            if c is None or c.state_entry >= cut:
                continue  # idle (tasklet) or not preemptable: score -1
            delta = now - c.start_time
            if delta > 0:  # burn_credits(rqd, cur, now)
                val, c.residual = divmod(delta * max_weight + c.residual, c.dom.weight)
                credit = c.credit - val
                c.credit = credit if credit > CREDIT_MIN else CREDIT_MIN
                c.start_time = now
            i = low.bit_length() - 1
            score = ncredit - c.credit
            if i != ncpu:
                score -= MIGRATE_RESIST
            if score > 0:
                if nsoft & low:
                    score += CREDIT_INIT
                if not c.soft & low:
                    score += CREDIT_INIT
            if score > best:
                best = score
                ipid = i
        return ipid, best

    def _runq_tickle(self, new: Vcpu, now: int) -> None:
        """runq_tickle: idle core, idle pCPU (soft then hard), else best to preempt."""
        cpu = new.cpu
        rqd: Runq = new.rqd
        online = self.cpus
        ipid = -1
        if new.flags & F_PINNED and rqd.idle >> cpu & 1 and not rqd.tickled >> cpu & 1:
            ipid = cpu
        else:
            for step in (SOFT, HARD):
                if step == SOFT:
                    if not new.has_soft:
                        continue
                    aff = new.soft & new.hard
                else:
                    aff = new.hard
                aff &= online
                m = rqd.smt_idle & aff
                if m:
                    ipid = test_or_cycle(cpu, m)
                    break
                m = rqd.idle & ~rqd.tickled & aff
                if m:
                    ipid = test_or_cycle(cpu, m)
                    break
            if ipid < 0:
                best = 0
                mask = rqd.active & ~rqd.idle & ~rqd.tickled & new.hard & online
                if mask >> cpu & 1:
                    mask &= ~(1 << cpu)
                    score = self._tickle_score(new, cpu, now)
                    if score > best:
                        best = score
                        ipid = cpu
                        if new.soft >> cpu & 1:
                            mask = 0  # in new's soft affinity: just take it
                if mask:
                    i, best = self._best_to_preempt(new, rqd, mask, now, best)
                    if i >= 0:
                        ipid = i
                if ipid < 0:
                    return
        self._tickle_cpu(ipid, rqd)
        new.tickled_cpu = ipid

    # -- csched2_res_pick ---------------------------------------------------------

    def pick_resource(self, v: Vcpu) -> int:
        scratch = v.hmask
        if v.flags & F_RUNQ_MIGRATE_REQUEST:
            v.flags &= ~F_RUNQ_MIGRATE_REQUEST
            mrqd: Runq = v.migrate_rqd
            if scratch & mrqd.active:
                new_cpu = cycle(mrqd.pick_bias, scratch & mrqd.active)
                mrqd.pick_bias = new_cpu
                return new_cpu
        has_soft = v.has_soft
        big = 1 << 126
        min_load = min_s_load = big
        min_rqd: Runq | None = None
        min_s_rqd: Runq | None = None
        for rqd in self.rqds:
            if not scratch & rqd.active:
                continue
            # Our own runqueue's load without us, "to simulate impartiality".
            load = max(rqd.b_avgload - v.avgload, 0) if rqd is v.rqd else rqd.b_avgload
            if has_soft and load < min_s_load and scratch & rqd.active & v.soft:
                min_s_load = load
                min_s_rqd = rqd
            if load < min_load:
                min_load = load
                min_rqd = rqd
        assert min_rqd is not None
        if has_soft and min_s_rqd is not None:
            scratch &= v.soft & min_s_rqd.active
        else:
            scratch &= min_rqd.active
        # As in 4.17: the bias of the hard-affinity minimum, even for the soft one.
        new_cpu = cycle(min_rqd.pick_bias, scratch)
        min_rqd.pick_bias = new_cpu
        return new_cpu

    # -- balance_load ----------------------------------------------------------------

    def _migrateable(self, svc: Vcpu, rqd: Runq) -> bool:
        return not svc.flags & F_RUNQ_MIGRATE_REQUEST and (svc.hmask & rqd.active) != 0

    def _migrate(self, svc: Vcpu, trqd: Runq, now: int) -> None:
        """migrate: a running unit is asked to move; a queued or idle one moves now."""
        if svc.flags & F_SCHEDULED:
            svc.migrate_rqd = trqd
            self.core.set_migrating(svc)
            svc.flags |= F_RUNQ_MIGRATE_REQUEST
            self._tickle_cpu(svc.cpu, svc.rqd)
            return
        on_runq = svc.on_runq
        if on_runq:
            self._runq_remove(svc)
            self._update_load(svc.rqd, None, -1, now)
        self._deassign(svc)
        svc.cpu = cycle(trqd.pick_bias, svc.hmask & trqd.active)
        trqd.pick_bias = svc.cpu
        self._assign(svc, trqd)
        if on_runq:
            self._update_load(trqd, None, 1, now)
            self._runq_insert(svc)
            self._runq_tickle(svc, now)

    def _balance_load(self, cpu: int, now: int) -> None:
        lrqd = self.rqd_of[cpu]
        assert lrqd is not None
        self._update_runq_load(lrqd, 0, now)
        max_delta_rqd: Runq | None = None
        load_delta = 0
        last = lrqd
        t = now >> GRAN_SHIFT
        for orqd in self.rqds:
            last = orqd  # st.orqd keeps the last runqueue looked at
            if orqd is lrqd:
                continue
            # self._update_runq_load(orqd, 0, now), inlined: every runqueue, every time.
            ll = orqd.load_last
            if ll + (1 << W) < t:
                orqd.avgload = orqd.b_avgload = orqd.load << P
            elif ll < t:
                d = t - ll
                lp = (d * (orqd.load << P)) >> W
                orqd.avgload += lp - ((d * orqd.avgload) >> W)
                orqd.b_avgload += lp - ((d * orqd.b_avgload) >> W)
            orqd.load_last = t
            delta = abs(lrqd.b_avgload - orqd.b_avgload)
            if delta > load_delta:
                load_delta = delta
                max_delta_rqd = orqd
        if max_delta_rqd is None:
            return
        # As in 4.17, the capacity test reads the last runqueue of the loop.
        load_max = max(lrqd.b_avgload, last.b_avgload)
        cpus_max = max(lrqd.nr_cpus, last.nr_cpus)
        if load_max < cpus_max << P:
            if load_delta < 1 << (P + UNDERLOAD_TOLERANCE):
                return
        elif load_delta < 1 << (P + OVERLOAD_TOLERANCE):
            return
        orqd = max_delta_rqd
        best = load_delta
        best_push: Vcpu | None = None
        best_pull: Vcpu | None = None
        l0, o0 = lrqd.b_avgload, orqd.b_avgload
        inner_updated = False
        pulls = list(orqd.svc)
        for push in list(lrqd.svc):
            self._update_svc_load(push, 0, now)
            if not self._migrateable(push, orqd):
                continue
            pa = push.avgload
            for pull in pulls:
                if not inner_updated:
                    self._update_svc_load(pull, 0, now)
                if not self._migrateable(pull, lrqd):
                    continue
                d = abs((l0 - pa + pull.avgload) - (o0 + pa - pull.avgload))
                if d < best:
                    best, best_push, best_pull = d, push, pull
            inner_updated = True
            d = abs((l0 - pa) - (o0 + pa))
            if d < best:
                best, best_push, best_pull = d, push, None
        for pull in pulls:
            if not self._migrateable(pull, lrqd):
                continue
            d = abs((l0 + pull.avgload) - (o0 - pull.avgload))
            if d < best:
                best, best_push, best_pull = d, None, pull
        if best_push is not None:
            self._migrate(best_push, orqd, now)
        if best_pull is not None:
            self._migrate(best_pull, lrqd, now)

    # -- csched2_schedule ------------------------------------------------------------

    def schedule(self, cpu: int, prev: Vcpu | None) -> tuple[Vcpu | None, int, bool]:
        core = self.core
        now = core.now
        rqd = self.rqd_of[cpu]
        assert rqd is not None
        bit = 1 << cpu
        if rqd.tickled & bit:
            rqd.tickled &= ~bit
            self._smt_idle_set(cpu, rqd.idle & ~rqd.tickled, rqd)
        if prev is not None:
            delta = now - prev.start_time  # burn_credits(rqd, prev, now), inlined
            if delta > 0:
                val, prev.residual = divmod(delta * rqd.max_weight + prev.residual,
                                            prev.dom.weight)
                credit = prev.credit - val
                prev.credit = credit if credit > CREDIT_MIN else CREDIT_MIN
                prev.start_time = now
        snext = self._runq_candidate(rqd, prev, cpu, now)
        if snext is not prev and prev is not None and not prev.pflags:
            prev.flags |= F_DELAYED_RUNQ_ADD
        if snext is not None:
            if snext is not prev:
                self._runq_remove(snext)
                snext.flags |= F_SCHEDULED
            else:
                self._update_runq_load(rqd, 0, now)
                self._update_svc_load(snext, 0, now)
            if rqd.idle & bit:
                rqd.idle &= ~bit
                sibs = self.sibling[cpu]
                if rqd.smt_idle & sibs == sibs:
                    rqd.smt_idle &= ~sibs
            rq = rqd.runq
            top = snext.credit if not rq or snext.credit > rq[0].credit else rq[0].credit
            if top <= 0:
                self._reset_credit(rqd, now, snext)
                self._balance_load(cpu, now)
            snext.start_time = now
            snext.tickled_cpu = -1
            if snext.cpu != cpu:
                snext.credit += MIGRATE_COMPENSATION
                snext.cpu = cpu
        else:
            if not rqd.idle & bit:
                rqd.idle |= bit
                self._smt_idle_set(cpu, rqd.idle & ~rqd.tickled, rqd)
            self._update_runq_load(rqd, 0, now)
            return None, -1, False
        return snext, self._runtime(rqd, snext, now), False

    def _runq_candidate(self, rqd: Runq, scurr: Vcpu | None, cpu: int, now: int) -> Vcpu | None:
        snext: Vcpu | None = None
        if scurr is not None:
            if not scurr.pflags and now - scurr.state_entry < RATELIMIT_NS:
                return scurr
            soft_aff_preempt = False
            if scurr.has_soft and not scurr.smask >> cpu & 1:
                # Outside its soft affinity: is an idle pCPU of it free?
                soft_aff_preempt = (scurr.smask & rqd.idle & ~rqd.tickled) != 0
            if not scurr.pflags and not soft_aff_preempt:
                snext = scurr
        snext_credit = IDLE_CREDIT if snext is None else snext.credit
        tickled = rqd.tickled
        for svc in rqd.runq:
            if svc.credit <= snext_credit:
                break
            if svc.pflags:
                continue
            if not svc.hard >> cpu & 1:
                continue
            tc = svc.tickled_cpu
            if tc != -1 and tc != cpu and tickled >> tc & 1:
                continue  # left for the pCPU tickled to take it
            if svc.cpu != cpu and snext_credit + MIGRATE_RESIST > svc.credit:
                continue  # not worth pulling from another pCPU
            return svc
        return snext

    def _runtime(self, rqd: Runq, snext: Vcpu | None, now: int) -> int:
        """csched2_runtime."""
        if snext is None:
            return -1
        min_time = MIN_TIMER
        ratelimit_min = RATELIMIT_NS
        if snext.is_running:
            ratelimit_min = snext.state_entry + RATELIMIT_NS - now
        if ratelimit_min > min_time:
            min_time = ratelimit_min
        rt_credit = snext.credit
        rq = rqd.runq
        if rq and rq[0].credit > 0:
            rt_credit = snext.credit - rq[0].credit
        t = rt_credit * snext.dom.weight // rqd.max_weight if rt_credit > 0 else 0
        if t < min_time:
            return min_time
        return MAX_TIMER if t > MAX_TIMER else t


def _bits(mask: int) -> list[int]:
    out = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out
