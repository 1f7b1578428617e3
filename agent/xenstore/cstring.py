"""How the C xenstored reads its request arguments, byte for byte.

The embedded xenstored must answer malformed input exactly as xenstored 4.17
does, so the argument parsing of ``xenstored_core.c`` and of libc is copied
here: ``get_strings``/``onearg`` (NUL-separated arguments), glibc ``strtol``
and ``atoi`` (leading blanks, signs, ``0x``/octal prefixes, saturation on
overflow with ``ERANGE``), ``is_valid_nodename`` (with its ``sscanf`` prefix
rule) and the permission strings of ``xs_lib.c``.

Functions that, in C, leave ``errno`` behind report it in their result so the
daemon can keep its emulated ``errno`` exact.
"""

from __future__ import annotations

from dataclasses import dataclass

LONG_MAX = (1 << 63) - 1
LONG_MIN = -(1 << 63)
U32 = 0xFFFFFFFF

_SPACE = b" \t\n\v\f\r"
_VALID = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-/_@")
_LOCAL_DOMAIN = b"/local/domain/"


@dataclass(frozen=True, slots=True)
class Strtol:
    """Result of glibc ``strtol``: value, index where parsing stopped, and
    whether it saturated (glibc then sets ``errno = ERANGE``)."""

    value: int
    end: int
    overflow: bool


def cstr(buf: bytes, offset: int = 0) -> bytes:
    """The NUL-terminated string starting at ``offset`` (to the end if no NUL)."""
    nul = buf.find(b"\0", offset)
    return buf[offset:] if nul < 0 else buf[offset:nul]


def strtol(text: bytes, base: int) -> Strtol:
    """glibc ``strtol(text, &end, base)`` for base 0 or 10."""
    i = 0
    while i < len(text) and text[i] in _SPACE:
        i += 1
    negative = False
    if i < len(text) and text[i] in b"+-":
        negative = text[i] == ord("-")
        i += 1
    digits = "0123456789"
    if base == 0:
        if text[i : i + 1] == b"0" and text[i + 1 : i + 2] in (b"x", b"X"):
            if i + 2 < len(text) and chr(text[i + 2]) in "0123456789abcdefABCDEF":
                base, i = 16, i + 2
            else:  # "0x" with no hex digit: the "0" is the number, "x" stops it
                return Strtol(0, i + 1, False)
        elif text[i : i + 1] == b"0":
            base = 8
        else:
            base = 10
    if base == 16:
        digits = "0123456789abcdef"
    elif base == 8:
        digits = "01234567"
    start = i
    magnitude = 0
    while i < len(text) and chr(text[i]).lower() in digits:
        magnitude = magnitude * base + digits.index(chr(text[i]).lower())
        i += 1
    if i == start:
        return Strtol(0, 0, False)  # no digits: end is the very start
    limit = -LONG_MIN if negative else LONG_MAX
    if magnitude > limit:
        return Strtol(LONG_MIN if negative else LONG_MAX, i, True)
    return Strtol(-magnitude if negative else magnitude, i, False)


def to_int32(value: int) -> int:
    """C's truncation of a long to a 32-bit ``int``."""
    value &= U32
    return value - (1 << 32) if value & 0x80000000 else value


def atoi(text: bytes) -> Strtol:
    """glibc ``atoi``: ``(int) strtol(text, NULL, 10)``."""
    result = strtol(text, 10)
    return Strtol(to_int32(result.value), result.end, result.overflow)


def get_strings(payload: bytes, num: int) -> tuple[int, list[bytes]]:
    """``get_strings``: the number of NUL-terminated strings in the payload
    and the first ``num`` of them; bytes after the last NUL are ignored."""
    count = payload.count(b"\0")
    return count, payload.split(b"\0")[: min(num, count)]


def onearg(payload: bytes) -> bytes | None:
    """``onearg``: the payload's only string, which must end exactly at the
    payload's end (one NUL, the last byte), else None."""
    if not payload or payload.find(b"\0") != len(payload) - 1:
        return None
    return payload[:-1]


def count_strings(payload: bytes) -> int:
    """``xs_count_strings``: the number of NUL bytes."""
    return payload.count(b"\0")


def _scanf_domid_prefix(node: bytes) -> int:
    """``sscanf(node, "/local/domain/%5u/%n", &domid, &off)``: ``off`` if the
    whole pattern matched, else 0."""
    if not node.startswith(_LOCAL_DOMAIN):
        return 0
    i = len(_LOCAL_DOMAIN)
    while i < len(node) and node[i] in _SPACE:  # %u skips blanks, not counted in the width
        i += 1
    field = node[i : i + 5]
    j = 1 if field[:1] in (b"+", b"-") else 0
    while j < len(field) and field[j : j + 1].isdigit():
        j += 1
    if j == 0 or not field[j - 1 : j].isdigit():
        return 0
    i += j
    if node[i : i + 1] != b"/":
        return 0
    return i + 1


def is_valid_nodename(node: bytes, max_path_len: int) -> bool:
    """``is_valid_nodename`` of xenstored_core.c."""
    if not node.startswith(b"/"):
        return False
    if node.endswith(b"/") and node != b"/":
        return False
    if b"//" in node:
        return False
    if len(node) > _scanf_domid_prefix(node) + max_path_len:
        return False
    return all(c in _VALID for c in node)


# -- permissions (xs_lib.c) ---------------------------------------------------

PERM_NONE = 0x00
PERM_READ = 0x01
PERM_WRITE = 0x02
PERM_OWNER = 0x08
PERM_IGNORE = 0x10  # set by the daemon on entries naming a domain that is gone

_LETTER_BITS = {ord("r"): PERM_READ, ord("w"): PERM_WRITE, ord("b"): PERM_READ | PERM_WRITE}
_LETTER_BITS[ord("n")] = PERM_NONE
_BITS_LETTER = {v: chr(k).encode() for k, v in _LETTER_BITS.items()}


@dataclass(frozen=True, slots=True)
class ParsedPerms:
    """Result of ``xs_strings_to_perms``: (bits, domid) pairs or None if the
    strings are invalid; ``overflow`` if any ``strtol`` saturated (ERANGE)."""

    perms: list[tuple[int, int]] | None
    overflow: bool


def strings_to_perms(strings: list[bytes]) -> ParsedPerms:
    """``xs_strings_to_perms``: ``r5``, ``w0x10``, ``b-1`` (ids go through
    ``strtol`` base 0 and are truncated to 32 bits, as in C)."""
    out: list[tuple[int, int]] = []
    overflow = False
    for text in strings:
        bits = _LETTER_BITS.get(text[0]) if text else None
        if bits is None:
            return ParsedPerms(None, overflow)
        rest = text[1:]
        parsed = strtol(rest, 0)
        overflow |= parsed.overflow
        if parsed.end != len(rest) or not rest:
            return ParsedPerms(None, overflow)
        out.append((bits, parsed.value & U32))
    return ParsedPerms(out, overflow)


def perm_to_string(bits: int, domid: int) -> bytes | None:
    """``xs_perm_to_string``: the letter and the id printed as a signed int."""
    letter = _BITS_LETTER.get(bits & ~PERM_IGNORE)
    if letter is None:
        return None
    return letter + str(to_int32(domid)).encode()
