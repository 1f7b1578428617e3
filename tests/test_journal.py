"""The temporary-pin journal survives a kill at any byte and never loses a completed record."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.audit import framing
from agent.hypervisor.model import DomainInfo, DomainState
from agent.journal import MAGIC, DomainKey, JournalError, Pin, PinJournal

A = DomainKey(1, "A", "uuid-a")
B = DomainKey(2, "B")  # no uuid known: keyed by domid + name
C = DomainKey(3, "C", "uuid-c")
ALL = frozenset(range(8))
NODE0 = frozenset(range(4))
NODE1 = frozenset(range(4, 8))


def state(pins: list[Pin]) -> set[tuple[str, int, frozenset[int]]]:
    return {(p.domain.name, p.vcpu, p.original_hard) for p in pins}


@pytest.fixture
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """Byte-level tests need not wait for the disk: fsync costs ms each here."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)
    monkeypatch.setattr(os, "fdatasync", lambda fd: None)


def test_pin_restore_and_reopen(tmp_path: Path) -> None:
    path = tmp_path / "pins.journal"
    with PinJournal(path, clock=lambda: 5.0) as j:
        assert j.outstanding() == []
        pa = j.record_pin(A, 0, ALL, NODE0, reason="fixup")
        pb = j.record_pin(B, 3, NODE1 | {0}, NODE1)
        assert j.outstanding() == [pa, pb]
    with PinJournal(path) as j:
        assert j.outstanding() == [pa, pb]
        assert j.outstanding()[0].reason == "fixup" and j.outstanding()[0].pinned_at == 5.0
        assert j.record_restore(A, 0) == pa
        assert j.record_restore(A, 0) is None  # twice is harmless
        assert j.outstanding() == [pb]
    with PinJournal(path) as j:
        assert j.outstanding() == [pb]


def test_a_second_pin_keeps_the_true_original(tmp_path: Path) -> None:
    with PinJournal(tmp_path / "j") as j:
        first = j.record_pin(A, 1, ALL, NODE0)
        again = j.record_pin(A, 1, NODE0, frozenset({0}))  # hard is already narrowed now
        assert again == first and again.original_hard == ALL
        assert len(j.outstanding()) == 1


def test_keys_by_uuid_then_domid_and_name(tmp_path: Path) -> None:
    with PinJournal(tmp_path / "j") as j:
        j.record_pin(A, 0, ALL, NODE0)
        j.record_pin(B, 0, ALL, NODE0)
        # The same uuid after a domid change (say, a reboot) is the same domain.
        assert j.pin_for(DomainKey(9, "A-renamed", "uuid-a"), 0) is not None
        assert j.pin_for(DomainKey(2, "B"), 0) is not None
        assert j.pin_for(DomainKey(2, "other"), 0) is None
    live = [
        DomainInfo(7, "A", "uuid-a", DomainState.RUNNING, 2, 1024),
        DomainInfo(2, "B", "", DomainState.RUNNING, 2, 1024),
    ]
    assert A.find(live) == live[0]
    assert B.find(live) == live[1]
    assert C.find(live) is None
    assert DomainKey.of(live[1]) == B


def test_compaction_when_all_restored(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with PinJournal(path) as j:
        for vcpu in range(5):
            j.record_pin(A, vcpu, ALL, NODE0)
        assert path.stat().st_size > 5 * 60
        for vcpu in range(5):
            j.record_restore(A, vcpu)
        assert path.read_bytes() == MAGIC
        j.record_pin(C, 0, ALL, NODE1)  # appending after a compaction works
    with PinJournal(path) as j:
        assert state(j.outstanding()) == {("C", 0, ALL)}
    assert not (tmp_path / "j.tmp").exists()


def test_compaction_by_size_keeps_outstanding_pins(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with PinJournal(path, compact_bytes=2000) as j:
        j.record_pin(C, 7, ALL, NODE1)  # a sustained pin that stays
        for i in range(100):
            j.record_pin(A, i % 3, ALL, NODE0)
            j.record_restore(A, i % 3)
            assert path.stat().st_size < 2000 + 200
        assert state(j.outstanding()) == {("C", 7, ALL)}
    with PinJournal(path) as j:
        assert state(j.outstanding()) == {("C", 7, ALL)}
        assert j.record_pin(A, 0, ALL, NODE0).id > j.outstanding()[0].id


def replay(ops: list[tuple[str, DomainKey, int]]) -> set[tuple[str, int, frozenset[int]]]:
    pins: dict[tuple[str, int], frozenset[int]] = {}
    for op, dom, vcpu in ops:
        if op == "pin":
            pins.setdefault((dom.name, vcpu), ALL if dom is not B else NODE1)
        else:
            pins.pop((dom.name, vcpu), None)
    return {(name, vcpu, orig) for (name, vcpu), orig in pins.items()}


OPS = [
    ("pin", A, 0),
    ("pin", B, 1),
    ("restore", A, 0),
    ("pin", C, 2),
    ("restore", B, 1),
    ("pin", A, 0),
]


def apply(j: PinJournal, op: str, dom: DomainKey, vcpu: int) -> None:
    if op == "pin":
        j.record_pin(dom, vcpu, ALL if dom is not B else NODE1, NODE0)
    else:
        j.record_restore(dom, vcpu)


@pytest.mark.usefixtures("no_fsync")
def test_survives_truncation_at_every_offset(tmp_path: Path) -> None:
    master = tmp_path / "master" / "pins.journal"
    with PinJournal(master) as j:
        for op in OPS:
            apply(j, *op)
    data = master.read_bytes()
    with open(master, "rb") as f:
        ends = [i.end for i in framing.scan(f, len(MAGIC)) if isinstance(i, framing.Frame)]
    assert len(ends) == len(OPS) and ends[-1] == len(data)

    work = tmp_path / "work"
    for cut in range(len(data) + 1):
        shutil.rmtree(work, ignore_errors=True)
        work.mkdir()
        path = work / "pins.journal"
        path.write_bytes(data[:cut])
        done = sum(1 for e in ends if e <= cut)
        expected = replay(OPS[:done])
        with PinJournal(path) as j:
            assert state(j.outstanding()) == expected, cut
            # The agent goes on after the crash: a new pin lands after the cut.
            j.record_pin(DomainKey(4, "D"), 0, ALL, NODE0)
        with PinJournal(path) as j:
            assert state(j.outstanding()) == expected | {("D", 0, ALL)}, cut
            assert not j.damage  # the torn tail was cut on the first reopen


@pytest.mark.usefixtures("no_fsync")
def test_damage_in_the_middle_loses_only_that_record(tmp_path: Path) -> None:
    path = tmp_path / "j"
    with PinJournal(path) as j:
        for vcpu in range(4):
            j.record_pin(A, vcpu, ALL, NODE0)
    with open(path, "rb") as f:
        frames = [i for i in framing.scan(f, len(MAGIC)) if isinstance(i, framing.Frame)]
    data = bytearray(path.read_bytes())
    data[frames[1].offset + 20] ^= 0x55
    path.write_bytes(bytes(data))
    with PinJournal(path) as j:
        assert {p.vcpu for p in j.outstanding()} == {0, 2, 3}
        assert len(j.damage) == 1 and not j.damage[0].at_eof


def test_record_pin_is_durable_before_it_returns(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "j"
    j = PinJournal(path)
    synced: list[int] = []
    real = os.fdatasync

    def spy(fd: int) -> None:
        # At the sync the record must already be in the file.
        synced.append(path.stat().st_size)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", spy)
    size_before = path.stat().st_size
    j.record_pin(A, 0, ALL, NODE0)
    assert synced == [path.stat().st_size] and synced[0] > size_before
    j.close()


def test_refuses_a_foreign_file_and_a_second_agent(tmp_path: Path) -> None:
    path = tmp_path / "j"
    path.write_bytes(b"#!/bin/sh\necho hi\n")
    with pytest.raises(JournalError, match="not an xnuma pin journal"):
        PinJournal(path)
    assert path.read_bytes() == b"#!/bin/sh\necho hi\n"
    other = tmp_path / "k"
    with PinJournal(other), pytest.raises(JournalError, match="another xnuma agent"):
        PinJournal(other)


def test_bad_pins_are_refused(tmp_path: Path) -> None:
    with PinJournal(tmp_path / "j") as j:
        with pytest.raises(JournalError, match="original hard affinity"):
            j.record_pin(A, 0, [], NODE0)
        with pytest.raises(JournalError, match="vcpu -1"):
            j.record_pin(A, -1, ALL, NODE0)
        assert j.outstanding() == []


CHILD = """
import sys
from agent.journal import DomainKey, PinJournal
j = PinJournal(sys.argv[1])
i = 0
while True:
    dom = DomainKey(i % 5, f"d{i % 5}")
    j.record_pin(dom, i % 3, range(8), range(4))
    print(f"pin {i % 5} {i % 3}", flush=True)
    if i % 2:
        j.record_restore(dom, i % 3)
        print(f"restore {i % 5} {i % 3}", flush=True)
    i += 1
"""


@pytest.fixture
def child_env() -> Iterator[dict[str, str]]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(Path(__file__).resolve().parent.parent)
    yield env


def child_ops(n: int) -> list[tuple[str, int, int]]:
    """The child's journal operations, in order (as it prints them)."""
    ops: list[tuple[str, int, int]] = []
    i = 0
    while len(ops) < n:
        ops.append(("pin", i % 5, i % 3))
        if i % 2:
            ops.append(("restore", i % 5, i % 3))
        i += 1
    return ops[:n]


def keys_after(ops: list[tuple[str, int, int]]) -> set[tuple[int, int]]:
    keys: set[tuple[int, int]] = set()
    for op, dom, vcpu in ops:
        (keys.add if op == "pin" else keys.discard)((dom, vcpu))
    return keys


@pytest.mark.parametrize("lines_before_kill", [1, 7, 20])
def test_kill_9_mid_flight(
    tmp_path: Path, child_env: dict[str, str], lines_before_kill: int
) -> None:
    """A real SIGKILL: the journal holds every operation the child finished, and at most
    the one it was doing when killed."""
    path = tmp_path / "pins.journal"
    proc = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True, env=child_env
    )
    assert proc.stdout is not None
    for _ in range(lines_before_kill):
        proc.stdout.readline()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    printed = lines_before_kill + len(proc.stdout.read().splitlines())
    ops = child_ops(printed + 1)
    with PinJournal(path) as j:
        got = {(p.domain.domid, p.vcpu) for p in j.outstanding()}
    assert got in (keys_after(ops[:printed]), keys_after(ops))
