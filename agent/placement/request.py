"""A placement request and its reply: the values, their bounds, their checks.

Requests come from outside the agent (a unix socket, a xenstore node), so
every field is checked here, once, with bounds; an error names the field and
where the request came from. Nothing here does I/O.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

POLICIES = ("best-effort", "strict")

MAX_VCPUS = 4096  # far above any Xen guest (HVM_MAX_VCPUS is 128)
MAX_MEMORY_MIB = 1 << 26  # 64 TiB
MAX_NODES = 64  # node ids are 0..MAX_NODES-1; Xen's MAX_NUMNODES is 64
MAX_NAME = 128
# Request ids as a requester gives them; the servers prefix their source
# (``sock-``, ``xs-``), which keeps the whole id within 64 characters.
ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,59}")
FULL_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MEMORY_RE = re.compile(r"(\d+)(?:\.(\d+))?\s*([KMGT]?)(?:i?B)?", re.IGNORECASE)
_UNIT_MIB = {"": 1, "K": 1 / 1024, "M": 1, "G": 1024, "T": 1024 * 1024}


class RequestError(ValueError):
    """A request field with a bad value; the message says where and which."""


@dataclass(frozen=True, slots=True)
class PlacementRequest:
    """Where should a new domain go? ``preferred`` nodes are tried first."""

    id: str
    vcpus: int
    memory_mib: int
    policy: str = "best-effort"
    preferred: frozenset[int] = frozenset()
    name: str = ""
    uuid: str = ""
    max_nodes: int = 0  # most nodes it may span; 0: as many as it takes

    @property
    def strict(self) -> bool:
        return self.policy == "strict"

    def describe(self) -> str:
        who = self.name or self.uuid or f"request {self.id}"
        return f"{who} ({self.vcpus} vCPUs, {self.memory_mib} MiB)"


@dataclass(frozen=True, slots=True)
class PlacementReply:
    """The answer. ``ok``: ``nodes`` got ``memory_mib`` reserved (per node, in
    the order of ``nodes``) until the domain appears or ``expires_s`` pass;
    ``cpus`` are those nodes' pCPUs, for the domain's soft affinity. Not ok:
    ``reason`` says why, ``shortfall_mib`` by how much memory."""

    request: str
    ok: bool
    reason: str
    nodes: tuple[int, ...] = ()
    cpus: frozenset[int] = frozenset()
    memory_mib: tuple[int, ...] = ()
    policy: str = "best-effort"
    fallback: bool = False  # best-effort went past the preferred (or fitting) nodes
    shortfall_mib: int = 0
    expires_s: float = 0.0

    def to_wire(self) -> dict[str, Any]:
        """Plain msgpack values."""
        wire: dict[str, Any] = {
            "request": self.request,
            "ok": self.ok,
            "reason": self.reason,
            "nodes": list(self.nodes),
            "cpus": sorted(self.cpus),
            "memory_mib": list(self.memory_mib),
            "policy": self.policy,
            "fallback": self.fallback,
            "shortfall_mib": self.shortfall_mib,
            "expires_s": self.expires_s,
        }
        return wire

    @classmethod
    def from_wire(cls, data: object) -> PlacementReply:
        """Check a reply read off the wire (the client trusts nothing either)."""
        if not isinstance(data, Mapping):
            raise RequestError(f"reply: expected a map, got {type(data).__name__}")
        where = "reply"
        return cls(
            request=_str(data, "request", where, limit=64),
            ok=_bool(data, "ok", where),
            reason=_str(data, "reason", where, limit=4096),
            nodes=tuple(_int_list(data, "nodes", where, 0, MAX_NODES - 1)),
            cpus=frozenset(_int_list(data, "cpus", where, 0, 1 << 20, limit=1 << 16)),
            memory_mib=tuple(_int_list(data, "memory_mib", where, 0, MAX_MEMORY_MIB)),
            policy=_choice(data, "policy", where, POLICIES),
            fallback=_bool(data, "fallback", where),
            shortfall_mib=_int(data, "shortfall_mib", where, 0, MAX_MEMORY_MIB),
            expires_s=_float(data, "expires_s", where, 0.0, 1e9),
        )


# -- checking requests ---------------------------------------------------------------


def check_request(fields: Mapping[str, Any], where: str, request_id: str) -> PlacementRequest:
    """A request from untrusted fields; unknown keys are errors. ``where``
    names the source in messages (``socket``, a xenstore path)."""
    known = {"vcpus", "memory_mib", "policy", "preferred", "name", "uuid", "max_nodes"}
    unknown = sorted(str(k) for k in fields if k not in known)
    if unknown:
        raise RequestError(f"{where}: unknown field(s) {', '.join(unknown)} "
                           f"(known: {', '.join(sorted(known))})")
    if not isinstance(request_id, str) or not FULL_ID_RE.fullmatch(request_id):
        raise RequestError(f"{where}: request id {request_id!r} must match {FULL_ID_RE.pattern}")
    name = _str(fields, "name", where, limit=MAX_NAME, default="")
    if any(not ch.isprintable() or ch == "/" for ch in name):
        raise RequestError(f"{where}: name {name!r} has a control character or '/'")
    uuid = _str(fields, "uuid", where, limit=36, default="")
    if uuid and not UUID_RE.fullmatch(uuid):
        raise RequestError(f"{where}: uuid {uuid!r} is not a lower-case UUID")
    return PlacementRequest(
        id=request_id,
        vcpus=_int(fields, "vcpus", where, 1, MAX_VCPUS),
        memory_mib=_int(fields, "memory_mib", where, 1, MAX_MEMORY_MIB),
        policy=_choice(fields, "policy", where, POLICIES, default="best-effort"),
        preferred=frozenset(_int_list(fields, "preferred", where, 0, MAX_NODES - 1,
                                      default=[])),
        name=name,
        uuid=uuid,
        max_nodes=_int(fields, "max_nodes", where, 0, MAX_NODES, default=0),
    )


def check_id(request_id: object, where: str) -> str:
    if not isinstance(request_id, str) or not ID_RE.fullmatch(request_id):
        raise RequestError(f"{where}: request id {request_id!r} must match {ID_RE.pattern}")
    return request_id


def parse_memory(text: str) -> int:
    """``16G``, ``512M``, ``1.5T``, ``2048`` (MiB) -> MiB, rounded up."""
    m = _MEMORY_RE.fullmatch(text.strip())
    if m is None:
        raise RequestError(f"memory {text!r}: expected a size like 16G, 512M or 2048 (MiB)")
    whole, frac, unit = m.group(1), m.group(2) or "", m.group(3).upper()
    value = (int(whole) + (int(frac) / 10 ** len(frac) if frac else 0.0)) * _UNIT_MIB[unit]
    mib = int(-(-value // 1))
    if not 1 <= mib <= MAX_MEMORY_MIB:
        raise RequestError(f"memory {text!r}: must be 1 MiB .. {MAX_MEMORY_MIB} MiB")
    return mib


def parse_nodes(text: str) -> frozenset[int]:
    """``0,1`` or ``0-2,5`` -> node ids."""
    nodes: set[int] = set()
    for part in text.split(","):
        lo, sep, hi = part.strip().partition("-")
        if not lo.isdigit() or (sep and not hi.isdigit()):
            raise RequestError(f"nodes {text!r}: bad item {part!r} (expected 0,1 or 0-3)")
        first, last = int(lo), int(hi) if sep else int(lo)
        if last < first or last >= MAX_NODES:
            raise RequestError(f"nodes {text!r}: {part!r} is out of range 0..{MAX_NODES - 1}")
        nodes.update(range(first, last + 1))
    return frozenset(nodes)


# -- typed readers ----------------------------------------------------------------------

_NO = object()


def _get(data: Mapping[str, Any], key: str, where: str, default: Any) -> Any:
    value = data.get(key, _NO)
    if value is _NO:
        if default is _NO:
            raise RequestError(f"{where}: missing field {key!r}")
        return default
    return value


def _int(data: Mapping[str, Any], key: str, where: str, low: int, high: int,
         default: Any = _NO) -> int:
    value = _get(data, key, where, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestError(f"{where}: {key} must be an integer, got {value!r}")
    if not low <= value <= high:
        raise RequestError(f"{where}: {key} = {value} is out of range {low}..{high}")
    return value


def _float(data: Mapping[str, Any], key: str, where: str, low: float, high: float) -> float:
    value = _get(data, key, where, _NO)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise RequestError(f"{where}: {key} must be a number, got {value!r}")
    if not low <= value <= high:
        raise RequestError(f"{where}: {key} = {value} is out of range {low}..{high}")
    return float(value)


def _bool(data: Mapping[str, Any], key: str, where: str) -> bool:
    value = _get(data, key, where, _NO)
    if not isinstance(value, bool):
        raise RequestError(f"{where}: {key} must be true or false, got {value!r}")
    return value


def _str(data: Mapping[str, Any], key: str, where: str, *, limit: int,
         default: Any = _NO) -> str:
    value = _get(data, key, where, default)
    if not isinstance(value, str):
        raise RequestError(f"{where}: {key} must be a string, got {type(value).__name__}")
    if len(value) > limit:
        raise RequestError(f"{where}: {key} is {len(value)} characters long (at most {limit})")
    return value


def _choice(data: Mapping[str, Any], key: str, where: str, choices: tuple[str, ...],
            default: Any = _NO) -> str:
    value = _get(data, key, where, default)
    if value not in choices:
        raise RequestError(f"{where}: {key} must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _int_list(data: Mapping[str, Any], key: str, where: str, low: int, high: int,
              default: Any = _NO, limit: int = MAX_NODES) -> list[int]:
    value = _get(data, key, where, default)
    if not isinstance(value, list | tuple):
        raise RequestError(f"{where}: {key} must be a list of integers, got {value!r}")
    if len(value) > limit:
        raise RequestError(f"{where}: {key} has {len(value)} items (at most {limit})")
    for item in value:
        if isinstance(item, bool) or not isinstance(item, int) or not low <= item <= high:
            raise RequestError(f"{where}: {key} item {item!r} is not an integer in "
                               f"{low}..{high}")
    return list(value)
