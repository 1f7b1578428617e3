/* credit2.h: the state of the credit2 port (credit2.c).
 *
 * A port of agent/sim/credit2.py (Xen 4.17's xen/common/sched/credit2.c model);
 * it must compute exactly what the Python model computes. Included by native.h
 * (struct c2_vcpu is embedded in struct vcpu) after mask_t and struct list_head, so it only
 * forward-declares the core's structs.
 */
#ifndef XNUMA_CREDIT2_H
#define XNUMA_CREDIT2_H

#include <stdbool.h>
#include <stdint.h>

struct vcpu;
struct host;
struct pool;
struct sched_ops;
struct c2_runq;

/* svc->flags */
#define C2_F_SCHEDULED 1
#define C2_F_DELAYED_RUNQ_ADD 2
#define C2_F_RUNQ_MIGRATE_REQUEST 4
#define C2_F_PINNED 8

/* The credit2 fields of Vcpu (objects.py: credit, residual, flags, start_time,
 * load_last, avgload, rqd, migrate_rqd, tickled_cpu, on_runq) plus the
 * intrusive links that replace the Python containers holding it. */
struct c2_vcpu {
    int64_t credit;     /* ns-scaled credit: goes negative, down to CREDIT_MIN */
    int64_t residual;   /* t2c_update's remainder, in [0, weight) */
    int64_t start_time; /* credits are burnt up to here */
    int64_t load_last;  /* in 1024 ns units */
    int64_t avgload;    /* fixed point, 2^18 = one pCPU */
    int flags;          /* C2_F_* */
    int tickled_cpu;    /* -1 = none */
    bool on_runq;
    struct c2_runq *rqd;         /* the runqueue it is assigned to, or NULL */
    struct c2_runq *migrate_rqd; /* where a RUNQ_MIGRATE_REQUEST sends it */
    struct list_head runq_elem;  /* its link on Runq.runq (ordered by credit) */
    struct list_head svc_elem;   /* its link on Runq.svc (insertion ordered) */
};

/* struct csched2_runqueue_data (credit2.py Runq). */
struct c2_runq {
    int refcnt;
    int nr_cpus;
    int pick_bias;
    int64_t load;
    int64_t load_last;
    int64_t avgload;
    int64_t b_avgload;
    int64_t max_weight;
    mask_t active;
    mask_t idle;
    mask_t tickled;
    mask_t smt_idle;
    struct list_head runq; /* Runq.runq: c2_vcpu.runq_elem, highest credit first */
    struct list_head svc;  /* Runq.svc: c2_vcpu.svc_elem, in insertion order */
};

/* The per-pool private state (Credit2's attributes); pool->priv points at it. */
struct c2_priv {
    struct host *h;
    mask_t cpus; /* the pool's pCPUs (Credit2.cpus) */
    int nrqds;
    struct c2_runq *rqds;    /* [ncpus], the first nrqds in use, by id */
    struct c2_runq **rqd_of; /* [ncpus], NULL outside the pool */
    mask_t *sibling;         /* [ncpus], SMT siblings in the same runqueue */
};

extern const struct sched_ops credit2_ops;

#endif
