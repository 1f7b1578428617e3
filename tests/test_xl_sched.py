"""Scheduler weight and cap from real Xen 4.17 output (tests/fixtures/xl/2node-sched:
A weight 512 and B cap 50 in the credit1 Pool-0, C weight 128 cap 25 in a credit2 pool),
and malformed copies of it: a clear XlParseError naming the command and the line."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.hypervisor import xl_parse as xp

SCHED = Path(__file__).parent / "fixtures" / "xl" / "2node-sched"
FIXTURES = Path(__file__).parent / "fixtures" / "xl"


def fixture(name: str) -> str:
    return (SCHED / name).read_text()


def params(parsed: dict[int, xp.SchedParams]) -> dict[int, tuple[str, str | None, int, int]]:
    return {k: (p.name, p.pool, p.weight, p.cap) for k, p in parsed.items()}


def test_sched_credit_every_pool() -> None:
    assert params(xp.parse_sched_credit(fixture("sched-credit.txt"))) == {
        0: ("Domain-0", "Pool-0", 256, 0),
        1: ("A", "Pool-0", 512, 0),
        2: ("B", "Pool-0", 256, 50),
    }
    assert xp.parse_sched_credit(fixture("sched-credit-pool0.txt")) == xp.parse_sched_credit(
        fixture("sched-credit.txt")
    )


def test_sched_credit2_pool_line_differs() -> None:
    # credit2's pool line has only ratelimit=; credit1's tslice, ratelimit, migration-delay.
    assert fixture("sched-credit2.txt").splitlines()[0] == "Cpupool c2: ratelimit=1000us"
    got = xp.parse_sched_credit(fixture("sched-credit2.txt"), "xl sched-credit2")
    assert params(got) == {3: ("C", "c2", 128, 25)}


def test_one_domain_has_no_pool_line() -> None:
    assert params(xp.parse_sched_credit(fixture("sched-credit-A.txt"))) == {
        1: ("A", None, 512, 0)
    }
    assert params(xp.parse_sched_credit(fixture("sched-credit2-C.txt"))) == {
        3: ("C", None, 128, 25)
    }


def test_no_pool_of_that_scheduler_is_empty_output() -> None:
    assert fixture("sched-credit2-none.txt") == ""
    assert xp.parse_sched_credit(fixture("sched-credit2-none.txt")) == {}
    assert params(xp.parse_sched_credit(fixture("sched-credit-dom0only.txt"))) == {
        0: ("Domain-0", "Pool-0", 256, 0)
    }


def test_failed_runs_print_only_the_header() -> None:
    # xl prints the header before it fails (the backend sees the exit status first).
    for name in ("err-sched-credit-bad-domain.txt", "err-sched-credit-wrong-pool.txt"):
        assert xp.parse_sched_credit(fixture(name)) == {}
        assert (SCHED / f"{name}.rc").read_text().strip() == "1"


def two_pools() -> str:
    """Both pools in one listing, as `xl sched-credit` prints pools of one scheduler."""
    credit = fixture("sched-credit.txt")
    other = fixture("sched-credit.txt").replace("Pool-0", "guests")
    other = other.replace("Domain-0                             0", "D" + " " * 36 + "7")
    other = other.replace("A                                    1", "E" + " " * 36 + "8")
    other = other.replace("B                                    2", "F" + " " * 36 + "9")
    return credit + other


def test_several_pools_keep_their_names() -> None:
    got = params(xp.parse_sched_credit(two_pools()))
    assert got[1] == ("A", "Pool-0", 512, 0)
    assert got[8] == ("E", "guests", 512, 0)
    assert len(got) == 6


# --- malformed -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["sched-credit.txt", "sched-credit2.txt", "sched-credit-A.txt"])
def test_every_truncation_parses_or_fails_cleanly(name: str) -> None:
    full = fixture(name)
    rows = params(xp.parse_sched_credit(full))
    for cut in range(len(full)):
        try:
            got = params(xp.parse_sched_credit(full[:cut]))
        except xp.XlParseError as e:
            assert str(e).startswith("cannot parse `xl sched-credit` output"), e
            continue
        # What parses is a prefix of the rows, each intact (a cut row never parses as
        # another weight: three numbers are needed).
        assert all(rows[k] == v for k, v in got.items()), (cut, got)


def lines(text: str) -> list[str]:
    return text.splitlines(keepends=True)


@pytest.mark.parametrize(
    ("edit", "line_no", "reason"),
    [
        (lambda t: t.replace("  512", "    0"), 4, "weight 0 is not in 1..65535"),
        (lambda t: t.replace("  512", "70000"), 4, "weight 70000 is not in 1..65535"),
        (lambda t: t.replace("   50", " 99999"), 5, "cap 99999 is not in 0..65535"),
        (lambda t: t.replace("   50", "  -50"), 5, "not a `Name ID Weight Cap` row"),
        (lambda t: t.replace("  512    0", "  512"), 4, "not a `Name ID Weight Cap` row"),
        (lambda t: "".join(lines(t)[0:1] + lines(t)[2:]), 2, "expected a `Cpupool NAME:` line"),
        (lambda t: t + lines(t)[3], 6, "domain 1 listed twice"),
        (lambda t: t + lines(t)[1], 6, "a second header without its `Cpupool` line"),
        (lambda t: t + "\n", 6, "blank line"),
        (lambda t: t.replace("tslice=30ms ", "tslice 30ms "), 1, "expected a `Cpupool NAME:`"),
        (lambda t: lines(t)[0] + lines(t)[0], 2, "pool line without a header"),
        (lambda t: t.rstrip("\n"), 5, "output cut short"),
    ],
)
def test_altered_output_names_command_and_line(
    edit: Callable[[str], str], line_no: int, reason: str
) -> None:
    text = edit(fixture("sched-credit.txt"))
    with pytest.raises(xp.XlParseError) as info:
        xp.parse_sched_credit(text)
    e = info.value
    assert e.command == "xl sched-credit"
    assert e.line_no == line_no, (e, text)
    assert reason in e.reason
    assert e.line == text.splitlines()[line_no - 1]


def test_pool_line_at_the_end_is_an_error() -> None:
    # (a cut right after the newline of a pool line; a cut inside the last row is
    # caught by the missing newline)
    with pytest.raises(xp.XlParseError, match="ends after a `Cpupool` line"):
        xp.parse_sched_credit(fixture("sched-credit2.txt").splitlines()[0] + "\n")


# --- xl list -l: sched_params are the live values -------------------------------------------------


def test_list_l_carries_live_weight_and_cap() -> None:
    # A's weight and B's and C's caps were set with `xl sched-credit[2]` after `xl create`:
    # `xl list -l` shows them, so libxl reads them from Xen, not from the config file.
    configs = xp.parse_xl_list_long(fixture("list-l.json"))
    assert {c.name: (c.weight, c.cap) for c in configs.values()} == {
        "Domain-0": (256, 0), "A": (512, 0), "B": (256, 50), "C": (128, 25)
    }


@pytest.mark.parametrize("setup", ["2node-credit", "2node-credit2", "4node-credit"])
def test_default_weights_in_the_other_setups(setup: str) -> None:
    configs = xp.parse_xl_list_long((FIXTURES / setup / "list-l.json").read_text())
    assert {(c.weight, c.cap) for c in configs.values()} == {(256, 0)}


@pytest.mark.parametrize(
    ("value", "reason"),
    [(0, "weight 0 is not in 1..65535"), (65536, "weight 65536 is not in 1..65535"),
     ("512", "weight is not a non-negative integer")],
)
def test_list_l_bad_weight(value: object, reason: str) -> None:
    entries = json.loads(fixture("list-l.json"))
    entries[1]["config"]["b_info"]["sched_params"]["weight"] = value
    with pytest.raises(xp.XlParseError, match=reason) as info:
        xp.parse_xl_list_long(json.dumps(entries))
    assert "entry 1" in str(info.value)


def test_list_l_other_scheduler_has_no_weight() -> None:
    entries = json.loads(fixture("list-l.json"))
    entries[3]["config"]["b_info"]["sched_params"] = {"sched": "rtds", "period": 10000}
    del entries[2]["config"]["b_info"]["sched_params"]
    configs = xp.parse_xl_list_long(json.dumps(entries))
    assert (configs[3].weight, configs[3].cap) == (None, None)
    assert (configs[2].weight, configs[2].cap) == (None, None)


# --- domains_from: list -l first, then sched-credit[2], then the default --------------------------


def test_domains_from_prefers_list_l_then_sched_listing() -> None:
    rows = xp.parse_xl_list(fixture("list-vc.txt"))
    entries = [e for e in json.loads(fixture("list-l.json")) if e["domid"] != 3]
    configs = xp.parse_xl_list_long(json.dumps(entries))
    sched = {
        **xp.parse_sched_credit(fixture("sched-credit.txt")),
        **xp.parse_sched_credit(fixture("sched-credit2.txt")),
    }
    doms = xp.domains_from(rows, configs, sched)
    assert [(d.name, d.weight, d.cap) for d in doms] == [
        ("Domain-0", 256, 0), ("A", 512, 0), ("B", 256, 50), ("C", 128, 25)
    ]
    # Neither: xl's default. A listing row whose name differs (domid reused): ignored.
    renamed = {3: xp.SchedParams(3, "other", "c2", 999, 7)}
    doms = xp.domains_from(rows, configs, renamed)
    assert (doms[3].weight, doms[3].cap) == (256, 0)
