/* credit1.h: the per-vCPU and per-domain state of the credit1 port (credit1.c).
 *
 * A port of agent/sim/credit1.py (Xen 4.17's xen/common/sched/credit.c model);
 * it must compute exactly what the Python model computes. Included by native.h
 * after struct list_head (embedded in struct vcpu / struct dom), so it only
 * forward-declares them.
 */
#ifndef XNUMA_CREDIT1_H
#define XNUMA_CREDIT1_H

#include <stdbool.h>
#include <stdint.h>

struct vcpu;
struct dom;
struct sched_ops;

/* c1_vcpu.flags */
#define C1_F_MIGRATING 2 /* csched_res_pick moved it: its next wake does not BOOST */
#define C1_F_PINNED 4    /* hard affinity of one pCPU */
#define C1_F_STOPPED 64  /* private mark: csched_acct's `stopped` list */

/* The credit1 fields of Vcpu (objects.py: pri, credit, residual, flags, active,
 * on_runq, last_sched, start_time) plus the intrusive links that replace the
 * Python containers holding it. */
struct c1_vcpu {
    int64_t credit;   /* credits: may go negative */
    int64_t residual; /* burn_credits' sub-credit remainder, in [0, 1e6) */
    int64_t last_sched;
    int64_t start_time; /* credits are burnt up to here */
    int pri;            /* PRI_BOOST .. PRI_IDLE */
    int flags;          /* C1_F_* */
    bool active;        /* on its SDom's active list */
    bool on_runq;
    struct list_head runq_elem;   /* its link on runq[cpu] (ordered by priority) */
    struct list_head active_elem; /* its link on SDom.active (insertion ordered) */
};

/* struct csched_dom (credit1.py SDom), embedded in struct dom. */
struct c1_dom {
    bool present;               /* dom.sdom is not None */
    bool in_active_sdom;        /* a key of Credit1.active_sdom */
    int64_t weight;             /* fixed when the SDom is made (csched_alloc_domdata) */
    int n_active;               /* len(SDom.active) */
    struct list_head active;    /* SDom.active: c1_vcpu.active_elem */
    struct list_head sdom_elem; /* its link on Credit1.active_sdom (insertion ordered) */
};

/* The per-pool private state (Credit1's attributes) is struct c1_priv, private
 * to credit1.c; the pool's private pointer points at it. */
struct c1_priv;

extern const struct sched_ops credit1_ops;

#endif
