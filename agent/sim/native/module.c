/* module.c: agent.sim._native, the CPython face of the native core (native.h).
 *
 * Host mirrors agent/sim/core.py's HostCore with int handles for domains and vCPUs;
 * agent/sim/native_core.py adapts the engine's objects to it. Masks cross as Python
 * ints (bit n = pCPU n, at most MAX_CPUS bits).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "native.h"

typedef struct {
    PyObject_HEAD
    struct host *h;
} HostObject;

/* ---- conversions ----------------------------------------------------------------- */

static int mask_from_py(PyObject *o, mask_t *m, const char *what) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_ValueError, "%s: a pCPU mask must be an int, got %.80s", what,
                     Py_TYPE(o)->tp_name);
        return -1;
    }
    if (_PyLong_Sign(o) < 0) {
        PyErr_Format(PyExc_ValueError, "%s: a pCPU mask must be >= 0", what);
        return -1;
    }
    unsigned char buf[MASK_WORDS * 8];
#if PY_VERSION_HEX >= 0x030D0000 /* 3.13 added with_exceptions */
    if (_PyLong_AsByteArray((PyLongObject *)o, buf, sizeof buf, 1, 0, 1) < 0) {
#else
    if (_PyLong_AsByteArray((PyLongObject *)o, buf, sizeof buf, 1, 0) < 0) {
#endif
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: a pCPU mask has bits beyond pCPU %d", what,
                     MAX_CPUS - 1);
        return -1;
    }
    for (int i = 0; i < MASK_WORDS; i++) {
        uint64_t w = 0;
        for (int b = 7; b >= 0; b--) w = w << 8 | buf[i * 8 + b];
        m->w[i] = w;
    }
    return 0;
}

static int int_from_py(PyObject *o, long long lo, long long hi, long long *out, const char *what) {
    if (!PyLong_Check(o)) {
        PyErr_Format(PyExc_ValueError, "%s: expected an int, got %.80s", what, Py_TYPE(o)->tp_name);
        return -1;
    }
    int overflow = 0;
    long long x = PyLong_AsLongLongAndOverflow(o, &overflow);
    if (x == -1 && PyErr_Occurred()) return -1;
    if (overflow || x < lo || x > hi) {
        PyErr_Format(PyExc_ValueError, "%s: %R is out of range %lld..%lld", what, o, lo, hi);
        return -1;
    }
    *out = x;
    return 0;
}

/* rng.getstate() = (3, (624 words..., index), gauss_next) */
static int mt_from_py(PyObject *o, struct mt *m, const char *what) {
    if (!PyTuple_Check(o) || PyTuple_GET_SIZE(o) != 3) {
        PyErr_Format(PyExc_ValueError, "%s: expected random.Random.getstate(), a 3-tuple", what);
        return -1;
    }
    PyObject *ver = PyTuple_GET_ITEM(o, 0), *st = PyTuple_GET_ITEM(o, 1);
    if (!PyLong_Check(ver) || PyLong_AsLong(ver) != 3) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: state version must be 3", what);
        return -1;
    }
    if (!PyTuple_Check(st) || PyTuple_GET_SIZE(st) != 625) {
        PyErr_Format(PyExc_ValueError, "%s: the internal state must be a tuple of 625 ints", what);
        return -1;
    }
    for (int i = 0; i < 624; i++) {
        long long w;
        if (int_from_py(PyTuple_GET_ITEM(st, i), 0, 0xffffffffLL, &w, what) < 0) return -1;
        m->s[i] = (uint32_t)w;
    }
    long long idx;
    if (int_from_py(PyTuple_GET_ITEM(st, 624), 0, 624, &idx, what) < 0) return -1;
    m->idx = (int)idx;
    return 0;
}

/* ---- errors from the core -------------------------------------------------------- */

static int check_host(HostObject *self) {
    if (!self->h) {
        PyErr_SetString(PyExc_RuntimeError, "Host is not initialised");
        return -1;
    }
    if (self->h->failed) {
        PyErr_Format(PyExc_RuntimeError, "the native host failed earlier: %s", self->h->err);
        return -1;
    }
    return 0;
}

/* After a call into the core: raise what it recorded. */
static PyObject *after(HostObject *self, PyObject *result) {
    struct host *h = self->h;
    if (h->failed) {
        Py_XDECREF(result);
        if (h->nomem) return PyErr_NoMemory();
        PyErr_Format(PyExc_RuntimeError, "native host: %s", h->err);
        return NULL;
    }
    return result;
}

static struct vcpu *vcpu_arg(HostObject *self, PyObject *o, const char *what) {
    long long id;
    if (int_from_py(o, 0, (long long)self->h->nvcpus - 1, &id, what) < 0) return NULL;
    return self->h->vcpus[id];
}

static struct dom *dom_arg(HostObject *self, PyObject *o, const char *what) {
    long long id;
    if (int_from_py(o, 0, (long long)self->h->ndoms - 1, &id, what) < 0) return NULL;
    return self->h->doms[id];
}

static int workload_arg(int kind, double p1, double p2) {
    if (kind < WL_CPUBOUND || kind > WL_IOLIKE) {
        PyErr_Format(PyExc_ValueError, "kind: %d is not a workload kind (0..3)", kind);
        return -1;
    }
    if ((kind == WL_BURSTY || kind == WL_IOLIKE) && !(p1 > 0 && p2 > 0)) {
        PyErr_Format(PyExc_ValueError, "p1, p2: workload kind %d needs both > 0", kind);
        return -1;
    }
    return 0;
}

/* ---- Host ------------------------------------------------------------------------ */

static void Host_dealloc(HostObject *self) {
    host_free(self->h);
    self->h = NULL;
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static const struct sched_ops *ops_named(const char *name) {
    static const struct sched_ops *const all[] = {&credit1_ops, &credit2_ops, &none_ops};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        if (!strcmp(name, all[i]->name)) return all[i];
    return NULL;
}

static int Host_init(HostObject *self, PyObject *args, PyObject *kwds) {
    static char *kwlist[] = {"node_of", "sib_mask", "pools", "nnodes", NULL};
    PyObject *node_of_o, *sib_o, *pools_o, *nnodes_o = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|O:Host", kwlist, &node_of_o, &sib_o, &pools_o,
                                     &nnodes_o))
        return -1;
    long long nnodes = 0;
    if (nnodes_o && nnodes_o != Py_None &&
        int_from_py(nnodes_o, 1, MAX_NODES, &nnodes, "nnodes") < 0)
        return -1;
    if (!PyList_Check(node_of_o) || !PyList_Check(sib_o) || !PyList_Check(pools_o)) {
        PyErr_SetString(PyExc_ValueError, "node_of, sib_mask and pools must be lists");
        return -1;
    }
    Py_ssize_t ncpus = PyList_GET_SIZE(node_of_o);
    if (ncpus < 1 || ncpus > MAX_CPUS) {
        PyErr_Format(PyExc_ValueError, "node_of: %zd pCPUs, the native core takes 1..%d", ncpus,
                     MAX_CPUS);
        return -1;
    }
    if (PyList_GET_SIZE(sib_o) != ncpus) {
        PyErr_Format(PyExc_ValueError, "sib_mask: %zd entries for %zd pCPUs",
                     PyList_GET_SIZE(sib_o), ncpus);
        return -1;
    }
    int *nodes = PyMem_Malloc(sizeof(int) * (size_t)ncpus);
    mask_t *sibs = PyMem_Malloc(sizeof(mask_t) * (size_t)ncpus);
    struct host *h = host_new();
    if (!nodes || !sibs || !h) {
        PyMem_Free(nodes);
        PyMem_Free(sibs);
        host_free(h);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t c = 0; c < ncpus; c++) {
        long long n;
        if (int_from_py(PyList_GET_ITEM(node_of_o, c), 0, MAX_NODES - 1, &n, "node_of") < 0)
            goto fail;
        nodes[c] = (int)n;
        if (mask_from_py(PyList_GET_ITEM(sib_o, c), &sibs[c], "sib_mask") < 0) goto fail;
    }
    if (host_set_topology(h, (int)ncpus, (int)nnodes, nodes, sibs) < 0) {
        PyErr_Format(PyExc_ValueError, "node_of: %s", h->err);
        goto fail;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(pools_o); i++) {
        PyObject *t = PyList_GET_ITEM(pools_o, i);
        PyObject *m_o, *rng_o;
        const char *sched;
        if (!PyTuple_Check(t) || !PyArg_ParseTuple(t, "OsO", &m_o, &sched, &rng_o)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "pools[%zd]: expected (mask, scheduler, rng state)", i);
            goto fail;
        }
        mask_t m;
        if (mask_from_py(m_o, &m, "pools") < 0) goto fail;
        const struct sched_ops *ops = ops_named(sched);
        if (!ops) {
            PyErr_Format(PyExc_ValueError, "pools[%zd]: unknown scheduler %s", i, sched);
            goto fail;
        }
        struct mt rng;
        bool has_rng = rng_o != Py_None;
        if (has_rng && mt_from_py(rng_o, &rng, "pools") < 0) goto fail;
        if (ops == &credit1_ops && !has_rng) {
            PyErr_Format(PyExc_ValueError, "pools[%zd]: credit1 needs its rng state", i);
            goto fail;
        }
        char name[32];
        snprintf(name, sizeof name, "pool%zd", i);
        if (!host_add_pool(h, &m, name, ops, has_rng ? &rng : NULL)) {
            if (h->nomem)
                PyErr_NoMemory();
            else
                PyErr_Format(PyExc_ValueError, "pools[%zd]: %s", i, h->err);
            goto fail;
        }
    }
    for (int c = 0; c < ncpus; c++) {
        if (!h->pool_of[c]) {
            PyErr_Format(PyExc_ValueError, "pools: pCPU %d is in no pool", c);
            goto fail;
        }
    }
    PyMem_Free(nodes);
    PyMem_Free(sibs);
    host_free(self->h);
    self->h = h;
    return 0;
fail:
    PyMem_Free(nodes);
    PyMem_Free(sibs);
    host_free(h);
    return -1;
}

static PyObject *Host_get_now(HostObject *self, void *closure) {
    (void)closure;
    if (!self->h) return PyLong_FromLong(0);
    return PyLong_FromLongLong(self->h->now);
}

static PyObject *Host_get_events_run(HostObject *self, void *closure) {
    (void)closure;
    if (!self->h) return PyLong_FromLong(0);
    return PyLong_FromLongLong(self->h->events_run);
}

static PyObject *Host_start(HostObject *self, PyObject *noargs) {
    (void)noargs;
    if (check_host(self) < 0) return NULL;
    host_start(self->h);
    return after(self, Py_NewRef(Py_None));
}

static PyObject *Host_add_domain(HostObject *self, PyObject *args) {
    PyObject *pool_o, *domid_o, *weight_o;
    if (!PyArg_ParseTuple(args, "OOO:add_domain", &pool_o, &domid_o, &weight_o)) return NULL;
    if (check_host(self) < 0) return NULL;
    long long pool, domid, weight;
    if (int_from_py(pool_o, 0, self->h->npools - 1, &pool, "pool") < 0 ||
        int_from_py(domid_o, 0, INT32_MAX, &domid, "domid") < 0 ||
        int_from_py(weight_o, 1, 65535, &weight, "weight") < 0)
        return NULL;
    struct dom *d = host_add_dom(self->h, self->h->pools[pool], (int)domid, weight);
    if (!d) return PyErr_NoMemory();
    return PyLong_FromLong(d->id);
}

static PyObject *Host_add_vcpu(HostObject *self, PyObject *args) {
    PyObject *dom_o, *vid_o, *hard_o, *soft_o, *cpu_o, *kind_o, *rng_o;
    double p1, p2;
    if (!PyArg_ParseTuple(args, "OOOOOOddO:add_vcpu", &dom_o, &vid_o, &hard_o, &soft_o, &cpu_o,
                          &kind_o, &p1, &p2, &rng_o))
        return NULL;
    if (check_host(self) < 0) return NULL;
    struct host *h = self->h;
    struct dom *d = dom_arg(self, dom_o, "dom");
    if (!d) return NULL;
    long long vid, cpu, kind;
    mask_t hard, soft;
    struct mt rng;
    if (int_from_py(vid_o, 0, INT32_MAX, &vid, "vid") < 0 ||
        mask_from_py(hard_o, &hard, "hard") < 0 || mask_from_py(soft_o, &soft, "soft") < 0 ||
        int_from_py(cpu_o, 0, h->ncpus - 1, &cpu, "cpu") < 0 ||
        int_from_py(kind_o, 0, 3, &kind, "kind") < 0 || workload_arg((int)kind, p1, p2) < 0 ||
        mt_from_py(rng_o, &rng, "rng_state") < 0)
        return NULL;
    struct vcpu *v = host_new_vcpu(h, d, (int)vid, &rng);
    if (!v) return PyErr_NoMemory();
    host_add_vcpu(h, v, &hard, &soft, (int)cpu, (int)kind, p1, p2);
    return after(self, PyLong_FromLong(v->id));
}

/* A method taking a vCPU handle and a pause flag. */
static PyObject *vcpu_bit_call(HostObject *self, PyObject *args, const char *fmt,
                               void (*fn)(struct host *, struct vcpu *, int)) {
    PyObject *v_o, *bit_o;
    if (!PyArg_ParseTuple(args, fmt, &v_o, &bit_o)) return NULL;
    if (check_host(self) < 0) return NULL;
    struct vcpu *v = vcpu_arg(self, v_o, "v");
    long long bit;
    if (!v || int_from_py(bit_o, 1, 31, &bit, "bit") < 0) return NULL;
    fn(self->h, v, (int)bit);
    return after(self, Py_NewRef(Py_None));
}

static PyObject *Host_sleep(HostObject *self, PyObject *args) {
    return vcpu_bit_call(self, args, "OO:sleep", host_vcpu_sleep);
}

static PyObject *Host_wake(HostObject *self, PyObject *args) {
    return vcpu_bit_call(self, args, "OO:wake", host_vcpu_wake);
}

static PyObject *Host_flush(HostObject *self, PyObject *noargs) {
    (void)noargs;
    if (check_host(self) < 0) return NULL;
    host_flush(self->h);
    return after(self, Py_NewRef(Py_None));
}

/* A method taking one vCPU handle. */
static PyObject *vcpu_call(HostObject *self, PyObject *arg,
                           void (*fn)(struct host *, struct vcpu *)) {
    if (check_host(self) < 0) return NULL;
    struct vcpu *v = vcpu_arg(self, arg, "v");
    if (!v) return NULL;
    fn(self->h, v);
    return after(self, Py_NewRef(Py_None));
}

static PyObject *Host_shutdown_vcpu(HostObject *self, PyObject *arg) {
    return vcpu_call(self, arg, host_shutdown_vcpu);
}

static PyObject *Host_remove_vcpu(HostObject *self, PyObject *arg) {
    return vcpu_call(self, arg, host_remove_vcpu);
}

static PyObject *Host_set_workload(HostObject *self, PyObject *args) {
    PyObject *v_o, *kind_o;
    double p1, p2;
    if (!PyArg_ParseTuple(args, "OOdd:set_workload", &v_o, &kind_o, &p1, &p2)) return NULL;
    if (check_host(self) < 0) return NULL;
    struct vcpu *v = vcpu_arg(self, v_o, "v");
    long long kind;
    if (!v || int_from_py(kind_o, 0, 3, &kind, "kind") < 0 || workload_arg((int)kind, p1, p2) < 0)
        return NULL;
    host_set_workload(self->h, v, (int)kind, p1, p2);
    return after(self, Py_NewRef(Py_None));
}

static PyObject *Host_set_affinity(HostObject *self, PyObject *args) {
    PyObject *v_o, *hard_o, *soft_o;
    if (!PyArg_ParseTuple(args, "OOO:set_affinity", &v_o, &hard_o, &soft_o)) return NULL;
    if (check_host(self) < 0) return NULL;
    struct vcpu *v = vcpu_arg(self, v_o, "v");
    mask_t hard, soft;
    if (!v || mask_from_py(hard_o, &hard, "hard") < 0 || mask_from_py(soft_o, &soft, "soft") < 0)
        return NULL;
    host_set_affinity(self->h, v, &hard, &soft);
    return after(self, Py_NewRef(Py_None));
}

static PyObject *Host_run_until(HostObject *self, PyObject *arg) {
    if (check_host(self) < 0) return NULL;
    long long t;
    if (int_from_py(arg, self->h->now, INT64_MAX, &t, "t") < 0) return NULL;
    host_run_until(self->h, t);
    return after(self, Py_NewRef(Py_None));
}

struct acct_ctx {
    PyObject *rows;
    int nnodes;
};

static int acct_row(void *ctx_, const struct vcpu *v) {
    struct acct_ctx *ctx = ctx_;
    PyObject *run = PyTuple_New(ctx->nnodes);
    if (!run) return -1;
    for (int n = 0; n < ctx->nnodes; n++) {
        PyObject *x = PyLong_FromLongLong(v->acc_run[n]);
        if (!x) {
            Py_DECREF(run);
            return -1;
        }
        PyTuple_SET_ITEM(run, n, x);
    }
    PyObject *row = Py_BuildValue("(iiNLLL)", v->domid, v->vid, run, (long long)v->acc_demand,
                                  (long long)v->acc_mig, (long long)v->acc_xmig);
    if (!row) return -1;
    int rc = PyList_Append(ctx->rows, row);
    Py_DECREF(row);
    return rc;
}

static PyObject *Host_take_accounting(HostObject *self, PyObject *noargs) {
    (void)noargs;
    if (check_host(self) < 0) return NULL;
    struct host *h = self->h;
    struct acct_ctx ctx = {PyList_New(0), h->nnodes};
    if (!ctx.rows) return NULL;
    int64_t start, end, busy[MAX_NODES];
    if (host_take_accounting(h, &start, &end, busy, acct_row, &ctx) < 0) {
        Py_DECREF(ctx.rows);
        if (!PyErr_Occurred()) PyErr_NoMemory();
        return NULL;
    }
    PyObject *busy_t = PyTuple_New(h->nnodes);
    if (!busy_t) {
        Py_DECREF(ctx.rows);
        return NULL;
    }
    for (int n = 0; n < h->nnodes; n++) {
        PyObject *x = PyLong_FromLongLong(busy[n]);
        if (!x) {
            Py_DECREF(ctx.rows);
            Py_DECREF(busy_t);
            return NULL;
        }
        PyTuple_SET_ITEM(busy_t, n, x);
    }
    return Py_BuildValue("(LLNN)", (long long)start, (long long)end, ctx.rows, busy_t);
}

static PyObject *Host_vcpu_view(HostObject *self, PyObject *arg) {
    if (check_host(self) < 0) return NULL;
    struct vcpu *v = vcpu_arg(self, arg, "v");
    if (!v) return NULL;
    int64_t run = v->total_run + (v->run_start >= 0 ? self->h->now - v->run_start : 0);
    return Py_BuildValue("(iOiL)", v->pflags, v->is_running ? Py_True : Py_False, v->cpu,
                         (long long)run);
}

static PyMethodDef Host_methods[] = {
    {"start", (PyCFunction)Host_start, METH_NOARGS, "Start each pool's scheduler."},
    {"add_domain", (PyCFunction)Host_add_domain, METH_VARARGS,
     "add_domain(pool, domid, weight) -> dom handle"},
    {"add_vcpu", (PyCFunction)Host_add_vcpu, METH_VARARGS,
     "add_vcpu(dom, vid, hard, soft, cpu, kind, p1, p2, rng_state) -> vcpu handle"},
    {"sleep", (PyCFunction)Host_sleep, METH_VARARGS, "HostCore.vcpu_sleep(v, bit)"},
    {"wake", (PyCFunction)Host_wake, METH_VARARGS, "HostCore.vcpu_wake(v, bit)"},
    {"flush", (PyCFunction)Host_flush, METH_NOARGS, "Run every raised SCHEDULE_SOFTIRQ."},
    {"shutdown_vcpu", (PyCFunction)Host_shutdown_vcpu, METH_O, "HostCore.shutdown_vcpu(v)"},
    {"remove_vcpu", (PyCFunction)Host_remove_vcpu, METH_O, "HostCore.remove_vcpu(v)"},
    {"set_workload", (PyCFunction)Host_set_workload, METH_VARARGS, "set_workload(v, kind, p1, p2)"},
    {"set_affinity", (PyCFunction)Host_set_affinity, METH_VARARGS, "set_affinity(v, hard, soft)"},
    {"run_until", (PyCFunction)Host_run_until, METH_O, "run_until(t)"},
    {"take_accounting", (PyCFunction)Host_take_accounting, METH_NOARGS,
     "(start, end, rows, busy); rows (domid, vid, run per node, demand, migr, cross-node)"},
    {"vcpu_view", (PyCFunction)Host_vcpu_view, METH_O, "(pflags, is_running, cpu, run ns)"},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef Host_getset[] = {
    {"now", (getter)Host_get_now, NULL, "virtual time in ns", NULL},
    {"events_run", (getter)Host_get_events_run, NULL, "events popped from the queue", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject HostType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "agent.sim._native.Host",
    .tp_basicsize = sizeof(HostObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "The native simulated host core (a port of agent.sim.core.HostCore).",
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Host_init,
    .tp_dealloc = (destructor)Host_dealloc,
    .tp_methods = Host_methods,
    .tp_getset = Host_getset,
};

/* ---- test hooks: the RNG and workload draws, compared with Python's in the tests --- */

static PyObject *rng_draws(PyObject *mod, PyObject *args) {
    (void)mod;
    PyObject *state_o, *calls;
    if (!PyArg_ParseTuple(args, "OO!:_rng_draws", &state_o, &PyList_Type, &calls)) return NULL;
    struct vcpu *v = PyMem_Calloc(1, sizeof *v);
    if (!v) return PyErr_NoMemory();
    PyObject *out = NULL;
    if (mt_from_py(state_o, &v->rng, "state") < 0) goto done;
    out = PyList_New(0);
    if (!out) goto done;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(calls); i++) {
        PyObject *c = PyList_GET_ITEM(calls, i), *r = NULL;
        const char *op;
        double x = 0, y = 0, z = 0;
        if (!PyArg_ParseTuple(c, "s|ddd", &op, &x, &y, &z)) goto fail;
        if (!strcmp(op, "random")) {
            r = PyFloat_FromDouble(mt_random(&v->rng));
        } else if (!strcmp(op, "expovariate")) {
            r = PyFloat_FromDouble(mt_expovariate(&v->rng, x));
        } else if (!strcmp(op, "randrange")) {
            if (!(y > x) || y - x > 9e18) {
                PyErr_SetString(PyExc_ValueError, "randrange: need a < b");
                goto fail;
            }
            r = PyLong_FromLongLong(mt_randrange(&v->rng, (int64_t)x, (int64_t)y));
        } else if (!strcmp(op, "getrandbits")) {
            if (x < 0 || x > 64) {
                PyErr_SetString(PyExc_ValueError, "getrandbits: k in 0..64");
                goto fail;
            }
            r = PyLong_FromUnsignedLongLong(mt_getrandbits(&v->rng, (int)x));
        } else if (!strcmp(op, "start")) {
            v->wl_kind = (int)x;
            v->wl_p1 = y;
            v->wl_p2 = z;
            int64_t amount;
            bool runnable = wl_start(v, &amount);
            r = Py_BuildValue("(OL)", runnable ? Py_True : Py_False, (long long)amount);
        } else if (!strcmp(op, "on_ns") || !strcmp(op, "off_ns")) {
            v->wl_kind = (int)x;
            v->wl_p1 = y;
            v->wl_p2 = z;
            r = PyLong_FromLongLong(op[1] == 'n' ? wl_on_ns(v) : wl_off_ns(v));
        } else {
            PyErr_Format(PyExc_ValueError, "unknown draw %s", op);
            goto fail;
        }
        if (!r || PyList_Append(out, r) < 0) {
            Py_XDECREF(r);
            goto fail;
        }
        Py_DECREF(r);
    }
    goto done;
fail:
    Py_CLEAR(out);
done:
    PyMem_Free(v);
    return out;
}

static PyMethodDef module_methods[] = {
    {"_rng_draws", rng_draws, METH_VARARGS,
     "_rng_draws(state, [(op, x, y, z), ...]) -> results (test hook)"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "agent.sim._native",
    .m_doc = "The native simulated host core.",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC PyInit__native(void) {
    if (PyType_Ready(&HostType) < 0) return NULL;
    PyObject *m = PyModule_Create(&native_module);
    if (!m) return NULL;
    Py_INCREF(&HostType);
    if (PyModule_AddObject(m, "Host", (PyObject *)&HostType) < 0) {
        Py_DECREF(&HostType);
        Py_DECREF(m);
        return NULL;
    }
    if (PyModule_AddIntConstant(m, "MAX_CPUS", MAX_CPUS) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
