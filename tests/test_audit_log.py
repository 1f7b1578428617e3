"""The audit log on disk: framing, torn tails, recovery, fsync batching, rotation, retention."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from agent.audit import framing, records, segments
from agent.audit.reader import Bad, Entry, read_entries, scan_log
from agent.audit.verify import verify
from agent.audit.writer import AuditLogError, AuditWriter, WriterPolicy


def ticker(start: float = 1_700_000_000.0, step: float = 1.0) -> Callable[[], float]:
    now = [start]

    def clock() -> float:
        now[0] += step
        return now[0]

    return clock


def decision(i: int) -> records.Body:
    return records.decision(
        "soft-affinity-fixup",
        "h",
        records.Subject(domain=f"dom{i % 3}", domid=i % 3 + 1, vcpu=i % 4),
        "act",
        f"reason {i}",
        [records.Clause("vcpu.off_node_s > 2", {"vcpu.off_node_s": 2.0 + i}, True)],
    )


def write(path: Path, n: int, policy: WriterPolicy | None = None) -> None:
    with AuditWriter(path, policy, wall_clock=ticker()) as w:
        for i in range(n):
            w.append(decision(i), mono=float(i))


def test_round_trip_keeps_envelope_and_body(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with AuditWriter(log, wall_clock=ticker(), mono_clock=ticker(0.0, 0.5)) as w:
        s1 = w.append(records.agent_start("0.1", 7, False, "sim"))
        s2 = w.append(decision(1), mono=9.0)
        assert w.head == s2
    got = list(read_entries(log))
    assert [(e.seq, e.kind, e.mono) for e in got] == [(1, "agent_start", 0.5), (2, "decision", 9.0)]
    assert got[0].hash == s1.hash and got[1].prev == s1.hash and got[1].hash == s2.hash
    assert got[1].body == decision(1)
    assert got[0].wall == 1_700_000_001.0
    assert verify(log).ok


def test_reopen_continues_the_chain(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, 3)
    write(log, 2)
    assert [e.seq for e in read_entries(log)] == [1, 2, 3, 4, 5]
    report = verify(log)
    assert report.ok and report.records == 5


def test_body_may_not_set_envelope_fields(tmp_path: Path) -> None:
    with AuditWriter(tmp_path / "a.log") as w:
        with pytest.raises(records.RecordError, match="seq"):
            w.append({"kind": "event", "seq": 9})
        with pytest.raises(records.RecordError, match="kind"):
            w.append({"type": "x"})


def frame_ends(path: Path) -> list[int]:
    with open(path, "rb") as f:
        return [
            item.end
            for item in framing.scan(f, framing.FILE_MAGIC_SIZE)
            if isinstance(item, framing.Frame)
        ]


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """For tests about the bytes, not durability: fsync costs ms each on this disk."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


@pytest.mark.usefixtures("no_fsync")
def test_truncation_at_every_offset(tmp_path: Path) -> None:
    """Cut the file at every byte: the reader skips only the torn tail; a writer continues."""
    master = tmp_path / "master" / "audit.log"
    write(master, 4)
    data = master.read_bytes()
    ends = frame_ends(master)
    assert len(ends) == 4 and ends[-1] == len(data)
    work = tmp_path / "work"
    for cut in range(len(data) + 1):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        log = work / "audit.log"
        log.write_bytes(data[:cut])
        complete = sum(1 for e in ends if e <= cut)
        items = list(scan_log(log))
        entries = [i for i in items if isinstance(i, Entry)]
        assert [e.seq for e in entries] == list(range(1, complete + 1)), cut
        bad = [i for i in items if isinstance(i, Bad)]
        torn = cut not in (0, framing.FILE_MAGIC_SIZE, *ends)
        assert len(bad) == int(torn), cut
        assert all(b.torn_tail for b in bad)

        with AuditWriter(log, wall_clock=ticker(2e9)) as w:
            w.append(records.agent_start("0.1", 1, False, "sim"))
        after = list(read_entries(log))
        kinds = [e.kind for e in after[complete:]]
        assert kinds == (["recovery", "agent_start"] if torn else ["agent_start"]), cut
        if torn and cut >= framing.FILE_MAGIC_SIZE:
            rec = after[complete]
            assert rec.get("offset") == (ends[complete - 1] if complete else 8)
            assert rec.get("torn_bytes") == cut - rec.get("offset")
        report = verify(log)
        assert report.ok and report.torn_tail is None, (cut, report.problem)


def test_damage_in_the_middle_is_skipped_and_reading_resumes(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, 5)
    ends = frame_ends(log)
    data = bytearray(log.read_bytes())
    data[ends[1] + 20] ^= 0xFF  # inside record 3's frame
    log.write_bytes(bytes(data))
    items = list(scan_log(log))
    assert [i.seq for i in items if isinstance(i, Entry)] == [1, 2, 4, 5]
    (bad,) = [i for i in items if isinstance(i, Bad)]
    assert (bad.offset, bad.size, bad.torn_tail) == (ends[1], ends[2] - ends[1], False)
    assert "checksum" in bad.why


def test_garbage_never_crashes_the_reader(tmp_path: Path) -> None:
    import random

    rng = random.Random(7)
    log = tmp_path / "audit.log"
    write(log, 6)
    clean = log.read_bytes()
    for _ in range(200):
        data = bytearray(clean)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        log.write_bytes(bytes(data))
        seqs = [i.seq for i in scan_log(log) if isinstance(i, Entry)]
        assert len(seqs) <= 6


def test_foreign_file_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    log.write_bytes(b"hello, this is not a log\n")
    with pytest.raises(AuditLogError, match="not an xnuma audit log"):
        AuditWriter(log)
    assert log.read_bytes() == b"hello, this is not a log\n"


def test_second_writer_is_refused(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    with AuditWriter(log), pytest.raises(AuditLogError, match="another process"):
        AuditWriter(log)
    AuditWriter(log).close()  # free again


@pytest.fixture
def fsyncs(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    calls: list[int] = []
    real = os.fdatasync

    def counting(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", counting)
    yield calls


def test_fsync_is_batched_by_count_and_forced_on_demand(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = [0.0]
    policy = WriterPolicy(fsync_every=10, fsync_interval=5.0)
    with AuditWriter(tmp_path / "a.log", policy, sync_clock=lambda: clock[0]) as w:
        fsyncs.clear()
        for i in range(25):
            w.append(decision(i))
        assert len(fsyncs) == 2  # after records 10 and 20
        w.append(decision(99), sync=True)
        assert len(fsyncs) == 3 and not w.dirty
        w.flush()  # nothing pending: no fsync
        assert len(fsyncs) == 3
        w.append(decision(100))
        w.flush()
        assert len(fsyncs) == 4
        w.append(decision(101))
    assert len(fsyncs) == 5  # close syncs what is pending


def test_fsync_is_batched_by_time(tmp_path: Path, fsyncs: list[int]) -> None:
    clock = [100.0]
    policy = WriterPolicy(fsync_every=1000, fsync_interval=2.0)
    with AuditWriter(tmp_path / "a.log", policy, sync_clock=lambda: clock[0]) as w:
        fsyncs.clear()
        w.append(decision(0))
        clock[0] += 1.0
        w.append(decision(1))
        assert fsyncs == [] and not w.flush_due()
        clock[0] += 1.0
        assert w.flush_due() and len(fsyncs) == 1
        w.append(decision(2))
        clock[0] += 2.5
        w.append(decision(3))  # the oldest unsynced one is 2.5 s old: sync now
        assert len(fsyncs) == 2


async def test_flush_periodically_bounds_unsynced_time(
    tmp_path: Path, fsyncs: list[int], autojump_clock: object
) -> None:
    import trio

    from agent.audit.writer import flush_periodically

    with AuditWriter(tmp_path / "a.log", WriterPolicy(fsync_every=1000, fsync_interval=1.0)) as w:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(flush_periodically, w)
            fsyncs.clear()
            w.append(decision(0))
            await trio.sleep(0.5)
            assert w.dirty
            await trio.sleep(0.6)
            assert not w.dirty and len(fsyncs) == 1
            await trio.sleep(5)
            assert len(fsyncs) == 1  # nothing pending: no more syncs
            nursery.cancel_scope.cancel()


def test_rotation_by_size_keeps_the_chain_and_honours_retention(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    policy = WriterPolicy(rotate_bytes=2000, rotate_age=None, keep_files=3, keep_bytes=None)
    write(log, 200, policy)
    rotated = segments.rotated(log)
    assert len(rotated) == 3  # retention bound
    assert all(p.stat().st_size >= 2000 for _, p in rotated)
    assert all(p.stat().st_size < 2000 + 400 for _, p in rotated)
    names = [p.name for p in segments.all_files(log)]
    assert names == [*sorted(names[:-1]), "audit.log"]
    entries = list(read_entries(log))
    seqs = [e.seq for e in entries]
    assert seqs == list(range(seqs[0], seqs[-1] + 1))  # contiguous across files
    for first_seq, path in rotated:  # each name is the seq of its first record
        assert next(e for e in entries if e.file == path).seq == first_seq
    retention = [e for e in entries if e.kind == "retention"]
    assert retention and retention[-1].get("first_kept_seq") == seqs[0]
    decisions = [e for e in entries if e.kind == "decision"]
    assert decisions[-1].get("reason") == "reason 199"
    report = verify(log)
    assert report.ok, report.problem
    assert report.first_seq == seqs[0] > 1 and report.files == 4


def test_retention_by_total_bytes(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    policy = WriterPolicy(rotate_bytes=1500, rotate_age=None, keep_files=100, keep_bytes=5000)
    write(log, 150, policy)
    total = sum(p.stat().st_size for p in segments.all_files(log))
    # The bound holds after each rotation; the active file may grow past it until the next.
    assert total <= 5000 + 1500 + 400
    assert len(segments.rotated(log)) <= 3
    assert verify(log).ok


def test_rotation_by_age(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    policy = WriterPolicy(rotate_age=10.0, keep_files=100)
    with AuditWriter(log, policy, wall_clock=ticker(step=1.0)) as w:
        for i in range(35):
            w.append(decision(i))
    rotated = segments.rotated(log)
    assert [s for s, _ in rotated] == [1, 11, 21]
    assert verify(log).ok


def test_crash_between_rotate_rename_and_new_file(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, 5)
    os.rename(log, segments.rotated_name(log, 1))  # the new active file was never created
    write(log, 2)
    assert [e.seq for e in read_entries(log)] == list(range(1, 8))
    assert verify(log).ok


def test_bad_policy_is_refused() -> None:
    with pytest.raises(ValueError, match="fsync_every"):
        WriterPolicy(fsync_every=0)
    with pytest.raises(ValueError, match="fsync_interval"):
        WriterPolicy(fsync_interval=0)


@settings(deadline=None, max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(
    st.lists(
        st.one_of(
            st.tuples(st.just("frame"), st.binary(max_size=300)),
            st.tuples(st.just("junk"), st.binary(min_size=1, max_size=40)),
        ),
        max_size=12,
    )
)
def test_scan_tiles_any_bytes_and_finds_every_intact_frame(
    parts: list[tuple[str, bytes]],
) -> None:
    import io

    data = bytearray(segments.FILE_MAGIC)
    inserted: list[tuple[int, bytes]] = []
    for what, blob in parts:
        if what == "frame":
            inserted.append((len(data), blob))
            data += framing.encode_frame(blob)
        else:
            data += blob
    items = list(framing.scan(io.BytesIO(bytes(data)), framing.FILE_MAGIC_SIZE))
    # Frames and damage cover the file exactly, in order, with no gap or overlap.
    pos = framing.FILE_MAGIC_SIZE
    for item in items:
        assert item.offset == pos
        pos = item.end
    assert pos == len(data)
    found = {(i.offset, i.payload) for i in items if isinstance(i, framing.Frame)}
    assert set(inserted) <= found


def test_last_frame_looks_back_past_a_long_tail(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, 3)
    ends = frame_ends(log)
    with open(log, "ab") as f:
        f.write(bytes(200_000))  # zeroes, as an unsynced power cut can leave
    with open(log, "rb") as f:
        frame = framing.last_frame(f, framing.FILE_MAGIC_SIZE)
        assert frame is not None and frame.end == ends[-1]
        assert framing.last_frame(f, framing.FILE_MAGIC_SIZE, limit=1 << 16) is None
    with AuditWriter(log) as w:
        assert w.head is not None and w.head.seq == 4  # the recovery record
        assert w.recovered is not None and w.recovered.size == 200_000
    assert log.stat().st_size < 2000 and verify(log).ok


def test_reopen_when_the_last_frame_does_not_decode(tmp_path: Path) -> None:
    log = tmp_path / "audit.log"
    write(log, 3)
    with open(log, "ab") as f:
        f.write(framing.encode_frame(b"\xc1 not msgpack"))
    write(log, 1)  # falls back to a full scan; keeps the chain from record 3
    seqs = [e.seq for e in read_entries(log)]
    assert seqs == [1, 2, 3, 4]
    problem = verify(log).problem
    assert problem is not None and "undecodable" in problem.what  # the bad frame is named
