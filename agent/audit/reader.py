"""Streaming reader for the audit log: records in order, damage reported, never a crash."""

from __future__ import annotations

import gzip
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, cast

import msgpack

from agent.audit import chain, framing, segments
from agent.audit.records import ENVELOPE_KEYS


@dataclass(frozen=True, slots=True)
class Entry:
    """One record as read back, with where it was found."""

    seq: int
    wall: float
    mono: float | None
    kind: str
    prev: bytes
    hash: bytes
    body: dict[str, Any]  # everything but the envelope; includes "kind"
    file: Path
    offset: int
    end: int  # offset just past its frame

    def get(self, key: str, default: Any = None) -> Any:
        return self.body.get(key, default)

    @property
    def subject(self) -> dict[str, Any]:
        value = self.body.get("subject")
        return value if isinstance(value, dict) else {}

    @property
    def peer(self) -> dict[str, Any]:
        value = self.body.get("peer")
        return value if isinstance(value, dict) else {}

    @property
    def time(self) -> float:
        """The agent's clock when recorded, else the wall clock."""
        return self.mono if self.mono is not None else self.wall


FOREIGN_FILE = "not an xnuma audit log (bad file magic)"


@dataclass(frozen=True, slots=True)
class Bad:
    """Bytes the reader skipped: a torn tail, damage, or an undecodable record."""

    file: Path
    offset: int
    size: int
    why: str
    torn_tail: bool  # nothing valid follows in this file


def decode(payload: bytes) -> dict[str, Any] | str:
    """The record map, or a sentence saying what is wrong with it."""
    try:
        record = msgpack.unpackb(payload, raw=False, strict_map_key=False)
    except Exception as exc:  # msgpack raises several unrelated types on garbage
        return f"undecodable record ({type(exc).__name__}: {exc})"
    if not isinstance(record, dict):
        return f"record is a {type(record).__name__}, not a map"
    checks = (
        ("seq", int),
        ("t", (int, float)),
        ("kind", str),
        ("prev", bytes),
    )
    for key, types in checks:
        value = record.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            return f"record field {key!r} missing or of the wrong type ({value!r})"
    if len(record["prev"]) != chain.HASH_SIZE:
        return f"record field 'prev' is {len(record['prev'])} bytes, not {chain.HASH_SIZE}"
    mono = record.get("mono")
    if mono is not None and (not isinstance(mono, int | float) or isinstance(mono, bool)):
        return f"record field 'mono' is not a number ({mono!r})"
    return record


def entry_of(record: dict[str, Any], frame: framing.Frame, key: bytes | None, path: Path) -> Entry:
    body = {k: v for k, v in record.items() if k not in ENVELOPE_KEYS}
    mono = record.get("mono")
    return Entry(
        seq=record["seq"],
        wall=float(record["t"]),
        mono=None if mono is None else float(mono),
        kind=record["kind"],
        prev=record["prev"],
        hash=chain.record_hash(frame.payload, key),
        body=body,
        file=path,
        offset=frame.offset,
        end=frame.end,
    )


def scan_file(path: Path, key: bytes | None = None) -> Iterator[Entry | Bad]:
    """Records and damage in one file (plain or gzipped); bad bytes never raise."""
    offset = 0
    try:
        for item in _scan_file(path, key):
            offset = item.end if isinstance(item, Entry) else item.offset + item.size
            yield item
    except (OSError, EOFError, zlib.error) as exc:  # a damaged .gz stream
        yield Bad(path, offset, 0, f"unreadable past this point ({exc})", True)


def _scan_file(path: Path, key: bytes | None) -> Iterator[Entry | Bad]:
    try:
        f = cast(BinaryIO, gzip.open(path, "rb")) if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    except FileNotFoundError:  # removed by retention while we were listing
        return
    with f:
        magic = f.read(framing.FILE_MAGIC_SIZE)
        if len(magic) < framing.FILE_MAGIC_SIZE and segments.FILE_MAGIC.startswith(magic):
            if magic:
                yield Bad(path, 0, len(magic), "file header cut short (torn write)", True)
            return
        if magic != segments.FILE_MAGIC:
            size = path.stat().st_size
            yield Bad(path, 0, size, FOREIGN_FILE, True)
            return
        for item in framing.scan(f, framing.FILE_MAGIC_SIZE):
            if isinstance(item, framing.Damage):
                yield Bad(path, item.offset, item.size, item.why, item.at_eof)
                continue
            record = decode(item.payload)
            if isinstance(record, str):
                yield Bad(path, item.offset, item.end - item.offset, record, False)
            else:
                yield entry_of(record, item, key, path)


def scan_log(active: Path, key: bytes | None = None) -> Iterator[Entry | Bad]:
    """Every record and every skipped span of the log, oldest file first."""
    for path in segments.all_files(active):
        yield from scan_file(path, key)


def read_entries(active: Path, key: bytes | None = None) -> Iterator[Entry]:
    """The log's readable records in order; damage and a torn tail are skipped."""
    for item in scan_log(active, key):
        if isinstance(item, Entry):
            yield item
