"""``verify`` names the first bad record: edits, deletions, reorderings, pruning by hand."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import msgpack
import pytest

from agent.audit import framing, records, segments
from agent.audit.verify import verify
from agent.audit.writer import AuditWriter, WriterPolicy


def decision(i: int) -> records.Body:
    return records.decision(
        "fixup", "h", {"domain": "A", "vcpu": i % 4}, "act", f"reason {i}", [], n=i
    )


def make_log(
    path: Path, n: int, policy: WriterPolicy | None = None, key: bytes | None = None
) -> None:
    now = [1e9]

    def wall() -> float:
        now[0] += 1
        return now[0]

    with AuditWriter(path, policy, key=key, wall_clock=wall) as w:
        for i in range(n):
            w.append(decision(i))


def frames(path: Path) -> list[framing.Frame]:
    with open(path, "rb") as f:
        return [i for i in framing.scan(f, 8) if isinstance(i, framing.Frame)]


def rewrite(path: Path, change: Callable[[list[bytes]], list[bytes]]) -> list[framing.Frame]:
    """Apply ``change`` to the list of payloads and write the file back with valid frames."""
    old = frames(path)
    payloads = change([f.payload for f in old])
    path.write_bytes(segments.FILE_MAGIC + b"".join(framing.encode_frame(p) for p in payloads))
    return frames(path)


def edit_field(payload: bytes, key: str, value: object) -> bytes:
    record = msgpack.unpackb(payload, raw=False)
    record[key] = value
    return msgpack.packb(record, use_bin_type=True)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "audit.log"
    make_log(path, 10)
    return path


def test_clean_log_verifies(log: Path) -> None:
    report = verify(log)
    assert report.ok and report.records == 10 and (report.first_seq, report.last_seq) == (1, 10)


@pytest.mark.parametrize("index", [0, 4, 8])
def test_edited_record_is_named(log: Path, index: int) -> None:
    def change(payloads: list[bytes]) -> list[bytes]:
        payloads[index] = edit_field(payloads[index], "reason", "nothing to see")
        return payloads

    after = rewrite(log, change)
    problem = verify(log).problem
    assert problem is not None
    assert (problem.file, problem.offset, problem.seq) == (log, after[index].offset, index + 1)
    assert "changed after it was written" in problem.what


def test_edited_bytes_without_fixing_the_checksum(log: Path) -> None:
    f = frames(log)[5]
    data = bytearray(log.read_bytes())
    data[f.end - 3] ^= 0x01
    log.write_bytes(bytes(data))
    problem = verify(log).problem
    assert problem is not None
    assert (problem.offset, problem.seq) == (f.offset, 6)
    assert "checksum" in problem.what


def test_deleted_record_is_named(log: Path) -> None:
    after = rewrite(log, lambda p: p[:3] + p[4:])
    problem = verify(log).problem
    assert problem is not None
    assert problem.seq == 4 and problem.offset == after[3].offset  # where it was
    assert "record seq 4 missing before seq 5" in problem.what and "deleted" in problem.what


def test_deleted_run_of_records(log: Path) -> None:
    rewrite(log, lambda p: p[:2] + p[6:])
    problem = verify(log).problem
    assert problem is not None and problem.seq == 3
    assert "records seq 3..6 missing" in problem.what


def test_swapped_neighbours_are_named(log: Path) -> None:
    after = rewrite(log, lambda p: [*p[:4], p[5], p[4], *p[6:]])
    problem = verify(log).problem
    assert problem is not None
    assert problem.seq == 5 and problem.offset == after[5].offset
    assert "out of order" in problem.what and "moved" in problem.what


def test_record_moved_later_is_named(log: Path) -> None:
    after = rewrite(log, lambda p: [*p[:2], *p[3:8], p[2], *p[8:]])
    problem = verify(log).problem
    assert problem is not None
    assert problem.seq == 3 and problem.offset == after[7].offset
    assert "found here (moved)" in problem.what


def test_record_moved_earlier_is_named(log: Path) -> None:
    after = rewrite(log, lambda p: [*p[:2], p[7], *p[2:7], *p[8:]])
    problem = verify(log).problem
    assert problem is not None
    assert problem.seq == 8 and problem.offset == after[2].offset
    assert "before seq 3..7 (moved)" in problem.what


def test_renumbered_record_is_named(log: Path) -> None:
    after = rewrite(log, lambda p: [*p[:6], edit_field(p[6], "seq", 99), *p[7:]])
    problem = verify(log).problem
    assert problem is not None and problem.offset == after[6].offset


def test_appended_copy_is_out_of_order(log: Path) -> None:
    after = rewrite(log, lambda p: [*p, p[3]])
    problem = verify(log).problem
    assert problem is not None and (problem.seq, problem.offset) == (4, after[10].offset)
    assert "out of order" in problem.what


def test_forged_first_record(log: Path) -> None:
    rewrite(log, lambda p: [edit_field(p[0], "prev", b"\x01" * 16), *p[1:]])
    problem = verify(log).problem
    assert problem is not None and problem.seq == 1
    assert "does not start the chain" in problem.what


def test_torn_tail_is_a_note_not_a_failure(log: Path) -> None:
    with open(log, "ab") as f:
        f.write(framing.encode_frame(b"\x81\xa1a\x01")[:9])
    report = verify(log)
    assert report.ok and report.torn_tail is not None and report.torn_tail.size == 9


def test_rotated_log_with_retention_verifies_and_hand_pruning_is_caught(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    policy = WriterPolicy(rotate_bytes=600, rotate_age=None, keep_files=3, keep_bytes=None)
    make_log(path, 60, policy)
    report = verify(path)
    assert report.ok and report.files == 4 and report.first_seq > 1
    _, oldest = segments.rotated(path)[0]
    os.unlink(oldest)  # removed by hand, not by retention
    problem = verify(path).problem
    assert problem is not None
    assert "removed outside retention" in problem.what
    assert problem.seq == segments.rotated(path)[0][0]


def test_edit_in_a_rotated_file_is_named(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    policy = WriterPolicy(rotate_bytes=600, rotate_age=None, keep_files=10)
    make_log(path, 30, policy)
    _, middle = segments.rotated(path)[1]
    first = frames(middle)
    after = rewrite(middle, lambda p: [edit_field(p[0], "n", -1), *p[1:]])
    seq = msgpack.unpackb(first[0].payload)["seq"]
    problem = verify(path).problem
    assert problem is not None
    assert (problem.file, problem.offset, problem.seq) == (middle, after[0].offset, seq)


def test_deleting_the_last_record_of_a_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    make_log(path, 30, WriterPolicy(rotate_bytes=600, rotate_age=None, keep_files=10))
    _, first_file = segments.rotated(path)[0]
    kept = rewrite(first_file, lambda p: p[:-1])
    last_seq = msgpack.unpackb(kept[-1].payload)["seq"]
    problem = verify(path).problem
    assert problem is not None and problem.seq == last_seq + 1
    assert problem.file == segments.rotated(path)[1][1]


def test_keyed_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    make_log(path, 5, key=b"secret")
    assert verify(path, key=b"secret").ok
    problem = verify(path).problem  # without the key every link fails: say so
    assert problem is not None and "key" in problem.what

    # A forger without the key re-chains the log after an edit: the key catches it.
    def forge(payloads: list[bytes]) -> list[bytes]:
        from agent.audit.chain import record_hash

        out: list[bytes] = []
        prev = bytes(16)
        for p in payloads:
            record = msgpack.unpackb(p, raw=False)
            record["prev"] = prev
            if record["seq"] == 3:
                record["reason"] = "forged"
            packed = msgpack.packb(record, use_bin_type=True)
            out.append(packed)
            prev = record_hash(packed)
        return out

    rewrite(path, forge)
    assert verify(path).ok  # unkeyed: a consistent rewrite cannot be told
    assert not verify(path, key=b"secret").ok
