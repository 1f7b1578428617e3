"""The XenStore wire protocol, sans I/O.

Everything here follows ``xen/include/public/io/xs_wire.h`` and
``docs/misc/xenstore.txt`` of Xen 4.17. This module knows bytes and messages,
never sockets: the trio client and the embedded xenstored both build on it
(the h11 model).

A message is a 16-byte header ``<IIII`` (type, req_id, tx_id, len) followed by
``len`` bytes of payload, ``len <= PAYLOAD_MAX``. Most payloads are a list of
NUL-terminated strings; WRITE carries ``path\\0value`` with the value not
terminated, and READ replies carry the raw value.
"""

from __future__ import annotations

import enum
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

HEADER = struct.Struct("<IIII")
HEADER_SIZE = HEADER.size
PAYLOAD_MAX = 4096
ABS_PATH_MAX = 3072
REL_PATH_MAX = 2048


class Op(enum.IntEnum):
    """Message types (``enum xsd_sockmsg_type``)."""

    CONTROL = 0  # also known as DEBUG
    DIRECTORY = 1
    READ = 2
    GET_PERMS = 3
    WATCH = 4
    UNWATCH = 5
    TRANSACTION_START = 6
    TRANSACTION_END = 7
    INTRODUCE = 8
    RELEASE = 9
    GET_DOMAIN_PATH = 10
    WRITE = 11
    MKDIR = 12
    RM = 13
    SET_PERMS = 14
    WATCH_EVENT = 15
    ERROR = 16
    IS_DOMAIN_INTRODUCED = 17
    RESUME = 18
    SET_TARGET = 19
    # 20 was XS_RESTRICT, removed upstream.
    RESET_WATCHES = 21
    DIRECTORY_PART = 22


TYPE_COUNT = 23  # XS_TYPE_COUNT: types at or above it are unknown to the daemon
INVALID = 0xFFFF  # XS_INVALID: guaranteed never to be a valid type

# The error names of ``xsd_errors[]``, in their table order. The daemon sends
# them as the payload of an ERROR reply, NUL-terminated ("ENOENT\0").
ERROR_NAMES: tuple[str, ...] = (
    "EINVAL",
    "EACCES",
    "EEXIST",
    "EISDIR",
    "ENOENT",
    "ENOMEM",
    "ENOSPC",
    "EIO",
    "ENOTEMPTY",
    "ENOSYS",
    "EROFS",
    "EBUSY",
    "EAGAIN",
    "EISCONN",
    "E2BIG",
    "EPERM",
)

OK = b"OK\0"

# Special watch paths; ``@`` is only valid for WATCH/UNWATCH.
INTRODUCE_DOMAIN = b"@introduceDomain"
RELEASE_DOMAIN = b"@releaseDomain"


class ProtocolError(Exception):
    """Bytes that are not a well-formed XenStore message."""


class XenstoreError(Exception):
    """An ERROR reply from the daemon, carrying its errno name ("ENOENT")."""

    def __init__(self, name: str, detail: str = "") -> None:
        self.name = name
        self.detail = detail
        super().__init__(f"{name}: {detail}" if detail else name)


@dataclass(frozen=True, slots=True)
class Packet:
    """One message. ``op`` stays an int so unknown types survive a round trip."""

    op: int
    req_id: int
    tx_id: int
    payload: bytes

    def encode(self) -> bytes:
        """The bytes on the wire. Refuses payloads the protocol cannot carry."""
        if len(self.payload) > PAYLOAD_MAX:
            raise ProtocolError(f"payload of {len(self.payload)} bytes exceeds {PAYLOAD_MAX}")
        return encode_raw(self.op, self.req_id, self.tx_id, self.payload)

    @property
    def op_name(self) -> str:
        try:
            return Op(self.op).name
        except ValueError:
            return f"UNKNOWN({self.op})"

    def error_name(self) -> str | None:
        """The errno name if this is an ERROR reply, else None."""
        if self.op != Op.ERROR:
            return None
        return self.payload.rstrip(b"\0").decode("ascii", "replace")


def encode_raw(op: int, req_id: int, tx_id: int, payload: bytes) -> bytes:
    """Header plus payload with no length check: tests use it to send what a
    broken or hostile client would."""
    for name, value in (("type", op), ("req_id", req_id), ("tx_id", tx_id)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise ProtocolError(f"{name} {value} does not fit in 32 bits")
    return HEADER.pack(op, req_id, tx_id, len(payload)) + payload


class Decoder:
    """Reassembles packets from byte chunks of any size.

    ``feed`` bytes as they arrive, then iterate ``packets()``. A header that
    announces more than PAYLOAD_MAX bytes raises ProtocolError (the C daemon
    drops such a client); the decoder is then unusable.
    """

    def __init__(self, max_payload: int = PAYLOAD_MAX) -> None:
        self._buf = bytearray()
        self._max = max_payload
        self._broken: ProtocolError | None = None

    def feed(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        self._buf += data

    @property
    def pending(self) -> int:
        """Bytes received but not yet part of a complete packet."""
        return len(self._buf)

    def next_packet(self) -> Packet | None:
        """The next complete packet, or None until more bytes arrive."""
        if self._broken is not None:
            raise self._broken
        if len(self._buf) < HEADER_SIZE:
            return None
        op, req_id, tx_id, length = HEADER.unpack_from(self._buf)
        if length > self._max:
            self._broken = ProtocolError(
                f"{_op_label(op)} header announces {length} payload bytes (max {self._max})"
            )
            raise self._broken
        end = HEADER_SIZE + length
        if len(self._buf) < end:
            return None
        payload = bytes(self._buf[HEADER_SIZE:end])
        del self._buf[:end]
        return Packet(op, req_id, tx_id, payload)

    def packets(self) -> Iterator[Packet]:
        while (packet := self.next_packet()) is not None:
            yield packet


def _op_label(op: int) -> str:
    try:
        return Op(op).name
    except ValueError:
        return f"type {op}"


# -- payload helpers ----------------------------------------------------------


def join(*parts: bytes) -> bytes:
    """``a\\0b\\0``: each part NUL-terminated, as most requests are."""
    for part in parts:
        if b"\0" in part:
            raise ProtocolError(f"argument {part[:40]!r} contains NUL")
    return b"".join(p + b"\0" for p in parts)


def split(payload: bytes) -> list[bytes]:
    """The NUL-terminated strings of a payload; a trailing unterminated
    remainder is kept as the last element (WRITE's value)."""
    parts = payload.split(b"\0")
    if parts and parts[-1] == b"":
        parts.pop()
    return parts


def write_payload(path: bytes, value: bytes) -> bytes:
    return join(path) + value


# -- paths --------------------------------------------------------------------

_VALID_CHARS = re.compile(rb"[A-Za-z0-9\-/_@]*")
_LOCAL_DOMAIN = re.compile(rb"/local/domain/(\d{1,5})/")


def path_error(
    path: bytes, *, allow_special: bool = False, max_len: int = REL_PATH_MAX
) -> str | None:
    """Why ``path`` is not a valid node name, or None if it is.

    Mirrors ``is_valid_nodename`` in xenstored_core.c: an absolute path (or a
    special ``@`` path where allowed) of ``[A-Za-z0-9-/_@]``, no trailing or
    double slash. The length bound (the C daemon's path-length quota, 2048 by
    default) does not count a ``/local/domain/<id>/`` prefix. Relative paths
    must be made absolute first (see ``canonical_path``).
    """
    if not (path.startswith(b"/") or (allow_special and path.startswith(b"@"))):
        return "must start with /" + (" or @" if allow_special else "")
    if path.endswith(b"/") and path != b"/":
        return "must not end with /"
    if b"//" in path:
        return "must not contain //"
    local = _LOCAL_DOMAIN.match(path)
    length = len(path) - (local.end() if local else 0)
    if length > max_len:
        return f"longer than {max_len} bytes"
    if not _VALID_CHARS.fullmatch(path):
        return "contains characters outside [A-Za-z0-9-/_@]"
    return None


def canonical_path(path: bytes, domid: int) -> bytes:
    """Relative paths are relative to the caller's ``/local/domain/<domid>``."""
    if path.startswith((b"/", b"@")):
        return path
    return b"/local/domain/%d/" % domid + path


# -- permissions --------------------------------------------------------------


class Access(enum.Enum):
    """One entry's access letter: n(one), r(ead), w(rite), b(oth)."""

    NONE = "n"
    READ = "r"
    WRITE = "w"
    BOTH = "b"

    @property
    def can_read(self) -> bool:
        return self in (Access.READ, Access.BOTH)

    @property
    def can_write(self) -> bool:
        return self in (Access.WRITE, Access.BOTH)


@dataclass(frozen=True, slots=True)
class Perm:
    """``r5``: domain 5 may read. The first entry of a node's list names the
    owner, and its access applies to every domain not listed after it."""

    access: Access
    domid: int

    def encode(self) -> bytes:
        return f"{self.access.value}{self.domid}".encode()

    @classmethod
    def parse(cls, text: bytes) -> Perm:
        if len(text) < 2:
            raise ProtocolError(f"permission {text!r} too short")
        try:
            access = Access(chr(text[0]))
        except ValueError:
            raise ProtocolError(f"permission {text!r}: unknown access letter") from None
        digits = text[1:]
        if not digits.isdigit() or len(digits) > 10:
            raise ProtocolError(f"permission {text!r}: domain id is not a number")
        domid = int(digits)
        if domid > 0xFFFF:
            raise ProtocolError(f"permission {text!r}: domain id out of range")
        return cls(access, domid)


def encode_perms(perms: list[Perm]) -> bytes:
    return join(*(p.encode() for p in perms))


def parse_perms(payload: bytes) -> list[Perm]:
    return [Perm.parse(p) for p in split(payload)]
