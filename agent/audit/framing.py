"""Self-checking frames for append-only msgpack files (audit log, pin journal).

A file is an 8-byte file magic followed by frames::

    frame  = FRAME_MAGIC (4 bytes) | length (u32 LE) | crc32 (u32 LE) | payload (length bytes)
    crc32  = zlib.crc32(length bytes + payload)

The CRC makes a torn or damaged frame recognisable; the frame magic lets a
reader find the next frame after damage in the middle of a file. The scanner
never raises on bad bytes: it yields ``Damage`` spans instead, so reading any
prefix or mangling of a file is safe.
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import BinaryIO

FRAME_MAGIC = b"\xa5XR\x5a"
_HEADER = struct.Struct("<4sII")
HEADER_SIZE = _HEADER.size  # 12
FILE_MAGIC_SIZE = 8
# Records are a few hundred bytes; anything near this is a bug, not a record.
MAX_PAYLOAD = 1 << 20
_CHUNK = 1 << 16


class FramingError(ValueError):
    """A payload that cannot be framed (too large)."""


@dataclass(frozen=True, slots=True)
class Frame:
    offset: int  # where the frame magic starts
    end: int  # offset just past the payload
    payload: bytes


@dataclass(frozen=True, slots=True)
class Damage:
    offset: int  # first byte that is not part of a valid frame
    end: int  # where the next valid frame starts, or the end of the file
    why: str
    at_eof: bool  # nothing valid follows: a torn tail

    @property
    def size(self) -> int:
        return self.end - self.offset


def encode_frame(payload: bytes) -> bytes:
    if len(payload) > MAX_PAYLOAD:
        raise FramingError(f"record of {len(payload)} bytes exceeds the {MAX_PAYLOAD}-byte limit")
    length = struct.pack("<I", len(payload))
    crc = zlib.crc32(payload, zlib.crc32(length))
    return FRAME_MAGIC + length + struct.pack("<I", crc) + payload


def _check_at(buf: bytes | bytearray, pos: int, eof: bool) -> tuple[str, int] | None:
    """Classify the bytes at ``pos``: ("ok", end), ("bad", why-code) or None = need more data."""
    avail = len(buf) - pos
    if avail < HEADER_SIZE:
        return None if not eof else ("short", 0)
    magic, length, crc = _HEADER.unpack_from(buf, pos)
    if magic != FRAME_MAGIC:
        return ("magic", 0)
    if length > MAX_PAYLOAD:
        return ("length", 0)
    if avail < HEADER_SIZE + length:
        return None if not eof else ("short", 0)
    start = pos + HEADER_SIZE
    payload = bytes(buf[start : start + length])
    if zlib.crc32(payload, zlib.crc32(buf[pos + 4 : pos + 8])) != crc:
        return ("crc", 0)
    return ("ok", start + length)


_WHY = {
    "short": "frame cut short (torn write)",
    "magic": "no frame marker",
    "length": "impossible frame length",
    "crc": "frame checksum mismatch",
}


def scan(f: BinaryIO, start: int) -> Iterator[Frame | Damage]:
    """Stream frames from ``f`` beginning at byte ``start``, in bounded memory.

    Damage is reported once per contiguous bad span, with the reason found at
    its first byte; scanning resumes at the next valid frame.
    """
    f.seek(start)
    buf = bytearray()
    base = start  # file offset of buf[0]
    eof = False
    pos = 0
    bad_at: int | None = None
    bad_why = ""

    def fill() -> None:
        nonlocal buf, base, pos, eof
        if pos > 0:
            del buf[:pos]
            base += pos
            pos = 0
        chunk = f.read(_CHUNK)
        if chunk:
            buf += chunk
        else:
            eof = True

    while True:
        if pos >= len(buf) and eof:
            break
        verdict = _check_at(buf, pos, eof)
        if verdict is None:
            fill()
            continue
        kind, end = verdict
        if kind == "ok":
            if bad_at is not None:
                yield Damage(bad_at, base + pos, bad_why, at_eof=False)
                bad_at = None
            yield Frame(base + pos, base + end, bytes(buf[pos + HEADER_SIZE : end]))
            pos = end
            continue
        if bad_at is None:
            bad_at, bad_why = base + pos, _WHY[kind]
        # Resync: jump to the next possible frame marker.
        nxt = buf.find(FRAME_MAGIC, pos + 1)
        if nxt >= 0:
            pos = nxt
        elif eof:
            pos = len(buf)
        else:
            # Keep the last 3 bytes: a marker may straddle the chunk boundary.
            pos = max(pos + 1, len(buf) - (len(FRAME_MAGIC) - 1))
            fill()
    if bad_at is not None:
        yield Damage(bad_at, base + len(buf), bad_why, at_eof=True)


def last_frame(f: BinaryIO, start: int, limit: int = 8 << 20) -> Frame | None:
    """The last valid frame in ``f`` (after ``start``), found from the end without a full scan.

    Looks back through at most ``limit`` bytes; None means none was found
    there (the caller falls back to ``scan``). Whatever follows the returned
    frame holds no valid frame: it is a torn tail.
    """
    size = f.seek(0, 2)
    window = _CHUNK
    while True:
        lo = max(start, size - window)
        f.seek(lo)
        buf = f.read(size - lo)
        pos = len(buf)
        while (pos := buf.rfind(FRAME_MAGIC, 0, pos)) >= 0:
            verdict = _check_at(buf, pos, eof=True)
            if verdict is not None and verdict[0] == "ok":
                end = verdict[1]
                return Frame(lo + pos, lo + end, bytes(buf[pos + HEADER_SIZE : end]))
        if lo == start or window >= limit:
            return None
        window *= 4
