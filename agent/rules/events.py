"""Events: what makes the engine evaluate rules, and the fields each type carries.

The agent turns what it observes into ``Event`` values (``make_event`` checks
them against ``EVENT_TYPES``); rules name the types they listen to in ``on``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

from agent.rules.types import FLOAT, INT, NODESET, STR, FieldSpec


@dataclass(frozen=True, slots=True)
class Event:
    """One event. Fields a type does not carry keep their defaults (-1, 0, "")."""

    type: str
    domid: int = -1
    vcpu: int = -1
    node: int = -1
    pid: int = -1
    name: str = ""
    kind: str = ""
    off_s: float = 0.0
    load: float = 0.0
    previous: float = 0.0
    request: str = ""
    vcpus: int = 0
    memory_mib: int = 0
    policy: str = ""
    preferred: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class EventType:
    name: str
    doc: str
    fields: tuple[str, ...]  # besides ``type``


_F = {
    "type": FieldSpec("type", STR, "", "the event type, e.g. \"domain.create\""),
    "domid": FieldSpec("domid", INT, "domid", "the domain the event is about"),
    "vcpu": FieldSpec("vcpu", INT, "vCPU id", "the vCPU the event is about (-1: none)"),
    "node": FieldSpec("node", INT, "node id", "the node the event is about (-1: none)"),
    "pid": FieldSpec("pid", INT, "pid", "dom0 process or thread id of the backend"),
    "name": FieldSpec("name", STR, "", "domain name"),
    "kind": FieldSpec("kind", STR, "", "backend kind: vbd, vif, qdisk, qemu, tapdisk, ..."),
    "off_s": FieldSpec("off_s", FLOAT, "s", "how long the vCPU has run off its soft affinity"),
    "load": FieldSpec("load", FLOAT, "fraction", "the new load (node: busy share; vCPU: rate)"),
    "previous": FieldSpec("previous", FLOAT, "fraction", "the load before the change"),
    "request": FieldSpec("request", STR, "", "placement request id, echoed in the reply"),
    "vcpus": FieldSpec("vcpus", INT, "vCPUs", "vCPUs the new domain will have"),
    "memory_mib": FieldSpec("memory_mib", INT, "MiB", "memory the new domain will have"),
    "policy": FieldSpec("policy", STR, "", "\"best-effort\" or \"strict\""),
    "preferred": FieldSpec("preferred", NODESET, "node ids", "nodes the requester prefers"),
}
EVENT_FIELDS: Mapping[str, FieldSpec] = _F

_DOMAIN = ("domid", "name")
EVENT_TYPES: Mapping[str, EventType] = {
    e.name: e
    for e in (
        EventType("domain.create", "a domain appeared (@introduceDomain or poll)", _DOMAIN),
        EventType("domain.destroy", "a domain went away (shutdown, crash, destroy)", _DOMAIN),
        EventType("domain.pause", "a domain was paused (seen by polling only)", _DOMAIN),
        EventType("domain.unpause", "a paused domain runs again", _DOMAIN),
        EventType(
            "load.change",
            "a node's load (node >= 0, vcpu = -1) or a vCPU's run rate crossed a threshold",
            ("node", "domid", "vcpu", "load", "previous"),
        ),
        EventType(
            "vcpu.off_node",
            "a vCPU runs outside its soft affinity (node: where it runs now)",
            ("domid", "vcpu", "node", "off_s"),
        ),
        EventType("backend.appear", "a dom0 backend for a guest device appeared",
                  ("domid", "pid", "kind")),
        EventType(
            "placement.request",
            "a toolstack asks where to build a new domain",
            ("request", "name", "vcpus", "memory_mib", "policy", "preferred"),
        ),
        EventType("tick", "the periodic timer: every rule listening to it sees every subject", ()),
    )
}

_DEFAULTS = {f.name: f.default for f in fields(Event)}


class EventError(ValueError):
    """An event that does not match the catalogue."""


def make_event(type: str, **values: Any) -> Event:
    """An ``Event`` of a catalogued type carrying only that type's fields, checked."""
    spec = EVENT_TYPES.get(type)
    if spec is None:
        raise EventError(f"unknown event type {type!r}; known: {', '.join(EVENT_TYPES)}")
    clean: dict[str, Any] = {}
    for key, value in values.items():
        if key not in spec.fields:
            allowed = ", ".join(spec.fields) or "none"
            raise EventError(f"event {type} has no field {key!r} (fields: {allowed})")
        clean[key] = _coerce(type, key, value)
    return Event(type=type, **clean)


def _coerce(type: str, key: str, value: Any) -> Any:
    kind = _F[key].type
    if kind == INT and isinstance(value, int) and not isinstance(value, bool):
        return value
    if kind == FLOAT and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == STR and isinstance(value, str):
        return value
    if (
        kind == NODESET
        and isinstance(value, list | tuple | set | frozenset)
        and all(isinstance(v, int) and not isinstance(v, bool) for v in value)
    ):
        return frozenset(value)
    raise EventError(f"event {type}: field {key!r} must be {kind}, not {value!r}")


def default_of(field_name: str) -> Any:
    return _DEFAULTS[field_name]
