"""The audit record schema, in one place, with typed constructors.

A record is a msgpack map. The writer adds the envelope (``seq``, ``t`` wall
clock seconds, optional ``mono`` agent/sim clock seconds, ``prev`` hash of the
record before); everything else is the body a constructor here returns. The
body always has ``kind``; extra keyword fields are kept, so the schema stays
open. Values are normalised to plain msgpack types once, here: sets become
sorted lists, tuples lists, enums their value.

Kinds and their fields (``?`` = may be absent):

- ``event``: ``type`` (``domain.create`` ...), ``subject``, ``data``
- ``decision``: ``rule``, ``rule_file``?, ``rule_hash``, ``subject``, ``peer``?,
  ``outcome`` (act | dry-run | suppressed), ``reason`` (plain sentence: why the
  rule fired), ``suppressed_by``? (short code, required when suppressed),
  ``detail``?, ``trace`` (list of ``{expr, values, result}``: values a map or the
  operands in order; the rule engine's ``TraceStep`` is accepted as is),
  ``event``? (seq of the triggering event)
- ``action``: ``type``, ``params``, ``subject``, ``outcome`` (ok | failed |
  skipped), ``error``?, ``attempts``, ``duration`` (seconds), ``decision``? (seq)
- ``rule_reload``: ``ok``, ``files`` (list of ``{path, hash}``), ``rules``, ``errors``
- ``agent_start``: ``version``, ``pid``, ``dry_run``, ``backend``, ``config``
- ``agent_stop``: ``reason``, ``exit_code``
- written by the log writer itself: ``retention`` (``removed``,
  ``first_kept_seq``) and ``recovery`` (``file``, ``offset``, ``torn_bytes``).

A ``subject`` is ``{domain?, domid?, uuid?, vcpu?, node?, backend?}``; a
two-party decision (a vCPU swap) names the second party in ``peer``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

Body = dict[str, Any]

EVENT: Final = "event"
DECISION: Final = "decision"
ACTION: Final = "action"
RULE_RELOAD: Final = "rule_reload"
AGENT_START: Final = "agent_start"
AGENT_STOP: Final = "agent_stop"
RETENTION: Final = "retention"
RECOVERY: Final = "recovery"
KINDS: Final = frozenset(
    {EVENT, DECISION, ACTION, RULE_RELOAD, AGENT_START, AGENT_STOP, RETENTION, RECOVERY}
)

DECISION_OUTCOMES: Final = ("act", "dry-run", "suppressed")
ACTION_OUTCOMES: Final = ("ok", "failed", "skipped")

# Keys the writer owns; a body may not set them.
ENVELOPE_KEYS: Final = frozenset({"seq", "t", "mono", "prev"})

# Action types the agent performs, with the params each carries (cpus are
# lists of pCPU numbers). ``audit why`` phrases these; others are shown as-is.
ACTION_PARAMS: Final[Mapping[str, tuple[str, ...]]] = {
    "narrow_hard": ("cpus", "original", "node"),  # temporary pin into the soft mask
    "restore_hard": ("cpus",),  # back to the journalled original
    "set_hard": ("cpus", "node"),  # sustained narrowing, or relaxing it
    "set_soft": ("cpus", "previous", "node"),  # soft affinity follows memory / rebalance
    "place": ("nodes", "memory_kib"),  # new domain placement
    "pin_backend": ("pid", "process", "cpus", "node"),  # dom0 backend thread
    # The rule engine's own action types, when the agent records one whole.
    "vcpu.fixup": ("domid", "vcpu", "node"),
    "vcpu.swap": ("domid", "vcpu", "with_domid", "with_vcpu"),
    "domain.set_soft": ("domid", "nodes"),
    "backend.pin": ("pid", "domid", "node"),
    "domain.place": ("name", "nodes", "memory_mib"),
    "note": ("message",),
}


class RecordError(ValueError):
    """A record field with a bad value; the message names the field."""


@dataclass(frozen=True, slots=True)
class Subject:
    """What a record is about. Unknown parts stay None and are left out."""

    domain: str | None = None  # domain name
    domid: int | None = None
    uuid: str | None = None
    vcpu: int | None = None
    node: int | None = None
    backend: str | None = None  # e.g. "vbd/5/768" or a process name

    def to_dict(self) -> Body:
        return {k: getattr(self, k) for k in self.__slots__ if getattr(self, k) is not None}


@dataclass(frozen=True, slots=True)
class Clause:
    """One evaluated condition of a rule: its text, the values it read, its result."""

    expr: str
    values: Mapping[str, Any] | Sequence[Any]  # named, or the operands in order
    result: Any  # a bool for a condition; a value for an aggregate or binding


def plain(value: Any, where: str = "value") -> Any:
    """Convert to msgpack-native types; raise RecordError naming ``where`` otherwise."""
    if value is None or isinstance(value, bool | int | float | str | bytes):
        return value
    if isinstance(value, enum.Enum):
        return plain(value.value, where)
    if isinstance(value, Subject):
        return value.to_dict()
    if isinstance(value, Clause):
        return clause_dict(value, where)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str | int) or isinstance(k, bool):
                raise RecordError(f"{where}: map key {k!r} is not a string or integer")
            out[k] = plain(v, f"{where}.{k}")
        return out
    if isinstance(value, set | frozenset):
        try:
            return sorted(plain(v, where) for v in value)
        except TypeError as exc:
            raise RecordError(f"{where}: set of mixed types {value!r}") from exc
    if isinstance(value, list | tuple | range):
        return [plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise RecordError(f"{where}: {type(value).__name__} {value!r} cannot be recorded")


def clause_dict(clause: Any, where: str = "trace") -> Body:
    """``{expr, values, result}`` from a Clause, a map, or the rule engine's ``TraceStep``.

    ``values`` is a map (name -> value) or the operands in order; ``result`` is
    usually a bool, but an aggregate or a binding records its value.
    """
    if isinstance(clause, Clause):
        expr, values, result = clause.expr, clause.values, clause.result
    elif isinstance(clause, Mapping):
        text_key = "expr" if "expr" in clause else "text"
        missing = {text_key, "values", "result"} - set(clause)
        if missing:
            raise RecordError(f"{where}: clause lacks {', '.join(sorted(missing))}")
        expr, values, result = clause[text_key], clause["values"], clause["result"]
    elif all(hasattr(clause, a) for a in ("text", "values", "result")):  # rules.trace.TraceStep
        expr, values, result = clause.text, clause.values, clause.result
    else:
        raise RecordError(f"{where}: {type(clause).__name__} is not a condition clause")
    if not isinstance(expr, str):
        raise RecordError(f"{where}.expr: expected a string, got {expr!r}")
    if not isinstance(values, Mapping | list | tuple):
        raise RecordError(f"{where}.values: expected a map or a list, got {values!r}")
    return {
        "expr": expr,
        "values": plain(values, f"{where}.values"),
        "result": plain(result, f"{where}.result"),
    }


def _subject(subject: Subject | Mapping[str, Any] | None, where: str) -> Body:
    if subject is None:
        return {}
    if isinstance(subject, Subject):
        return subject.to_dict()
    unknown = set(subject) - set(Subject.__slots__)
    if unknown:
        raise RecordError(f"{where}: unknown subject field(s) {', '.join(sorted(unknown))}")
    return Subject(**subject).to_dict()


def _body(kind: str, fields: Mapping[str, Any], extra: Mapping[str, Any]) -> Body:
    clash = (set(extra) & set(fields)) | (set(extra) & (ENVELOPE_KEYS | {"kind"}))
    if clash:
        raise RecordError(f"{kind}: extra field(s) {', '.join(sorted(clash))} are reserved")
    body: Body = {"kind": kind}
    for key, value in fields.items():
        if value is not None:
            body[key] = plain(value, f"{kind}.{key}")
    for key, value in extra.items():
        body[key] = plain(value, f"{kind}.{key}")
    return body


def _choice(kind: str, field: str, value: str, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise RecordError(f"{kind}.{field}: {value!r} is not one of {', '.join(allowed)}")
    return value


def event(
    type: str,
    subject: Subject | Mapping[str, Any] | None = None,
    data: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Body:
    return _body(
        EVENT,
        {"type": type, "subject": _subject(subject, "event.subject"), "data": data or {}},
        extra,
    )


def decision(
    rule: str,
    rule_hash: str,
    subject: Subject | Mapping[str, Any],
    outcome: str,
    reason: str,
    trace: Iterable[Any],
    *,
    suppressed_by: str | None = None,
    detail: str | None = None,
    rule_file: str | None = None,
    peer: Subject | Mapping[str, Any] | None = None,
    event_seq: int | None = None,
    **extra: Any,
) -> Body:
    _choice(DECISION, "outcome", outcome, DECISION_OUTCOMES)
    if (outcome == "suppressed") != (suppressed_by is not None):
        raise RecordError("decision.suppressed_by: required exactly when outcome is 'suppressed'")
    fields: Body = {
        "rule": rule,
        "rule_file": rule_file,
        "rule_hash": rule_hash,
        "subject": _subject(subject, "decision.subject"),
        "peer": _subject(peer, "decision.peer") if peer is not None else None,
        "outcome": outcome,
        "reason": reason,
        "suppressed_by": suppressed_by,
        "detail": detail,
        "trace": [clause_dict(c, f"decision.trace[{i}]") for i, c in enumerate(trace)],
        "event": event_seq,
    }
    return _body(DECISION, fields, extra)


def action(
    type: str,
    params: Mapping[str, Any],
    subject: Subject | Mapping[str, Any],
    outcome: str,
    *,
    error: str | None = None,
    attempts: int = 1,
    duration: float = 0.0,
    decision_seq: int | None = None,
    **extra: Any,
) -> Body:
    _choice(ACTION, "outcome", outcome, ACTION_OUTCOMES)
    if attempts < 0:
        raise RecordError(f"action.attempts: {attempts} is negative")
    fields: Body = {
        "type": type,
        "params": params,
        "subject": _subject(subject, "action.subject"),
        "outcome": outcome,
        "error": error,
        "attempts": attempts,
        "duration": float(duration),
        "decision": decision_seq,
    }
    return _body(ACTION, fields, extra)


def rule_reload(
    ok: bool,
    files: Mapping[str, str],
    rules: int,
    errors: Sequence[str] = (),
    **extra: Any,
) -> Body:
    """``files`` maps each rule file path to its content hash."""
    listed = [{"path": p, "hash": h} for p, h in sorted(files.items())]
    return _body(
        RULE_RELOAD, {"ok": ok, "files": listed, "rules": rules, "errors": list(errors)}, extra
    )


def agent_start(
    version: str,
    pid: int,
    dry_run: bool,
    backend: str,
    config: Mapping[str, Any] | None = None,
    **extra: Any,
) -> Body:
    fields: Body = {
        "version": version,
        "pid": pid,
        "dry_run": dry_run,
        "backend": backend,
        "config": config or {},
    }
    return _body(AGENT_START, fields, extra)


def agent_stop(reason: str, exit_code: int, **extra: Any) -> Body:
    return _body(AGENT_STOP, {"reason": reason, "exit_code": exit_code}, extra)


def retention(removed: Sequence[str], first_kept_seq: int) -> Body:
    return _body(RETENTION, {"removed": list(removed), "first_kept_seq": first_kept_seq}, {})


def recovery(file: str, offset: int, torn_bytes: int) -> Body:
    return _body(RECOVERY, {"file": file, "offset": offset, "torn_bytes": torn_bytes}, {})
