"""The libxenctrl backend's pure parts: structure layout and conversions (no Xen needed).
Its calls into a running Xen are tested by tests/test_xen_xenctrl.py (marker `xen`)."""

from __future__ import annotations

import ctypes
from pathlib import Path

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.hypervisor import xenctrl as xc
from agent.hypervisor import xl_parse as xp
from agent.hypervisor.interface import HypervisorError, NoSuchDomain
from agent.hypervisor.model import DomainState, VcpuState

C2 = Path(__file__).parent / "fixtures" / "xl" / "2node-credit"


@pytest.mark.parametrize(
    ("struct", "field", "offset"),
    [
        # Offsets of Xen 4.17's struct xen_domctl_getdomaininfo / getvcpuinfo on x86_64.
        (xc.XcDomainInfo, "flags", 4),
        (xc.XcDomainInfo, "tot_pages", 8),
        (xc.XcDomainInfo, "cpu_time", 56),
        (xc.XcDomainInfo, "nr_online_vcpus", 64),
        (xc.XcDomainInfo, "max_vcpu_id", 68),
        (xc.XcDomainInfo, "handle", 76),
        (xc.XcDomainInfo, "cpupool", 92),
        (xc.XcDomainInfo, "emulation_flags", 104),
        (xc.XcVcpuInfo, "online", 4),
        (xc.XcVcpuInfo, "running", 6),
        (xc.XcVcpuInfo, "cpu_time", 8),
        (xc.XcVcpuInfo, "cpu", 16),
        (xc.XcMemInfo, "memfree", 8),
        # struct xen_domctl_sched_credit / _credit2 (uint16 weight, cap); xc_cpupoolinfo_t.
        (xc.XcSchedCredit, "cap", 2),
        (xc.XcCpupoolInfo, "sched_id", 4),
        (xc.XcCpupoolInfo, "n_dom", 8),
        (xc.XcCpupoolInfo, "cpumap", 16),
    ],
)
def test_structure_layout(struct: type[ctypes.Structure], field: str, offset: int) -> None:
    assert getattr(struct, field).offset == offset


def test_structure_sizes() -> None:
    assert ctypes.sizeof(xc.XcDomainInfo) == 112
    assert ctypes.sizeof(xc.XcVcpuInfo) == 24
    assert ctypes.sizeof(xc.XcCpuTopo) == 12
    assert ctypes.sizeof(xc.XcSchedCredit) == 4
    assert ctypes.sizeof(xc.XcCpupoolInfo) == 24


@settings(deadline=None, derandomize=True, max_examples=100)
@given(st.frozensets(st.integers(0, 63)), st.integers(8, 16))
def test_cpumap_round_trip(cpus: frozenset[int], size: int) -> None:
    buf = xc.set_to_cpumap(cpus, size)
    assert len(buf) == size
    assert xc.cpumap_to_set(buf) == cpus


def test_cpumap_bits() -> None:
    assert xc.set_to_cpumap({0, 3, 9}, 2) == bytes([0b1001, 0b10])
    assert xc.cpumap_to_set(bytes([0xF0, 0x01])) == frozenset({4, 5, 6, 7, 8})
    with pytest.raises(ValueError, match="pCPU 16 does not fit a 2-byte cpumap"):
        xc.set_to_cpumap({16}, 2)


def test_uuid_from_handle() -> None:
    handle = bytes.fromhex("109bf653c285486ea45812e31b719587")
    assert xc.uuid_from_handle(handle) == "109bf653-c285-486e-a458-12e31b719587"
    assert xc.uuid_from_handle(bytes(16)) == xp.NIL_UUID


def letters(flags: int) -> str:
    """What xl list prints for these XEN_DOMINF flags (xl_info.c)."""
    reason = flags >> 16 & 0xFF
    shutdown = bool(flags & xc.DOMINF_SHUTDOWN)
    return "".join(
        [
            "r" if flags & xc.DOMINF_RUNNING else "-",
            "b" if flags & xc.DOMINF_BLOCKED else "-",
            "p" if flags & xc.DOMINF_PAUSED else "-",
            "s" if shutdown else "-",
            "-rscwS"[reason] if shutdown and reason < 6 else "-",
            "d" if flags & xc.DOMINF_DYING else "-",
        ]
    )


@pytest.mark.parametrize("bits", range(64))
@pytest.mark.parametrize("reason", [0, 1, 3])
def test_dominf_state_agrees_with_xl_letters(bits: int, reason: int) -> None:
    flags = 0
    for i, flag in enumerate(
        [
            xc.DOMINF_DYING,
            xc.DOMINF_SHUTDOWN,
            xc.DOMINF_PAUSED,
            xc.DOMINF_BLOCKED,
            xc.DOMINF_RUNNING,
        ]
    ):
        if bits >> i & 1:
            flags |= flag
    flags |= reason << xc.DOMINF_SHUTDOWN_SHIFT
    assert xc.state_from_dominf(flags) is xp.state_from_flags(letters(flags))


def test_crashed_and_paused() -> None:
    assert xc.state_from_dominf(xc.DOMINF_SHUTDOWN | 3 << 16) is DomainState.CRASHED
    assert xc.state_from_dominf(xc.DOMINF_PAUSED | xc.DOMINF_BLOCKED) is DomainState.PAUSED


def test_vcpu_state() -> None:
    assert xc.vcpu_state(False, False, False, True) is VcpuState.OFFLINE
    assert xc.vcpu_state(True, True, False, True) is VcpuState.PAUSED
    assert xc.vcpu_state(True, True, False, False) is VcpuState.RUNNING
    assert xc.vcpu_state(True, False, True, False) is VcpuState.BLOCKED
    assert xc.vcpu_state(True, False, False, False) is VcpuState.RUNNABLE


def test_topology_matches_xl_info() -> None:
    """The arrays libxenctrl returns for the captured host give xl's topology."""
    info = xp.parse_xl_info((C2 / "info-n.txt").read_text())
    assert info.topology is not None
    cputopo = [(c.core, c.socket, c.node) for c in info.cpus]
    mib = 1 << 20
    meminfo = [(n.memory_total_kib * 1024, n.memory_free_kib * 1024) for n in info.topology.nodes]
    dist = [d for row in info.topology.distances for d in row]
    assert xc.topology_from(cputopo, meminfo, dist) == info.topology
    offline = [*cputopo[:-1], (xc.INVALID_U32, xc.INVALID_U32, xc.INVALID_U32)]
    topo = xc.topology_from(offline, [(2048 * mib, mib), (mib, mib)], dist)
    assert 7 not in topo.all_cpus and topo.nodes[0].memory_total_kib == 2048 * 1024


def test_topology_errors() -> None:
    with pytest.raises(HypervisorError, match="no nodes"):
        xc.topology_from([], [], [])
    with pytest.raises(HypervisorError, match="3 distances for 2 nodes"):
        xc.topology_from([(0, 0, 0)], [(1, 1), (1, 1)], [10, 20, 20])
    with pytest.raises(HypervisorError, match="pCPU 0 is on node 5"):
        xc.topology_from([(0, 0, 5)], [(1, 1)], [10])
    with pytest.raises(HypervisorError, match="node 0 has no memory"):
        xc.topology_from([(0, 0, 0)], [(xc.INVALID_U64, 0)], [10])


def test_unavailable_library_is_reported() -> None:
    with pytest.raises(xc.XenctrlUnavailable, match="cannot load libxenctrl-nope"):
        xc.Xenctrl(lib="libxenctrl-nope.so.0")


def test_open_hypervisor_falls_back_to_xl() -> None:
    # No Xen on a test host: libxenctrl is absent or cannot open privcmd.
    from agent.hypervisor.xl import XlHypervisor

    hv, why = xc.open_hypervisor()
    assert isinstance(hv, XlHypervisor)
    assert why.startswith("xl (libxenctrl unavailable: ")


# --- weights and caps through XenctrlHypervisor (a stand-in for the library's calls) ---------


class FakeXc:
    """The Xenctrl calls XenctrlHypervisor.domains makes, answering from tables and
    counting the scheduler ones. Pool 0 credit1, pool 1 credit2, pool 2 RTDS."""

    def __init__(self) -> None:
        self.doms = {0: 0, 1: 0, 2: 1, 3: 2}  # domid -> cpupool
        self.params = {0: (256, 0), 1: (512, 0), 2: (128, 25)}
        self.sched_calls: list[int] = []
        self.pool_calls: list[int] = []

    def domains(self) -> list[xc.RawDomain]:
        return [xc.RawDomain(d, 0, 1024, 1024, 0, 1, 0, f"00000000-0000-0000-0000-00000000000{d}",
                             pool) for d, pool in self.doms.items()]

    def xs_read(self, path: str) -> str | None:
        parts = path.split("/")
        return f"d{parts[3]}" if parts[2] == "domain" else f"pool{parts[3]}"

    def pool_scheduler(self, poolid: int) -> int:
        self.pool_calls.append(poolid)
        return {0: xc.SCHED_CREDIT, 1: xc.SCHED_CREDIT2, 2: 8}[poolid]

    def sched_params(self, domid: int, sched_id: int) -> tuple[int, int] | None:
        self.sched_calls.append(domid)
        if sched_id not in (xc.SCHED_CREDIT, xc.SCHED_CREDIT2):
            return None
        if domid not in self.params:
            raise NoSuchDomain(f"d{domid}")
        return self.params[domid]


async def test_xenctrl_weights_are_read_for_new_domains_and_per_interval(
    mock_clock: trio.testing.MockClock,
) -> None:
    fake = FakeXc()
    hv = xc.XenctrlHypervisor(fake, sched_interval_s=10.0)  # type: ignore[arg-type]
    doms = await hv.domains()
    assert [(d.name, d.pool, d.weight, d.cap) for d in doms] == [
        ("d0", "pool0", 256, 0), ("d1", "pool0", 512, 0), ("d2", "pool1", 128, 25),
        ("d3", "pool2", 256, 0),  # RTDS: no weight, xl's default
    ]
    assert fake.sched_calls == [0, 1, 2, 3]
    assert sorted(fake.pool_calls) == [0, 1, 2]  # once per pool and pass
    fake.params[1] = (1024, 0)
    fake.doms[4] = 0
    fake.params[4] = (64, 10)
    mock_clock.jump(9.0)
    doms = await hv.domains()
    assert [(d.domid, d.weight, d.cap) for d in doms][1:] == [
        (1, 512, 0), (2, 128, 25), (3, 256, 0), (4, 64, 10)  # only the new domain read
    ]
    assert fake.sched_calls == [0, 1, 2, 3, 4]
    mock_clock.jump(1.0)
    doms = await hv.domains()
    assert doms[1].weight == 1024  # the interval is over: all read again
    assert fake.sched_calls == [0, 1, 2, 3, 4, 0, 1, 2, 3, 4]


async def test_xenctrl_domain_gone_while_reading_its_weight() -> None:
    fake = FakeXc()
    del fake.params[1]  # destroyed between the domain list and its scheduler call
    doms = await xc.XenctrlHypervisor(fake).domains()  # type: ignore[arg-type]
    assert (doms[1].weight, doms[1].cap) == (256, 0)
