"""Gzipped rotated files read, verify and continue exactly like plain ones."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import trio

from agent.audit import records, segments
from agent.audit.compress import compress_periodically, compress_rotated
from agent.audit.reader import Bad, read_entries, scan_log
from agent.audit.verify import verify
from agent.audit.writer import AuditWriter, WriterPolicy

POLICY = WriterPolicy(rotate_bytes=4000, rotate_age=None, keep_files=100, keep_bytes=None)


def fill(log: Path, n: int, start: int = 0, policy: WriterPolicy = POLICY) -> None:
    with AuditWriter(log, policy) as w:
        for i in range(start, start + n):
            w.append(
                records.decision(
                    "fixup", "h", {"domain": f"d{i % 5}", "vcpu": i % 4}, "act", "off node", [], n=i
                )
            )


def test_compressed_log_reads_and_verifies_the_same(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    fill(log, 200)
    before = [(e.seq, e.hash, e.body) for e in read_entries(log)]
    plain_bytes = sum(p.stat().st_size for _, p in segments.rotated(log))
    done = compress_rotated(log)
    assert done and all(p.suffix == ".gz" for _, p in segments.rotated(log))
    assert not list(tmp_path.glob("*.tmp"))
    after = [(e.seq, e.hash, e.body) for e in read_entries(log)]
    assert after == before
    assert verify(log).ok
    assert sum(p.stat().st_size for _, p in segments.rotated(log)) < plain_bytes / 2
    assert compress_rotated(log) == []  # nothing left to do


def test_writer_continues_and_retention_counts_compressed_files(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    fill(log, 100)
    compress_rotated(log)
    os.unlink(log)  # as after a crash between rotation's rename and the new file
    fill(log, 100, start=100, policy=WriterPolicy(rotate_bytes=4000, rotate_age=None, keep_files=3))
    assert [e.seq for e in read_entries(log)] == sorted({e.seq for e in read_entries(log)})
    assert len(segments.rotated(log)) == 3
    report = verify(log)
    assert report.ok, report.problem


def test_both_forms_present_reads_the_plain_one_once(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    fill(log, 100)
    seq, plain = segments.rotated(log)[0]
    keep = tmp_path / "keep"
    shutil.copy(plain, keep)
    compress_rotated(log)
    shutil.copy(keep, plain)  # compression cut short before the unlink
    keep.unlink()
    assert segments.rotated(log)[0] == (seq, plain)
    seqs = [e.seq for e in read_entries(log)]
    assert seqs == list(range(1, len(seqs) + 1))
    assert verify(log).ok


def test_damaged_gzip_is_reported_not_raised(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    fill(log, 100)
    compress_rotated(log)
    _, gz = segments.rotated(log)[1]
    data = gz.read_bytes()
    gz.write_bytes(data[: len(data) // 2])
    items = list(scan_log(log))
    bad = [i for i in items if isinstance(i, Bad)]
    assert bad and bad[0].file == gz
    problem = verify(log).problem
    assert problem is not None and problem.file == gz


async def test_compress_periodically_runs_in_a_thread(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    fill(log, 100)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(compress_periodically, log, 3600.0)
        with trio.fail_after(30):
            while any(p.suffix != ".gz" for _, p in segments.rotated(log)):
                await trio.sleep(0.01)
        nursery.cancel_scope.cancel()
    assert verify(log).ok
