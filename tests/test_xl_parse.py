"""The xl parsers on output captured from a real Xen 4.17.7 (tests/fixtures/xl/)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.hypervisor import xl_parse as xp
from agent.hypervisor.interface import NoSuchDomain
from agent.hypervisor.model import DomainState, VcpuState, format_cpuset, parse_cpuset
from agent.hypervisor.xl import XlError, XlRejected, classify_failure

FIXTURES = Path(__file__).parent / "fixtures" / "xl"
SETUPS = sorted(p.name for p in FIXTURES.iterdir() if (p / "setup.json").exists())
C2 = FIXTURES / "2node-credit"


def text(setup: str | Path, name: str) -> str:
    base = setup if isinstance(setup, Path) else FIXTURES / setup
    return (base / name).read_text()


def r(a: int, b: int) -> frozenset[int]:
    return frozenset(range(a, b + 1))


def test_fixtures_are_there() -> None:
    assert "2node-credit" in SETUPS
    assert len(SETUPS) >= 2, SETUPS


# --- 2 nodes, credit1: exact values read off the captured files ---------------------------------


def test_topology_2node() -> None:
    topo = xp.parse_topology(text(C2, "info-n.txt"))
    assert [n.id for n in topo.nodes] == [0, 1]
    assert topo.nodes[0].cpus == r(0, 3)
    assert topo.nodes[1].cpus == r(4, 7)
    assert topo.nodes[0].memory_total_kib == 1536 * 1024
    assert topo.nodes[0].memory_free_kib == 1412 * 1024
    assert topo.nodes[1].memory_total_kib == 1535 * 1024
    assert topo.nodes[1].memory_free_kib == 856 * 1024
    assert topo.distances == ((10, 20), (20, 10))
    assert topo.node_of(5) == 1


def test_info_fields_and_cpu_table() -> None:
    info = xp.parse_xl_info(text(C2, "info-n.txt"))
    assert info.field("xen_version") == "4.17.7"
    assert info.field("xen_scheduler") == "credit"
    assert info.int_field("nr_cpus") == 8
    assert info.field("xen_changeset") == ""  # empty values are kept
    assert info.cpus[4] == xp.CpuTopo(cpu=4, core=0, socket=1, node=1)
    with pytest.raises(xp.XlParseError, match="no field 'nope'"):
        info.field("nope")


def test_list_plain_verbose_pool_numa() -> None:
    plain = xp.parse_xl_list(text(C2, "list.txt"))
    assert [(row.name, row.domid, row.vcpus_online) for row in plain] == [
        ("Domain-0", 0, 2),
        ("A", 1, 2),
        ("B", 2, 2),
        ("C", 3, 1),
    ]
    assert plain[1].memory_mib == 128
    assert all(row.uuid is None and row.pool is None for row in plain)
    verbose = xp.parse_xl_list(text(C2, "list-v.txt"))
    assert verbose[0].uuid == xp.NIL_UUID
    assert verbose[1].uuid == "d7712e41-54ac-4314-9485-d26ae9301264"
    assert verbose[1].cpu_time_s == pytest.approx(315.5)
    pools = xp.parse_xl_list(text(C2, "list-c.txt"))
    assert {row.pool for row in pools} == {"Pool-0"}
    numa = xp.parse_xl_list(text(C2, "list-n.txt"))
    assert [row.node_affinity for row in numa] == ["all", "0", "all", "1"]
    moved = xp.parse_xl_list(text(C2, "pools-list-c.txt"))
    assert [row.pool for row in moved] == ["Pool-0", "Pool-0", "Pool-0", "guests"]


def test_paused_domain_state() -> None:
    rows = xp.parse_xl_list(text(C2, "list-paused.txt"))
    assert [row.state for row in rows] == [DomainState.RUNNING] * 3 + [DomainState.PAUSED]
    assert rows[3].flags == "--p---"


@pytest.mark.parametrize(
    ("flags", "state"),
    [
        ("r-----", DomainState.RUNNING),
        ("-b----", DomainState.BLOCKED),
        ("------", DomainState.RUNNING),  # runnable, waiting for a pCPU
        ("rb----", DomainState.RUNNING),
        ("--p---", DomainState.PAUSED),
        ("---s--", DomainState.SHUTDOWN),
        ("---sr-", DomainState.SHUTDOWN),
        ("---sc-", DomainState.CRASHED),
        ("--ps-d", DomainState.DYING),
    ],
)
def test_state_letters(flags: str, state: DomainState) -> None:
    assert xp.state_from_flags(flags) is state


def test_list_long_json() -> None:
    cfgs = xp.parse_xl_list_long(text(C2, "list-l.json"))
    assert sorted(cfgs) == [0, 1, 2, 3]
    dom0 = cfgs[0]
    assert (dom0.name, dom0.uuid, dom0.max_vcpus) == ("Domain-0", None, None)
    assert dom0.target_memkb == 786431
    c = cfgs[3]
    assert c.max_vcpus == 1
    assert c.hard_affinity == (r(4, 7),)
    assert c.soft_affinity == (frozenset({6, 7}),)
    assert cfgs[1].hard_affinity is None


def test_domains_merge_list_and_long() -> None:
    rows = xp.parse_xl_list(text(C2, "list-v.txt"))
    doms = xp.domains_from(rows, xp.parse_xl_list_long(text(C2, "list-l.json")))
    assert [d.domid for d in doms] == [0, 1, 2, 3]
    assert doms[0].uuid == xp.NIL_UUID and doms[0].vcpus == 2 and doms[0].memory_kib == 786431
    assert doms[3].vcpus == 1 and doms[3].memory_kib == 131072
    assert doms[1].uuid == "d7712e41-54ac-4314-9485-d26ae9301264"
    # Without `xl list -l`: vCPUs online and MiB from the row.
    bare = xp.domains_from(xp.parse_xl_list(text(C2, "list-c.txt")))
    assert bare[0].memory_kib == 768 * 1024 and bare[0].pool == "Pool-0"


def test_domains_merge_ignores_reused_domid() -> None:
    rows = xp.parse_xl_list(text(C2, "list-v.txt"))
    cfgs = xp.parse_xl_list_long(text(C2, "list-l.json"))
    renamed = {**cfgs, 1: xp.XlDomainConfig(1, "other", None, 7, None, 1, None, None)}
    doms = xp.domains_from(rows, renamed)
    assert doms[1].name == "A" and doms[1].vcpus == 2


def test_vcpu_list_with_pins() -> None:
    all_cpus = r(0, 7)
    v = {(x.domid, x.vcpu): x for x in xp.parse_vcpu_list(text(C2, "vcpu-list.txt"), all_cpus)}
    assert len(v) == 7
    assert v[0, 0].cpu == 6 and v[0, 0].state is VcpuState.BLOCKED
    assert v[0, 1].cpu == 4 and v[0, 1].state is VcpuState.RUNNING
    assert (v[1, 0].hard, v[1, 0].soft) == (all_cpus, r(0, 3))
    assert (v[1, 1].hard, v[1, 1].soft) == (r(0, 3), r(0, 3))  # pinned `A 1 0-3 -`
    assert (v[2, 0].hard, v[2, 0].soft) == (all_cpus, r(4, 7))  # pinned `B 0 - 4-7`
    assert v[2, 1].soft == r(2, 5)
    assert (v[3, 0].hard, v[3, 0].soft) == (r(4, 7), frozenset({6, 7}))
    assert v[3, 0].time_ns == 38_400_000_000
    one = xp.parse_vcpu_list_rows(text(C2, "vcpu-list-A.txt"), all_cpus)
    assert [(row.name, row.vcpu.vcpu) for row in one] == [("A", 0), ("A", 1)]


def test_vcpu_list_paused_domain() -> None:
    vcpus = xp.parse_vcpu_list(text(C2, "vcpu-list-paused.txt"), r(0, 7))
    c0 = next(x for x in vcpus if x.domid == 3)
    assert c0.state is VcpuState.RUNNABLE  # `---`: xl shows no sign of the pause
    marked = xp.with_paused_domains(vcpus, frozenset({3}))
    assert next(x for x in marked if x.domid == 3).state is VcpuState.PAUSED
    assert [x.state for x in marked if x.domid != 3] == [x.state for x in vcpus if x.domid != 3]


def test_vcpu_list_bad_domain_is_empty() -> None:
    assert xp.parse_vcpu_list(text(C2, "err-vcpu-list-bad-domain.txt"), r(0, 7)) == []


def test_numa_dump() -> None:
    dump = xp.parse_numa_dump(text(C2, "dmesg-u.txt"))
    assert dump == {
        0: (29956 * 4, 166652 * 4),
        1: (32768 * 4, 0),
        2: (16384 * 4, 16384 * 4),
        3: (0, 32768 * 4),
    }


def test_numa_dump_takes_the_last_dump_and_one_line_form() -> None:
    older = (
        "(XEN) Memory location of each domain:\n(XEN) Domain 0 (total: 2):\n(XEN)     Node 0: 2\n"
    )
    newer = (
        "(XEN) [  12.5] Memory location of each domain:\n"
        "(XEN) [  12.5] Domain 1 (total: 32768): Node 0: 32768  Node 1: 0\n"
    )
    assert xp.parse_numa_dump(older + newer) == {1: (32768 * 4, 0)}


def test_numa_dump_skips_vnuma_and_interleaved_lines() -> None:
    dump = (
        "(XEN) Memory location of each domain:\n"
        "(XEN) Domain 4 (total: 10):\n"
        "(XEN)     Node 0: 4\n"
        "(XEN) d4v1 some message from another CPU\n"
        "(XEN)     Node 1: 6\n"
        "(XEN)      2 vnodes, 2 vcpus, guest physical layout:\n"
        "(XEN)          0: pnode   0, vcpus 0\n"
    )
    assert xp.parse_numa_dump(dump) == {4: (16, 24)}


def test_cpupools() -> None:
    pools = xp.parse_cpupool_list(text(C2, "pools-cpupool-list.txt"))
    assert pools == [
        xp.XlPool("Pool-0", 4, "credit", True, 3),
        xp.XlPool("guests", 4, "credit", True, 1),
    ]
    assert xp.parse_cpupool_cpus(text(C2, "pools-cpupool-list-c.txt")) == {
        "Pool-0": r(0, 3),
        "guests": r(4, 7),
    }
    assert xp.parse_cpupool_cpus(text(C2, "cpupool-list-c.txt")) == {"Pool-0": r(0, 7)}
    assert xp.parse_cpupool_cpus("Name               CPU list\nempty\n") == {"empty": frozenset()}


# --- every captured setup: invariants that hold whatever the layout -----------------------------


@pytest.mark.parametrize("setup", SETUPS)
def test_every_setup_parses_consistently(setup: str) -> None:
    meta = json.loads(text(setup, "setup.json"))
    topo = xp.parse_topology(text(setup, "info-n.txt"))
    info = xp.parse_xl_info(text(setup, "info-n.txt"))
    assert info.field("xen_scheduler") == meta["config"]["sched"]
    assert len(topo.nodes) == int(info.field("nr_nodes"))
    assert topo.all_cpus == frozenset(range(info.int_field("nr_cpus")))
    assert all(len(row) == len(topo.nodes) for row in topo.distances)
    rows = xp.parse_xl_list(text(setup, "list-v.txt"))
    doms = xp.domains_from(rows, xp.parse_xl_list_long(text(setup, "list-l.json")))
    by_name = {d.name: d for d in doms}
    assert set(by_name) == {"Domain-0", "A", "B", "C"}
    for name, spec in meta["guests"].items():
        assert by_name[name].vcpus == spec["vcpus"]
    vcpus = xp.parse_vcpu_list(text(setup, "vcpu-list.txt"), topo.all_cpus)
    assert sum(d.vcpus for d in doms) == len(vcpus)
    c = by_name["C"].domid
    c_soft = {v.soft for v in vcpus if v.domid == c}
    assert c_soft == {parse_cpuset(meta["guests"]["C"]["soft"])}
    dump = xp.parse_numa_dump(text(setup, "dmesg-u.txt"))
    assert set(dump) == {d.domid for d in doms}
    for d in doms:
        assert len(dump[d.domid]) == len(topo.nodes)
        if d.domid != 0:  # guests: all their pages are in the dump
            assert sum(dump[d.domid]) == d.memory_kib
    pools = xp.parse_cpupool_list(text(setup, "cpupool-list.txt"))
    assert [(p.name, p.ncpus, p.sched) for p in pools] == [
        ("Pool-0", len(topo.all_cpus), meta["config"]["sched"])
    ]
    assert pools[0].domains == len(doms)
    paused = xp.parse_xl_list(text(setup, "list-paused.txt"))
    assert [row.name for row in paused if row.state is DomainState.PAUSED] == ["C"]


# --- xl error output, classified ------------------------------------------------------------------


def err(setup: Path, name: str) -> tuple[int, str]:
    return int(text(setup, name + ".rc")), text(setup, name + ".stderr")


def test_classify_captured_failures() -> None:
    rc, stderr = err(C2, "err-vcpu-pin-bad-domain.txt")
    assert isinstance(classify_failure(["xl", "vcpu-pin", "99"], rc, stderr), NoSuchDomain)
    rc, stderr = err(C2, "err-list-bad-domain.txt")
    assert isinstance(classify_failure(["xl", "list", "99"], rc, stderr), NoSuchDomain)
    rc, stderr = err(C2, "err-vcpu-pin-bad-vcpu.txt")
    assert isinstance(classify_failure(["xl", "vcpu-pin"], rc, stderr), XlRejected)
    rc, stderr = err(C2, "err-vcpu-pin-bad-cpu.txt")
    e = classify_failure(["xl", "vcpu-pin"], rc, stderr)
    assert isinstance(e, XlRejected) and "affinity map is empty" in str(e)
    other = classify_failure(["xl", "list"], 1, "libxl: error: something else\n")
    assert type(other) is XlError and "exit 1" in str(other)


# --- the model's cpu-list helpers agree with xl's print_bitmap ------------------------------------


def test_cpuset_round_trip_matches_xl() -> None:
    for shown in ("0-3", "2-5", "6-7", "0,2,4-6", "1"):
        assert format_cpuset(parse_cpuset(shown)) == shown


def test_topology_4node() -> None:
    base = FIXTURES / "4node-credit"
    topo = xp.parse_topology(text(base, "info-n.txt"))
    assert [n.cpus for n in topo.nodes] == [r(0, 1), r(2, 3), r(4, 5), r(6, 7)]
    assert topo.distances == (
        (10, 16, 22, 22),
        (16, 10, 22, 22),
        (22, 22, 10, 16),
        (22, 22, 16, 10),
    )
    assert topo.nodes[3].memory_total_kib == 767 * 1024
    assert topo.nodes[3].memory_free_kib == 349 * 1024
    numa = xp.parse_xl_list(text(base, "list-n.txt"))
    assert [row.node_affinity for row in numa] == ["all", "0", "0-1,3", "3"]
    dump = xp.parse_numa_dump(text(base, "dmesg-u.txt"))
    assert dump[0] == (84069 * 4, 11689 * 4, 353 * 4, 100497 * 4)
    assert dump[2] == (16384 * 4, 16384 * 4, 0, 0)
