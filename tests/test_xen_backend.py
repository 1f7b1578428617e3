"""XlHypervisor against a real Xen 4.17 booted under QEMU (marker `xen`).

Skipped unless XNUMA_XEN_TESTBED is set (to 1, or to the testbed's cache folder) and
the testbed is built (`bash tests/xen/build.sh .cache/xen-testbed`). One testbed boot
(2 nodes of 4 pCPUs, credit1) serves the module; `xl` runs inside dom0 through the
testbed's command channel (`testbed.py run -- xl ...` is the backend's argv prefix).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "xen"))
from testbed import DEFAULT_CACHE, Config, Testbed

from agent.hypervisor.interface import NoSuchDomain
from agent.hypervisor.model import DomainState, VcpuState
from agent.hypervisor.xl import XlHypervisor, XlPolicy

# Boot and guest creation under TCG on a loaded host can take minutes (setup counts).
pytestmark = [pytest.mark.xen, pytest.mark.timeout(1500)]

_ENV = os.environ.get("XNUMA_XEN_TESTBED", "")
CACHE = DEFAULT_CACHE if _ENV in ("", "1") else Path(_ENV)
TESTBED_PY = Path(__file__).parent / "xen" / "testbed.py"
ALL = frozenset(range(8))


@pytest.fixture(scope="module")
def testbed() -> Iterator[Testbed]:
    if not _ENV:
        pytest.skip("set XNUMA_XEN_TESTBED=1 to run against the Xen testbed (make xen-test)")
    if not (CACHE / ".ready").exists():
        pytest.skip(f"Xen testbed not built in {CACHE} (make xen-testbed)")
    workdir = CACHE / "run" / "pytest-backend"
    workdir.mkdir(parents=True, exist_ok=True)
    tb = Testbed(CACHE, workdir, Config(layout="2node", sched="credit"))
    with tb:
        tb.start()
        tb.create_guest("A", vcpus=2, mode="busy", soft="0-3")
        tb.create_guest("B", vcpus=1, mode="idle", soft="4-7")
        yield tb


@pytest.fixture
def hv(testbed: Testbed) -> XlHypervisor:
    prefix = [sys.executable, str(TESTBED_PY), "--cache", str(CACHE)]
    prefix += ["--workdir", str(testbed.workdir), "run", "--timeout", "240", "--", "xl"]
    return XlHypervisor(prefix, XlPolicy(timeout_s=300.0, attempts=2, backoff_first_s=1.0))


def domid_of(testbed: Testbed, name: str) -> int:
    return int(testbed.run(["xl", "domid", name], check=True).stdout)


async def test_topology(hv: XlHypervisor) -> None:
    topo = await hv.topology()
    assert [n.cpus for n in topo.nodes] == [frozenset(range(4)), frozenset(range(4, 8))]
    assert topo.distances == ((10, 20), (20, 10))
    for node in topo.nodes:
        assert 1500 * 1024 <= node.memory_total_kib <= 1536 * 1024
        assert 0 < node.memory_free_kib < node.memory_total_kib


async def test_domains(hv: XlHypervisor, testbed: Testbed) -> None:
    doms = {d.name: d for d in await hv.domains()}
    assert {"Domain-0", "A", "B"} <= set(doms)
    assert doms["A"].vcpus == 2 and doms["B"].vcpus == 1
    assert doms["A"].memory_kib == 128 * 1024
    assert doms["A"].domid == domid_of(testbed, "A")
    assert doms["A"].uuid != doms["B"].uuid
    assert doms["A"].state in (DomainState.RUNNING, DomainState.BLOCKED)
    assert {d.pool for d in doms.values()} == {"Pool-0"}


async def test_vcpus(hv: XlHypervisor, testbed: Testbed) -> None:
    a = domid_of(testbed, "A")
    vcpus = await hv.vcpus(a)
    assert [v.vcpu for v in vcpus] == [0, 1]
    assert all(v.soft == frozenset(range(4)) for v in vcpus)
    assert all(v.cpu in ALL and v.time_ns > 0 for v in vcpus)
    everyone = await hv.vcpus()
    assert {v.domid for v in everyone} >= {0, a}


async def test_memory_per_node(hv: XlHypervisor, testbed: Testbed) -> None:
    a, b = domid_of(testbed, "A"), domid_of(testbed, "B")
    mem_a = await hv.memory_per_node(a)
    mem_b = await hv.memory_per_node(b)
    assert len(mem_a) == 2
    assert sum(mem_a) == sum(mem_b) == 128 * 1024
    # libxl placed each guest on the node of its soft affinity.
    assert mem_a[0] == 128 * 1024 and mem_b[1] == 128 * 1024


async def test_pin_and_unpin(hv: XlHypervisor, testbed: Testbed) -> None:
    a = domid_of(testbed, "A")
    await hv.set_vcpu_affinity(a, 1, frozenset({2, 3}), None)
    v1 = (await hv.vcpus(a))[1]
    assert (v1.hard, v1.soft) == (frozenset({2, 3}), frozenset(range(4)))
    await hv.set_vcpu_affinity(a, 1, ALL, frozenset({0, 1}))
    v1 = (await hv.vcpus(a))[1]
    assert (v1.hard, v1.soft) == (ALL, frozenset({0, 1}))
    await hv.set_vcpu_affinity(a, 1, None, frozenset(range(4)))
    v1 = (await hv.vcpus(a))[1]
    assert (v1.hard, v1.soft) == (ALL, frozenset(range(4)))


async def test_pause_is_seen(hv: XlHypervisor, testbed: Testbed) -> None:
    b = domid_of(testbed, "B")
    testbed.run(["xl", "pause", "B"], check=True)
    try:
        doms = {d.domid: d for d in await hv.domains()}
        assert doms[b].state is DomainState.PAUSED
        assert {v.state for v in await hv.vcpus(b)} == {VcpuState.PAUSED}
    finally:
        testbed.run(["xl", "unpause", "B"], check=True)
    doms = {d.domid: d for d in await hv.domains()}
    assert doms[b].state is not DomainState.PAUSED


async def test_missing_domain(hv: XlHypervisor) -> None:
    with pytest.raises(NoSuchDomain):
        await hv.vcpus(99)
    with pytest.raises(NoSuchDomain):
        await hv.set_vcpu_affinity(99, 0, ALL, None)


# --- the libxenctrl backend's core, run inside dom0 (tests/xen/xenctrl_probe.py) -----------------


def probe(testbed: Testbed, *args: str) -> dict[str, Any]:
    argv = ["python3", "/xnuma-src/tests/xen/xenctrl_probe.py", *args]
    out: dict[str, Any] = json.loads(testbed.run(argv, timeout=180, check=True).stdout)
    return out


async def test_xenctrl_agrees_with_xl(hv: XlHypervisor, testbed: Testbed) -> None:
    obs = probe(testbed, "observe")
    assert obs["version"] == [4, 17]
    topo = await hv.topology()
    assert [sorted(n.cpus) for n in topo.nodes] == [n["cpus"] for n in obs["nodes"]]
    assert [list(row) for row in topo.distances] == obs["distances"]
    # xl prints MiB, rounded down.
    assert [n.memory_total_kib for n in topo.nodes] == [
        n["total_kib"] // 1024 * 1024 for n in obs["nodes"]
    ]
    by_id = {d.domid: d for d in await hv.domains()}
    for d in obs["domains"]:
        xl_dom = by_id[d["domid"]]
        assert (d["name"], d["uuid"], d["vcpus"]) == (xl_dom.name, xl_dom.uuid, xl_dom.vcpus)
    xl_masks = {(v.domid, v.vcpu): (v.hard, v.soft) for v in await hv.vcpus()}
    xc_masks = {
        (v["domid"], v["vcpu"]): (frozenset(v["hard"]), frozenset(v["soft"])) for v in obs["vcpus"]
    }
    assert xc_masks == xl_masks
    for name in ("A", "B"):
        domid = domid_of(testbed, name)
        assert tuple(obs["memory"][str(domid)]) == await hv.memory_per_node(domid)


async def test_xenctrl_pin(hv: XlHypervisor, testbed: Testbed) -> None:
    a = domid_of(testbed, "A")
    assert probe(testbed, "pin", str(a), "0", "4-5", "-") == {"hard": [4, 5], "soft": [0, 1, 2, 3]}
    v0 = (await hv.vcpus(a))[0]
    assert (v0.hard, v0.soft) == (frozenset({4, 5}), frozenset(range(4)))
    restored = probe(testbed, "pin", str(a), "0", "0-7", "-")
    assert restored == {"hard": list(range(8)), "soft": [0, 1, 2, 3]}


async def test_weights_and_caps_by_every_path(hv: XlHypervisor, testbed: Testbed) -> None:
    # Set as an admin does, after `xl create`; read back by `xl list -l` (host side),
    # and in dom0 by libxenctrl and the `xl sched-credit[2]` listings (tests/xen/sched_probe.py).
    a, b = domid_of(testbed, "A"), domid_of(testbed, "B")
    testbed.run(["xl", "sched-credit", "-d", "A", "-w", "512"], check=True)
    testbed.run(["xl", "sched-credit", "-d", "B", "-c", "50"], check=True)
    try:
        by_xl = {d.domid: (d.weight, d.cap) for d in await hv.domains()}
        assert (by_xl[0], by_xl[a], by_xl[b]) == ((256, 0), (512, 0), (256, 50))
        argv = ["python3", "/xnuma-src/tests/xen/sched_probe.py"]
        seen = json.loads(testbed.run(argv, timeout=180, check=True).stdout)
        want = {str(k): [n, "Pool-0", *by_xl[k]] for k, n in ((0, "Domain-0"), (a, "A"), (b, "B"))}
        for path in ("xenctrl", "xl", "sched_listing"):
            assert {k: v for k, v in seen[path].items() if k in want} == want, path
    finally:
        testbed.run(["xl", "sched-credit", "-d", "A", "-w", "256"], check=True)
        testbed.run(["xl", "sched-credit", "-d", "B", "-c", "0"], check=True)
