"""Observe and act on Xen through libxenctrl (ctypes): no process per poll.

`xl` costs a process, a libxl context and a xenstore walk per call (seconds under
emulation). The same facts come from a handful of hypercalls: the domain info list,
per-vCPU info and affinity, CPU topology and NUMA info. The structures below are
those of Xen 4.17's public headers (domctl interface 0x15, ``xen/include/public/
domctl.h`` and ``sysctl.h``), so the library is used only when both its soname and
the running hypervisor are 4.17; otherwise ``open_hypervisor`` falls back to `xl`.

Names live in xenstore (``/local/domain/N/name``, ``/local/pool/N/name``), read
through libxenstore. Per-node memory uses debug key ``u`` and the console ring, as
`xl debug-keys u; xl dmesg` does, parsed by ``xl_parse.parse_numa_dump``.

The module imports only the standard library at the top (the `Xenctrl` class can run
in a bare dom0); the async adapter needs trio.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import math
import uuid as uuidlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from agent.hypervisor.interface import HypervisorError, NoSuchDomain, Rejected
from agent.hypervisor.model import (
    CpuSet,
    DomainInfo,
    DomainState,
    Node,
    Topology,
    VcpuInfo,
    VcpuState,
)

if TYPE_CHECKING:
    from agent.hypervisor.interface import Hypervisor

T = TypeVar("T")

SERIES = (4, 17)
LIBXENCTRL = "libxenctrl.so.4.17"
LIBXENSTORE = "libxenstore.so.4"
PAGE_KIB = 4

# XEN_DOMINF_* (domctl.h)
DOMINF_DYING = 1 << 0
DOMINF_SHUTDOWN = 1 << 2
DOMINF_PAUSED = 1 << 3
DOMINF_BLOCKED = 1 << 4
DOMINF_RUNNING = 1 << 5
DOMINF_SHUTDOWN_SHIFT = 16
SHUTDOWN_CRASH = 3  # SHUTDOWN_crash (sched.h)
VCPUAFFINITY_HARD = 1 << 0
VCPUAFFINITY_SOFT = 1 << 1
INVALID_U32 = 0xFFFFFFFF
DEFAULT_WEIGHT = 256
# XEN_SCHEDULER_* (domctl.h): the schedulers whose domains have a weight and a cap.
SCHED_CREDIT = 5
SCHED_CREDIT2 = 6
INVALID_U64 = 0xFFFFFFFFFFFFFFFF


class XenctrlUnavailable(HypervisorError):
    """libxenctrl cannot be used here (missing, another Xen version, no privcmd)."""


class XcDomainInfo(ctypes.Structure):
    """struct xen_domctl_getdomaininfo (Xen 4.17, 112 bytes on x86_64)."""

    _fields_ = (
        ("domain", ctypes.c_uint16),
        ("pad1", ctypes.c_uint16),
        ("flags", ctypes.c_uint32),
        ("tot_pages", ctypes.c_uint64),
        ("max_pages", ctypes.c_uint64),
        ("outstanding_pages", ctypes.c_uint64),
        ("shr_pages", ctypes.c_uint64),
        ("paged_pages", ctypes.c_uint64),
        ("shared_info_frame", ctypes.c_uint64),
        ("cpu_time", ctypes.c_uint64),
        ("nr_online_vcpus", ctypes.c_uint32),
        ("max_vcpu_id", ctypes.c_uint32),
        ("ssidref", ctypes.c_uint32),
        ("handle", ctypes.c_uint8 * 16),
        ("cpupool", ctypes.c_uint32),
        ("gpaddr_bits", ctypes.c_uint8),
        ("pad2", ctypes.c_uint8 * 7),
        ("emulation_flags", ctypes.c_uint32),  # struct xen_arch_domainconfig (x86)
        ("misc_flags", ctypes.c_uint32),
    )


class XcVcpuInfo(ctypes.Structure):
    """struct xen_domctl_getvcpuinfo (24 bytes)."""

    _fields_ = (
        ("vcpu", ctypes.c_uint32),
        ("online", ctypes.c_uint8),
        ("blocked", ctypes.c_uint8),
        ("running", ctypes.c_uint8),
        ("cpu_time", ctypes.c_uint64),
        ("cpu", ctypes.c_uint32),
    )


class XcCpuTopo(ctypes.Structure):
    _fields_ = (("core", ctypes.c_uint32), ("socket", ctypes.c_uint32), ("node", ctypes.c_uint32))


class XcMemInfo(ctypes.Structure):
    _fields_ = (("memsize", ctypes.c_uint64), ("memfree", ctypes.c_uint64))


class XcSchedCredit(ctypes.Structure):
    """struct xen_domctl_sched_credit and xen_domctl_sched_credit2 (4.17: the same)."""

    _fields_ = (("weight", ctypes.c_uint16), ("cap", ctypes.c_uint16))


class XcCpupoolInfo(ctypes.Structure):
    """xc_cpupoolinfo_t (xenctrl.h)."""

    _fields_ = (
        ("cpupool_id", ctypes.c_uint32),
        ("sched_id", ctypes.c_uint32),
        ("n_dom", ctypes.c_uint32),
        ("cpumap", ctypes.c_void_p),
    )


assert ctypes.sizeof(XcDomainInfo) == 112 and ctypes.sizeof(XcVcpuInfo) == 24


# --- pure conversions (tested without Xen) -------------------------------------------------------


def cpumap_to_set(buf: bytes) -> CpuSet:
    """Xen's cpumap bytes (bit i of byte i//8 = pCPU i) to a set."""
    return frozenset(i * 8 + b for i, byte in enumerate(buf) for b in range(8) if byte >> b & 1)


def set_to_cpumap(cpus: Iterable[int], size: int) -> bytes:
    out = bytearray(size)
    for cpu in cpus:
        if not 0 <= cpu < size * 8:
            raise ValueError(f"pCPU {cpu} does not fit a {size}-byte cpumap")
        out[cpu // 8] |= 1 << (cpu % 8)
    return bytes(out)


def uuid_from_handle(handle: bytes) -> str:
    return str(uuidlib.UUID(bytes=bytes(handle)))


def state_from_dominf(flags: int) -> DomainState:
    """Same precedence as ``xl_parse.state_from_flags``."""
    if flags & DOMINF_DYING:
        return DomainState.DYING
    if flags & DOMINF_SHUTDOWN:
        reason = flags >> DOMINF_SHUTDOWN_SHIFT & 0xFF
        return DomainState.CRASHED if reason == SHUTDOWN_CRASH else DomainState.SHUTDOWN
    if flags & DOMINF_PAUSED:
        return DomainState.PAUSED
    if flags & DOMINF_BLOCKED and not flags & DOMINF_RUNNING:
        return DomainState.BLOCKED
    return DomainState.RUNNING


def vcpu_state(online: bool, running: bool, blocked: bool, domain_paused: bool) -> VcpuState:
    if not online:
        return VcpuState.OFFLINE
    if domain_paused:
        return VcpuState.PAUSED
    if running:
        return VcpuState.RUNNING
    return VcpuState.BLOCKED if blocked else VcpuState.RUNNABLE


def topology_from(
    cputopo: Sequence[tuple[int, int, int]],
    meminfo: Sequence[tuple[int, int]],
    distances: Sequence[int],
) -> Topology:
    """Topology from xc_cputopoinfo (core, socket, node per pCPU; ~0 = offline) and
    xc_numainfo (bytes per node; row-major distances; ~0 = invalid)."""
    n = len(meminfo)
    if n == 0:
        raise HypervisorError("xc_numainfo reported no nodes")
    if len(distances) != n * n:
        raise HypervisorError(f"xc_numainfo gave {len(distances)} distances for {n} nodes")
    nodes: list[Node] = []
    for node_id, (size, free) in enumerate(meminfo):
        if size == INVALID_U64:
            raise HypervisorError(f"node {node_id} has no memory information")
        cpus = frozenset(
            cpu
            for cpu, (core, _, node) in enumerate(cputopo)
            if core != INVALID_U32 and node == node_id
        )
        nodes.append(Node(node_id, cpus, size // 1024, free // 1024))
    for cpu, (core, _, node) in enumerate(cputopo):
        if core != INVALID_U32 and not 0 <= node < n:
            raise HypervisorError(f"pCPU {cpu} is on node {node}, of {n}")
    rows = tuple(tuple(distances[i * n : (i + 1) * n]) for i in range(n))
    return Topology(tuple(nodes), rows)


# --- the library ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RawDomain:
    domid: int
    flags: int
    tot_pages: int
    max_pages: int
    cpu_time_ns: int
    online_vcpus: int
    max_vcpu_id: int
    uuid: str
    cpupool: int

    @property
    def vcpus(self) -> int:
        return 0 if self.max_vcpu_id == INVALID_U32 else self.max_vcpu_id + 1


def _load(name: str) -> ctypes.CDLL:
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError as e:
        raise XenctrlUnavailable(f"cannot load {name}: {e}") from None


class Xenctrl:
    """A libxenctrl handle (blocking calls; each is one or two hypercalls)."""

    def __init__(self, lib: str = LIBXENCTRL, xs_lib: str = LIBXENSTORE) -> None:
        self._xc = _load(lib)
        c = self._xc
        c.xc_interface_open.restype = ctypes.c_void_p
        c.xc_interface_open.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
        c.xc_interface_close.argtypes = (ctypes.c_void_p,)
        c.xc_version.argtypes = (ctypes.c_void_p, ctypes.c_int, ctypes.c_void_p)
        c.xc_get_cpumap_size.argtypes = (ctypes.c_void_p,)
        c.xc_domain_getinfolist.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_uint,
            ctypes.POINTER(XcDomainInfo),
        )
        c.xc_vcpu_getinfo.argtypes = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_uint32,
            ctypes.POINTER(XcVcpuInfo),
        )
        affinity_args = (
            ctypes.c_void_p,
            ctypes.c_uint32,
            ctypes.c_int,
            ctypes.c_char_p,
            ctypes.c_char_p,
            ctypes.c_uint32,
        )
        c.xc_vcpu_getaffinity.argtypes = affinity_args
        c.xc_vcpu_setaffinity.argtypes = affinity_args
        c.xc_cputopoinfo.argtypes = (
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(XcCpuTopo),
        )
        c.xc_numainfo.argtypes = (
            ctypes.c_void_p,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.POINTER(XcMemInfo),
            ctypes.POINTER(ctypes.c_uint32),
        )
        sched_get = (ctypes.c_void_p, ctypes.c_uint32, ctypes.POINTER(XcSchedCredit))
        c.xc_sched_credit_domain_get.argtypes = sched_get
        c.xc_sched_credit2_domain_get.argtypes = sched_get
        c.xc_cpupool_getinfo.restype = ctypes.POINTER(XcCpupoolInfo)
        c.xc_cpupool_getinfo.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
        c.xc_cpupool_infofree.argtypes = (ctypes.c_void_p, ctypes.POINTER(XcCpupoolInfo))
        c.xc_send_debug_keys.argtypes = (ctypes.c_void_p, ctypes.c_char_p)
        c.xc_readconsolering.argtypes = (
            ctypes.c_void_p,
            ctypes.c_char_p,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_int,
            ctypes.c_int,
            ctypes.POINTER(ctypes.c_uint32),
        )
        handle = c.xc_interface_open(None, None, 0)
        if not handle:
            raise XenctrlUnavailable(
                f"xc_interface_open failed (errno {ctypes.get_errno()}): not dom0 or no privcmd"
            )
        self._h = ctypes.c_void_p(handle)
        version = c.xc_version(self._h, 0, None)  # XENVER_version: major << 16 | minor
        self.version = (version >> 16, version & 0xFFFF)
        if self.version != SERIES:
            self.close()
            raise XenctrlUnavailable(
                f"running Xen is {self.version[0]}.{self.version[1]}; these structures are "
                f"{SERIES[0]}.{SERIES[1]}'s"
            )
        self.cpumap_size = int(c.xc_get_cpumap_size(self._h))
        if self.cpumap_size <= 0:
            raise XenctrlUnavailable("xc_get_cpumap_size failed")
        self._xs_lib = xs_lib
        self._xs: ctypes.CDLL | None = None
        self._xsh: ctypes.c_void_p | None = None

    def close(self) -> None:
        if self._h:
            self._xc.xc_interface_close(self._h)
            self._h = ctypes.c_void_p(None)
        if self._xs is not None and self._xsh:
            self._xs.xs_close(self._xsh)
            self._xsh = None

    def _fail(self, what: str) -> HypervisorError:
        errno = ctypes.get_errno()
        if errno in (3, 2):  # ESRCH, ENOENT
            return NoSuchDomain(f"{what}: no such domain or vCPU (errno {errno})")
        return HypervisorError(f"{what} failed (errno {errno})")

    def domains(self) -> list[RawDomain]:
        out: list[RawDomain] = []
        first = 0
        batch = (XcDomainInfo * 64)()
        while True:
            n = self._xc.xc_domain_getinfolist(self._h, first, 64, batch)
            if n < 0:
                raise self._fail("xc_domain_getinfolist")
            for d in batch[:n]:
                out.append(
                    RawDomain(
                        domid=d.domain,
                        flags=d.flags,
                        tot_pages=d.tot_pages,
                        max_pages=d.max_pages,
                        cpu_time_ns=d.cpu_time,
                        online_vcpus=d.nr_online_vcpus,
                        max_vcpu_id=d.max_vcpu_id,
                        uuid=uuid_from_handle(bytes(d.handle)),
                        cpupool=d.cpupool,
                    )
                )
            if n < 64:
                return out
            first = out[-1].domid + 1

    def vcpu(self, domid: int, vcpu: int) -> tuple[bool, bool, bool, int, int]:
        """(online, running, blocked, cpu_time_ns, cpu)"""
        info = XcVcpuInfo()
        if self._xc.xc_vcpu_getinfo(self._h, domid, vcpu, ctypes.byref(info)) != 0:
            raise self._fail(f"xc_vcpu_getinfo d{domid}v{vcpu}")
        return bool(info.online), bool(info.running), bool(info.blocked), info.cpu_time, info.cpu

    def affinity(self, domid: int, vcpu: int) -> tuple[CpuSet, CpuSet]:
        hard = ctypes.create_string_buffer(self.cpumap_size)
        soft = ctypes.create_string_buffer(self.cpumap_size)
        flags = VCPUAFFINITY_HARD | VCPUAFFINITY_SOFT
        if self._xc.xc_vcpu_getaffinity(self._h, domid, vcpu, hard, soft, flags) != 0:
            raise self._fail(f"xc_vcpu_getaffinity d{domid}v{vcpu}")
        return cpumap_to_set(hard.raw), cpumap_to_set(soft.raw)

    def set_affinity(self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None) -> None:
        flags = (VCPUAFFINITY_HARD if hard is not None else 0) | (
            VCPUAFFINITY_SOFT if soft is not None else 0
        )
        if not flags:
            return
        hbuf = ctypes.create_string_buffer(set_to_cpumap(hard or (), self.cpumap_size))
        sbuf = ctypes.create_string_buffer(set_to_cpumap(soft or (), self.cpumap_size))
        if self._xc.xc_vcpu_setaffinity(self._h, domid, vcpu, hbuf, sbuf, flags) != 0:
            raise self._fail(f"xc_vcpu_setaffinity d{domid}v{vcpu}")

    def pool_scheduler(self, poolid: int) -> int:
        """XEN_SCHEDULER_* of cpupool ``poolid``."""
        info = self._xc.xc_cpupool_getinfo(self._h, poolid)
        if not info:
            raise self._fail(f"xc_cpupool_getinfo {poolid}")
        try:
            # It returns the first pool with an id >= poolid: check it is this one.
            if info.contents.cpupool_id != poolid:
                raise HypervisorError(f"cpupool {poolid} does not exist")
            return int(info.contents.sched_id)
        finally:
            self._xc.xc_cpupool_infofree(self._h, info)

    def sched_params(self, domid: int, sched_id: int) -> tuple[int, int] | None:
        """(weight, cap) of a domain whose pool runs ``sched_id``; None for a scheduler
        without them (RTDS, ARINC 653, null)."""
        if sched_id == SCHED_CREDIT:
            fn, what = self._xc.xc_sched_credit_domain_get, "xc_sched_credit_domain_get"
        elif sched_id == SCHED_CREDIT2:
            fn, what = self._xc.xc_sched_credit2_domain_get, "xc_sched_credit2_domain_get"
        else:
            return None
        params = XcSchedCredit()
        if fn(self._h, domid, ctypes.byref(params)) != 0:
            raise self._fail(f"{what} d{domid}")
        return int(params.weight), int(params.cap)

    def topology(self) -> Topology:
        ncpu = ctypes.c_uint(0)
        if self._xc.xc_cputopoinfo(self._h, ctypes.byref(ncpu), None) != 0:
            raise self._fail("xc_cputopoinfo")
        cpus = (XcCpuTopo * ncpu.value)()
        if self._xc.xc_cputopoinfo(self._h, ctypes.byref(ncpu), cpus) != 0:
            raise self._fail("xc_cputopoinfo")
        nnode = ctypes.c_uint(0)
        if self._xc.xc_numainfo(self._h, ctypes.byref(nnode), None, None) != 0:
            raise self._fail("xc_numainfo")
        mem = (XcMemInfo * nnode.value)()
        dist = (ctypes.c_uint32 * (nnode.value * nnode.value))()
        if self._xc.xc_numainfo(self._h, ctypes.byref(nnode), mem, dist) != 0:
            raise self._fail("xc_numainfo")
        return topology_from(
            [(c.core, c.socket, c.node) for c in cpus[: ncpu.value]],
            [(m.memsize, m.memfree) for m in mem[: nnode.value]],
            list(dist),
        )

    def console(self, clear: bool) -> str:
        """The hypervisor's console ring (what `xl dmesg` prints); clear it after if asked."""
        size = 1 << 20
        buf = ctypes.create_string_buffer(size)
        count = ctypes.c_uint(size)
        if self._xc.xc_readconsolering(self._h, buf, ctypes.byref(count), int(clear), 0, None):
            raise self._fail("xc_readconsolering")
        return buf.raw[: count.value].decode("utf-8", "replace")

    def debug_keys(self, keys: str) -> None:
        if self._xc.xc_send_debug_keys(self._h, keys.encode()) != 0:
            raise self._fail("xc_send_debug_keys")

    def xs_read(self, path: str) -> str | None:
        """A xenstore value (None if absent), through libxenstore."""
        if self._xs is None:
            xs = _load(self._xs_lib)
            xs.xs_open.restype = ctypes.c_void_p
            xs.xs_open.argtypes = (ctypes.c_ulong,)
            xs.xs_read.restype = ctypes.c_void_p
            xs.xs_read.argtypes = (
                ctypes.c_void_p,
                ctypes.c_uint32,
                ctypes.c_char_p,
                ctypes.POINTER(ctypes.c_uint),
            )
            xs.xs_close.argtypes = (ctypes.c_void_p,)
            handle = xs.xs_open(0)
            if not handle:
                raise XenctrlUnavailable(f"xs_open failed (errno {ctypes.get_errno()})")
            self._xs, self._xsh = xs, ctypes.c_void_p(handle)
        length = ctypes.c_uint(0)
        ptr = self._xs.xs_read(self._xsh, 0, path.encode(), ctypes.byref(length))
        if not ptr:
            return None
        try:
            return ctypes.string_at(ptr, length.value).decode("utf-8", "replace")
        finally:
            _libc_free(ptr)


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    libc.free.argtypes = (ctypes.c_void_p,)
    return libc


def _libc_free(ptr: int) -> None:
    _libc().free(ptr)  # xs_read's result is malloc'd


# --- the Hypervisor interface over Xenctrl -------------------------------------------------------


class XenctrlHypervisor:
    """Hypervisor over libxenctrl. Calls run in a worker thread (they block, briefly),
    one at a time: the handle is shared."""

    def __init__(
        self, xc: Xenctrl, memory_dump_interval_s: float = 30.0, sched_interval_s: float = 10.0
    ) -> None:
        import trio

        self._trio = trio
        self._xc = xc
        self._lock = trio.Lock()
        self._interval = memory_dump_interval_s
        # Weights change rarely (an admin's `xl sched-credit -w`): a new domain's are read
        # at once, every domain's again once per interval.
        self._sched_interval = sched_interval_s
        self._sched: dict[tuple[int, str], tuple[int, int]] = {}  # (domid, uuid) -> w, cap
        self._sched_at = -math.inf
        self._dump: dict[int, tuple[int, ...]] | None = None
        self._dump_at = -math.inf

    async def _call(self, fn: Callable[[], T]) -> T:
        async with self._lock:
            return await self._trio.to_thread.run_sync(fn)

    async def topology(self) -> Topology:
        return await self._call(self._xc.topology)

    def _sched_params(
        self, d: RawDomain, sched_ids: dict[int, int], fresh: bool
    ) -> tuple[int, int]:
        key = (d.domid, d.uuid)
        if not fresh and key in self._sched:
            return self._sched[key]
        try:
            if d.cpupool not in sched_ids:
                sched_ids[d.cpupool] = self._xc.pool_scheduler(d.cpupool)
            params = self._xc.sched_params(d.domid, sched_ids[d.cpupool])
        except NoSuchDomain:
            params = None  # gone (or its pool) while we looked: the next pass drops it
        got = params or (DEFAULT_WEIGHT, 0)
        self._sched[key] = got
        return got

    def _domains_sync(self, fresh: bool = True) -> list[DomainInfo]:
        """Domains (in a worker thread); ``fresh``: re-read every domain's weight and cap,
        else only new domains'."""
        out: list[DomainInfo] = []
        pools: dict[int, str] = {}
        sched_ids: dict[int, int] = {}
        raw = self._xc.domains()
        alive = {(d.domid, d.uuid) for d in raw}
        self._sched = {k: v for k, v in self._sched.items() if k in alive}
        for d in raw:
            name = self._xc.xs_read(f"/local/domain/{d.domid}/name")
            if name is None:
                continue  # not introduced to xenstore yet, or being destroyed
            if d.cpupool not in pools:
                pools[d.cpupool] = self._xc.xs_read(f"/local/pool/{d.cpupool}/name") or (
                    f"Pool-{d.cpupool}" if d.cpupool else "Pool-0"
                )
            weight, cap = self._sched_params(d, sched_ids, fresh)
            out.append(
                DomainInfo(
                    domid=d.domid,
                    name=name,
                    uuid=d.uuid,
                    state=state_from_dominf(d.flags),
                    vcpus=d.vcpus,
                    memory_kib=d.tot_pages * PAGE_KIB,
                    pool=pools[d.cpupool],
                    weight=weight,
                    cap=cap,
                )
            )
        return out

    async def domains(self) -> list[DomainInfo]:
        now = self._trio.current_time()
        fresh = now - self._sched_at >= self._sched_interval
        if fresh:
            self._sched_at = now
        return await self._call(lambda: self._domains_sync(fresh))

    def _vcpus_sync(self, domid: int | None) -> list[VcpuInfo]:
        doms = self._xc.domains()
        if domid is not None:
            doms = [d for d in doms if d.domid == domid]
            if not doms:
                raise NoSuchDomain(f"domain {domid} does not exist")
        out: list[VcpuInfo] = []
        for d in doms:
            paused = bool(d.flags & DOMINF_PAUSED)
            for v in range(d.vcpus):
                try:
                    online, running, blocked, time_ns, cpu = self._xc.vcpu(d.domid, v)
                    hard, soft = self._xc.affinity(d.domid, v)
                except NoSuchDomain:
                    if domid is not None:
                        raise
                    break  # destroyed while we looked: skip it
                out.append(
                    VcpuInfo(
                        domid=d.domid,
                        vcpu=v,
                        cpu=cpu if online else None,
                        state=vcpu_state(online, running, blocked, paused),
                        time_ns=time_ns,
                        hard=hard,
                        soft=soft,
                    )
                )
        return out

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        return await self._call(lambda: self._vcpus_sync(domid))

    def _dump_sync(self) -> dict[int, tuple[int, ...]]:
        from agent.hypervisor.xl_parse import parse_numa_dump

        self._xc.console(clear=True)
        self._xc.debug_keys("u")
        return parse_numa_dump(self._xc.console(clear=False), command="xc_readconsolering")

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        async with self._lock:
            now = self._trio.current_time()
            if self._dump is None or now - self._dump_at >= self._interval:
                self._dump = await self._trio.to_thread.run_sync(self._dump_sync)
                self._dump_at = now
            dump = self._dump
        try:
            return dump[domid]
        except KeyError:
            raise NoSuchDomain(f"domain {domid} is not in Xen's memory dump") from None

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        for name, mask in (("hard", hard), ("soft", soft)):
            if mask is not None and not mask:
                raise Rejected(f"refused: empty {name} affinity for d{domid}v{vcpu}")
        await self._call(lambda: self._xc.set_affinity(domid, vcpu, hard, soft))


def open_hypervisor(xl: Sequence[str] = ("xl",)) -> tuple[Hypervisor, str]:
    """libxenctrl when it fits the running Xen, else `xl`; returns (backend, why)."""
    from agent.hypervisor.xl import XlHypervisor

    try:
        xc = Xenctrl()
    except XenctrlUnavailable as e:
        return XlHypervisor(xl), f"xl (libxenctrl unavailable: {e})"
    return XenctrlHypervisor(xc), f"libxenctrl (Xen {xc.version[0]}.{xc.version[1]})"
