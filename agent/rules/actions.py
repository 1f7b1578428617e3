"""Actions a rule can ask for, with typed parameters; the agent carries them out.

A rule's ``[rule.action]`` names a ``type`` from ``ACTIONS`` and gives its
parameters: TOML numbers and booleans are taken as they are, strings are
expressions over the rule's names (``"vcpu.home_node"``, ``"{target.id}"``),
checked at load against the parameter's type. The decision carries one of the
dataclasses below, ready for the agent to ``match`` on.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from typing import Any, ClassVar

from agent.rules.subjects import SubjectKey
from agent.rules.trace import plain
from agent.rules.types import FLOAT, INT, NODESET, STR, Type


@dataclass(frozen=True, slots=True)
class VcpuFixup:
    """Narrow the vCPU's hard affinity to ``node`` until it runs there (or
    ``timeout_s``), restore it, then watch it for ``settle_s``."""

    TYPE: ClassVar[str] = "vcpu.fixup"
    domid: int
    vcpu: int
    node: int
    timeout_s: float = 2.0
    settle_s: float = 10.0

    def targets(self) -> tuple[SubjectKey, ...]:
        return (("vcpu", self.domid, self.vcpu),)


@dataclass(frozen=True, slots=True)
class VcpuSwap:
    """Pin two vCPUs that sit on each other's home node so they trade places."""

    TYPE: ClassVar[str] = "vcpu.swap"
    domid: int
    vcpu: int
    with_domid: int
    with_vcpu: int
    timeout_s: float = 2.0

    def targets(self) -> tuple[SubjectKey, ...]:
        return (("vcpu", self.domid, self.vcpu), ("vcpu", self.with_domid, self.with_vcpu))


@dataclass(frozen=True, slots=True)
class SetSoftAffinity:
    """Set the soft affinity of every vCPU of the domain to the pCPUs of ``nodes``."""

    TYPE: ClassVar[str] = "domain.set_soft"
    domid: int
    nodes: frozenset[int]

    def targets(self) -> tuple[SubjectKey, ...]:
        return (("domain", self.domid),)


@dataclass(frozen=True, slots=True)
class SetHardAffinity:
    """Narrow the hard affinity of every vCPU of the domain to the pCPUs of ``nodes``
    (within its cpupool and its present hard affinity) for ``duration_s``, then
    restore it; ``duration_s = 0``: for good, until the agent stops. Journalled
    like every pin: a killed agent's next start restores it."""

    TYPE: ClassVar[str] = "domain.set_hard"
    domid: int
    nodes: frozenset[int]
    duration_s: float = 0.0

    def targets(self) -> tuple[SubjectKey, ...]:
        return (("domain", self.domid),)


@dataclass(frozen=True, slots=True)
class PinBackend:
    """Bind a dom0 backend process/thread to the dom0 vCPUs that sit on ``node``."""

    TYPE: ClassVar[str] = "backend.pin"
    pid: int
    domid: int
    node: int

    def targets(self) -> tuple[SubjectKey, ...]:
        return (("backend", self.pid),)


@dataclass(frozen=True, slots=True)
class PlaceDomain:
    """Answer a placement request: choose nodes, reserve memory, reply. A
    reservation changes nothing on the host: it spends no action budget."""

    TYPE: ClassVar[str] = "domain.place"
    request: str
    name: str
    vcpus: int
    memory_mib: int
    policy: str = "best-effort"
    preferred: frozenset[int] = frozenset()
    max_nodes: int = 0  # 0: as many as it takes

    def targets(self) -> tuple[SubjectKey, ...]:
        return (("request", self.request),)


@dataclass(frozen=True, slots=True)
class Note:
    """Record ``message`` in the audit log; change nothing. Never conflicts,
    never spends the action budget."""

    TYPE: ClassVar[str] = "note"
    message: str

    def targets(self) -> tuple[SubjectKey, ...]:
        return ()


Action = (VcpuFixup | VcpuSwap | SetSoftAffinity | SetHardAffinity | PinBackend | PlaceDomain
          | Note)


@dataclass(frozen=True, slots=True)
class ParamSpec:
    name: str
    type: Type
    required: bool
    default: Any
    doc: str
    # A literal below this is refused when the rule is loaded (and an expression's
    # value at run time by the agent): a number, or every node id of a node set.
    at_least: float | None = None
    non_empty: bool = False  # a node set that must name at least one node


@dataclass(frozen=True, slots=True)
class ActionSpec:
    type: str
    cls: Callable[..., Action]
    doc: str
    params: Mapping[str, ParamSpec]
    changes_host: bool


_PY_TYPE = {"int": INT, "float": FLOAT, "str": STR, "frozenset[int]": NODESET}
_DOCS = {
    "domid": "domain id",
    "vcpu": "vCPU id",
    "node": "node id",
    "nodes": "node ids",
    "timeout_s": "seconds to wait for it to get there",
    "settle_s": "seconds to watch it after the restore",
    "with_domid": "the other vCPU's domain",
    "with_vcpu": "the other vCPU's id",
    "pid": "dom0 process or thread id",
    "request": "the request id (event.request)",
    "name": "the new domain's name",
    "vcpus": "its vCPUs",
    "memory_mib": "its memory, MiB",
    "policy": "best-effort (fall back to nearest nodes) or strict (fail)",
    "preferred": "nodes to try first",
    "max_nodes": "most nodes it may span (0: any)",
    "message": "text for the audit log",
    "duration_s": "seconds to hold it, then restore (0: for good, until the agent stops)",
}
# Lower bounds (and non-empty node sets), checked on literals when a rule loads.
_AT_LEAST: Mapping[str, float] = {"timeout_s": 0.0, "settle_s": 0.0, "duration_s": 0.0}
_NON_EMPTY: Mapping[str, tuple[str, ...]] = {"domain.set_hard": ("nodes",),
                                             "domain.set_soft": ("nodes",)}


def _spec(cls: type[Action]) -> ActionSpec:
    params: dict[str, ParamSpec] = {}
    for f in fields(cls):
        required = f.default is MISSING
        default = None if required else f.default
        kind = _PY_TYPE[str(f.type)]
        at_least = 0.0 if kind == NODESET else _AT_LEAST.get(f.name)
        params[f.name] = ParamSpec(f.name, kind, required, default, _DOCS[f.name], at_least,
                                   f.name in _NON_EMPTY.get(cls.TYPE, ()))
    doc = " ".join((cls.__doc__ or "").split())
    # A note and a reservation change nothing on the host: no budget, no claims
    # (two answers to one request are kept apart by the agent, which runs one).
    return ActionSpec(cls.TYPE, cls, doc, params,
                      changes_host=cls not in (Note, PlaceDomain))


ACTIONS: Mapping[str, ActionSpec] = {
    s.type: s
    for s in map(_spec, (VcpuFixup, VcpuSwap, SetSoftAffinity, SetHardAffinity, PinBackend,
                         PlaceDomain, Note))
}


def param_problem(p: ParamSpec, value: Any) -> str | None:
    """Why ``value`` (already of ``p``'s type) is out of range, or None if it is fine."""
    if p.type == NODESET:
        if p.non_empty and not value:
            return "names no node"
        low = [n for n in sorted(value) if p.at_least is not None and n < p.at_least]
        return f"node id {low[0]} is negative" if low else None
    if p.at_least is not None and isinstance(value, int | float) and value < p.at_least:
        return f"must be >= {p.at_least:g}; got {value:g}"
    return None


def build_action(type_name: str, values: Mapping[str, Any]) -> Action:
    """The action for evaluated parameter values (types already checked at load)."""
    spec = ACTIONS[type_name]
    args: dict[str, Any] = {}
    for name, p in spec.params.items():
        if name not in values:
            continue
        v = values[name]
        args[name] = float(v) if p.type == FLOAT else v
    action: Action = spec.cls(**args)
    return action


def action_record(action: Action) -> dict[str, Any]:
    """``{"type": ..., params...}`` in plain values, for logs and test files."""
    record: dict[str, Any] = {"type": action.TYPE}
    for f in fields(action):
        record[f.name] = plain(getattr(action, f.name))
    return record
