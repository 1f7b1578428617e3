/* credit2.c: a port of agent/sim/credit2.py (Xen 4.17's credit2 model), exact
 * to the bit: same decisions, same iteration orders, same tie rules, same
 * fixed-point arithmetic. Comments name the Python method (and Xen function) each
 * function ports; read credit2.py for the why of each rule. Runq.runq and Runq.svc
 * are struct list_head lists (native.h).
 *
 * Arithmetic: Python ints are unbounded and floor on // and >>. Here times,
 * credits and loads are int64_t; products that could pass 2^63 go through
 * __int128; >> on negative signed values is arithmetic (floor) in GCC/Clang,
 * which is what Python does; divisions of possibly negative values use floor
 * helpers.
 */
#include "native.h"

#include <stdlib.h>
#include <string.h>

#define CREDIT_INIT 10000000LL
#define CREDIT_MIN (-CREDIT_INIT)
#define IDLE_CREDIT (CREDIT_MIN - 1)
#define MIN_TIMER 500000LL
#define CARRYOVER_MAX MIN_TIMER
#define MIGRATE_RESIST 500000LL
#define MIGRATE_COMPENSATION 50000LL
#define RATELIMIT_TICKLE_TOLERANCE 50000LL
#define MAX_TIMER CREDIT_INIT
#define RATELIMIT_NS 1000000LL
#define MAX_CPUS_RUNQ 16
#define GRAN_SHIFT 10
#define W (30 - GRAN_SHIFT)
#define P 18
#define UNDERLOAD_TOLERANCE 0
#define OVERLOAD_TOLERANCE (-3)

#define C2(v) (&(v)->c2)

/* ---- small helpers --------------------------------------------------------------- */

static inline int64_t i64_abs(int64_t x) { return x < 0 ? -x : x; }

/* Python's x << P for any sign (C's << on negatives is undefined). */
static inline int64_t shl_p(int64_t x) { return x * ((int64_t)1 << P); }

/* Python's (a * b) >> W, a * b possibly past 2^63 and negative. */
static inline int64_t mul_shr_w(int64_t a, int64_t b) { return (int64_t)(((__int128)a * b) >> W); }

/* ---- runqueues: cpu_add_to_runqueue + init_cpu_runqueue -------------------------- */

/* Runq.__init__ (Xen's init_cpu_runqueue) */
static void runq_init(struct c2_runq *rqd, int cpu) {
    memset(rqd, 0, sizeof *rqd);
    INIT_LIST_HEAD(&rqd->runq);
    INIT_LIST_HEAD(&rqd->svc);
    rqd->max_weight = 1;
    rqd->pick_bias = cpu;
}

/* Credit2._siblings_fit (Xen's cpu_runqueue_siblings_match): room for cpu and all its siblings. */
static bool siblings_fit(const struct host *h, const struct c2_runq *rqd, int cpu, int max_cpus) {
    mask_t seen;
    mask_zero(&seen);
    int total = 0;
    MASK_FOREACH(r, &rqd->active) {
        if (!mask_intersects(&h->sib_mask[r], &seen)) {
            seen = mask_or(&seen, &h->sib_mask[r]);
            total += mask_weight(&h->sib_mask[r]);
        }
    }
    return total + mask_weight(&h->sib_mask[cpu]) <= max_cpus;
}

/* Credit2._add_cpu (Xen's csched2_init_pdata -> cpu_add_to_runqueue) */
static void add_cpu(struct c2_priv *p, int cpu) {
    const struct host *h = p->h;
    int online = h->ncpus_online;
    int min_rqs = (online - 1) / MAX_CPUS_RUNQ + 1;
    int max_cpus_runq = online / min_rqs;
    const mask_t *sib = &h->sib_mask[cpu];
    struct c2_runq *valid = NULL;
    for (int i = 0; i < p->nrqds; i++) {
        struct c2_runq *rqd = &p->rqds[i];
        if (h->node_of[rqd->pick_bias] != h->node_of[cpu]) continue;
        if (mask_intersects(&rqd->active, sib)) {
            valid = rqd;
            break;
        }
        if (rqd->refcnt < max_cpus_runq && siblings_fit(h, rqd, cpu, max_cpus_runq) &&
            (valid == NULL || rqd->refcnt < valid->refcnt))
            valid = rqd;
    }
    if (valid == NULL) {
        valid = &p->rqds[p->nrqds];
        runq_init(valid, cpu);
        p->nrqds++;
    }
    struct c2_runq *rqd = valid;
    rqd->refcnt++;
    p->rqd_of[cpu] = rqd;
    mask_zero(&p->sibling[cpu]);
    mask_set(&p->sibling[cpu], cpu);
    mask_t both;
    both = mask_and(sib, &rqd->active);
    MASK_FOREACH(r, &both) {
        mask_set(&p->sibling[r], cpu);
        mask_set(&p->sibling[cpu], r);
    }
    mask_set(&rqd->idle, cpu);
    mask_set(&rqd->active, cpu);
    mask_set(&rqd->smt_idle, cpu);
    rqd->nr_cpus++;
    if (rqd->nr_cpus == 1) rqd->pick_bias = cpu;
}

/* ---- load tracking --------------------------------------------------------------- */

/* Credit2._update_runq_load (Xen's update_runq_load): the decaying average */
static void update_runq_load(struct c2_runq *rqd, int64_t change, int64_t now) {
    now >>= GRAN_SHIFT;
    int64_t load = rqd->load;
    int64_t last = rqd->load_last;
    if (last + ((int64_t)1 << W) < now) {
        rqd->avgload = rqd->b_avgload = shl_p(load);
    } else if (last < now) {
        int64_t delta = now - last;
        int64_t lp = mul_shr_w(delta, shl_p(load));
        rqd->avgload += lp - mul_shr_w(delta, rqd->avgload);
        rqd->b_avgload += lp - mul_shr_w(delta, rqd->b_avgload);
    }
    rqd->load = load + change;
    rqd->load_last = now;
}

/* Credit2._update_svc_load (Xen's update_svc_load) */
static void update_svc_load(struct vcpu *v, int change, int64_t now) {
    struct c2_vcpu *s = C2(v);
    int64_t unit_load;
    if (change == -1)
        unit_load = 1;
    else if (change == 1)
        unit_load = 0;
    else
        unit_load = v->pflags ? 0 : 1;
    now >>= GRAN_SHIFT;
    int64_t last = s->load_last;
    if (last + ((int64_t)1 << W) < now) {
        s->avgload = shl_p(unit_load);
    } else if (last < now) {
        int64_t delta = now - last;
        s->avgload += mul_shr_w(delta, shl_p(unit_load)) - mul_shr_w(delta, s->avgload);
    }
    s->load_last = now;
}

/* ---- runqueue membership (runq_assign / _runq_deassign) -------------------------- */

/* Credit2._update_max_weight (Xen's update_max_weight) */
static void update_max_weight(struct c2_runq *rqd, int64_t new_weight, int64_t old_weight) {
    if (new_weight > rqd->max_weight) {
        rqd->max_weight = new_weight;
    } else if (old_weight == rqd->max_weight) {
        int64_t m = 1;
        struct vcpu *v;
        list_for_each_entry(v, &rqd->svc, c2.svc_elem)
            if (v->dom->weight > m) m = v->dom->weight;
        rqd->max_weight = m;
    }
}

/* Credit2._assign (Xen's _runq_assign) */
static void assign(struct vcpu *v, struct c2_runq *rqd) {
    struct c2_vcpu *s = C2(v);
    s->rqd = rqd;
    list_add_tail(&s->svc_elem, &rqd->svc);
    update_max_weight(rqd, v->dom->weight, 0);
    rqd->b_avgload += s->avgload;
}

/* Credit2._deassign (Xen's _runq_deassign) */
static void deassign(struct vcpu *v) {
    struct c2_vcpu *s = C2(v);
    struct c2_runq *rqd = s->rqd;
    list_del(&s->svc_elem);
    update_max_weight(rqd, 0, v->dom->weight);
    int64_t b = rqd->b_avgload - s->avgload;
    rqd->b_avgload = b > 0 ? b : 0;
    s->rqd = NULL;
}

/* Credit2._runq_insert (Xen's runq_insert): ordered by credit, after those with as much or more. */
static void runq_insert(struct c2_priv *p, struct vcpu *v) {
    struct c2_runq *rq = p->rqd_of[v->cpu];
    struct c2_vcpu *s = C2(v);
    int64_t credit = s->credit;
    struct list_head *pos = rq->runq.next;
    while (pos != &rq->runq && list_entry(pos, struct vcpu, c2.runq_elem)->c2.credit >= credit)
        pos = pos->next;
    list_add_before(&s->runq_elem, pos); /* at the tail if pos is the head */
    s->on_runq = true;
}

/* rqd.runq[0], or NULL if empty */
static inline struct vcpu *runq_head(const struct c2_runq *rqd) {
    return list_empty(&rqd->runq) ? NULL : list_first_entry(&rqd->runq, struct vcpu, c2.runq_elem);
}

/* Credit2._runq_remove (Xen's runq_remove) */
static void runq_remove(struct vcpu *v) {
    list_del(&C2(v)->runq_elem);
    C2(v)->on_runq = false;
}

/* ---- credits --------------------------------------------------------------------- */

/* Credit2._burn (Xen's burn_credits / t2c_update) */
static inline void burn(const struct c2_runq *rqd, struct vcpu *v, int64_t now) {
    struct c2_vcpu *s = C2(v);
    int64_t delta = now - s->start_time;
    if (delta <= 0) return;
    int64_t w = v->dom->weight;
    int64_t num, val;
    if (!__builtin_mul_overflow(delta, rqd->max_weight, &num) &&
        !__builtin_add_overflow(num, s->residual, &num)) {
        val = floordivmod64(num, w, &s->residual);
    } else { /* delta * max_weight past 2^63 (a long idle gap): Python does not overflow */
        __int128 n = (__int128)delta * rqd->max_weight + s->residual;
        __int128 q = floordiv128(n, w);
        s->residual = (int64_t)(n - q * w);
        val = q > (__int128)INT64_MAX / 2 ? INT64_MAX / 2 : (int64_t)q; /* clipped below */
    }
    int64_t credit = s->credit - val;
    s->credit = credit > CREDIT_MIN ? credit : CREDIT_MIN;
    s->start_time = now;
}

/* Credit2._reset_credit (Xen's reset_credit): everyone in the runqueue gets CREDIT_INIT more,
 * clipped. */
static void reset_credit(struct c2_priv *p, struct c2_runq *rqd, int64_t now, struct vcpu *snext) {
    int64_t reset = CREDIT_INIT;
    if (C2(snext)->credit == CREDIT_MIN) reset += CREDIT_INIT;
    struct vcpu **cur = p->h->cur;
    const int64_t top = CREDIT_INIT + CARRYOVER_MAX;
    struct vcpu *v;
    list_for_each_entry(v, &rqd->svc, c2.svc_elem) {
        struct c2_vcpu *s = C2(v);
        if (cur[v->cpu] == v) burn(rqd, v, now);
        int64_t credit = s->credit + reset;
        s->credit = credit < top ? credit : top;
        s->start_time = now;
    }
}

/* ---- tickling -------------------------------------------------------------------- */

/* Credit2._tickle_cpu (Xen's tickle_cpu) */
static void tickle_cpu(struct c2_priv *p, int cpu, struct c2_runq *rqd) {
    mask_set(&rqd->tickled, cpu);
    const mask_t *sibs = &p->sibling[cpu];
    if (mask_subset(sibs, &rqd->smt_idle)) rqd->smt_idle = mask_andnot(&rqd->smt_idle, sibs);
    host_raise_softirq(p->h, cpu);
}

/* idle & ~tickled: the idle pCPUs no one has claimed yet */
static inline mask_t untickled_idlers(const struct c2_runq *rqd) {
    return mask_andnot(&rqd->idle, &rqd->tickled);
}

/* Credit2._smt_idle_set(cpu, idle & ~tickled, rqd) (Xen's smt_idle_mask_set) */
static void smt_idle_set(struct c2_priv *p, int cpu, struct c2_runq *rqd) {
    const mask_t *sibs = &p->sibling[cpu];
    mask_t idlers = untickled_idlers(rqd);
    if (mask_subset(sibs, &idlers)) rqd->smt_idle = mask_or(&rqd->smt_idle, sibs);
}

/* Credit2._tickle_score (Xen's tickle_score): how much nv deserves cpu over what runs there (-1:
 * leave it). */
static inline int64_t tickle_score(struct c2_priv *p, struct vcpu *nv, int cpu, int64_t now) {
    struct vcpu *cur = p->h->cur[cpu];
    if (cur == NULL || now - cur->state_entry <= RATELIMIT_NS - RATELIMIT_TICKLE_TOLERANCE)
        return -1;
    burn(p->rqd_of[cpu], cur, now);
    int64_t score = C2(nv)->credit - C2(cur)->credit;
    if (nv->cpu != cpu) score -= MIGRATE_RESIST;
    if (score > 0) {
        if (mask_test(&nv->soft, cpu)) score += CREDIT_INIT;
        if (!mask_test(&cur->soft, cpu)) score += CREDIT_INIT;
    }
    return score;
}

/* Credit2._best_to_preempt: the rest of runq_tickle's scan, the best tickle_score() over mask
 * above *bestp (>= 0, so a -1 never wins). Python inlines the score for speed; here
 * the compiler does. */
static int best_to_preempt(struct c2_priv *p, struct vcpu *nv, const mask_t *mask, int64_t now,
                           int64_t *bestp) {
    int ipid = -1;
    MASK_FOREACH(i, mask) {
        int64_t score = tickle_score(p, nv, i, now);
        if (score > *bestp) {
            *bestp = score;
            ipid = i;
        }
    }
    return ipid;
}

/* Credit2._runq_tickle (Xen's runq_tickle): idle core, idle pCPU (soft then hard), else best to
 * preempt. */
static void runq_tickle(struct c2_priv *p, struct vcpu *nv, int64_t now) {
    struct c2_vcpu *s = C2(nv);
    int cpu = nv->cpu;
    struct c2_runq *rqd = s->rqd;
    const mask_t *online = &p->cpus;
    int ipid = -1;
    if ((s->flags & C2_F_PINNED) && mask_test(&rqd->idle, cpu) && !mask_test(&rqd->tickled, cpu)) {
        ipid = cpu;
    } else {
        for (int step = 0; step < 2; step++) {
            mask_t aff, m;
            if (step == 0) {
                if (!nv->has_soft) continue;
                aff = mask_and(&nv->soft, &nv->hard);
            } else {
                aff = nv->hard;
            }
            aff = mask_and(&aff, online);
            m = mask_and(&rqd->smt_idle, &aff);
            if (!mask_empty(&m)) {
                ipid = mask_test_or_cycle(cpu, &m);
                break;
            }
            m = untickled_idlers(rqd);
            m = mask_and(&m, &aff);
            if (!mask_empty(&m)) {
                ipid = mask_test_or_cycle(cpu, &m);
                break;
            }
        }
        if (ipid < 0) {
            int64_t best = 0;
            /* busy, not tickled, in nv's hard affinity */
            mask_t mask = mask_andnot(&rqd->active, &rqd->idle);
            mask = mask_andnot(&mask, &rqd->tickled);
            mask = mask_and(&mask, &nv->hard);
            mask = mask_and(&mask, online);
            if (mask_test(&mask, cpu)) {
                mask_clear(&mask, cpu);
                int64_t score = tickle_score(p, nv, cpu, now);
                if (score > best) {
                    best = score;
                    ipid = cpu;
                    if (mask_test(&nv->soft, cpu)) mask_zero(&mask);
                }
            }
            if (!mask_empty(&mask)) {
                int i = best_to_preempt(p, nv, &mask, now, &best);
                if (i >= 0) ipid = i;
            }
            if (ipid < 0) return;
        }
    }
    tickle_cpu(p, ipid, rqd);
    s->tickled_cpu = ipid;
}

/* ---- csched2_res_pick ------------------------------------------------------------ */

/* Credit2.pick_resource (Xen's csched2_res_pick): the least loaded runqueue (soft-affine
 * first), a pCPU in it by its pick_bias; -1 if none. */
static int res_pick(struct c2_priv *p, struct vcpu *v) {
    struct c2_vcpu *s = C2(v);
    mask_t scratch = v->hmask;
    if (s->flags & C2_F_RUNQ_MIGRATE_REQUEST) {
        s->flags &= ~C2_F_RUNQ_MIGRATE_REQUEST;
        struct c2_runq *mrqd = s->migrate_rqd;
        mask_t m;
        m = mask_and(&scratch, &mrqd->active);
        if (!mask_empty(&m)) {
            int new_cpu = mask_cycle(mrqd->pick_bias, &m);
            mrqd->pick_bias = new_cpu;
            return new_cpu;
        }
    }
    bool has_soft = v->has_soft;
    int64_t min_load = 0, min_s_load = 0;
    struct c2_runq *min_rqd = NULL, *min_s_rqd = NULL;
    for (int i = 0; i < p->nrqds; i++) {
        struct c2_runq *rqd = &p->rqds[i];
        if (!mask_intersects(&scratch, &rqd->active)) continue;
        int64_t load;
        if (rqd == s->rqd) {
            load = rqd->b_avgload - s->avgload;
            if (load < 0) load = 0;
        } else {
            load = rqd->b_avgload;
        }
        if (has_soft && (min_s_rqd == NULL || load < min_s_load)) {
            mask_t in_rqd = mask_and(&scratch, &rqd->active);
            if (mask_intersects(&in_rqd, &v->soft)) {
                min_s_load = load;
                min_s_rqd = rqd;
            }
        }
        if (min_rqd == NULL || load < min_load) {
            min_load = load;
            min_rqd = rqd;
        }
    }
    /* Python asserts here (no pCPU of the pool in its hard affinity): the hook fails the host */
    if (min_rqd == NULL) return -1;
    if (has_soft && min_s_rqd != NULL) {
        scratch = mask_and(&scratch, &v->soft);
        scratch = mask_and(&scratch, &min_s_rqd->active);
    } else {
        scratch = mask_and(&scratch, &min_rqd->active);
    }
    /* As in 4.17: the bias of the hard-affinity minimum, even for the soft one. */
    int new_cpu = mask_cycle(min_rqd->pick_bias, &scratch);
    min_rqd->pick_bias = new_cpu;
    return new_cpu;
}

/* ---- balance_load ---------------------------------------------------------------- */

/* Credit2._migrateable (Xen's unit_is_migrateable) */
static inline bool migrateable(const struct vcpu *v, const struct c2_runq *rqd) {
    return !(C2(v)->flags & C2_F_RUNQ_MIGRATE_REQUEST) && mask_intersects(&v->hmask, &rqd->active);
}

/* Credit2._migrate (Xen's migrate): a running unit is asked to move; a queued or idle one moves
 * now. */
static void migrate(struct c2_priv *p, struct vcpu *v, struct c2_runq *trqd, int64_t now) {
    struct c2_vcpu *s = C2(v);
    if (s->flags & C2_F_SCHEDULED) {
        s->migrate_rqd = trqd;
        host_set_migrating(p->h, v);
        s->flags |= C2_F_RUNQ_MIGRATE_REQUEST;
        tickle_cpu(p, v->cpu, s->rqd);
        return;
    }
    bool on_runq = s->on_runq;
    if (on_runq) {
        runq_remove(v);
        update_runq_load(s->rqd, -1, now);
    }
    deassign(v);
    mask_t m;
    m = mask_and(&v->hmask, &trqd->active);
    v->cpu = mask_cycle(trqd->pick_bias, &m);
    trqd->pick_bias = v->cpu;
    assign(v, trqd);
    if (on_runq) {
        update_runq_load(trqd, 1, now);
        runq_insert(p, v);
        runq_tickle(p, v, now);
    }
}

/* Credit2._balance_load (Xen's balance_load): push, pull or swap the pair
 * that best evens the load with the runqueue most out of balance. */
static void balance_load(struct c2_priv *p, int cpu, int64_t now) {
    struct c2_runq *lrqd = p->rqd_of[cpu];
    update_runq_load(lrqd, 0, now);
    struct c2_runq *max_delta_rqd = NULL;
    int64_t load_delta = 0;
    struct c2_runq *last = lrqd;
    for (int i = 0; i < p->nrqds; i++) {
        struct c2_runq *orqd = &p->rqds[i];
        last = orqd; /* the last runqueue looked at */
        if (orqd == lrqd) continue;
        update_runq_load(orqd, 0, now);
        int64_t delta = i64_abs(lrqd->b_avgload - orqd->b_avgload);
        if (delta > load_delta) {
            load_delta = delta;
            max_delta_rqd = orqd;
        }
    }
    if (max_delta_rqd == NULL) return;
    /* As in 4.17, the capacity test reads the last runqueue of the loop. */
    int64_t load_max = lrqd->b_avgload > last->b_avgload ? lrqd->b_avgload : last->b_avgload;
    int64_t cpus_max = lrqd->nr_cpus > last->nr_cpus ? lrqd->nr_cpus : last->nr_cpus;
    if (load_max < shl_p(cpus_max)) {
        if (load_delta < ((int64_t)1 << (P + UNDERLOAD_TOLERANCE))) return;
    } else if (load_delta < ((int64_t)1 << (P + OVERLOAD_TOLERANCE))) {
        return;
    }
    struct c2_runq *orqd = max_delta_rqd;
    int64_t best = load_delta;
    struct vcpu *best_push = NULL, *best_pull = NULL;
    int64_t l0 = lrqd->b_avgload, o0 = orqd->b_avgload;
    bool inner_updated = false;
    struct vcpu *push, *pull;
    list_for_each_entry(push, &lrqd->svc, c2.svc_elem) {
        update_svc_load(push, 0, now);
        if (!migrateable(push, orqd)) continue;
        int64_t pa = C2(push)->avgload;
        list_for_each_entry(pull, &orqd->svc, c2.svc_elem) {
            if (!inner_updated) update_svc_load(pull, 0, now);
            if (!migrateable(pull, lrqd)) continue;
            int64_t qa = C2(pull)->avgload;
            int64_t d = i64_abs((l0 - pa + qa) - (o0 + pa - qa));
            if (d < best) {
                best = d;
                best_push = push;
                best_pull = pull;
            }
        }
        inner_updated = true;
        int64_t d = i64_abs((l0 - pa) - (o0 + pa));
        if (d < best) {
            best = d;
            best_push = push;
            best_pull = NULL;
        }
    }
    list_for_each_entry(pull, &orqd->svc, c2.svc_elem) {
        if (!migrateable(pull, lrqd)) continue;
        int64_t qa = C2(pull)->avgload;
        int64_t d = i64_abs((l0 + qa) - (o0 - qa));
        if (d < best) {
            best = d;
            best_push = NULL;
            best_pull = pull;
        }
    }
    if (best_push != NULL) migrate(p, best_push, orqd, now);
    if (best_pull != NULL) migrate(p, best_pull, lrqd, now);
}

/* ---- csched2_schedule ------------------------------------------------------------ */

/* Credit2._runq_candidate (Xen's runq_candidate) */
static struct vcpu *runq_candidate(struct c2_runq *rqd, struct vcpu *scurr, int cpu, int64_t now) {
    struct vcpu *snext = NULL;
    if (scurr != NULL) {
        if (!scurr->pflags && now - scurr->state_entry < RATELIMIT_NS) return scurr;
        bool soft_aff_preempt = false;
        if (scurr->has_soft && !mask_test(&scurr->smask, cpu)) {
            mask_t idlers = untickled_idlers(rqd);
            soft_aff_preempt = mask_intersects(&scurr->smask, &idlers);
        }
        if (!scurr->pflags && !soft_aff_preempt) snext = scurr;
    }
    int64_t snext_credit = snext == NULL ? IDLE_CREDIT : C2(snext)->credit;
    const mask_t *tickled = &rqd->tickled;
    struct vcpu *v;
    list_for_each_entry(v, &rqd->runq, c2.runq_elem) {
        struct c2_vcpu *s = C2(v);
        if (s->credit <= snext_credit) break;
        if (v->pflags) continue;
        if (!mask_test(&v->hard, cpu)) continue;
        int tc = s->tickled_cpu;
        if (tc != -1 && tc != cpu && mask_test(tickled, tc)) continue;
        if (v->cpu != cpu && snext_credit + MIGRATE_RESIST > s->credit) continue;
        return v;
    }
    return snext;
}

/* Credit2._runtime (Xen's csched2_runtime) */
static int64_t runtime(const struct c2_runq *rqd, const struct vcpu *snext, int64_t now) {
    int64_t min_time = MIN_TIMER;
    int64_t ratelimit_min = RATELIMIT_NS;
    if (snext->is_running) ratelimit_min = snext->state_entry + RATELIMIT_NS - now;
    if (ratelimit_min > min_time) min_time = ratelimit_min;
    int64_t rt_credit = C2(snext)->credit;
    const struct vcpu *head = runq_head(rqd);
    if (head && C2(head)->credit > 0) rt_credit = C2(snext)->credit - C2(head)->credit;
    int64_t t = 0;
    if (rt_credit > 0) t = (int64_t)((__int128)rt_credit * snext->dom->weight / rqd->max_weight);
    if (t < min_time) return min_time;
    return t > MAX_TIMER ? MAX_TIMER : t;
}

/* Credit2.schedule (Xen's csched2_schedule) */
static struct vcpu *schedule(struct host *h, struct pool *pool, int cpu, struct vcpu *prev,
                             int64_t *tslice, bool *lazy) {
    struct c2_priv *p = pool->priv;
    int64_t now = h->now;
    struct c2_runq *rqd = p->rqd_of[cpu];
    *lazy = false;
    if (mask_test(&rqd->tickled, cpu)) {
        mask_clear(&rqd->tickled, cpu);
        smt_idle_set(p, cpu, rqd);
    }
    if (prev != NULL) burn(rqd, prev, now);
    struct vcpu *snext = runq_candidate(rqd, prev, cpu, now);
    if (snext != prev && prev != NULL && !prev->pflags) C2(prev)->flags |= C2_F_DELAYED_RUNQ_ADD;
    if (snext == NULL) {
        if (!mask_test(&rqd->idle, cpu)) {
            mask_set(&rqd->idle, cpu);
            smt_idle_set(p, cpu, rqd);
        }
        update_runq_load(rqd, 0, now);
        *tslice = -1;
        return NULL;
    }
    struct c2_vcpu *s = C2(snext);
    if (snext != prev) {
        runq_remove(snext);
        s->flags |= C2_F_SCHEDULED;
    } else {
        update_runq_load(rqd, 0, now);
        update_svc_load(snext, 0, now);
    }
    if (mask_test(&rqd->idle, cpu)) {
        mask_clear(&rqd->idle, cpu);
        const mask_t *sibs = &p->sibling[cpu];
        if (mask_subset(sibs, &rqd->smt_idle)) rqd->smt_idle = mask_andnot(&rqd->smt_idle, sibs);
    }
    struct vcpu *head = runq_head(rqd);
    int64_t top = (head == NULL || s->credit > C2(head)->credit) ? s->credit : C2(head)->credit;
    if (top <= 0) {
        reset_credit(p, rqd, now, snext);
        balance_load(p, cpu, now);
    }
    s->start_time = now;
    s->tickled_cpu = -1;
    if (snext->cpu != cpu) {
        s->credit += MIGRATE_COMPENSATION;
        snext->cpu = cpu;
    }
    *tslice = runtime(rqd, snext, now);
    return snext;
}

/* -DXNUMA_TRACE: one line per decision, as tests' scratch tracer prints them
 * from the Python model: "c2 now cpu prev next tslice credit". */
static struct vcpu *c2_schedule(struct host *h, struct pool *pool, int cpu, struct vcpu *prev,
                                int64_t *tslice, bool *lazy) {
    struct vcpu *next = schedule(h, pool, cpu, prev, tslice, lazy);
#ifdef XNUMA_TRACE
    fprintf(stderr, "c2 %lld %d ", (long long)h->now, cpu);
    trace_vcpu(prev, " ");
    trace_vcpu(next, " ");
    fprintf(stderr, "%lld %lld\n", (long long)*tslice, next ? (long long)C2(next)->credit : 0LL);
#endif
    return next;
}

/* ---- hooks ----------------------------------------------------------------------- */

/* Credit2.__init__ (Xen's csched2_init + csched2_init_pdata for each pCPU) */
static int c2_init(struct host *h, struct pool *pool) {
    struct c2_priv *p = calloc(1, sizeof *p);
    if (p == NULL) return -1;
    int n = h->ncpus > 0 ? h->ncpus : 1;
    p->rqds = calloc((size_t)n, sizeof *p->rqds);
    p->rqd_of = calloc((size_t)n, sizeof *p->rqd_of);
    p->sibling = calloc((size_t)n, sizeof *p->sibling);
    if (p->rqds == NULL || p->rqd_of == NULL || p->sibling == NULL) {
        free(p->rqds);
        free(p->rqd_of);
        free(p->sibling);
        free(p);
        return -1;
    }
    p->h = h;
    p->cpus = pool->cpus;
    pool->priv = p;
    MASK_FOREACH(c, &pool->cpus) {
        if (c >= h->ncpus) break;
        add_cpu(p, c);
    }
    return 0;
}

static void c2_free(struct host *h, struct pool *pool) {
    (void)h;
    struct c2_priv *p = pool->priv;
    if (p == NULL) return;
    free(p->rqds);
    free(p->rqd_of);
    free(p->sibling);
    free(p);
    pool->priv = NULL;
}

/* credit2 has no periodic timer: resets and balancing ride on schedules. */
static void c2_start(struct host *h, struct pool *pool) {
    (void)h;
    (void)pool;
}

/* csched2_aff_cntl */
static void c2_affinity_changed(struct host *h, struct pool *pool, struct vcpu *v) {
    (void)h;
    (void)pool;
    if (mask_weight(&v->hard) == 1)
        C2(v)->flags |= C2_F_PINNED;
    else
        C2(v)->flags &= ~C2_F_PINNED;
}

/* The pick_resource hook: res_pick, failing the host where Python would raise. */
static int c2_pick_resource(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c2_priv *p = pool->priv;
    int cpu = res_pick(p, v);
    if (cpu < 0 || cpu >= h->ncpus || p->rqd_of[cpu] == NULL) {
        host_fail(h, "credit2: d%dv%d has no pCPU in its cpupool to run on", v->domid, v->vid);
        return v->cpu;
    }
    return cpu;
}

/* csched2_alloc_udata + csched2_unit_insert */
static void c2_insert(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c2_priv *p = pool->priv;
    struct c2_vcpu *s = C2(v);
    int64_t now = h->now;
    s->credit = CREDIT_INIT;
    s->residual = 0;
    s->flags = 0;
    s->avgload = (int64_t)1 << (P - 1); /* starting load of 50% */
    s->load_last = now >> GRAN_SHIFT;
    s->tickled_cpu = -1;
    s->rqd = NULL;
    c2_affinity_changed(h, pool, v);
    v->cpu = c2_pick_resource(h, pool, v);
    if (p->rqd_of[v->cpu] != NULL) assign(v, p->rqd_of[v->cpu]);
}

/* csched2_unit_remove */
static void c2_remove(struct host *h, struct pool *pool, struct vcpu *v) {
    (void)h;
    (void)pool;
    if (C2(v)->rqd != NULL) deassign(v);
}

/* csched2_unit_sleep */
static void c2_sleep(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c2_priv *p = pool->priv;
    struct c2_vcpu *s = C2(v);
    if (h->cur[v->cpu] == v) {
        tickle_cpu(p, v->cpu, s->rqd);
    } else if (s->on_runq) {
        update_runq_load(s->rqd, -1, h->now);
        update_svc_load(v, -1, h->now);
        runq_remove(v);
    } else {
        s->flags &= ~C2_F_DELAYED_RUNQ_ADD;
    }
}

/* csched2_unit_wake */
static void c2_wake(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c2_priv *p = pool->priv;
    struct c2_vcpu *s = C2(v);
    if (h->cur[v->cpu] == v || s->on_runq) return;
    if (s->flags & C2_F_SCHEDULED) {
        s->flags |= C2_F_DELAYED_RUNQ_ADD;
        return;
    }
    if (s->rqd == NULL) assign(v, p->rqd_of[v->cpu]);
    int64_t now = h->now;
    update_runq_load(s->rqd, 1, now);
    update_svc_load(v, 1, now);
    runq_insert(p, v);
    runq_tickle(p, v, now);
}

/* csched2_context_saved */
static void c2_context_saved(struct host *h, struct pool *pool, struct vcpu *v) {
    struct c2_priv *p = pool->priv;
    struct c2_vcpu *s = C2(v);
    int64_t now = h->now;
    s->flags &= ~C2_F_SCHEDULED;
    if (s->flags & C2_F_DELAYED_RUNQ_ADD) {
        s->flags &= ~C2_F_DELAYED_RUNQ_ADD;
        if (!v->pflags) {
            runq_insert(p, v);
            runq_tickle(p, v, now);
            return;
        }
    }
    if (s->rqd == NULL) { /* Python would read None.load */
        host_fail(h, "credit2: d%dv%d context_saved outside any runqueue", v->domid, v->vid);
        return;
    }
    update_runq_load(s->rqd, -1, now);
    update_svc_load(v, -1, now);
}

/* csched2_unit_migrate */
static void c2_move(struct host *h, struct pool *pool, struct vcpu *v, int cpu) {
    struct c2_priv *p = pool->priv;
    struct c2_runq *trqd = p->rqd_of[cpu];
    if (trqd != C2(v)->rqd)
        migrate(p, v, trqd, h->now);
    else
        v->cpu = cpu;
}

const struct sched_ops credit2_ops = {
    .name = "credit2",
    .init = c2_init,
    .free = c2_free,
    .start = c2_start,
    .insert = c2_insert,
    .remove = c2_remove,
    .sleep = c2_sleep,
    .wake = c2_wake,
    .schedule = c2_schedule,
    .context_saved = c2_context_saved,
    .pick_resource = c2_pick_resource,
    .move = c2_move,
    .affinity_changed = c2_affinity_changed,
};
