/* credit1.c: a port of agent/sim/credit1.py (Xen 4.17's credit scheduler model),
 * exact to the bit: every decision, every timer push and every random draw in
 * the same order as the Python model. Comments name the Python method each
 * function ports; read credit1.py for the why of each rule.
 *
 * Python containers and their C forms (native.h):
 * - runq[cpu] (list ordered by priority), active_sdom and SDom.active (insertion-
 *   ordered dicts): struct list_head lists; a dict's deletion is list_del, a move
 *   to the end list_del + list_add_tail, `list(reversed(active_sdom))` is
 *   list_for_each_entry_safe_reverse (the visit may move or drop only itself);
 * - int bit masks: mask_t.
 */
#include <stdlib.h>
#include <string.h>

#include "native.h"

#define TICK_NS 10000000LL
#define TSLICE_NS 30000000LL
#define CREDITS_PER_TSLICE 300
#define RATELIMIT_NS 1000000LL
#define MIN_TIMER_NS 100000LL

#define PRI_BOOST 0
#define PRI_UNDER (-1)
#define PRI_OVER (-2)
#define PRI_IDLE (-64)

enum { SOFT = 0, HARD = 1 };

/* Credit1's attributes; pool->priv points at it (pool->rng is its random.Random). */
struct c1_priv {
    struct host *h;
    struct pool *pool;
    mask_t cpus;
    int64_t migr_delay;              /* vcpu_migration_delay: 0, the engine never sets it */
    struct list_head runq[MAX_CPUS]; /* c1_vcpu.runq_elem, highest priority first */
    int nr_runnable[MAX_CPUS];
    int idle_bias[MAX_CPUS];
    int last_tickle[MAX_CPUS];
    int balance_bias[MAX_NODES];
    mask_t idlers;
    struct list_head active_sdom; /* c1_dom.sdom_elem, insertion ordered (head = the end) */
    int64_t weight;
    int64_t credit;
    int64_t credit_balance;
    int64_t runq_sort;
    int64_t sorted_epoch;
    /* Derived masks and counts, kept in step so the hot paths need no scans. */
    mask_t busy;         /* pCPUs running one of our vCPUs */
    mask_t overloaded;   /* nr_runnable > 1 */
    mask_t queued;       /* runqueue not empty */
    int64_t nq;          /* queued vCPUs in the pool */
    int64_t nq_hi;       /* ... of priority UNDER or BOOST */
    mask_t boosted;      /* running a BOOST vCPU (may be stale: checked at tick) */
    mask_t inactive;     /* running a vCPU off the active list (may be stale) */
    mask_t outside_soft; /* running a vCPU outside its soft-affinity step */
    mask_t spread;       /* running a vCPU whose pick mask reaches other sockets */
    mask_t lazy;         /* lone runner whose slice end is deferred */
    mask_t lazy_over;    /* ... whose vCPU is OVER (may steal once work queues) */
    bool smt;            /* some pCPU has an SMT sibling */
};

/* ---- runqueue -------------------------------------------------------------------- */

/* Credit1._nr_inc (Xen's inc_nr_runnable); 2 runnable = overloaded */
static void nr_inc(struct c1_priv *p, int cpu) {
    int n = ++p->nr_runnable[cpu];
    if (n == 2) mask_set(&p->overloaded, cpu);
}

/* Credit1._nr_dec (Xen's dec_nr_runnable) */
static void nr_dec(struct c1_priv *p, int cpu) {
    int n = --p->nr_runnable[cpu];
    if (n == 1) mask_clear(&p->overloaded, cpu);
}

/* Credit1._arm_lazy_over: an UNDER/BOOST vCPU is queued, so lone OVER runners may
 * steal it: their deferred slice ends become real timers. */
static void arm_lazy_over(struct c1_priv *p) {
    mask_t m = p->lazy_over;
    p->lazy = mask_andnot(&p->lazy, &m);
    mask_zero(&p->lazy_over);
    MASK_FOREACH(c, &m) host_arm_slice(p->h, c);
}

/* Credit1._runq_insert (Xen's __runq_insert): after every vCPU of equal or higher priority. */
static void runq_insert(struct c1_priv *p, int cpu, struct vcpu *v) {
    int pri = v->c1.pri;
    struct list_head *pos = p->runq[cpu].next;
    while (pos != &p->runq[cpu] && list_entry(pos, struct vcpu, c1.runq_elem)->c1.pri >= pri)
        pos = pos->next;
    list_add_before(&v->c1.runq_elem, pos); /* at the tail if pos is the head */
    v->c1.on_runq = true;
    mask_set(&p->queued, cpu);
    p->nq++;
    if (pri >= PRI_UNDER) {
        if (!p->nq_hi) arm_lazy_over(p);
        p->nq_hi++;
    }
    if (mask_test(&p->lazy, cpu)) {
        mask_clear(&p->lazy, cpu);
        mask_clear(&p->lazy_over, cpu);
        host_arm_slice(p->h, cpu);
    }
}

/* Credit1._runq_remove (Xen's __runq_remove) */
static void runq_remove(struct c1_priv *p, int cpu, struct vcpu *v) {
    list_del(&v->c1.runq_elem);
    v->c1.on_runq = false;
    if (list_empty(&p->runq[cpu])) mask_clear(&p->queued, cpu);
    p->nq--;
    if (v->c1.pri >= PRI_UNDER) p->nq_hi--;
}

/* ---- active lists ---------------------------------------------------------------- */

/* Credit1._acct_start (Xen's __csched_unit_acct_start) */
static void acct_start(struct c1_priv *p, struct vcpu *v) {
    struct c1_dom *sd = &v->dom->c1;
    v->c1.active = true;
    list_add_tail(&v->c1.active_elem, &sd->active);
    sd->n_active++;
    p->weight += sd->weight;
    if (!sd->in_active_sdom) {
        sd->in_active_sdom = true;
        list_add_tail(&sd->sdom_elem, &p->active_sdom);
    }
}

/* Credit1._acct_stop (Xen's __csched_unit_acct_stop_locked) */
static void acct_stop(struct c1_priv *p, struct vcpu *v) {
    struct c1_dom *sd = &v->dom->c1;
    v->c1.active = false;
    list_del(&v->c1.active_elem);
    sd->n_active--;
    p->weight -= sd->weight;
    if (!sd->n_active) {
        sd->in_active_sdom = false;
        list_del(&sd->sdom_elem);
    }
}

/* ---- credits --------------------------------------------------------------------- */

/* Credit1._burn (Xen's burn_credits): one credit per 100 us run since start_time. */
static void burn(struct vcpu *v, int64_t now) {
    int64_t delta = now - v->c1.start_time;
    if (delta <= 0) return;
    int64_t x = delta * 10 + v->c1.residual;
    int64_t credits = floordiv64(x, 1000000);
    v->c1.residual = x - credits * 1000000;
    v->c1.credit -= credits;
    v->c1.start_time = now;
}

/* ---- pick (_csched_cpu_pick) ----------------------------------------------------- */

/* Credit1._pick (Xen's _csched_cpu_pick): stay, or the pCPU of the idlest core / node;
 * commit keeps the idle_bias it moved (csched_res_pick does, csched_unit_acct not). */
static int pick(struct c1_priv *p, struct vcpu *v, bool commit) {
    struct host *h = p->h;
    int vcpu_cpu = v->cpu;
    int spc = -1;
    int cpu = vcpu_cpu;
    mask_t idlers = p->idlers;
    for (int step = SOFT; step <= HARD; step++) {
        mask_t cpus;
        if (step == SOFT) {
            if (!v->has_soft || mask_empty(&v->smask)) continue;
            cpus = v->smask;
        } else {
            cpus = v->hmask;
        }
        /* If present, prefer the vCPU's current pCPU. */
        cpu = mask_test(&cpus, vcpu_cpu) ? vcpu_cpu : mask_cycle(vcpu_cpu, &cpus);
        if (cpu < 0) { /* empty mask: Python raises (a negative shift count) */
            host_fail(h, "ValueError: credit1 pick for d%dv%d: empty affinity mask", v->domid,
                      v->vid);
            return vcpu_cpu;
        }
        idlers = p->idlers;
        if (cpu == vcpu_cpu && list_empty(&p->runq[cpu]))
            mask_set(&idlers, cpu); /* discount the vCPU itself: is_runq_idle() */
        cpus = mask_and(&cpus, &idlers);
        if (!mask_test(&cpus, cpu) && !mask_empty(&cpus)) cpu = mask_cycle(cpu, &cpus);
        mask_clear(&cpus, cpu);
        while (!mask_empty(&cpus)) {
            int nxt = mask_cycle(cpu, &cpus);
            mask_t cpu_idlers, nxt_idlers;
            int factor;
            const mask_t *core_cpu = &h->core_mask[cpu];
            if (mask_test(core_cpu, nxt)) {
                /* Same socket: compare idle threads of the two cores. */
                cpu_idlers = mask_and(&idlers, &h->sib_mask[cpu]);
                if (mask_equal(&cpu_idlers, &h->sib_mask[cpu])) {
                    cpus = mask_andnot(&cpus, core_cpu);
                    continue;
                }
                factor = 1;
                nxt_idlers = mask_and(&idlers, &h->sib_mask[nxt]);
            } else {
                /* Different sockets: migrate only to one twice as idle. */
                factor = 2;
                cpu_idlers = mask_and(&idlers, core_cpu);
                nxt_idlers = mask_and(&idlers, &h->core_mask[nxt]);
            }
            if (mask_weight(&cpu_idlers) * factor < mask_weight(&nxt_idlers)) {
                nxt_idlers = mask_and(&nxt_idlers, &cpus);
                spc = nxt;
                cpu = mask_cycle(p->idle_bias[nxt], &nxt_idlers);
                cpus = mask_andnot(&cpus, &h->sib_mask[cpu]);
            } else {
                cpus = mask_andnot(&cpus, &nxt_idlers);
            }
        }
        if (mask_test(&idlers, cpu)) break;
    }
    if (commit && spc >= 0) p->idle_bias[spc] = cpu;
    return cpu;
}

/* ---- __runq_tickle --------------------------------------------------------------- */

/* Credit1._tickle (Xen's __runq_tickle): an idler for the new vCPU, soft then hard
 * affinity, or its own pCPU if it outranks what runs there. */
static void tickle(struct c1_priv *p, struct vcpu *nw) {
    struct host *h = p->h;
    int cpu = nw->cpu;
    struct vcpu *cur = h->cur[cpu];
    int cur_pri = cur ? cur->c1.pri : PRI_IDLE;
    bool idle_any = !mask_empty(&p->idlers);
    int target = -1;
    if (((nw->c1.flags & C1_F_PINNED) && mask_test(&p->idlers, cpu)) || cur_pri == PRI_IDLE ||
        (!idle_any && nw->c1.pri > cur_pri)) {
        target = cpu;
    } else if (idle_any) {
        for (int step = SOFT; step <= HARD; step++) {
            mask_t new_idlers;
            if (step == SOFT) {
                if (!nw->has_soft) continue;
                new_idlers = mask_and(&nw->smask, &p->idlers);
                if (mask_empty(&new_idlers)) continue;
            } else {
                new_idlers = mask_and(&nw->hmask, &p->idlers);
            }
            if (mask_empty(&new_idlers)) {
                if (nw->c1.pri > cur_pri) target = cpu;
            } else {
                int t = mask_cycle(p->last_tickle[cpu], &new_idlers);
                p->last_tickle[cpu] = t;
                target = t;
            }
            if (target >= 0) break;
        }
    }
    if (target >= 0) {
        mask_clear(&p->idlers, target);
        host_raise_softirq(h, target);
    }
}

/* ---- csched_load_balance / csched_runq_steal ------------------------------------- */

/* Credit1._runq_steal (Xen's csched_runq_steal): only queued vCPUs, only of strictly
 * higher priority. */
static struct vcpu *runq_steal(struct c1_priv *p, int peer, int cpu, int pri, int step) {
    struct host *h = p->h;
    if (!h->cur[peer]) return NULL; /* an idle peer is about to take its own work */
    struct vcpu *v;
    list_for_each_entry(v, &p->runq[peer], c1.runq_elem) {
        if (v->c1.pri <= pri) break;
        if (v->is_running) continue;
        const mask_t *mask;
        if (step == SOFT) {
            if (!v->has_soft) continue;
            mask = &v->smask;
        } else {
            mask = &v->hmask;
        }
        if (!mask_test(mask, cpu)) continue;
        if (p->migr_delay && h->now - v->c1.last_sched < p->migr_delay) continue;
        runq_remove(p, peer, v);
        nr_dec(p, peer);
        v->cpu = cpu;
        nr_inc(p, cpu);
        return v;
    }
    return NULL;
}

/* Credit1._load_balance (Xen's csched_load_balance): steal soft-affine work first,
 * from our node first. */
static struct vcpu *load_balance(struct c1_priv *p, int cpu, int pri) {
    if (!(pri == PRI_OVER ? p->nq_hi : p->nq))
        return NULL; /* nothing queued anywhere that could be stolen */
    struct host *h = p->h;
    int nnodes = h->nnodes;
    int node = h->node_of[cpu];
    mask_t workers_all = mask_andnot(&p->cpus, &p->idlers);
    mask_clear(&workers_all, cpu);
    for (int step = SOFT; step <= HARD; step++) {
        int peer_node = node;
        for (;;) {
            mask_t workers = mask_and(&workers_all, &h->node_mask[peer_node]);
            mask_t cand = mask_and(&workers, &p->overloaded);
            if (!mask_empty(&cand)) {
                int first_cpu = mask_cycle(p->balance_bias[peer_node], &workers);
                MASK_FOREACH_CYCLIC(c, first_cpu, &cand) {
                    struct vcpu *v = runq_steal(p, c, cpu, pri, step);
                    if (v) {
                        p->balance_bias[peer_node] = c;
                        return v;
                    }
                }
            }
            peer_node = peer_node + 1 < nnodes ? peer_node + 1 : 0;
            if (peer_node == node) break;
        }
    }
    return NULL;
}

/* ---- csched_schedule ------------------------------------------------------------- */

/* Credit1.schedule (Xen's csched_schedule) */
static struct vcpu *c1_schedule(struct host *h, struct pool *pool, int cpu, struct vcpu *prev,
                                int64_t *tslice, bool *lazy) {
    struct c1_priv *p = pool->priv;
    int64_t now = h->now;
    mask_clear(&p->lazy, cpu);
    mask_clear(&p->lazy_over, cpu);
    *lazy = false;
    if (prev) {
        burn(prev, now);
        int64_t runtime = now - prev->state_entry;
        prev->c1.last_sched = now;
        if (!prev->pflags && runtime < RATELIMIT_NS) {
            /* Rate limiting: keep prev until it has run RATELIMIT_NS. */
            *tslice = runtime < MIN_TIMER_NS ? MIN_TIMER_NS : RATELIMIT_NS - runtime;
            return prev;
        }
        if (!prev->pflags)
            runq_insert(p, cpu, prev);
        else
            nr_dec(p, cpu);
    }
    struct vcpu *snext = list_empty(&p->runq[cpu])
                             ? NULL
                             : list_first_entry(&p->runq[cpu], struct vcpu, c1.runq_elem);
    int pri = snext ? snext->c1.pri : PRI_IDLE;
    if (pri > PRI_OVER) {
        runq_remove(p, cpu, snext);
    } else {
        struct vcpu *stolen = load_balance(p, cpu, pri);
        if (stolen)
            snext = stolen;
        else if (snext)
            runq_remove(p, cpu, snext);
    }
    if (!snext) {
        mask_set(&p->idlers, cpu);
        mask_clear(&p->busy, cpu);
        *tslice = -1;
        return NULL;
    }
    mask_clear(&p->idlers, cpu);
    mask_set(&p->busy, cpu);
    if (snext != prev) snext->c1.start_time = now;
    if (snext->c1.pri == PRI_BOOST) mask_set(&p->boosted, cpu);
    if (!snext->c1.active) mask_set(&p->inactive, cpu);
    mask_t step_mask;
    if (snext->has_soft && mask_test(&snext->smask, cpu)) {
        mask_clear(&p->outside_soft, cpu);
        step_mask = snext->smask;
    } else {
        if (snext->has_soft)
            mask_set(&p->outside_soft, cpu);
        else
            mask_clear(&p->outside_soft, cpu);
        step_mask = snext->hmask;
    }
    if (!mask_subset(&step_mask, &h->core_mask[cpu]))
        mask_set(&p->spread, cpu);
    else
        mask_clear(&p->spread, cpu);
    *tslice = TSLICE_NS;
    /* A lone vCPU's slice end changes nothing unless a peer has queued work
     * it could steal (only if OVER) or someone queues here: defer it. */
    if (list_empty(&p->runq[cpu]) && (snext->c1.pri != PRI_OVER || !p->nq_hi)) {
        mask_set(&p->lazy, cpu);
        if (snext->c1.pri == PRI_OVER) mask_set(&p->lazy_over, cpu);
        *lazy = true;
    }
    return snext;
}

/* ---- csched_acct ----------------------------------------------------------------- */

/* Credit1._acct (Xen's csched_acct): hand out a timeslice of credits by weight,
 * recompute priorities. */
static void acct(struct host *h, void *a, int64_t b) {
    (void)b;
    struct c1_priv *p = a;
    int64_t now = h->now;
    host_timer(h, now + TSLICE_NS, acct, p, 0);
    int64_t weight_total = p->weight;
    __int128 credit_total = p->credit;
    if (p->credit_balance < 0) credit_total -= p->credit_balance;
    if (weight_total == 0) {
        p->credit_balance = 0;
        return;
    }
    /* Running vCPUs have been burnt up to their pCPU's last tick. */
    int64_t last_tick = now - (now - floordiv64(now, TICK_NS) * TICK_NS);
    for (int c = 0; c < h->ncpus; c++) {
        struct vcpu *v = h->cur[c];
        if (v && v->dom->pool == p->pool && v->c1.active)
            burn(v, last_tick > v->c1.start_time ? last_tick : v->c1.start_time);
    }
    __int128 weight_left = weight_total;
    int64_t credit_balance = 0;
    bool credit_xtra = false;
    int64_t prev_balance = p->credit_balance;
    struct c1_dom *sd, *sd_prev;
    /* list(reversed(active_sdom)): the visit moves or drops only sd itself */
    list_for_each_entry_safe_reverse(sd, sd_prev, &p->active_sdom, sdom_elem) {
        int64_t n_act = sd->n_active;
        weight_left -= (__int128)sd->weight * n_act;
        __int128 credit_peak = (__int128)n_act * CREDITS_PER_TSLICE;
        if (prev_balance < 0)
            credit_peak += floordiv128(
                -(__int128)prev_balance * sd->weight * n_act + weight_total - 1, weight_total);
        __int128 credit_fair =
            floordiv128(credit_total * sd->weight * n_act + weight_total - 1, weight_total);
        if (credit_fair < credit_peak) {
            credit_xtra = true;
        } else {
            if (weight_left != 0)
                credit_total += floordiv128(
                    (credit_fair - credit_peak) * weight_total + weight_left - 1, weight_left);
            if (credit_xtra) {
                /* Keep domains with extra credits at the head of the queue. */
                list_del(&sd->sdom_elem);
                list_add_tail(&sd->sdom_elem, &p->active_sdom);
            }
            credit_fair = credit_peak;
        }
        credit_fair = floordiv128(credit_fair + n_act - 1, n_act);
        bool any_stopped = false;
        struct vcpu *v, *nx;
        list_for_each_entry(v, &sd->active, c1.active_elem) {
            int64_t credit = v->c1.credit + (int64_t)credit_fair;
            bool old_hi = v->c1.pri >= PRI_UNDER;
            if (credit < 0) {
                v->c1.pri = PRI_OVER;
                if (credit < -CREDITS_PER_TSLICE) credit = -CREDITS_PER_TSLICE;
            } else {
                v->c1.pri = PRI_UNDER;
                if (credit > CREDITS_PER_TSLICE) {
                    /* Upper bound: it stops earning, with half its credit. */
                    v->c1.flags |= C1_F_STOPPED;
                    any_stopped = true;
                    credit = floordiv64(credit, 2);
                    if (v->is_running) mask_set(&p->inactive, v->cpu);
                }
            }
            v->c1.credit = credit;
            credit_balance += credit;
            bool new_hi = v->c1.pri >= PRI_UNDER;
            if (v->c1.on_runq && old_hi != new_hi) {
                if (new_hi) {
                    if (!p->nq_hi) arm_lazy_over(p);
                    p->nq_hi++;
                } else {
                    p->nq_hi--;
                }
            } else if (v->is_running && h->cur[v->cpu] == v && mask_test(&p->lazy, v->cpu)) {
                int c = v->cpu;
                if (new_hi) {
                    mask_clear(&p->lazy_over, c);
                } else if (p->nq_hi) {
                    mask_clear(&p->lazy, c);
                    mask_clear(&p->lazy_over, c);
                    host_arm_slice(h, c);
                } else {
                    mask_set(&p->lazy_over, c);
                }
            }
        }
        if (any_stopped) {
            list_for_each_entry_safe(v, nx, &sd->active, c1.active_elem) {
                if (v->c1.flags & C1_F_STOPPED) {
                    v->c1.flags &= ~C1_F_STOPPED;
                    acct_stop(p, v);
                }
            }
        }
    }
    p->credit_balance = credit_balance;
    p->runq_sort++;
}

/* ---- csched_tick ----------------------------------------------------------------- */

/* Credit1._sort_runqs (Xen's csched_runq_sort): UNDER (and BOOST) ahead of OVER, order kept
 * otherwise. */
static void sort_runqs(struct c1_priv *p) {
    mask_t m = p->queued;
    MASK_FOREACH(c, &m) {
        /* Xen's loop: each UNDER one moves up to just after the last UNDER one. */
        struct list_head *last_under = &p->runq[c];
        struct vcpu *v, *nx;
        list_for_each_entry_safe(v, nx, &p->runq[c], c1.runq_elem) {
            if (v->c1.pri < PRI_UNDER) continue;
            if (v->c1.runq_elem.prev != last_under) {
                list_del(&v->c1.runq_elem);
                list_add(&v->c1.runq_elem, last_under);
            }
            last_under = &v->c1.runq_elem;
        }
    }
}

/* Credit1._repick_candidates: busy pCPUs where _csched_cpu_pick may not answer "stay". */
static mask_t repick_candidates(struct c1_priv *p, mask_t busy) {
    struct host *h = p->h;
    mask_t idle = p->idlers;
    mask_t todo = mask_or(&p->queued, &p->outside_soft);
    todo = mask_and(&busy, &todo);
    int counts[MAX_NODES];
    int top = -1, second = 0, ntop = 0;
    for (int n = 0; n < h->nnodes; n++) {
        mask_t idle_in_node = mask_and(&idle, &h->node_mask[n]);
        counts[n] = mask_weight(&idle_in_node);
    }
    /* sorted(counts, reverse=True)[0], [1] (0 if one node) */
    for (int n = 0; n < h->nnodes; n++)
        if (counts[n] > top) top = counts[n];
    second = -1;
    for (int n = 0; n < h->nnodes; n++) {
        if (counts[n] == top)
            ntop++;
        else if (counts[n] > second)
            second = counts[n];
    }
    if (ntop >= 2)
        second = top;
    else if (h->nnodes < 2)
        second = 0;
    for (int n = 0; n < h->nnodes; n++) {
        mask_t bm = mask_and(&busy, &h->node_mask[n]);
        if (mask_empty(&bm)) continue;
        int others = counts[n] == top ? second : top;
        if (others > 2 * (counts[n] + 1)) {
            mask_t spread = mask_and(&bm, &p->spread);
            todo = mask_or(&todo, &spread);
        }
    }
    if (p->smt) {
        for (int n = 0; n < h->nnodes; n++) {
            mask_t nm = h->node_mask[n];
            mask_t nb = mask_and(&busy, &nm);
            nb = mask_andnot(&nb, &todo);
            mask_t rest = mask_and(&idle, &nm);
            if (mask_empty(&nb) || mask_empty(&rest)) continue;
            bool whole_idle_core = false;
            for (int c = mask_first(&rest); c >= 0; c = mask_first(&rest)) {
                if (mask_subset(&h->sib_mask[c], &idle)) {
                    whole_idle_core = true;
                    break;
                }
                rest = mask_andnot(&rest, &h->sib_mask[c]);
            }
            if (!whole_idle_core) continue;
            MASK_FOREACH(c, &nb) {
                mask_t o = mask_and(&idle, &h->sib_mask[c]);
                mask_clear(&o, c);
                if (mask_empty(&o)) mask_set(&todo, c);
            }
        }
    }
    return todo;
}

/* Credit1._unit_acct (Xen's csched_unit_acct) */
static void unit_acct(struct c1_priv *p, int cpu, struct vcpu *v) {
    if (v->c1.pri == PRI_BOOST) v->c1.pri = PRI_UNDER;
    if (!v->c1.active) {
        acct_start(p, v);
        return;
    }
    if (pick(p, v, false) != cpu) {
        host_set_migrating(p->h, v);
        host_raise_softirq(p->h, cpu);
    }
}

/* Credit1._tick (Xen's csched_tick) on every busy pCPU, visiting only those it can change. */
static void tick(struct host *h, void *a, int64_t b) {
    (void)b;
    struct c1_priv *p = a;
    int64_t now = h->now;
    host_timer(h, now + TICK_NS, tick, p, 0);
    mask_t busy = p->busy;
    if (mask_empty(&busy)) return;
    if (p->sorted_epoch != p->runq_sort) {
        p->sorted_epoch = p->runq_sort;
        sort_runqs(p);
    }
    mask_t todo = mask_or(&p->boosted, &p->inactive);
    todo = mask_and(&todo, &busy);
    mask_zero(&p->boosted);
    mask_zero(&p->inactive);
    if (!mask_empty(&p->idlers)) {
        mask_t repick = repick_candidates(p, busy);
        todo = mask_or(&todo, &repick);
    }
    if (mask_empty(&todo)) return;
    int start = (int)mt_randbelow(&p->pool->rng, h->ncpus);
    MASK_FOREACH_CYCLIC(c, start, &todo) {
        struct vcpu *v = h->cur[c];
        if (!v || v->dom->pool != p->pool) continue;
        unit_acct(p, c, v);
        host_flush(h);
    }
}

/* ---- hooks (struct scheduler) ---------------------------------------------------- */

/* Credit1.start: the tick on the next TICK_NS boundary, the master acct timer */
static void c1_start(struct host *h, struct pool *pool) {
    struct c1_priv *p = pool->priv;
    int64_t now = h->now;
    host_timer(h, now - (now - floordiv64(now, TICK_NS) * TICK_NS) + TICK_NS, tick, p, 0);
    /* The master ticker starts one timeslice after the first pCPU joins. */
    int64_t phase = 1 + (int64_t)mt_randbelow(&p->pool->rng, TSLICE_NS - 1);
    host_timer(h, now + phase, acct, p, 0);
}

/* csched_aff_cntl */
static void c1_affinity_changed(struct host *h, struct pool *pool, struct vcpu *v) {
    (void)h;
    (void)pool;
    if (mask_weight(&v->hard) == 1)
        v->c1.flags |= C1_F_PINNED;
    else
        v->c1.flags &= ~C1_F_PINNED;
}

/* csched_res_pick: remember the move so the wake after it does not boost. */
static int c1_pick_resource(struct host *h, struct pool *pool, struct vcpu *v) {
    (void)h;
    v->c1.flags |= C1_F_MIGRATING;
    return pick(pool->priv, v, true);
}

/* csched_unit_insert */
static void c1_insert(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c1_priv *p = pool->priv;
    struct dom *d = v->dom;
    if (!d->c1.present) {
        memset(&d->c1, 0, sizeof d->c1);
        INIT_LIST_HEAD(&d->c1.active);
        d->c1.present = true;
        d->c1.weight = d->weight;
    }
    v->c1.pri = PRI_UNDER;
    v->c1.credit = 0;
    v->c1.residual = 0;
    v->c1.flags = 0;
    v->c1.active = false;
    c1_affinity_changed(h, pool, v);
    v->cpu = c1_pick_resource(h, pool, v);
    if (!v->c1.on_runq && !v->pflags && !v->is_running) {
        runq_insert(p, v->cpu, v);
        nr_inc(p, v->cpu);
    }
}

/* csched_unit_remove */
static void c1_remove(struct host *h, struct pool *pool, struct vcpu *v) {
    (void)h;
    if (v->c1.active) acct_stop(pool->priv, v);
}

/* csched_unit_sleep */
static void c1_sleep(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c1_priv *p = pool->priv;
    if (h->cur[v->cpu] == v) {
        host_raise_softirq(h, v->cpu);
    } else if (v->c1.on_runq) {
        runq_remove(p, v->cpu, v);
        nr_dec(p, v->cpu);
    }
}

/* csched_unit_wake: BOOST (unless migrating), queue, tickle. */
static void c1_wake(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c1_priv *p = pool->priv;
    if (h->cur[v->cpu] == v || v->c1.on_runq) return;
    int migrating = v->c1.flags & C1_F_MIGRATING;
    v->c1.flags &= ~C1_F_MIGRATING;
    if (!migrating && v->c1.pri == PRI_UNDER) v->c1.pri = PRI_BOOST;
    runq_insert(p, v->cpu, v);
    nr_inc(p, v->cpu);
    tickle(p, v);
}

/* Credit1.context_saved: nothing (credit1 queues prev in schedule itself) */
static void c1_context_saved(struct host *h, struct pool *pool, struct vcpu *v) {
    (void)h;
    (void)pool;
    (void)v;
}

/* Credit1.move */
static void c1_move(struct host *h, struct pool *pool, struct vcpu *v, int cpu) {
    (void)h;
    (void)pool;
    v->cpu = cpu; /* no migrate hook: sched_set_res() */
}

/* Credit1.__init__ */
static int c1_init(struct host *h, struct pool *pool) {
    struct c1_priv *p = calloc(1, sizeof *p);
    if (!p) return -1;
    p->h = h;
    p->pool = pool;
    p->cpus = pool->cpus;
    for (int c = 0; c < MAX_CPUS; c++) INIT_LIST_HEAD(&p->runq[c]);
    INIT_LIST_HEAD(&p->active_sdom);
    p->migr_delay = 0; /* vcpu_migration_delay: the engine never sets it */
    for (int c = 0; c < h->ncpus; c++) {
        p->idle_bias[c] = h->ncpus - 1;
        p->last_tickle[c] = 0;
    }
    p->idlers = pool->cpus; /* prv->idlers: every pCPU starts idle */
    /* balance_bias[node]: init_pdata sets it to the node's first pCPU. */
    for (int n = 0; n < h->nnodes; n++) {
        mask_t m = mask_and(&h->node_mask[n], &pool->cpus);
        int f = mask_first(&m);
        p->balance_bias[n] = f >= 0 ? f : 0;
    }
    p->credit = (int64_t)CREDITS_PER_TSLICE * mask_weight(&pool->cpus);
    p->smt = false;
    for (int c = 0; c < h->ncpus; c++)
        if (mask_weight(&h->sib_mask[c]) > 1) p->smt = true;
    pool->priv = p;
    return 0;
}

static void c1_free(struct host *h, struct pool *pool) {
    (void)h;
    free(pool->priv);
    pool->priv = NULL;
}

const struct sched_ops credit1_ops = {
    .name = "credit1",
    .init = c1_init,
    .free = c1_free,
    .start = c1_start,
    .insert = c1_insert,
    .remove = c1_remove,
    .sleep = c1_sleep,
    .wake = c1_wake,
    .schedule = c1_schedule,
    .context_saved = c1_context_saved,
    .pick_resource = c1_pick_resource,
    .move = c1_move,
    .affinity_changed = c1_affinity_changed,
};
