"""Check the audit log's chain across all its files and name the first bad record."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Final

from agent.audit import chain, records, segments
from agent.audit.reader import Bad, Entry, scan_file

# How many missing sequence numbers we look for further on (moved vs deleted).
_TRACK_MISSING: Final = 4096


@dataclass(frozen=True, slots=True)
class Problem:
    file: Path
    offset: int
    seq: int | None  # the bad record's sequence number, when it can be told
    what: str

    def __str__(self) -> str:
        seq = f" seq {self.seq}" if self.seq is not None else ""
        return f"{self.file} offset {self.offset}{seq}: {self.what}"


@dataclass(frozen=True, slots=True)
class Report:
    records: int
    files: int
    first_seq: int | None
    last_seq: int | None
    head: bytes | None  # hash of the last record
    problem: Problem | None
    torn_tail: Bad | None  # a torn last record in the newest file: a crash, not tampering

    @property
    def ok(self) -> bool:
        return self.problem is None


@dataclass(slots=True)
class _Jump:
    """A gap in sequence numbers, kept to tell a deleted record from a moved one."""

    at: Entry  # the record found where the gap is
    after: Entry | None
    missing: range
    found: dict[int, Entry]


def verify(active: Path, key: bytes | None = None) -> Report:
    files = segments.all_files(active)
    count = 0
    first: Entry | None = None
    last: Entry | None = None
    problem: Problem | None = None
    jump: _Jump | None = None
    torn: Bad | None = None
    kept_from: int | None = None  # first_kept_seq of the latest retention record
    hint = "" if key else " (if the log was written with a key, give it)"

    for index, path in enumerate(files):
        newest = index == len(files) - 1
        for item in scan_file(path, key):
            if problem is not None:
                if jump is not None and isinstance(item, Entry) and item.seq in jump.missing:
                    jump.found.setdefault(item.seq, item)
                continue
            if isinstance(item, Bad):
                if item.torn_tail and newest:
                    torn = item
                    continue
                expected = last.seq + 1 if last else None
                problem = Problem(path, item.offset, expected, f"{item.why} ({item.size} bytes)")
                continue
            count += 1
            if item.kind == records.RETENTION and isinstance(item.get("first_kept_seq"), int):
                kept_from = item.get("first_kept_seq")
            if last is None:
                first = item
                if item.seq == 1 and item.prev != chain.GENESIS:
                    problem = Problem(
                        path, item.offset, 1, "first record does not start the chain" + hint
                    )
            elif item.seq != last.seq + 1:
                problem, jump = _seq_problem(item, last)
            elif item.prev != last.hash:
                problem = Problem(
                    last.file,
                    last.offset,
                    last.seq,
                    f"record changed after it was written: its hash does not match the one "
                    f"stored by seq {item.seq} at {item.file} offset {item.offset}"
                    + (hint if last is first else ""),
                )
            last = item

    if jump is not None:
        problem = _explain_jump(jump)
    if problem is None and first is not None and first.seq != 1:
        if kept_from is None:
            problem = Problem(
                first.file,
                first.offset,
                first.seq,
                f"records before seq {first.seq} are missing and no retention record removed them",
            )
        elif first.seq > kept_from:
            problem = Problem(
                first.file,
                first.offset,
                first.seq,
                f"retention kept records from seq {kept_from} but the log starts at seq "
                f"{first.seq}: seq {kept_from}..{first.seq - 1} were removed outside retention",
            )
    return Report(
        records=count,
        files=len(files),
        first_seq=first.seq if first else None,
        last_seq=last.seq if last else None,
        head=last.hash if last else None,
        problem=problem,
        torn_tail=torn,
    )


def _seq_problem(item: Entry, last: Entry) -> tuple[Problem, _Jump | None]:
    if item.seq <= last.seq:
        return (
            Problem(
                item.file,
                item.offset,
                item.seq,
                f"out of order: seq {item.seq} comes after seq {last.seq} (moved or duplicated)",
            ),
            None,
        )
    missing = range(last.seq + 1, item.seq)
    placeholder = Problem(item.file, item.offset, last.seq + 1, "missing")
    if len(missing) > _TRACK_MISSING:
        missing = range(last.seq + 1, last.seq + 1 + _TRACK_MISSING)
    return placeholder, _Jump(item, last, missing, {})


def _span(r: range | list[int]) -> str:
    return f"seq {r[0]}" if len(r) == 1 else f"seq {r[0]}..{r[-1]}"


def _explain_jump(jump: _Jump) -> Problem:
    at, missing, found = jump.at, jump.missing, jump.found
    after = f"seq {jump.after.seq}" if jump.after else "the start"
    if len(missing) == 1 and found:
        moved = found[missing[0]]
        return Problem(
            moved.file,
            moved.offset,
            moved.seq,
            f"out of order: belongs between {after} and seq {at.seq} "
            f"(at {at.file} offset {at.offset}) but was found here (moved)",
        )
    if found and len(found) == len(missing):
        return Problem(
            at.file,
            at.offset,
            at.seq,
            f"out of order: comes right after {after}, before {_span(missing)} (moved)",
        )
    gone = [s for s in missing if s not in found]
    note = " (others moved later)" if found else ""
    return Problem(
        at.file,
        at.offset,
        gone[0],
        f"{'record' if len(gone) == 1 else 'records'} {_span(gone)} missing before seq "
        f"{at.seq} here (deleted){note}",
    )
