"""Malformed `xl` output: truncated and altered real fixtures give a clear XlParseError
naming the command and the line, never another exception."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.hypervisor import xl_parse as xp

C2 = Path(__file__).parent / "fixtures" / "xl" / "2node-credit"
ALL = frozenset(range(8))

PARSERS: dict[str, Callable[[str], object]] = {
    "info-n.txt": xp.parse_topology,
    "list-v.txt": xp.parse_xl_list,
    "list-c.txt": xp.parse_xl_list,
    "list-l.json": xp.parse_xl_list_long,
    "vcpu-list.txt": lambda t: xp.parse_vcpu_list(t, ALL),
    "dmesg-u.txt": xp.parse_numa_dump,
    "cpupool-list.txt": xp.parse_cpupool_list,
    "pools-cpupool-list-c.txt": xp.parse_cpupool_cpus,
}


def fixture(name: str) -> str:
    return (C2 / name).read_text()


def replace_line(text: str, line_no: int, old: str, new: str) -> str:
    lines = text.splitlines(keepends=True)
    assert old in lines[line_no - 1], (old, lines[line_no - 1])
    lines[line_no - 1] = lines[line_no - 1].replace(old, new, 1)
    return "".join(lines)


def parse_error(parse: Callable[[str], object], text: str) -> xp.XlParseError:
    with pytest.raises(xp.XlParseError) as info:
        parse(text)
    return info.value


# --- truncation -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(PARSERS))
def test_every_truncation_parses_or_fails_cleanly(name: str) -> None:
    parse, full = PARSERS[name], fixture(name)
    for cut in range(len(full)):
        try:
            parse(full[:cut])
        except xp.XlParseError as e:
            assert e.command.startswith("xl "), e
            assert str(e).startswith(f"cannot parse `{e.command}` output")


def test_empty_outputs_name_the_command() -> None:
    assert "`xl vcpu-list`" in str(parse_error(PARSERS["vcpu-list.txt"], ""))
    assert "`xl list`" in str(parse_error(xp.parse_xl_list, ""))
    assert "`xl list -l`" in str(parse_error(xp.parse_xl_list_long, ""))
    assert "no 'Memory location" in str(parse_error(xp.parse_numa_dump, ""))


def test_info_cut_before_numa_table() -> None:
    text = fixture("info-n.txt")
    cut = text[: text.index("numa_info")]
    e = parse_error(xp.parse_topology, cut)
    assert "numa_info" in e.reason


def test_info_without_n() -> None:
    text = fixture("info-n.txt")
    start, end = text.index("cpu_topology"), text.index("xen_major")
    plain = text[:start] + text[end:]
    assert xp.parse_xl_info(plain).topology is None
    assert "was -n given" in parse_error(xp.parse_topology, plain).reason


def test_vcpu_row_cut_in_the_state_column() -> None:
    text = fixture("vcpu-list.txt")
    lines = text.splitlines()
    cut = "\n".join([*lines[:4], lines[4][:45]])
    e = parse_error(PARSERS["vcpu-list.txt"], cut)
    assert e.line_no == 5 and e.line == lines[4][:45]
    assert "line 5" in str(e)


def test_dump_cut_after_a_domain_line() -> None:
    text = fixture("dmesg-u.txt")
    cut = text[: text.index("(XEN)     Node 0: 0")]  # domain 3's node lines are gone
    e = parse_error(xp.parse_numa_dump, cut)
    assert e.reason == "domain 3 has no node lines"
    assert e.line.endswith("Domain 3 (total: 32768):")


def test_dump_cut_between_node_lines() -> None:
    text = fixture("dmesg-u.txt")
    cut = text[: text.rindex("(XEN)     Node 1:")]
    e = parse_error(xp.parse_numa_dump, cut)
    assert e.reason == "domain 3: 1 node lines, 2 nodes"


# --- alterations ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line_no", "old", "new", "reason"),
    [
        (1, "Affinity", "Affinities", "not the vcpu-list header"),
        (4, "r--", "x--", "not a vCPU row"),
        (4, "r--", "rb-", "impossible state 'rb-'"),
        (4, "    0    2", "    0    9", "pCPU 9 is not on this host"),
        (4, "    0    2   r--", "    0    -   r--", "CPU '-' does not fit state 'r--'"),
        (5, "0-3 / 0-3", "0-9 / 0-3", "affinity names pCPUs not on this host"),
        (5, "0-3 / 0-3", "3-0 / 0-3", "bad cpu list: descending range"),
        (5, "    1     1    0", "    1     0    0", "d1v0 listed twice"),
        (8, "4-7 / 6-7", "4-7 6-7", "not a vCPU row"),
    ],
)
def test_altered_vcpu_list(line_no: int, old: str, new: str, reason: str) -> None:
    e = parse_error(
        PARSERS["vcpu-list.txt"], replace_line(fixture("vcpu-list.txt"), line_no, old, new)
    )
    assert e.command == "xl vcpu-list"
    assert e.line_no == line_no
    assert reason in e.reason


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        (
            "   0:      1536       1412      10,20",
            "   0:      1536       1412      10",
            "1 distances",
        ),
        ("   1:      1535        856", "   2:      1535        856", "expected node 1, got node 2"),
        ("   0:      1536       1412", "   0:      1536       9412", "memfree exceeds memsize"),
        ("      10,20\n", "      30,20\n", "node 0 is not closest to itself"),
        ("  5:       1        1        1", "  5:       1        1        7", "pCPU 5 is on node 7"),
        ("  5:       1        1        1", "  4:       1        1        1", "pCPU 4 listed twice"),
        ("nr_nodes               : 2", "nr_nodes               : 3", "nr_nodes is 3"),
        ("xen_major              : 4", "xen_major : 4\nxen_major : 5", "appears twice"),
        ("  7:       3        1        1", "  7:       3        1        one", "neither"),
    ],
)
def test_altered_info(old: str, new: str, reason: str) -> None:
    text = fixture("info-n.txt")
    assert old in text
    e = parse_error(xp.parse_topology, text.replace(old, new, 1))
    assert reason in e.reason
    assert e.command == "xl info -n"


@pytest.mark.parametrize(
    ("line_no", "old", "new", "reason"),
    [
        (1, "Time(s)", "Tiem(s)", "header"),
        (3, "r-----", "r----x", "not a domain row"),
        (3, "d7712e41-", "d7712e41", "bad UUID"),
        (3, "        -                -", "        -", "2 extra columns, header says 3"),
        (4, "     2   128", "     1   128", "a domid appears twice"),
    ],
)
def test_altered_list(line_no: int, old: str, new: str, reason: str) -> None:
    text = replace_line(fixture("list-v.txt"), line_no, old, new)
    e = parse_error(xp.parse_xl_list, text)
    assert reason in e.reason
    if reason != "a domid appears twice":
        assert e.line_no == line_no


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ('"domid": 1,', '"domid": "1",', "entry 1: domid is not a non-negative integer"),
        ('"max_vcpus": 2,', '"max_vcpus": -2,', "entry 1: max_vcpus is not a non-negative"),
        ('"name": "A"', '"name": ""', "entry 1: name is not a non-empty string"),
        ('"c_info": {', '"c_infox": {', "entry 0: 'c_info'"),
        ('"uuid": "d7712e41', '"uuid": "nope', "entry 1: bad uuid"),
        ('"domid": 2,', '"domid": 1,', "entry 2: domid 1 appears twice"),
        ("[\n    {", "{\n    {", "invalid JSON"),
    ],
)
def test_altered_list_long(old: str, new: str, reason: str) -> None:
    text = fixture("list-l.json")
    assert old in text
    e = parse_error(xp.parse_xl_list_long, text.replace(old, new, 1))
    assert reason in e.reason


def test_list_long_json_error_names_the_line() -> None:
    text = fixture("list-l.json").replace('"max_memkb": 131072,', '"max_memkb": 131072', 1)
    e = parse_error(xp.parse_xl_list_long, text)
    assert e.line_no is not None and '"target_memkb"' in e.line


def test_list_long_must_be_an_array() -> None:
    assert "expected a JSON array" in parse_error(xp.parse_xl_list_long, "{}").reason


@pytest.mark.parametrize(
    ("old", "new", "reason"),
    [
        ("(XEN)     Node 1: 0", "(XEN)     Node 1: zero", "bad node line"),
        ("(XEN)     Node 1: 0", "(XEN)     Node 2: 0", "expected node 1, got node 2"),
        ("(XEN) Domain 2 (total: 32768):", "(XEN) Domain 1 (total: 32768):", "dumped twice"),
        ("(XEN) Domain 2 (total: 32768):", "(XEN) Domain two (total: 32768):", "bad domain line"),
        ("Memory location of each domain:", "Memory of each domain:", "no 'Memory location"),
    ],
)
def test_altered_dump(old: str, new: str, reason: str) -> None:
    text = fixture("dmesg-u.txt")
    assert old in text
    e = parse_error(xp.parse_numa_dump, text.replace(old, new, 1))
    assert reason in e.reason


def test_dump_node_line_before_any_domain() -> None:
    text = "(XEN) Memory location of each domain:\n(XEN)     Node 0: 5\n"
    assert "node line before any domain" in parse_error(xp.parse_numa_dump, text).reason


def test_altered_cpupools() -> None:
    e = parse_error(
        xp.parse_cpupool_list, fixture("cpupool-list.txt").replace("   y   ", "   ?   ")
    )
    assert e.line_no == 2 and e.reason == "not a pool row"
    e = parse_error(
        xp.parse_cpupool_cpus, fixture("pools-cpupool-list-c.txt").replace("4,5", "4;5")
    )
    assert e.line_no == 3 and "bad cpu list" in e.reason


# --- random mutations (hypothesis, derandomized) --------------------------------------------------

mutation = st.one_of(
    st.tuples(st.just("delete"), st.integers(0, 10_000)),
    st.tuples(st.just("duplicate"), st.integers(0, 10_000)),
    st.tuples(st.just("swap"), st.integers(0, 10_000)),
    st.tuples(
        st.just("char"),
        st.integers(0, 100_000),
        st.sampled_from(list('0123456789 -/,:.()[]{}"\\\tabrpx\n')),
    ),
)


def mutate(text: str, ops: list[tuple[object, ...]]) -> str:
    for op in ops:
        lines = text.splitlines(keepends=True)
        if not lines:
            break
        i = int(str(op[1])) % len(lines)
        if op[0] == "delete":
            del lines[i]
        elif op[0] == "duplicate":
            lines.insert(i, lines[i])
        elif op[0] == "swap" and i + 1 < len(lines):
            lines[i], lines[i + 1] = lines[i + 1], lines[i]
        text = "".join(lines)
        if op[0] == "char" and text:
            pos = int(str(op[1])) % len(text)
            text = text[:pos] + str(op[2]) + text[pos + 1 :]
    return text


@settings(deadline=None, max_examples=150, derandomize=True)
@given(name=st.sampled_from(sorted(PARSERS)), ops=st.lists(mutation, min_size=1, max_size=4))
def test_mutated_fixtures_parse_or_fail_cleanly(name: str, ops: list[tuple[object, ...]]) -> None:
    try:
        PARSERS[name](mutate(fixture(name), ops))
    except xp.XlParseError as e:
        assert e.command.startswith("xl ")
        if e.line_no is not None:
            assert e.line_no >= 1
