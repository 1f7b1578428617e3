"""The temporary-pin journal: a narrowed hard affinity is a promise to restore it.

Before the agent narrows a vCPU's hard affinity it calls ``record_pin`` with
the original mask; the record is fsynced before the call returns. After
restoring it calls ``record_restore``. On start, ``outstanding()`` lists the
pins never restored (the agent was killed in between), for the agent to put
back. File: an 8-byte magic, then self-checking msgpack frames
(``agent.audit.framing``) -- ``{op: "pin", id, domid, name, uuid?, vcpu,
original, narrowed, t, reason}`` and ``{op: "restore", id, t, outcome}``. A
frame torn by a crash is cut off on open; a completed one is never lost. When
no pin is outstanding the file is compacted to just its magic (and when it
outgrows ``compact_bytes``, to the outstanding pins), by write-to-temp, fsync,
rename, fsync of the directory.
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import msgpack

from agent.audit import framing
from agent.audit.segments import fsync_dir
from agent.hypervisor.model import DomainInfo

DEFAULT_PATH: Final = Path("/var/lib/xnuma/pins.journal")
MAGIC: Final = b"XNPINJ\x00\x01"


class JournalError(RuntimeError):
    """The journal cannot be used as asked (locked, foreign file, bad pin)."""


@dataclass(frozen=True, slots=True)
class DomainKey:
    """Who a pin belongs to: the uuid when known (it survives a domid change), else domid+name."""

    domid: int
    name: str
    uuid: str | None = None

    @classmethod
    def of(cls, info: DomainInfo) -> DomainKey:
        return cls(info.domid, info.name, info.uuid or None)

    @property
    def ident(self) -> tuple[str | int, ...]:
        return ("uuid", self.uuid) if self.uuid else ("dom", self.domid, self.name)

    def find(self, domains: Iterable[DomainInfo]) -> DomainInfo | None:
        """The live domain this key names, or None if it is gone."""
        for info in domains:
            if self.uuid and info.uuid == self.uuid:
                return info
            if not self.uuid and (info.domid, info.name) == (self.domid, self.name):
                return info
        return None


@dataclass(frozen=True, slots=True)
class Pin:
    id: int
    domain: DomainKey
    vcpu: int
    original_hard: frozenset[int]  # what to restore
    narrowed_to: frozenset[int]
    pinned_at: float  # wall clock
    reason: str = ""

    def to_record(self) -> dict[str, Any]:
        record: dict[str, Any] = {
            "op": "pin",
            "id": self.id,
            "domid": self.domain.domid,
            "name": self.domain.name,
            "vcpu": self.vcpu,
            "original": sorted(self.original_hard),
            "narrowed": sorted(self.narrowed_to),
            "t": self.pinned_at,
            "reason": self.reason,
        }
        if self.domain.uuid:
            record["uuid"] = self.domain.uuid
        return record


def _cpus(value: Any) -> frozenset[int] | None:
    if isinstance(value, list) and all(isinstance(c, int) and c >= 0 for c in value):
        return frozenset(value)
    return None


def _pin_from(record: dict[str, Any]) -> Pin | None:
    """A pin record back to a Pin; None if any field is malformed."""
    try:
        original, narrowed = _cpus(record["original"]), _cpus(record["narrowed"])
        uuid = record.get("uuid")
        fields_ok = (
            isinstance(record["id"], int)
            and isinstance(record["domid"], int)
            and isinstance(record["name"], str)
            and isinstance(record["vcpu"], int)
            and isinstance(record["t"], int | float)
            and (uuid is None or isinstance(uuid, str))
            and original
            and narrowed is not None
        )
        if not fields_ok or original is None or narrowed is None:
            return None
        return Pin(
            id=record["id"],
            domain=DomainKey(record["domid"], record["name"], uuid),
            vcpu=record["vcpu"],
            original_hard=original,
            narrowed_to=narrowed,
            pinned_at=float(record["t"]),
            reason=str(record.get("reason", "")),
        )
    except KeyError:
        return None


class PinJournal:
    def __init__(
        self,
        path: Path | str = DEFAULT_PATH,
        *,
        clock: Callable[[], float] = time.time,
        compact_bytes: int = 1 << 20,
    ) -> None:
        self.path = Path(path)
        self._clock = clock
        self._compact_bytes = compact_bytes
        self._pins: dict[tuple[tuple[str | int, ...], int], Pin] = {}
        self._next_id = 1
        self._fd = -1
        self.damage: list[framing.Damage] = []  # skipped on open (torn tail included)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock_fd = os.open(
            self.path.with_name(self.path.name + ".lock"), os.O_RDWR | os.O_CREAT, 0o600
        )
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise JournalError(f"{self.path}: another xnuma agent holds this journal") from None
        try:
            self._load()
        except BaseException:
            os.close(self._lock_fd)
            raise

    # -- loading -----------------------------------------------------------

    def _load(self) -> None:
        self._tmp().unlink(missing_ok=True)  # a compaction cut short
        size = self.path.stat().st_size if self.path.exists() else -1
        if size < len(MAGIC):
            if size > 0 and not MAGIC.startswith(self.path.read_bytes()):
                raise JournalError(f"{self.path}: not an xnuma pin journal (bad magic)")
            self._rewrite([])  # new, or its magic was torn: nothing was ever recorded
            return
        with open(self.path, "rb") as f:
            if f.read(len(MAGIC)) != MAGIC:
                raise JournalError(f"{self.path}: not an xnuma pin journal (bad magic)")
            torn_at: int | None = None
            for item in framing.scan(f, len(MAGIC)):
                if isinstance(item, framing.Damage):
                    self.damage.append(item)
                    torn_at = item.offset if item.at_eof else None
                else:
                    self._replay(item.payload)
        if torn_at is not None:
            os.truncate(self.path, torn_at)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        if torn_at is not None:
            os.fsync(self._fd)
        if not self._pins and os.fstat(self._fd).st_size > len(MAGIC):
            self._rewrite([])

    def _replay(self, payload: bytes) -> None:
        try:
            record = msgpack.unpackb(payload, raw=False)
        except Exception:  # a valid frame with garbage inside: skip it, like damage
            return
        if not isinstance(record, dict):
            return
        ident = record.get("id")
        if isinstance(ident, int):
            self._next_id = max(self._next_id, ident + 1)
        if record.get("op") == "pin":
            pin = _pin_from(record)
            if pin is not None:
                # A second pin of the same vCPU keeps the first: it holds the true original.
                self._pins.setdefault((pin.domain.ident, pin.vcpu), pin)
        elif record.get("op") == "restore":
            for key, pin in list(self._pins.items()):
                if pin.id == ident:
                    del self._pins[key]

    # -- the API -----------------------------------------------------------

    def outstanding(self) -> list[Pin]:
        """Pins recorded and never restored, oldest first."""
        return sorted(self._pins.values(), key=lambda p: p.id)

    def pin_for(self, domain: DomainKey, vcpu: int) -> Pin | None:
        return self._pins.get((domain.ident, vcpu))

    def record_pin(
        self,
        domain: DomainKey,
        vcpu: int,
        original_hard: Iterable[int],
        narrowed_to: Iterable[int],
        *,
        reason: str = "",
    ) -> Pin:
        """Journal the original hard affinity, durably, before the caller narrows it.

        If this vCPU already has an outstanding pin, that pin is returned
        unchanged: its original is the one to restore, not today's narrowed mask.
        """
        existing = self.pin_for(domain, vcpu)
        if existing is not None:
            return existing
        original, narrowed = frozenset(original_hard), frozenset(narrowed_to)
        if vcpu < 0:
            raise JournalError(f"record_pin: vcpu {vcpu} is negative")
        if not original or min(original) < 0:
            raise JournalError(f"record_pin: original hard affinity {sorted(original)} is unusable")
        pin = Pin(self._next_id, domain, vcpu, original, narrowed, self._clock(), reason)
        self._append(pin.to_record())
        self._next_id += 1
        self._pins[(domain.ident, vcpu)] = pin
        return pin

    def record_restore(
        self, domain: DomainKey, vcpu: int, *, outcome: str = "restored"
    ) -> Pin | None:
        """Journal that the pin of this vCPU is undone (``outcome``: restored, domain-gone...).

        Returns the pin closed, or None if there was none (calling twice is harmless).
        """
        pin = self.pin_for(domain, vcpu)
        if pin is None:
            return None
        self._append({"op": "restore", "id": pin.id, "t": self._clock(), "outcome": outcome})
        del self._pins[(domain.ident, vcpu)]
        if not self._pins or os.fstat(self._fd).st_size > self._compact_bytes:
            self._rewrite(self.outstanding())
        return pin

    # -- writing -----------------------------------------------------------

    def _append(self, record: dict[str, Any]) -> None:
        if self._fd < 0:
            raise JournalError(f"{self.path}: journal is closed")
        data = framing.encode_frame(msgpack.packb(record, use_bin_type=True))
        view = memoryview(data)
        while view:
            view = view[os.write(self._fd, view) :]
        os.fdatasync(self._fd)

    def _tmp(self) -> Path:
        return self.path.with_name(self.path.name + ".tmp")

    def _rewrite(self, pins: list[Pin]) -> None:
        """Replace the file by one holding just ``pins``, atomically."""
        tmp = self._tmp()
        body = MAGIC + b"".join(
            framing.encode_frame(msgpack.packb(p.to_record(), use_bin_type=True)) for p in pins
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.rename(tmp, self.path)
        fsync_dir(self.path.parent)
        if self._fd >= 0:
            os.close(self._fd)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
        if self._lock_fd >= 0:
            os.close(self._lock_fd)
            self._lock_fd = -1

    def __enter__(self) -> PinJournal:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
