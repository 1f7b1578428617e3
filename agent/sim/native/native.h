/* native.h: the C port of the simulated host's core (agent/sim/core.py, objects.py,
 * workload.py, cpumask.py), shared by core.c, module.c, credit1.c and credit2.c.
 *
 * It must compute exactly what the Python model computes: same event order
 * (the heap pops by (time, seq), seq counting every push), same SCHEDULE_SOFTIRQ
 * FIFO, same accounting. All state hangs off struct host; no globals.
 */
#ifndef XNUMA_NATIVE_H
#define XNUMA_NATIVE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define MAX_CPUS 512
#define MASK_WORDS (MAX_CPUS / 64)
#define MAX_NODES 64

/* v->pause_flags bits (objects.py); runnable iff none is set. */
#define VPF_BLOCKED 1
#define VPF_PAUSED 2
#define VPF_MIGRATING 4
#define VPF_DOWN 8
#define VPF_PARKED 16
#define VPF_NO_DEMAND (VPF_BLOCKED | VPF_PAUSED | VPF_DOWN | VPF_PARKED)

/* Workload kinds (add_vcpu's kind). */
#define WL_CPUBOUND 0
#define WL_IDLE 1
#define WL_BURSTY 2 /* p1 = on_ms, p2 = off_ms */
#define WL_IOLIKE 3 /* p1 = run_us, p2 = block_us */
#define WL_NEVER (-1)

/* ---- pCPU masks (cpumask.py) ----------------------------------------------------- */

typedef struct {
    uint64_t w[MASK_WORDS];
} mask_t;

static inline void mask_zero(mask_t *m) {
    for (int i = 0; i < MASK_WORDS; i++) m->w[i] = 0;
}
static inline bool mask_test(const mask_t *m, int c) { return (m->w[c >> 6] >> (c & 63)) & 1; }
static inline void mask_set(mask_t *m, int c) { m->w[c >> 6] |= (uint64_t)1 << (c & 63); }
static inline void mask_clear(mask_t *m, int c) { m->w[c >> 6] &= ~((uint64_t)1 << (c & 63)); }
static inline mask_t mask_and(const mask_t *a, const mask_t *b) {
    mask_t r;
    for (int i = 0; i < MASK_WORDS; i++) r.w[i] = a->w[i] & b->w[i];
    return r;
}
static inline mask_t mask_or(const mask_t *a, const mask_t *b) {
    mask_t r;
    for (int i = 0; i < MASK_WORDS; i++) r.w[i] = a->w[i] | b->w[i];
    return r;
}
/* a & ~b */
static inline mask_t mask_andnot(const mask_t *a, const mask_t *b) {
    mask_t r;
    for (int i = 0; i < MASK_WORDS; i++) r.w[i] = a->w[i] & ~b->w[i];
    return r;
}
static inline bool mask_empty(const mask_t *m) {
    uint64_t x = 0;
    for (int i = 0; i < MASK_WORDS; i++) x |= m->w[i];
    return x == 0;
}
static inline bool mask_equal(const mask_t *a, const mask_t *b) {
    uint64_t x = 0;
    for (int i = 0; i < MASK_WORDS; i++) x |= a->w[i] ^ b->w[i];
    return x == 0;
}
/* (a & b) != 0 */
static inline bool mask_intersects(const mask_t *a, const mask_t *b) {
    uint64_t x = 0;
    for (int i = 0; i < MASK_WORDS; i++) x |= a->w[i] & b->w[i];
    return x != 0;
}
/* (a & ~b) == 0 */
static inline bool mask_subset(const mask_t *a, const mask_t *b) {
    uint64_t x = 0;
    for (int i = 0; i < MASK_WORDS; i++) x |= a->w[i] & ~b->w[i];
    return x == 0;
}
static inline int mask_weight(const mask_t *m) {
    int n = 0;
    for (int i = 0; i < MASK_WORDS; i++) n += __builtin_popcountll(m->w[i]);
    return n;
}
/* cpumask_first: lowest set bit, or -1 if empty. */
static inline int mask_first(const mask_t *m) {
    for (int i = 0; i < MASK_WORDS; i++)
        if (m->w[i]) return i * 64 + __builtin_ctzll(m->w[i]);
    return -1;
}
/* Lowest set bit > n (n may be -1), or -1 if none (no wrap). */
static inline int mask_next(int n, const mask_t *m) {
    int c = n + 1;
    if (c < 0) c = 0;
    if (c >= MAX_CPUS) return -1;
    int i = c >> 6;
    uint64_t x = m->w[i] & (~(uint64_t)0 << (c & 63));
    for (;;) {
        if (x) return i * 64 + __builtin_ctzll(x);
        if (++i >= MASK_WORDS) return -1;
        x = m->w[i];
    }
}
/* cpumask_cycle: the next set bit after n, wrapping; -1 if empty. */
static inline int mask_cycle(int n, const mask_t *m) {
    int c = mask_next(n, m);
    return c >= 0 ? c : mask_first(m);
}
/* cpumask_test_or_cycle: n itself if set, else mask_cycle(n, m). */
static inline int mask_test_or_cycle(int n, const mask_t *m) {
    if (n >= 0 && n < MAX_CPUS && mask_test(m, n)) return n;
    return mask_cycle(n, m);
}
/* for (int c = mask_first(m); c >= 0; c = mask_next(c, m)) -- lowest first */
#define MASK_FOREACH(c, m) for (int c = mask_first(m); c >= 0; c = mask_next(c, m))
/* cpumask.iter_cyclic(start, m): the set bits from start up, then those below start. */
static inline int mask_cyclic_first(int start, const mask_t *m) {
    int c = mask_next(start - 1, m);
    if (c >= 0) return c;
    c = mask_first(m);
    return c < start ? c : -1;
}
static inline int mask_cyclic_next(int c, int start, const mask_t *m) {
    int n = mask_next(c, m);
    if (c < start) return n < start ? n : -1; /* wrapped: stop at start */
    if (n >= 0) return n;
    n = mask_first(m);
    return n < start ? n : -1;
}
#define MASK_FOREACH_CYCLIC(c, start, m) \
    for (int c = mask_cyclic_first(start, m); c >= 0; c = mask_cyclic_next(c, start, m))

/* ---- MT19937: continues a Python random.Random from its getstate() --------------- */

struct mt {
    uint32_t s[624];
    int idx; /* 624 = regenerate before the next output */
};

uint32_t mt_genrand(struct mt *m);
/* random.getrandbits(k), 0 <= k <= 64 */
uint64_t mt_getrandbits(struct mt *m, int k);
/* random.random() */
double mt_random(struct mt *m);
/* random.expovariate(lambd) (3.11: -log(1.0 - random()) / lambd) */
double mt_expovariate(struct mt *m, double lambd);
/* random.randrange(n), n > 0 (_randbelow_with_getrandbits) */
int64_t mt_randbelow(struct mt *m, int64_t n);
/* random.randrange(a, b), a < b */
int64_t mt_randrange(struct mt *m, int64_t a, int64_t b);

/* ---- floor division helpers ------------------------------------------------------
 * Python's // and % floor; C's / and % truncate toward zero, so they differ when the
 * signs differ (credits and times before a tick go negative). */

static inline int64_t floordiv64(int64_t a, int64_t b) {
    int64_t q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}
/* Python's divmod(a, b) for b > 0: the floor quotient, *rem in [0, b). */
static inline int64_t floordivmod64(int64_t a, int64_t b, int64_t *rem) {
    int64_t q = a / b, r = a % b;
    if (r < 0) {
        q -= 1;
        r += b;
    }
    *rem = r;
    return q;
}
/* For products of credits and weights that Python's unbounded ints let pass 2^63. */
static inline __int128 floordiv128(__int128 a, __int128 b) {
    __int128 q = a / b;
    if ((a % b != 0) && ((a < 0) != (b < 0))) q--;
    return q;
}

/* ---- intrusive doubly linked lists (Xen's xen/include/xen/list.h, the part used) --
 * Every ordered Python container of the model is one: dicts used as ordered sets
 * append at the tail and unlink on deletion, sorted lists insert before the first
 * element that ranks lower. A list_head is the list itself (an empty one points at
 * itself) or the link inside an element. */

struct list_head {
    struct list_head *next, *prev;
};

/* The struct that holds member at ptr. */
#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))
#define list_entry(ptr, type, member) container_of(ptr, type, member)
#define list_first_entry(head, type, member) list_entry((head)->next, type, member)

static inline void INIT_LIST_HEAD(struct list_head *l) { l->next = l->prev = l; }
static inline bool list_empty(const struct list_head *head) { return head->next == head; }
/* Link e in just before pos (Xen spells it list_add_tail(e, pos)). */
static inline void list_add_before(struct list_head *e, struct list_head *pos) {
    e->prev = pos->prev;
    e->next = pos;
    pos->prev->next = e;
    pos->prev = e;
}
/* Link e in just after pos (Xen's list_add). */
static inline void list_add(struct list_head *e, struct list_head *pos) {
    list_add_before(e, pos->next);
}
static inline void list_add_tail(struct list_head *e, struct list_head *head) {
    list_add_before(e, head);
}
static inline void list_del(struct list_head *e) {
    e->prev->next = e->next;
    e->next->prev = e->prev;
    e->next = e->prev = NULL;
}

/* The walks name the element type with __typeof__ (a GNU extension GCC and Clang
 * accept under -std=c11), as Xen's do with typeof. _safe fetches the neighbour
 * before the body runs, so the body may unlink (or move) pos itself. */
#define list_for_each_entry(pos, head, member)                                             \
    for (pos = list_entry((head)->next, __typeof__(*pos), member); &pos->member != (head); \
         pos = list_entry(pos->member.next, __typeof__(*pos), member))
#define list_for_each_entry_safe(pos, n, head, member)              \
    for (pos = list_entry((head)->next, __typeof__(*pos), member),  \
        n = list_entry(pos->member.next, __typeof__(*pos), member); \
         &pos->member != (head); pos = n, n = list_entry(n->member.next, __typeof__(*n), member))
#define list_for_each_entry_safe_reverse(pos, n, head, member)      \
    for (pos = list_entry((head)->prev, __typeof__(*pos), member),  \
        n = list_entry(pos->member.prev, __typeof__(*pos), member); \
         &pos->member != (head); pos = n, n = list_entry(n->member.prev, __typeof__(*n), member))

/* ---- objects --------------------------------------------------------------------- */

struct host;
struct vcpu;
struct dom;
struct pool;

#include "credit1.h"
#include "credit2.h"

/* A timer callback: fn(h, a, b) as HostCore.timer's fn(a, b). */
typedef void (*timer_fn)(struct host *h, void *a, int64_t b);

/* The hooks of struct scheduler (objects.SchedOps). */
struct sched_ops {
    const char *name; /* as Host() names it: "credit1", "credit2", "none" */
    /* Build p->priv for the pool (Credit1/Credit2 __init__): p->cpus, p->rng are set.
     * Returns 0, or -1 on allocation failure (nothing left allocated). */
    int (*init)(struct host *h, struct pool *p);
    /* Free p->priv (the host is being freed; timers are gone). */
    void (*free)(struct host *h, struct pool *p);
    void (*start)(struct host *h, struct pool *p);
    void (*insert)(struct host *h, struct pool *p, struct vcpu *v);
    void (*remove)(struct host *h, struct pool *p, struct vcpu *v);
    void (*sleep)(struct host *h, struct pool *p, struct vcpu *v);
    void (*wake)(struct host *h, struct pool *p, struct vcpu *v);
    /* Next to run on cpu (NULL = idle), its slice in ns (-1 = none) in *tslice,
     * and whether the slice is lazy (queued only on host_arm_slice) in *lazy. */
    struct vcpu *(*schedule)(struct host *h, struct pool *p, int cpu, struct vcpu *prev,
                             int64_t *tslice, bool *lazy);
    void (*context_saved)(struct host *h, struct pool *p, struct vcpu *v);
    int (*pick_resource)(struct host *h, struct pool *p, struct vcpu *v);
    void (*move)(struct host *h, struct pool *p, struct vcpu *v, int cpu);
    void (*affinity_changed)(struct host *h, struct pool *p, struct vcpu *v);
};

/* objects._NoSched */
extern const struct sched_ops none_ops;

/* A cpupool (objects.Pool). */
struct pool {
    mask_t cpus;
    const struct sched_ops *ops;
    void *priv;    /* the scheduler's per-pool state (struct c1_priv / c2_priv) */
    struct mt rng; /* credit1's random.Random, continued (module.c requires it) */
};

/* A domain (objects.Domain, the parts the core and schedulers use). */
struct dom {
    int id; /* handle */
    int domid;
    int64_t weight;
    struct pool *pool;
    struct c1_dom c1;
};

/* A vCPU (objects.Vcpu). */
struct vcpu {
    int id; /* handle */
    struct dom *dom;
    int domid, vid;
    /* -- generic (sched/core.c) -- */
    int pflags;
    int cpu; /* v->processor */
    bool is_running;
    bool has_soft; /* has_soft_affinity() */
    int64_t state_entry;
    mask_t hard, soft; /* as set */
    mask_t hmask;      /* hard & pool */
    mask_t smask;      /* soft & hard & pool */
    /* -- workload -- */
    int wl_kind;
    double wl_p1, wl_p2;
    int64_t work_left; /* ns of CPU work before it blocks; -1 = never */
    int64_t work_mark;
    int64_t wl_ver;
    struct mt rng;
    /* -- accounting -- */
    int64_t run_start, demand_start;
    int last_cpu;
    int64_t acc_demand, acc_mig, acc_xmig, total_run;
    bool touched;
    bool demanding;               /* in HostCore._demanding */
    struct list_head demand_elem; /* its link there */
    int64_t acc_run[MAX_NODES];
    /* -- scheduler-private -- */
    struct c1_vcpu c1;
    struct c2_vcpu c2;
};

/* An event: (at, seq, fn, a, b). */
struct event {
    int64_t at;
    uint64_t seq;
    timer_fn fn;
    void *a;
    int64_t b;
};

/* The host (HostCore + Topo). */
struct host {
    int64_t now;
    int64_t events_run;
    /* -- topology (Topo) -- */
    int ncpus, nnodes, ncpus_online;
    int node_of[MAX_CPUS];
    mask_t sib_mask[MAX_CPUS];
    mask_t core_mask[MAX_CPUS]; /* = node_mask[node_of[c]] */
    mask_t node_mask[MAX_NODES];
    mask_t all_mask;
    /* -- per pCPU -- */
    struct vcpu *cur[MAX_CPUS];
    struct pool *pool_of[MAX_CPUS];
    int64_t slice_ver[MAX_CPUS];
    int64_t slice_start[MAX_CPUS];
    int64_t slice_len[MAX_CPUS];
    bool slice_lazy[MAX_CPUS];
    /* -- pools in start order -- */
    struct pool **pools;
    int npools;
    /* -- event heap -- */
    struct event *q;
    size_t qlen, qcap;
    uint64_t seq;
    /* -- SCHEDULE_SOFTIRQ FIFO (each pCPU at most once) -- */
    int pend[MAX_CPUS];
    int pend_head, pend_len;
    mask_t pend_mask;
    /* -- accounting -- */
    struct vcpu **touched;
    size_t ntouched, touched_cap;
    struct list_head demanding; /* _demanding (insertion ordered): vcpu.demand_elem */
    int64_t acct_from;
    int64_t busy[MAX_NODES];
    /* -- handles -- */
    struct vcpu **vcpus;
    size_t nvcpus, vcpus_cap;
    struct dom **doms;
    size_t ndoms, doms_cap;
    /* -- errors: the first failure (a Python exception in the model) -- */
    bool failed;
    bool nomem;
    char err[256];
};

/* ---- core services (objects.Core) ------------------------------------------------ */

void host_timer(struct host *h, int64_t at, timer_fn fn, void *a, int64_t b);
void host_raise_softirq(struct host *h, int cpu);
void host_flush(struct host *h);
void host_arm_slice(struct host *h, int cpu);
void host_set_migrating(struct host *h, struct vcpu *v);
/* Where the Python model raises (or a C allocation fails), record the first failure and
 * stop: the loops check h->failed, and module.c raises it as RuntimeError (MemoryError)
 * after the call. Messages start with the Python exception's name. The state after a
 * failure is not the model's: the host is not used again. */
void host_fail(struct host *h, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* ---- the core (HostCore) --------------------------------------------------------- */

/* Allocate a host (zeroed, topology empty); NULL on no memory. */
struct host *host_new(void);
/* Free everything, calling each pool's ops->free. */
void host_free(struct host *h);
/* Topology from node_of (ncpus entries) and sib_mask: fills nnodes (at least
 * nnodes_min: nodes without pCPUs count), node_mask, core_mask, all_mask.
 * Returns 0 or -1 (bad input, h->err says why). */
int host_set_topology(struct host *h, int ncpus, int nnodes_min, const int *node_of,
                      const mask_t *sib);
/* Append a pool (start order); ops->init is called. NULL on failure. */
struct pool *host_add_pool(struct host *h, const mask_t *cpus, const char *name,
                           const struct sched_ops *ops, const struct mt *rng);

void host_start(struct host *h);
struct dom *host_add_dom(struct host *h, struct pool *p, int domid, int64_t weight);
/* Allocate a vCPU (PAUSED, not yet added) with its rng; NULL on no memory. */
struct vcpu *host_new_vcpu(struct host *h, struct dom *d, int vid, const struct mt *rng);
void vcpu_set_masks(struct vcpu *v, const mask_t *hard, const mask_t *soft,
                    const mask_t *pool_cpus);

void host_add_vcpu(struct host *h, struct vcpu *v, const mask_t *hard, const mask_t *soft, int cpu,
                   int kind, double p1, double p2);
void host_vcpu_sleep(struct host *h, struct vcpu *v, int bit);
void host_vcpu_wake(struct host *h, struct vcpu *v, int bit);
void host_set_flag(struct host *h, struct vcpu *v, int bit);
void host_clear_flag(struct host *h, struct vcpu *v, int bit);
void host_migrate_start(struct host *h, struct vcpu *v);
void host_migrate_finish(struct host *h, struct vcpu *v);
void host_shutdown_vcpu(struct host *h, struct vcpu *v);
void host_remove_vcpu(struct host *h, struct vcpu *v);
void host_set_workload(struct host *h, struct vcpu *v, int kind, double p1, double p2);
void host_set_affinity(struct host *h, struct vcpu *v, const mask_t *hard, const mask_t *soft);
void host_run_until(struct host *h, int64_t until);

/* Workload draws (workload.py); return WL_NEVER for never. */
int64_t wl_on_ns(struct vcpu *v);
int64_t wl_off_ns(struct vcpu *v);
/* workload.start: true = runnable with *amount of work, false = blocked *amount ns */
bool wl_start(struct vcpu *v, int64_t *amount);

/* take_accounting: calls row(ctx, v) for each vCPU with something to report
 * (after its counters are brought up to now, before they are zeroed), and
 * copies the per-node busy time into busy[] and the window into *start and *end. */
typedef int (*acct_row_fn)(void *ctx, const struct vcpu *v);
int host_take_accounting(struct host *h, int64_t *start, int64_t *end, int64_t *busy,
                         acct_row_fn row, void *ctx);

#ifdef XNUMA_TRACE
#include <stdio.h>
/* -DXNUMA_TRACE: a vCPU in a decision line, "dXvY" or "-" for idle */
static inline void trace_vcpu(const struct vcpu *v, const char *after) {
    if (v)
        fprintf(stderr, "d%dv%d%s", v->domid, v->vid, after);
    else
        fprintf(stderr, "-%s", after);
}
#endif

#endif
