"""The audit log writer: append, chain, batch fsync, rotate, retain, recover.

Records go to the kernel on every ``append`` (one ``write``), so a killed agent
loses nothing it appended; ``fdatasync`` -- durability across a power cut -- is
batched: at most every ``fsync_every`` records or ``fsync_interval`` seconds
(checked on append, and by ``flush_periodically`` when the log is quiet).
``append(..., sync=True)`` and ``flush()`` force it.

On open, anything after the last valid frame of the active file (a record torn
by a crash, or garbage from an unsynced power cut) is truncated away, and a
``recovery`` record saying where and how much is appended: the chain continues
from the last intact record.

Rotation: when the active file reaches ``rotate_bytes`` or its first record is
``rotate_age`` seconds old, it is renamed ``PATH.<first-seq>`` and a new one
started; the chain runs on across files. Retention then removes the oldest
rotated files beyond ``keep_files`` or ``keep_bytes`` (all files together),
after first appending a ``retention`` record naming them and the first kept
sequence number, so ``--verify`` can tell pruning from deletion.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import msgpack
import trio

from agent.audit import chain, framing, records, segments
from agent.audit.reader import FOREIGN_FILE, Bad, Entry, decode, entry_of, scan_file


class AuditLogError(RuntimeError):
    """The log cannot be opened or written as asked (locked, foreign file, clash)."""


@dataclass(frozen=True, slots=True)
class WriterPolicy:
    fsync_every: int = 64  # records between fsyncs; 1 = every record
    fsync_interval: float = 1.0  # seconds a record may stay unsynced
    rotate_bytes: int = 64 << 20
    rotate_age: float | None = 24 * 3600.0  # seconds; None = by size only
    keep_files: int = 10  # rotated files kept besides the active one
    keep_bytes: int | None = 1 << 30  # bound on all files together

    def __post_init__(self) -> None:
        if self.fsync_every < 1:
            raise ValueError(f"fsync_every must be >= 1, got {self.fsync_every}")
        if self.fsync_interval <= 0:
            raise ValueError(f"fsync_interval must be > 0, got {self.fsync_interval}")
        if self.rotate_bytes < 1:
            raise ValueError(f"rotate_bytes must be >= 1, got {self.rotate_bytes}")
        if self.keep_files < 0:
            raise ValueError(f"keep_files must be >= 0, got {self.keep_files}")


@dataclass(frozen=True, slots=True)
class Stamp:
    """Where an appended record sits in the chain."""

    seq: int
    hash: bytes


class AuditWriter:
    def __init__(
        self,
        path: Path | str,
        policy: WriterPolicy | None = None,
        *,
        key: bytes | None = None,
        wall_clock: Callable[[], float] = time.time,
        mono_clock: Callable[[], float] | None = None,
        sync_clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.path = Path(path)
        self.policy = policy or WriterPolicy()
        self._key = key
        self._wall = wall_clock
        self._mono = mono_clock
        self._sync_clock = sync_clock
        self._seq = 0
        self._hash = chain.GENESIS
        self._first_wall: float | None = None  # of the active file's first record
        self._first_seq: int | None = None
        self._size = 0
        self._unsynced = 0
        self._unsynced_since = 0.0
        self._fd = -1
        self.recovered: Bad | None = None

        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = _lock(self.path.with_name(self.path.name + ".lock"))
        try:
            self._open()
        except BaseException:
            os.close(self._lock_fd)
            raise
        if self.recovered is not None:
            bad = self.recovered
            try:
                self.append(records.recovery(bad.file.name, bad.offset, bad.size), sync=True)
            except BaseException:
                self.close()
                raise

    # -- opening -----------------------------------------------------------

    def _open(self) -> None:
        first, last, torn = self._tail() if self.path.exists() else (None, None, None)
        if torn is not None and torn.why == FOREIGN_FILE:
            raise AuditLogError(f"{self.path}: {torn.why}; refusing to append to it")
        if last is None:
            prior = segments.rotated(self.path)
            if prior:
                for item in scan_file(prior[-1][1], self._key):
                    if isinstance(item, Entry):
                        last = item
        if last is not None:
            self._seq, self._hash = last.seq, last.hash
        if first is not None:
            self._first_seq, self._first_wall = first.seq, first.wall

        size = self.path.stat().st_size if self.path.exists() else -1
        if size < framing.FILE_MAGIC_SIZE:  # new, empty, or its header torn
            _create(self.path)
            if torn is not None:
                self.recovered = torn
        elif torn is not None:
            os.truncate(self.path, torn.offset)
            self.recovered = torn
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if self.recovered is not None:
            os.fdatasync(self._fd)
        self._size = os.fstat(self._fd).st_size

    def _tail(self) -> tuple[Entry | None, Entry | None, Bad | None]:
        """The active file's first and last records and its torn tail, if any.

        The last record is found from the end of the file, so opening a big
        log costs no full scan; a full scan is the fallback.
        """
        first: Entry | None = None
        torn: Bad | None = None
        for item in scan_file(self.path, self._key):
            if isinstance(item, Entry):
                first = item
                break
            if item.torn_tail:
                torn = item
        if first is None:
            return None, None, torn
        with open(self.path, "rb") as f:
            frame = framing.last_frame(f, first.offset)
            size = f.seek(0, 2)
        record = decode(frame.payload) if frame is not None else "not found"
        if frame is not None and not isinstance(record, str):
            last = entry_of(record, frame, self._key, self.path)
            if frame.end < size:
                torn = Bad(self.path, frame.end, size - frame.end, "torn tail", True)
            return first, last, torn
        last = first
        for item in scan_file(self.path, self._key):
            if isinstance(item, Entry):
                last, torn = item, None
            elif item.torn_tail:
                torn = item
        return first, last, torn

    # -- appending ---------------------------------------------------------

    @property
    def head(self) -> Stamp | None:
        """The last record written (or found on open), None for an empty log."""
        return Stamp(self._seq, self._hash) if self._seq else None

    @property
    def dirty(self) -> bool:
        return self._unsynced > 0

    def append(
        self, body: Mapping[str, Any], *, mono: float | None = None, sync: bool = False
    ) -> Stamp:
        """Append one record built by ``agent.audit.records``; returns its seq and hash."""
        if self._fd < 0:
            raise AuditLogError(f"{self.path}: writer is closed")
        if not isinstance(body.get("kind"), str):
            raise records.RecordError("record body has no 'kind'")
        clash = records.ENVELOPE_KEYS & set(body)
        if clash:
            raise records.RecordError(f"record body sets writer field(s) {sorted(clash)}")
        wall = self._wall()
        if self._should_rotate(wall):
            self._rotate()  # may append a retention record first
            wall = self._wall()
        if mono is None and self._mono is not None:
            mono = self._mono()
        record: dict[str, Any] = {"seq": self._seq + 1, "t": wall}
        if mono is not None:
            record["mono"] = float(mono)
        record["prev"] = self._hash
        record.update(body)
        payload = msgpack.packb(record, use_bin_type=True)
        self._write(framing.encode_frame(payload))
        self._seq += 1
        self._hash = chain.record_hash(payload, self._key)
        if self._first_seq is None:
            self._first_seq, self._first_wall = self._seq, wall
        now = self._sync_clock()
        if self._unsynced == 0:
            self._unsynced_since = now
        self._unsynced += 1
        if (
            sync
            or self._unsynced >= self.policy.fsync_every
            or now - self._unsynced_since >= self.policy.fsync_interval
        ):
            self.flush()
        return Stamp(self._seq, self._hash)

    def _write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        self._size += len(data)

    def flush(self) -> None:
        """Make every appended record durable now."""
        if self._unsynced and self._fd >= 0:
            os.fdatasync(self._fd)
            self._unsynced = 0

    def flush_due(self) -> bool:
        """fsync if the oldest unsynced record is ``fsync_interval`` old; True if it did."""
        if self._unsynced and (
            self._sync_clock() - self._unsynced_since >= self.policy.fsync_interval
        ):
            self.flush()
            return True
        return False

    # -- rotation and retention -------------------------------------------

    def _should_rotate(self, wall: float) -> bool:
        if self._first_seq is None:  # nothing in the active file yet
            return False
        if self._size >= self.policy.rotate_bytes:
            return True
        age = self.policy.rotate_age
        return age is not None and self._first_wall is not None and wall - self._first_wall >= age

    def _rotate(self) -> None:
        assert self._first_seq is not None
        target = segments.rotated_name(self.path, self._first_seq)
        if target.exists() or target.with_name(target.name + ".gz").exists():
            raise AuditLogError(f"cannot rotate {self.path}: {target} already exists")
        os.fdatasync(self._fd)
        self._unsynced = 0
        os.close(self._fd)
        self._fd = -1
        os.rename(self.path, target)
        _create(self.path)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        self._size = framing.FILE_MAGIC_SIZE
        self._first_seq = self._first_wall = None
        self._retain()

    def _retain(self) -> None:
        old = segments.rotated(self.path)
        sizes = [p.stat().st_size for _, p in old]
        total = sum(sizes) + self._size
        drop = 0
        while drop < len(old) and (
            len(old) - drop > self.policy.keep_files
            or (self.policy.keep_bytes is not None and total > self.policy.keep_bytes)
        ):
            total -= sizes[drop]
            drop += 1
        if not drop:
            return
        first_kept = old[drop][0] if drop < len(old) else self._seq + 1
        # Say what goes before it goes, so a crash in between reads as pruning.
        self.append(records.retention([p.name for _, p in old[:drop]], first_kept), sync=True)
        for _, p in old[:drop]:
            p.unlink(missing_ok=True)
        segments.fsync_dir(self.path.parent)

    # -- closing -----------------------------------------------------------

    def close(self) -> None:
        if self._fd >= 0:
            try:
                self.flush()
            finally:
                os.close(self._fd)
                self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> AuditWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _create(path: Path) -> None:
    """A new log file holding just the file magic, durable with its directory entry."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
    try:
        os.write(fd, segments.FILE_MAGIC)
        os.fsync(fd)
    finally:
        os.close(fd)
    segments.fsync_dir(path.parent)


def _lock(lock_path: Path) -> int:
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise AuditLogError(f"{lock_path}: another process is writing this log") from None
    return fd


async def flush_periodically(writer: AuditWriter) -> None:
    """Trio task: bound how long a record stays unsynced when the log is quiet."""
    while True:
        await trio.sleep(writer.policy.fsync_interval)
        writer.flush()
