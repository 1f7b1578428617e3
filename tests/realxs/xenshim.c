/*
 * xenshim.c - LD_PRELOAD shim that lets Debian's C xenstored 4.17 run on a
 * Linux host without Xen, keeping its whole tree in memory.
 *
 * xenstored (tools/xenstore/xenstored_{core,domain,posix}.c, Xen 4.17)
 * imports exactly these Xen library calls (check with
 * `nm -D --undefined-only xenstored`):
 *
 *   libxenctrl:   xc_interface_open/close, xc_domain_getinfo
 *   libxenevtchn: xenevtchn_open/fdopen/fd/bind_virq/bind_interdomain/
 *                 notify/unbind/pending/unmask
 *   libxengnttab: xengnttab_open/close/set_max_grants/map_grant_ref/unmap
 *
 * and, for dom0 (dom0_init -> xenbus_evtchn/xenbus_map in xenstored_posix.c),
 * it opens /proc/xen/xsd_port and /proc/xen/xsd_kva with open(2).
 *
 * Every one of them is answered here without touching a hypervisor device,
 * so the real libxen* libraries only have to be present for the dynamic
 * loader; none of their code runs.  Symbols defined here are unversioned:
 * glibc binds xenstored's versioned references (xc_...@VERS_4.17.0) to an
 * unversioned definition in an earlier object of the lookup scope.
 *
 * Environment:
 *   XENSHIM_DOMAINS  comma separated domids that "exist" for
 *                    xc_domain_getinfo (default: every domid < 0x7FF0).
 *                    xenstored marks permissions for non-existing domains as
 *                    ignored, and refuses INTRODUCE only on a failed map.
 *
 * Build: gcc -shared -fPIC -O2 -Wall -o xenshim.so xenshim.c -ldl
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <unistd.h>

#define DOMID_FIRST_RESERVED 0x7FF0u

/* ------------------------------------------------------------------ */
/* Opaque handles: xenstored only stores and passes them back.        */
/* ------------------------------------------------------------------ */

struct xenevtchn_handle {
    int fd;
};
static struct xenevtchn_handle evtchn = { .fd = -1 };
static int xc_dummy, gnttab_dummy;
static unsigned int next_port = 2; /* port 1 is the VIRQ_DOM_EXC port */

/* ------------------------------------------------------------------ */
/* libxenctrl                                                         */
/* ------------------------------------------------------------------ */

/* domain_init() aborts if this returns NULL; nothing else uses the handle
 * except xc_domain_getinfo below. */
void *xc_interface_open(void *logger, void *dombuild_logger, unsigned flags)
{
    (void)logger; (void)dombuild_logger; (void)flags;
    return &xc_dummy;
}

int xc_interface_close(void *xch)
{
    (void)xch;
    return 0;
}

/* Prefix of xc_dominfo_t (tools/include/xenctrl.h, 4.17).  The caller owns
 * the full struct; we only fill the fields xenstored reads: domid and the
 * dying/crashed/shutdown flags (all clear: the domain is alive). */
struct dominfo_prefix {
    uint32_t domid;
    uint32_t ssidref;
    unsigned int flags; /* dying:1, crashed:1, shutdown:1, paused:1, ... */
    unsigned int shutdown_reason;
};

static int domain_exists(uint32_t domid)
{
    const char *list = getenv("XENSHIM_DOMAINS");
    if (domid >= DOMID_FIRST_RESERVED)
        return 0;
    if (!list)
        return 1;
    for (const char *p = list; *p;) {
        char *end;
        unsigned long v = strtoul(p, &end, 0);
        if (end == p)
            break;
        if (v == domid)
            return 1;
        p = (*end == ',') ? end + 1 : end;
    }
    return 0;
}

/* Used by get_domain_info(): when a permission names a domain (perms of
 * unknown domains get XS_PERM_IGNORE), when a node is accounted to its
 * owner, and by check_domains() (never reached: the VIRQ never fires).
 * xenstored only asks for exactly one domain and checks the domid. */
int xc_domain_getinfo(void *xch, uint32_t first_domid, unsigned int max_doms,
                      void *info)
{
    struct dominfo_prefix *d = info;
    (void)xch;
    if (max_doms < 1 || !domain_exists(first_domid))
        return 0;
    memset(d, 0, sizeof(*d));
    d->domid = first_domid;
    return 1;
}

/* ------------------------------------------------------------------ */
/* libxenevtchn                                                       */
/* ------------------------------------------------------------------ */

/* The event channel fd sits in xenstored's poll() set.  An eventfd that
 * nobody ever signals never becomes readable and never reports POLLHUP
 * (which xenstored would treat as fatal: "xce_handle poll failed"). */
static void *evtchn_handle(void)
{
    if (evtchn.fd < 0)
        evtchn.fd = eventfd(0, EFD_CLOEXEC);
    return evtchn.fd < 0 ? NULL : &evtchn;
}

void *xenevtchn_open(void *logger, unsigned flags)
{
    (void)logger; (void)flags;
    return evtchn_handle();
}

/* Only used on live update (xenstored -U), kept for completeness. */
void *xenevtchn_fdopen(void *logger, int fd, unsigned flags)
{
    (void)logger; (void)fd; (void)flags;
    return evtchn_handle();
}

int xenevtchn_fd(struct xenevtchn_handle *xce)
{
    return xce ? xce->fd : -1;
}

/* domain_init(): the VIRQ_DOM_EXC port that would announce domain death. */
int xenevtchn_bind_virq(struct xenevtchn_handle *xce, unsigned int virq)
{
    (void)xce; (void)virq;
    return 1;
}

/* new_domain()/introduce_domain(): a local port per introduced domain
 * (dom0 at start, guests on XS_INTRODUCE). */
int xenevtchn_bind_interdomain(struct xenevtchn_handle *xce, uint32_t domid,
                               unsigned int remote_port)
{
    (void)xce; (void)domid; (void)remote_port;
    return (int)next_port++;
}

/* Kicks the ring of a domain connection; nobody listens. */
int xenevtchn_notify(struct xenevtchn_handle *xce, unsigned int port)
{
    (void)xce; (void)port;
    return 0;
}

int xenevtchn_unbind(struct xenevtchn_handle *xce, unsigned int port)
{
    (void)xce; (void)port;
    return 0;
}

/* handle_event() runs only when the fd is readable, which never happens. */
int xenevtchn_pending(struct xenevtchn_handle *xce)
{
    (void)xce;
    errno = EAGAIN;
    return -1;
}

int xenevtchn_unmask(struct xenevtchn_handle *xce, unsigned int port)
{
    (void)xce; (void)port;
    return 0;
}

/* ------------------------------------------------------------------ */
/* libxengnttab                                                       */
/* ------------------------------------------------------------------ */

/* domain_init() aborts without a grant handle. */
void *xengnttab_open(void *logger, unsigned flags)
{
    (void)logger; (void)flags;
    return &gnttab_dummy;
}

int xengnttab_close(void *xgt)
{
    (void)xgt;
    return 0;
}

int xengnttab_set_max_grants(void *xgt, uint32_t count)
{
    (void)xgt; (void)count;
    return 0;
}

/* map_interface(): the ring page of a guest on XS_INTRODUCE.  A zeroed
 * private page is an empty, connected ring (no requests ever arrive), so
 * INTRODUCE/RELEASE work and fire @introduceDomain/@releaseDomain. */
void *xengnttab_map_grant_ref(void *xgt, uint32_t domid, uint32_t ref, int prot)
{
    void *p;
    (void)xgt; (void)domid; (void)ref;
    p = mmap(NULL, (size_t)getpagesize(), prot ? prot : PROT_READ | PROT_WRITE,
             MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

int xengnttab_unmap(void *xgt, void *start_address, uint32_t count)
{
    (void)xgt;
    return munmap(start_address, (size_t)getpagesize() * count);
}

/* ------------------------------------------------------------------ */
/* open(2): dom0's xenbus port and ring page (xenstored_posix.c)      */
/* ------------------------------------------------------------------ */

static int memfd_with(const char *name, const char *content, size_t size)
{
    int fd = memfd_create(name, MFD_CLOEXEC);
    if (fd < 0)
        return -1;
    if (ftruncate(fd, (off_t)size) < 0 ||
        (content && pwrite(fd, content, strlen(content), 0) < 0)) {
        close(fd);
        return -1;
    }
    return fd;
}

int open(const char *path, int flags, ...)
{
    static int (*real_open)(const char *, int, ...);
    mode_t mode = 0;

    if (flags & (O_CREAT | O_TMPFILE)) {
        va_list ap;
        va_start(ap, flags);
        mode = va_arg(ap, mode_t);
        va_end(ap);
    }
    /* xenbus_evtchn(): reads dom0's xenbus event channel port. */
    if (!strcmp(path, "/proc/xen/xsd_port"))
        return memfd_with("xsd_port", "1", 1);
    /* xenbus_map(): mmaps dom0's ring page (shared, read/write). */
    if (!strcmp(path, "/proc/xen/xsd_kva"))
        return memfd_with("xsd_kva", NULL, (size_t)getpagesize());
    /* Anything else under /proc/xen or /dev/xen would be the hypervisor:
     * make sure it is never opened. */
    if (!strncmp(path, "/proc/xen/", 10) || !strncmp(path, "/dev/xen/", 9)) {
        errno = ENOENT;
        return -1;
    }
    if (!real_open)
        real_open = (int (*)(const char *, int, ...))dlsym(RTLD_NEXT, "open");
    return real_open(path, flags, mode);
}
