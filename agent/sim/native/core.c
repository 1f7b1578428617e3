/* core.c: the C port of agent/sim/core.py (HostCore), objects.py (Topo, Vcpu.set_masks,
 * _NoSched), workload.py and Python's MT19937 (random.Random).
 *
 * Every function follows the Python method of the same name, statement by statement:
 * the order of heap pushes (their seq breaks ties), of the SCHEDULE_SOFTIRQ FIFO and
 * of the accounting sums is the model's.
 */
#include "native.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- MT19937 (CPython's _randommodule.c) ----------------------------------------- */

#define MT_N 624
#define MT_M 397

static void mt_generate(struct mt *m) {
    static const uint32_t mag01[2] = {0x0U, 0x9908b0dfU};
    uint32_t *mt = m->s;
    uint32_t y;
    int kk;
    for (kk = 0; kk < MT_N - MT_M; kk++) {
        y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
        mt[kk] = mt[kk + MT_M] ^ (y >> 1) ^ mag01[y & 0x1U];
    }
    for (; kk < MT_N - 1; kk++) {
        y = (mt[kk] & 0x80000000U) | (mt[kk + 1] & 0x7fffffffU);
        mt[kk] = mt[kk + (MT_M - MT_N)] ^ (y >> 1) ^ mag01[y & 0x1U];
    }
    y = (mt[MT_N - 1] & 0x80000000U) | (mt[0] & 0x7fffffffU);
    mt[MT_N - 1] = mt[MT_M - 1] ^ (y >> 1) ^ mag01[y & 0x1U];
    m->idx = 0;
}

uint32_t mt_genrand(struct mt *m) {
    if (m->idx >= MT_N) mt_generate(m);
    uint32_t y = m->s[m->idx++];
    y ^= (y >> 11);
    y ^= (y << 7) & 0x9d2c5680U;
    y ^= (y << 15) & 0xefc60000U;
    y ^= (y >> 18);
    return y;
}

uint64_t mt_getrandbits(struct mt *m, int k) {
    if (k <= 0) return 0;
    if (k <= 32) return mt_genrand(m) >> (32 - k);
    /* words least significant first, the last one shifted down (getrandbits) */
    uint64_t lo = mt_genrand(m);
    uint64_t hi = mt_genrand(m) >> (64 - k);
    return lo | hi << 32;
}

double mt_random(struct mt *m) {
    uint32_t a = mt_genrand(m) >> 5, b = mt_genrand(m) >> 6;
    return (a * 67108864.0 + b) * (1.0 / 9007199254740992.0);
}

double mt_expovariate(struct mt *m, double lambd) {
    double r = mt_random(m);
    return -log(1.0 - r) / lambd;
}

int64_t mt_randbelow(struct mt *m, int64_t n) {
    int k = 64 - __builtin_clzll((uint64_t)n); /* n.bit_length() */
    uint64_t r = mt_getrandbits(m, k);
    while (r >= (uint64_t)n) r = mt_getrandbits(m, k);
    return (int64_t)r;
}

int64_t mt_randrange(struct mt *m, int64_t a, int64_t b) { return a + mt_randbelow(m, b - a); }

/* ---- errors ---------------------------------------------------------------------- */

void host_fail(struct host *h, const char *fmt, ...) {
    if (h->failed) return;
    h->failed = true;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(h->err, sizeof h->err, fmt, ap);
    va_end(ap);
}

static void host_nomem(struct host *h) {
    if (!h->failed) h->nomem = true;
    host_fail(h, "out of memory");
}

/* The array grown for one more element (doubling, from first), or NULL: then *cap and
 * the old array are unchanged. */
static void *grow(void *arr, size_t *cap, size_t size, size_t first) {
    size_t n = *cap ? *cap * 2 : first;
    void *a = realloc(arr, n * size);
    if (a) *cap = n;
    return a;
}

/* ---- the event heap -------------------------------------------------------------- */

static inline bool ev_less(const struct event *a, const struct event *b) {
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

/* HostCore.timer: push (at, seq, fn, a, b); seq breaks ties, so pushes must come in the
 * model's order. */
void host_timer(struct host *h, int64_t at, timer_fn fn, void *a, int64_t b) {
    if (h->qlen == h->qcap) {
        struct event *q = grow(h->q, &h->qcap, sizeof *q, 1024);
        if (!q) {
            host_nomem(h);
            return;
        }
        h->q = q;
    }
    struct event e = {at, ++h->seq, fn, a, b};
    struct event *q = h->q;
    size_t i = h->qlen++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_less(&e, &q[parent])) break;
        q[i] = q[parent];
        i = parent;
    }
    q[i] = e;
}

/* heapq.heappop on (at, seq) */
static struct event heap_pop(struct host *h) {
    struct event *q = h->q;
    struct event top = q[0];
    struct event last = q[--h->qlen];
    size_t n = h->qlen, i = 0;
    if (n) {
        for (;;) {
            size_t c = 2 * i + 1;
            if (c >= n) break;
            if (c + 1 < n && ev_less(&q[c + 1], &q[c])) c++;
            if (!ev_less(&q[c], &last)) break;
            q[i] = q[c];
            i = c;
        }
        q[i] = last;
    }
    return top;
}

/* ---- softirq and slices ---------------------------------------------------------- */

static void do_schedule(struct host *h, int cpu);

/* HostCore.raise_softirq: SCHEDULE_SOFTIRQ, each pCPU queued at most once (FIFO) */
void host_raise_softirq(struct host *h, int cpu) {
    if (!mask_test(&h->pend_mask, cpu)) {
        mask_set(&h->pend_mask, cpu);
        h->pend[(h->pend_head + h->pend_len) % MAX_CPUS] = cpu;
        h->pend_len++;
    }
}

/* HostCore._flush: run the pending schedules, those they raise included */
static void flush_pending(struct host *h) {
    while (h->pend_len && !h->failed) {
        int cpu = h->pend[h->pend_head];
        h->pend_head = (h->pend_head + 1) % MAX_CPUS;
        h->pend_len--;
        mask_clear(&h->pend_mask, cpu);
        do_schedule(h, cpu);
    }
}

/* HostCore.flush */
void host_flush(struct host *h) {
    if (h->pend_len) flush_pending(h);
}

/* HostCore._slice_end: a slice timer still current reschedules its pCPU */
static void slice_end(struct host *h, void *a, int64_t ver) {
    int cpu = (int)(intptr_t)a;
    if (ver == h->slice_ver[cpu]) {
        if (h->pend_len)
            host_raise_softirq(h, cpu);
        else /* raise_softirq + the flush after this event, without the queue */
            do_schedule(h, cpu);
    }
}

/* HostCore.arm_slice: a lazy slice becomes a timer at its next boundary after now */
void host_arm_slice(struct host *h, int cpu) {
    if (!h->slice_lazy[cpu]) return;
    h->slice_lazy[cpu] = false;
    int64_t start = h->slice_start[cpu], length = h->slice_len[cpu];
    int64_t now = h->now;
    int64_t at = start + length;
    if (at < now) {
        if (length == 0) { /* Python's // by 0 raises */
            host_fail(h, "ZeroDivisionError: arm_slice on pCPU %d with a 0 ns slice", cpu);
            return;
        }
        at += floordiv64(now - at + length - 1, length) * length;
    }
    host_timer(h, at, slice_end, (void *)(intptr_t)cpu, h->slice_ver[cpu]);
}

/* HostCore.set_migrating */
void host_set_migrating(struct host *h, struct vcpu *v) {
    (void)h;
    v->pflags |= VPF_MIGRATING;
}

/* ---- schedule() and the context switch ------------------------------------------- */

/* HostCore._touched.append, once per window */
static void touch(struct host *h, struct vcpu *v) {
    if (v->touched) return;
    if (h->ntouched == h->touched_cap) {
        struct vcpu **t = grow(h->touched, &h->touched_cap, sizeof *t, 256);
        if (!t) {
            host_nomem(h);
            return;
        }
        h->touched = t;
    }
    v->touched = true;
    h->touched[h->ntouched++] = v;
}

static void work_done(struct host *h, void *a, int64_t ver);
static void wake_timer(struct host *h, void *a, int64_t ver);

/* HostCore._start_running: switch in, count migrations, arm the work timer */
static void start_running(struct host *h, struct vcpu *v, int cpu) {
    if (v->cpu != cpu) { /* Python's assert: a scheduler moved a running vCPU */
        host_fail(h, "AssertionError: d%dv%d switched in on pCPU %d but v->processor is %d",
                  v->domid, v->vid, cpu, v->cpu);
        return;
    }
    int64_t now = h->now;
    v->is_running = true;
    v->state_entry = now;
    v->run_start = now;
    int last = v->last_cpu;
    if (last != cpu) {
        if (last >= 0) {
            v->acc_mig++;
            if (h->node_of[last] != h->node_of[cpu]) v->acc_xmig++;
        }
        v->last_cpu = cpu;
    }
    touch(h, v);
    v->work_mark = now;
    if (v->work_left > 0) host_timer(h, now + v->work_left, work_done, v, v->wl_ver);
}

/* HostCore._stop_running: charge the run to its node, keep the work left */
static void stop_running(struct host *h, struct vcpu *v) {
    int64_t now = h->now;
    int64_t ran = now - v->run_start;
    int node = h->node_of[v->cpu];
    v->acc_run[node] += ran;
    h->busy[node] += ran;
    v->total_run += ran;
    v->run_start = -1;
    v->is_running = false;
    if (v->work_left > 0) {
        int64_t left = v->work_left - (now - v->work_mark);
        v->work_left = left > 0 ? left : 1;
        v->wl_ver++; /* the pending block timer is for a run that ended */
    }
}

/* HostCore._do_schedule: schedule(), context switch, slice, context_saved */
static void do_schedule(struct host *h, int cpu) {
    struct vcpu *prev = h->cur[cpu];
    struct pool *p = h->pool_of[cpu];
    int64_t tslice = -1;
    bool lazy = false;
    struct vcpu *nxt = p->ops->schedule(h, p, cpu, prev, &tslice, &lazy);
    int64_t now = h->now;
#ifdef XNUMA_TRACE
    /* one line per schedule(): now cpu prev next tslice lazy (dXvY, "-" = idle) */
    fprintf(stderr, "sched %lld %d ", (long long)now, cpu);
    trace_vcpu(prev, " ");
    trace_vcpu(nxt, "");
    fprintf(stderr, " %lld %d\n", (long long)tslice, (int)lazy);
#endif
    if (nxt != prev) {
        if (prev) stop_running(h, prev);
        h->cur[cpu] = nxt;
        if (nxt) start_running(h, nxt, cpu);
    }
    int64_t ver = ++h->slice_ver[cpu];
    if (lazy) {
        h->slice_lazy[cpu] = true;
        h->slice_start[cpu] = now;
        h->slice_len[cpu] = tslice;
    } else {
        h->slice_lazy[cpu] = false;
        if (tslice >= 0) host_timer(h, now + tslice, slice_end, (void *)(intptr_t)cpu, ver);
    }
    if (nxt != prev && prev) {
        /* sched_context_switched -> context_saved -> migrate_finish */
        p->ops->context_saved(h, p, prev);
        if (prev->pflags & VPF_MIGRATING) host_migrate_finish(h, prev);
    }
}

/* HostCore.run_until: the events up to until, each followed by the softirq flush */
void host_run_until(struct host *h, int64_t until) {
    int64_t n = 0;
    while (h->qlen && h->q[0].at <= until && !h->failed) {
        struct event e = heap_pop(h);
        h->now = e.at;
        e.fn(h, e.a, e.b);
        n++;
        if (h->pend_len) flush_pending(h);
    }
    h->events_run += n;
    if (!h->failed) h->now = until;
}

/* ---- runnability and demand ------------------------------------------------------ */

/* HostCore._demand_begin */
static void demand_begin(struct host *h, struct vcpu *v) {
    v->demand_start = h->now;
    if (v->demanding) return; /* dict assignment: keeps its place */
    v->demanding = true;
    list_add_tail(&v->demand_elem, &h->demanding);
}

/* HostCore._demand_end */
static void demand_end(struct host *h, struct vcpu *v) {
    v->acc_demand += h->now - v->demand_start;
    v->demand_start = -1;
    if (!v->demanding) { /* Python's `del self._demanding[v]` raises */
        host_fail(h, "KeyError: d%dv%d is not in _demanding", v->domid, v->vid);
        return;
    }
    v->demanding = false;
    list_del(&v->demand_elem);
    touch(h, v);
}

/* HostCore.set_flag: a pause flag; the first one ends the demand */
void host_set_flag(struct host *h, struct vcpu *v, int bit) {
    int f = v->pflags;
    if (!(f & VPF_NO_DEMAND) && (bit & VPF_NO_DEMAND)) demand_end(h, v);
    v->pflags = f | bit;
}

/* HostCore.clear_flag: the last one cleared starts the demand */
void host_clear_flag(struct host *h, struct vcpu *v, int bit) {
    int f = v->pflags & ~bit;
    if ((v->pflags & VPF_NO_DEMAND) && !(f & VPF_NO_DEMAND)) demand_begin(h, v);
    v->pflags = f;
}

/* HostCore.vcpu_sleep (Xen's vcpu_sleep_nosync) */
void host_vcpu_sleep(struct host *h, struct vcpu *v, int bit) {
    host_set_flag(h, v, bit);
    struct pool *p = v->dom->pool;
    p->ops->sleep(h, p, v);
}

/* HostCore.vcpu_wake (Xen's vcpu_wake) */
void host_vcpu_wake(struct host *h, struct vcpu *v, int bit) {
    host_clear_flag(h, v, bit);
    if (!v->pflags) {
        struct pool *p = v->dom->pool;
        p->ops->wake(h, p, v);
    }
}

/* HostCore.migrate_start (Xen's vcpu_migrate_start) */
void host_migrate_start(struct host *h, struct vcpu *v) {
    v->pflags |= VPF_MIGRATING;
    struct pool *p = v->dom->pool;
    p->ops->sleep(h, p, v);
}

/* HostCore.migrate_finish (Xen's vcpu_migrate_finish) */
void host_migrate_finish(struct host *h, struct vcpu *v) {
    if (v->is_running || !(v->pflags & VPF_MIGRATING)) return;
    struct pool *p = v->dom->pool;
    int cpu = p->ops->pick_resource(h, p, v);
    p->ops->move(h, p, v, cpu);
    v->pflags &= ~VPF_MIGRATING;
    if (!v->pflags) p->ops->wake(h, p, v);
}

/* ---- workloads (workload.py) ----------------------------------------------------- */

#define WL_MIN_NS 1000

/* Python's round(float) -> int: half to even (nearbyint in the default rounding mode). */
static int64_t round_ns(double x) {
    double r = nearbyint(x);
    if (!(r > -9.2e18 && r < 9.2e18)) return INT64_MAX / 4; /* never in practice */
    return (int64_t)r;
}

static int64_t at_least_min(int64_t x) { return x > WL_MIN_NS ? x : WL_MIN_NS; }

/* workload._exp */
static int64_t wl_exp(double mean_ns, struct mt *rng) {
    return at_least_min(round_ns(mt_expovariate(rng, 1.0 / mean_ns)));
}

/* workload.on_ns */
int64_t wl_on_ns(struct vcpu *v) {
    switch (v->wl_kind) {
    case WL_CPUBOUND:
        return WL_NEVER;
    case WL_BURSTY:
        return at_least_min(round_ns(v->wl_p1 * 1e6));
    case WL_IOLIKE:
        return wl_exp(v->wl_p1 * 1e3, &v->rng);
    default:
        return 0;
    }
}

/* workload.off_ns */
int64_t wl_off_ns(struct vcpu *v) {
    switch (v->wl_kind) {
    case WL_BURSTY:
        return at_least_min(round_ns(v->wl_p2 * 1e6));
    case WL_IOLIKE:
        return wl_exp(v->wl_p2 * 1e3, &v->rng);
    case WL_IDLE:
        return WL_NEVER;
    default:
        return 0;
    }
}

/* workload.start: (runnable, work left) or (blocked, ns until it wakes). */
bool wl_start(struct vcpu *v, int64_t *amount) {
    switch (v->wl_kind) {
    case WL_CPUBOUND:
        *amount = WL_NEVER;
        return true;
    case WL_IDLE:
        *amount = WL_NEVER;
        return false;
    case WL_BURSTY: {
        double on = v->wl_p1 * 1e6, off = v->wl_p2 * 1e6;
        double u = mt_random(&v->rng) * (on + off);
        if (u < on) {
            *amount = at_least_min(round_ns(on - u));
            return true;
        }
        *amount = at_least_min(round_ns(on + off - u));
        return false;
    }
    default: /* WL_IOLIKE */
        if (mt_random(&v->rng) * (v->wl_p1 + v->wl_p2) < v->wl_p1) {
            *amount = wl_on_ns(v);
            return true;
        }
        *amount = wl_off_ns(v);
        return false;
    }
}

/* HostCore._work_done: the work ran out, the vCPU blocks (vcpu_block) */
static void work_done(struct host *h, void *a, int64_t ver) {
    struct vcpu *v = a;
    if (ver != v->wl_ver) return;
    v->work_left = 0;
    v->wl_ver++;
    host_set_flag(h, v, VPF_BLOCKED);
    host_raise_softirq(h, v->cpu);
    int64_t off = wl_off_ns(v);
    if (off != WL_NEVER) host_timer(h, h->now + off, wake_timer, v, v->wl_ver);
}

/* HostCore._wake_timer */
static void wake_timer(struct host *h, void *a, int64_t ver) {
    struct vcpu *v = a;
    if (ver != v->wl_ver) return;
    v->work_left = wl_on_ns(v);
    host_vcpu_wake(h, v, VPF_BLOCKED);
}

/* ---- objects --------------------------------------------------------------------- */

/* Vcpu.set_masks */
void vcpu_set_masks(struct vcpu *v, const mask_t *hard, const mask_t *soft,
                    const mask_t *pool_cpus) {
    v->hard = *hard;
    v->soft = *soft;
    v->hmask = mask_and(hard, pool_cpus);
    mask_t both = mask_and(soft, hard);
    /* soft_aff_effective && !cpumask_subset(pool, soft): has_soft_affinity() */
    bool effective = !mask_subset(hard, soft) && !mask_empty(&both);
    v->has_soft = effective && !mask_subset(pool_cpus, soft);
    v->smask = mask_and(&both, pool_cpus);
}

/* ---- what the engine asks per vCPU ----------------------------------------------- */

/* HostCore.start */
void host_start(struct host *h) {
    for (int i = 0; i < h->npools && !h->failed; i++) {
        struct pool *p = h->pools[i];
        p->ops->start(h, p);
    }
}

/* HostCore.add_vcpu */
void host_add_vcpu(struct host *h, struct vcpu *v, const mask_t *hard, const mask_t *soft, int cpu,
                   int kind, double p1, double p2) {
    struct pool *p = v->dom->pool;
    v->wl_kind = kind;
    v->wl_p1 = p1;
    v->wl_p2 = p2;
    vcpu_set_masks(v, hard, soft, &p->cpus);
    v->cpu = cpu;
    int64_t amount;
    if (wl_start(v, &amount)) {
        v->work_left = amount;
    } else {
        v->pflags |= VPF_BLOCKED;
        if (amount != WL_NEVER) host_timer(h, h->now + amount, wake_timer, v, v->wl_ver);
    }
    p->ops->insert(h, p, v);
}

/* HostCore.shutdown_vcpu */
void host_shutdown_vcpu(struct host *h, struct vcpu *v) {
    v->wl_ver++;
    host_vcpu_sleep(h, v, VPF_DOWN);
}

/* HostCore.remove_vcpu */
void host_remove_vcpu(struct host *h, struct vcpu *v) {
    struct pool *p = v->dom->pool;
    p->ops->remove(h, p, v);
    touch(h, v);
}

/* HostCore.set_workload */
void host_set_workload(struct host *h, struct vcpu *v, int kind, double p1, double p2) {
    v->wl_kind = kind;
    v->wl_p1 = p1;
    v->wl_p2 = p2;
    v->wl_ver++; /* drop the old workload's pending timers */
    v->work_mark = h->now;
    int64_t work = wl_on_ns(v);
    v->work_left = work;
    if (work != 0) {
        if (v->is_running && work > 0) host_timer(h, h->now + work, work_done, v, v->wl_ver);
        if (v->pflags & VPF_BLOCKED) host_vcpu_wake(h, v, VPF_BLOCKED);
    } else if (!(v->pflags & VPF_BLOCKED)) {
        if (v->is_running) {
            host_set_flag(h, v, VPF_BLOCKED); /* vcpu_block */
            host_raise_softirq(h, v->cpu);
        } else {
            host_vcpu_sleep(h, v, VPF_BLOCKED);
        }
    }
}

/* HostCore.set_affinity */
void host_set_affinity(struct host *h, struct vcpu *v, const mask_t *hard, const mask_t *soft) {
    struct pool *p = v->dom->pool;
    vcpu_set_masks(v, hard, soft, &p->cpus);
    p->ops->affinity_changed(h, p, v);
    host_migrate_start(h, v);
    host_migrate_finish(h, v);
}

/* ---- accounting ------------------------------------------------------------------ */

/* HostCore.take_accounting */
int host_take_accounting(struct host *h, int64_t *start, int64_t *end, int64_t *busy,
                         acct_row_fn row, void *ctx) {
    int64_t now = h->now;
    int nnodes = h->nnodes;
    int rc = 0;
    struct vcpu *v;
    list_for_each_entry(v, &h->demanding, demand_elem) {
        if (!v->touched) {
            touch(h, v);
            if (h->nomem) return -1;
        }
    }
    for (size_t i = 0; i < h->ntouched; i++) {
        v = h->touched[i];
        v->touched = false;
        int64_t s = v->run_start;
        if (s >= 0) {
            int64_t ran = now - s;
            int node = h->node_of[v->cpu];
            v->acc_run[node] += ran;
            h->busy[node] += ran;
            v->total_run += ran;
            v->run_start = now;
        }
        s = v->demand_start;
        if (s >= 0) {
            v->acc_demand += now - s;
            v->demand_start = now;
        }
        int64_t sum = 0;
        for (int n = 0; n < nnodes; n++) sum += v->acc_run[n];
        if (v->acc_demand || v->acc_mig || sum) {
            if (rc == 0 && row(ctx, v) < 0) rc = -1;
            memset(v->acc_run, 0, sizeof v->acc_run);
            v->acc_demand = v->acc_mig = v->acc_xmig = 0;
        }
    }
    h->ntouched = 0;
    for (int n = 0; n < nnodes; n++) {
        busy[n] = h->busy[n];
        h->busy[n] = 0;
    }
    *start = h->acct_from;
    *end = now;
    h->acct_from = now;
    return rc;
}

/* ---- objects._NoSched ------------------------------------------------------------ */

static int none_init(struct host *h, struct pool *p) {
    (void)h;
    p->priv = NULL;
    return 0;
}
static void none_free(struct host *h, struct pool *p) {
    (void)h;
    (void)p;
}
static void none_start(struct host *h, struct pool *p) {
    (void)h;
    (void)p;
}
static void none_insert(struct host *h, struct pool *p, struct vcpu *v) {
    (void)p;
    (void)v;
    host_fail(h, "RuntimeError: cpupool has no scheduler"); /* as _NoSched.insert */
}
static void none_noop(struct host *h, struct pool *p, struct vcpu *v) {
    (void)h;
    (void)p;
    (void)v;
}
static struct vcpu *none_schedule(struct host *h, struct pool *p, int cpu, struct vcpu *prev,
                                  int64_t *tslice, bool *lazy) {
    (void)h;
    (void)p;
    (void)cpu;
    (void)prev;
    *tslice = -1;
    *lazy = false;
    return NULL;
}
static int none_pick(struct host *h, struct pool *p, struct vcpu *v) {
    (void)h;
    (void)p;
    return v->cpu;
}
static void none_move(struct host *h, struct pool *p, struct vcpu *v, int cpu) {
    (void)h;
    (void)p;
    v->cpu = cpu;
}

const struct sched_ops none_ops = {
    .name = "none",
    .init = none_init,
    .free = none_free,
    .start = none_start,
    .insert = none_insert,
    .remove = none_noop,
    .sleep = none_noop,
    .wake = none_noop,
    .schedule = none_schedule,
    .context_saved = none_noop,
    .pick_resource = none_pick,
    .move = none_move,
    .affinity_changed = none_noop,
};

/* ---- host life cycle ------------------------------------------------------------- */

struct host *host_new(void) {
    struct host *h = calloc(1, sizeof *h);
    if (h) INIT_LIST_HEAD(&h->demanding);
    return h;
}

void host_free(struct host *h) {
    if (!h) return;
    for (int i = 0; i < h->npools; i++) {
        struct pool *p = h->pools[i];
        if (p->ops && p->ops->free) p->ops->free(h, p);
        free(p);
    }
    free(h->pools);
    for (size_t i = 0; i < h->nvcpus; i++) free(h->vcpus[i]);
    free(h->vcpus);
    for (size_t i = 0; i < h->ndoms; i++) free(h->doms[i]);
    free(h->doms);
    free(h->q);
    free(h->touched);
    free(h);
}

int host_set_topology(struct host *h, int ncpus, int nnodes_min, const int *node_of,
                      const mask_t *sib) {
    if (ncpus < 1 || ncpus > MAX_CPUS) {
        host_fail(h, "%d pCPUs: the native core takes 1..%d", ncpus, MAX_CPUS);
        return -1;
    }
    if (nnodes_min < 0 || nnodes_min > MAX_NODES) {
        host_fail(h, "nnodes = %d: the native core takes 0..%d", nnodes_min, MAX_NODES);
        return -1;
    }
    int nnodes = nnodes_min;
    for (int c = 0; c < ncpus; c++) {
        if (node_of[c] < 0 || node_of[c] >= MAX_NODES) {
            host_fail(h, "node_of[%d] = %d: must be in 0..%d", c, node_of[c], MAX_NODES - 1);
            return -1;
        }
        if (node_of[c] + 1 > nnodes) nnodes = node_of[c] + 1;
    }
    h->ncpus = h->ncpus_online = ncpus;
    h->nnodes = nnodes;
    mask_zero(&h->all_mask);
    for (int n = 0; n < MAX_NODES; n++) mask_zero(&h->node_mask[n]);
    for (int c = 0; c < ncpus; c++) {
        h->node_of[c] = node_of[c];
        mask_set(&h->node_mask[node_of[c]], c);
        mask_set(&h->all_mask, c);
    }
    for (int c = 0; c < ncpus; c++) {
        h->sib_mask[c] = sib[c];
        h->core_mask[c] = h->node_mask[node_of[c]];
    }
    return 0;
}

struct pool *host_add_pool(struct host *h, const mask_t *cpus, const char *name,
                           const struct sched_ops *ops, const struct mt *rng) {
    if (!mask_subset(cpus, &h->all_mask)) {
        host_fail(h, "pool %s: pCPUs outside the host", name);
        return NULL;
    }
    MASK_FOREACH(c, cpus) {
        if (h->pool_of[c]) {
            host_fail(h, "pool %s: pCPU %d is in another pool", name, c);
            return NULL;
        }
    }
    struct pool **pools = realloc(h->pools, (size_t)(h->npools + 1) * sizeof *pools);
    if (!pools) {
        host_nomem(h);
        return NULL;
    }
    h->pools = pools;
    struct pool *p = calloc(1, sizeof *p);
    if (!p) {
        host_nomem(h);
        return NULL;
    }
    p->cpus = *cpus;
    p->ops = ops;
    if (rng) p->rng = *rng;
    if (ops->init(h, p) < 0) {
        free(p);
        host_nomem(h);
        return NULL;
    }
    h->pools[h->npools++] = p;
    MASK_FOREACH(c, cpus) h->pool_of[c] = p;
    return p;
}

struct dom *host_add_dom(struct host *h, struct pool *p, int domid, int64_t weight) {
    if (h->ndoms == h->doms_cap) {
        struct dom **d = grow(h->doms, &h->doms_cap, sizeof *d, 64);
        if (!d) return NULL;
        h->doms = d;
    }
    struct dom *d = calloc(1, sizeof *d);
    if (!d) return NULL;
    d->id = (int)h->ndoms;
    d->domid = domid;
    d->weight = weight;
    d->pool = p;
    h->doms[h->ndoms++] = d;
    return d;
}

struct vcpu *host_new_vcpu(struct host *h, struct dom *d, int vid, const struct mt *rng) {
    if (h->nvcpus == h->vcpus_cap) {
        struct vcpu **vs = grow(h->vcpus, &h->vcpus_cap, sizeof *vs, 256);
        if (!vs) return NULL;
        h->vcpus = vs;
    }
    struct vcpu *v = calloc(1, sizeof *v);
    if (!v) return NULL;
    v->id = (int)h->nvcpus;
    v->dom = d;
    v->domid = d->domid;
    v->vid = vid;
    v->pflags = VPF_PAUSED; /* created paused, as libxl builds domains */
    v->cpu = 0;
    v->work_left = 0;
    v->rng = *rng;
    v->run_start = -1;
    v->demand_start = -1;
    v->last_cpu = -1;
    h->vcpus[h->nvcpus++] = v;
    return v;
}
