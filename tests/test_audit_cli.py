"""``xnuma audit``: filters, --json, --verify, why, and time parsing."""

from __future__ import annotations

import argparse
import io
import json
import time
from pathlib import Path

import msgpack
import pytest

from agent.audit import framing, query, segments
from agent.audit import records as R
from agent.audit.writer import AuditWriter
from agent.cli import audit_cmd

# Wall-clock base of the records the ``log`` fixture writes. It is taken when
# the fixture runs, not at import: relative filters (-100s) are resolved
# against the real clock, and a slow suite must not move records across them.
NOW = time.time()


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="xnuma")
    audit_cmd.register(p.add_subparsers(dest="command"))
    return p


def run(*argv: str) -> tuple[int, str, str]:
    args = parser().parse_args(["audit", *argv])
    out, err = io.StringIO(), io.StringIO()
    code = args.func(args, out, err)
    return code, out.getvalue(), err.getvalue()


@pytest.fixture
def log(tmp_path: Path) -> Path:
    global NOW
    NOW = time.time()
    path = tmp_path / "audit.log"
    walls = iter([NOW - 3600, NOW - 3500, NOW - 3400, NOW - 120, NOW - 60, NOW - 50, NOW - 40])
    with AuditWriter(path, wall_clock=lambda: next(walls)) as w:
        w.append(R.agent_start("0.1", 99, False, "sim"), mono=0.0)
        w.append(R.event("domain.create", {"domain": "A", "domid": 5}), mono=1.0)
        d = w.append(
            R.decision("fixup", "h", {"domain": "A", "domid": 5, "vcpu": 3}, "act", "off node", []),
            mono=2.0,
        )
        w.append(
            R.action(
                "narrow_hard",
                {"cpus": [0, 1]},
                {"domain": "A", "vcpu": 3},
                "ok",
                decision_seq=d.seq,
            ),
            mono=2.0,
        )
        w.append(
            R.decision(
                "fixup",
                "h",
                {"domain": "B", "vcpu": 1},
                "suppressed",
                "",
                [],
                suppressed_by="cooldown",
            ),
            mono=3.0,
        )
        w.append(
            R.decision(
                "swap",
                "h",
                {"domain": "B", "vcpu": 0},
                "act",
                "",
                [],
                peer={"domain": "A", "vcpu": 2},
            ),
            mono=4.0,
        )
        w.append(R.agent_stop("SIGTERM", 0), mono=5.0)
    return path


def seqs_of_table(text: str) -> list[int]:
    return [int(line.split()[0]) for line in text.splitlines()[1:]]


def test_table_lists_every_record(log: Path) -> None:
    code, out, err = run("--log", str(log))
    assert code == 0 and err == ""
    lines = out.splitlines()
    assert lines[0].split()[:3] == ["SEQ", "TIME", "(UTC)"]
    assert seqs_of_table(out) == [1, 2, 3, 4, 5, 6, 7]
    assert "rule fixup: suppressed (cooldown)" in lines[5]
    assert "narrow_hard ok: hard affinity was narrowed to 0-1 [decision 3]" in lines[4]


@pytest.mark.parametrize(
    ("argv", "seqs"),
    [
        (["--domain", "A"], [2, 3, 4, 6]),  # 6 names A as the peer
        (["--domain", "5"], [2, 3]),  # by domid
        (["--domain", "A", "--vcpu", "3"], [3, 4]),
        (["--rule", "fixup"], [3, 4, 5]),  # decisions by the rule and their actions
        (["--rule", "fixup", "--kind", "action"], [4]),
        (["--outcome", "suppressed"], [5]),
        (["--kind", "agent_start", "--kind", "agent_stop"], [1, 7]),
        (["--since", "-10m"], [4, 5, 6, 7]),
        (["--until", "-30m"], [1, 2, 3]),
        (["--since", "@{NOW-3450}", "--until", "-100s"], [3, 4]),
    ],
)
def test_filters(log: Path, argv: list[str], seqs: list[int]) -> None:
    argv = [f"@{NOW - 3450}" if a == "@{NOW-3450}" else a for a in argv]
    code, out, _ = run("--log", str(log), *argv)
    assert code == 0
    assert seqs_of_table(out) == seqs


def test_json_lines(log: Path) -> None:
    code, out, _ = run("--log", str(log), "--json", "--kind", "decision")
    assert code == 0
    objs = [json.loads(line) for line in out.splitlines()]
    assert [o["seq"] for o in objs] == [3, 5, 6]
    assert objs[0]["subject"] == {"domain": "A", "domid": 5, "vcpu": 3}
    assert objs[0]["mono"] == 2.0 and objs[0]["rule"] == "fixup"
    assert len(objs[0]["hash"]) == 32 and len(objs[0]["prev"]) == 32


def test_verify_ok_then_names_an_edit(log: Path) -> None:
    code, out, _ = run("--log", str(log), "--verify")
    assert code == 0 and out.startswith("OK: 7 records in 1 files, seq 1..7; head ")
    with open(log, "rb") as f:
        frames = [i for i in framing.scan(f, 8) if isinstance(i, framing.Frame)]
    record = msgpack.unpackb(frames[2].payload, raw=False)
    record["outcome"] = "dry-run"
    payloads = [f.payload for f in frames]
    payloads[2] = msgpack.packb(record, use_bin_type=True)
    log.write_bytes(segments.FILE_MAGIC + b"".join(framing.encode_frame(p) for p in payloads))
    with open(log, "rb") as f:
        frames = [i for i in framing.scan(f, 8) if isinstance(i, framing.Frame)]
    code, out, _ = run("--log", str(log), "--verify")
    assert code == 1
    assert out.strip() == (
        f"FAIL: {log} offset {frames[2].offset} seq 3: record changed after it was written: "
        f"its hash does not match the one stored by seq 4 at {log} offset {frames[3].offset}"
    )


def test_torn_tail_is_reported_and_skipped(log: Path) -> None:
    with open(log, "ab") as f:
        f.write(framing.FRAME_MAGIC + b"\x40\x00")
    code, out, err = run("--log", str(log))
    assert code == 0 and seqs_of_table(out) == [1, 2, 3, 4, 5, 6, 7]
    assert "skipped torn record at the end" in err and "(6 bytes" in err
    code, out, _ = run("--log", str(log), "--verify")
    assert code == 0 and out.startswith("note: torn last record")


@pytest.mark.parametrize("order", ["before", "after"])
def test_why(log: Path, order: str) -> None:
    argv = (
        ["--log", str(log), "why", "A", "3"]
        if order == "before"
        else ["why", "A", "3", "--log", str(log)]
    )
    code, out, _ = run(*argv)
    assert code == 0
    assert out == (
        "At 2.0 s rule fixup acted on A vCPU 3: off node; hard affinity was narrowed to 0-1.\n"
    )
    code, out, _ = run("why", "Q", "--log", str(log))
    assert code == 0 and out.startswith("No decision about Q is recorded")


def test_bad_input_exits_2_with_a_clear_message(log: Path, tmp_path: Path) -> None:
    code, _, err = run("--log", str(tmp_path / "nope.log"))
    assert code == 2 and "no audit log at" in err
    code, _, err = run("--log", str(log), "--since", "yesterday-ish")
    assert code == 2 and "bad time 'yesterday-ish'" in err
    key = tmp_path / "key"
    key.write_text("zz")
    code, _, err = run("--log", str(log), "--key-file", str(key), "--verify")
    assert code == 2 and "hex" in err


def test_key_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    with AuditWriter(path, key=bytes.fromhex("00ff" * 16)) as w:
        for i in range(3):
            w.append(R.event("tick", data={"i": i}))
    key = tmp_path / "key"
    key.write_text("00ff" * 16 + "\n")
    assert run("--log", str(path), "--verify", "--key-file", str(key))[0] == 0
    assert run("--log", str(path), "--verify")[0] == 1


def test_parse_time() -> None:
    now = lambda: 1_000_000.0  # noqa: E731
    assert query.parse_time("2024-05-01T12:00:03Z") == 1_714_564_803.0
    assert query.parse_time("2024-05-01T14:00:03+02:00") == 1_714_564_803.0
    assert query.parse_time("2024-05-01 12:00:03") == 1_714_564_803.0  # naive = UTC
    assert query.parse_time("-10m", now) == 1_000_000.0 - 600
    assert query.parse_time("-1.5h", now) == 1_000_000.0 - 5400
    assert query.parse_time("-2d", now) == 1_000_000.0 - 172800
    assert query.parse_time("@123.5") == 123.5
    assert query.parse_time("now", now) == 1_000_000.0
    for bad in ("10m", "-10x", "@x", "", "tomorrow"):
        with pytest.raises(ValueError, match="bad time"):
            query.parse_time(bad)


def test_unknown_kind_in_filter() -> None:
    with pytest.raises(ValueError, match="unknown kind"):
        query.Filter(kinds=frozenset({"decisoin"}))
