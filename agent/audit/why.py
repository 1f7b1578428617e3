"""``xnuma audit why``: what was decided about a domain (or one vCPU) and why, in sentences."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.audit import records
from agent.audit.query import about
from agent.audit.reader import Entry
from agent.hypervisor.model import format_cpuset

# An action this close to its decision is "at the same time" and gets no time of its own.
_SAME_TIME = 0.05


def when(entry: Entry) -> str:
    """The agent's clock as ``12.3 s`` when recorded, else the wall clock in UTC."""
    if entry.mono is not None:
        return f"{entry.mono:.1f} s"
    return datetime.fromtimestamp(entry.wall, UTC).strftime("%Y-%m-%d %H:%M:%SZ")


def party(p: dict[str, Any]) -> str:
    if p.get("domain"):
        name = str(p["domain"])
    elif p.get("domid") is not None:
        name = f"domain {p['domid']}"
    elif p.get("uuid"):
        name = f"domain {p['uuid']}"
    else:
        name = "the host"
    if p.get("vcpu") is not None:
        name += f" vCPU {p['vcpu']}"
    if p.get("backend"):
        name += f" backend {p['backend']}"
    return name


def _cpus(value: Any) -> str:
    if isinstance(value, list) and all(isinstance(c, int) for c in value):
        return format_cpuset(value)
    return str(value)


def _node(params: dict[str, Any]) -> str:
    return f" (node {params['node']})" if params.get("node") is not None else ""


def _nodes(value: Any) -> str:
    if isinstance(value, list):
        word = "node" if len(value) == 1 else "nodes"
        return f"{word} {', '.join(str(v) for v in value)}"
    return f"node {value}"


# type -> (done, attempted) phrases from the action's params.
_PHRASES: dict[str, Callable[[dict[str, Any]], tuple[str, str]]] = {
    "narrow_hard": lambda p: (
        f"hard affinity was narrowed to {_cpus(p.get('cpus'))}{_node(p)}",
        f"narrowing hard affinity to {_cpus(p.get('cpus'))}",
    ),
    "restore_hard": lambda p: (
        f"hard affinity was restored to {_cpus(p.get('cpus'))}",
        f"restoring hard affinity to {_cpus(p.get('cpus'))}",
    ),
    "set_hard": lambda p: (
        f"hard affinity was set to {_cpus(p.get('cpus'))}{_node(p)}",
        f"setting hard affinity to {_cpus(p.get('cpus'))}",
    ),
    "set_soft": lambda p: (
        f"soft affinity was moved to {_cpus(p.get('cpus'))}{_node(p)}"
        + (f" from {_cpus(p['previous'])}" if p.get("previous") is not None else ""),
        f"moving soft affinity to {_cpus(p.get('cpus'))}",
    ),
    "place": lambda p: (
        f"it was placed on {_nodes(p.get('nodes'))}",
        f"placing it on {_nodes(p.get('nodes'))}",
    ),
    "pin_backend": lambda p: (
        f"backend {p.get('process', '?')} (pid {p.get('pid', '?')}) was pinned to "
        f"{_cpus(p.get('cpus'))}{_node(p)}",
        f"pinning backend {p.get('process', '?')} (pid {p.get('pid', '?')})",
    ),
    # The rule engine's action types (agent.rules.actions), when logged whole.
    "vcpu.fixup": lambda p: (
        f"it was brought back to node {p.get('node', '?')}",
        f"bringing it back to node {p.get('node', '?')}",
    ),
    "vcpu.swap": lambda p: (
        f"it traded places with domain {p.get('with_domid', '?')} vCPU {p.get('with_vcpu', '?')}",
        f"trading places with domain {p.get('with_domid', '?')} vCPU {p.get('with_vcpu', '?')}",
    ),
    "domain.set_soft": lambda p: (
        f"soft affinity was set to {_nodes(p.get('nodes'))}",
        f"setting soft affinity to {_nodes(p.get('nodes'))}",
    ),
    "backend.pin": lambda p: (
        f"backend pid {p.get('pid', '?')} was pinned to node {p.get('node', '?')}",
        f"pinning backend pid {p.get('pid', '?')} to node {p.get('node', '?')}",
    ),
    "domain.place": lambda p: (
        f"{p.get('name', 'it')} was placed on {_nodes(p.get('nodes', '?'))}",
        f"placing {p.get('name', 'it')}",
    ),
    "note": lambda p: (str(p.get("message", "")), "a note"),
}


def _generic(kind: str, p: dict[str, Any]) -> tuple[str, str]:
    args = ", ".join(f"{k}={_cpus(v)}" for k, v in sorted(p.items()))
    return f"action {kind} ({args}) was carried out", f"action {kind} ({args})"


def action_phrase(entry: Entry, at: str = "") -> str:
    """What an action did, e.g. ``hard affinity was narrowed to 0-27``; ``at`` is `` at 3.0 s``."""
    params = entry.get("params")
    params = params if isinstance(params, dict) else {}
    kind = str(entry.get("type"))
    phrase = _PHRASES.get(kind)
    done, attempted = phrase(params) if phrase else _generic(kind, params)
    outcome = entry.get("outcome")
    error = entry.get("error")
    because = f" ({error})" if error else ""
    if outcome == "failed":
        n = entry.get("attempts", 1)
        return f"{attempted} failed{at} after {n} attempt{'s' if n != 1 else ''}{because}"
    if outcome == "skipped":
        return f"{attempted} was skipped{at}{because}"
    return done + at


def _fmt_value(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list) and v and all(isinstance(c, int) for c in v):
        return format_cpuset(v)
    return str(v)


def trace_phrase(trace: Any) -> str:
    """A fallback reason built from the condition trace."""
    if not isinstance(trace, list) or not trace:
        return "no reason was recorded"
    parts = []
    for clause in trace:
        if not isinstance(clause, dict):
            continue
        values = clause.get("values")
        if isinstance(values, dict) and values:
            shown = " [" + ", ".join(f"{k} = {_fmt_value(v)}" for k, v in values.items()) + "]"
        elif isinstance(values, list) and values:
            shown = " [" + ", ".join(_fmt_value(v) for v in values) + "]"
        else:
            shown = ""
        result = clause.get("result")
        if result is True:
            verb = "held"
        elif result is False:
            verb = "did not hold"
        else:
            verb = f"gave {_fmt_value(result)}"
        parts.append(f"{clause.get('expr')}{shown} {verb}")
    return "; ".join(parts) if parts else "no reason was recorded"


@dataclass(slots=True)
class _Story:
    decision: Entry
    actions: list[Entry] = field(default_factory=list)

    def sentence(self) -> str:
        d = self.decision
        who = party(d.subject) + (f" and {party(d.peer)}" if d.peer else "")
        reason = str(d.get("reason") or "").strip().rstrip(".") or trace_phrase(d.get("trace"))
        rule = d.get("rule", "?")
        head = f"At {when(d)} rule {rule}"
        outcome = d.get("outcome")
        if outcome == "dry-run":
            return f"{head} would have acted on {who} (dry run, nothing changed): {reason}."
        if outcome == "suppressed":
            by = str(d.get("suppressed_by", "suppressed"))
            if d.get("detail"):
                by += f": {d.get('detail')}"
            return f"{head} matched {who} but did not act ({by}): {reason}."
        return f"{head} acted on {who}: {reason}; {self._actions()}."

    def _actions(self) -> str:
        if not self.actions:
            return "no action was recorded for it"
        parts: list[str] = []
        previous: Entry | None = None
        for a in self.actions:
            cpus = (a.get("params") or {}).get("cpus")
            if (
                a.get("type") == "restore_hard"
                and a.get("outcome") == "ok"
                and previous is not None
                and previous.get("type") == "narrow_hard"
                and previous.get("outcome") == "ok"
            ):
                original = (previous.get("params") or {}).get("original")
                to = "" if original is None or original == cpus else f" to {_cpus(cpus)}"
                parts[-1] += f" and restored{to} at {when(a)}"
            else:
                later = abs(a.time - self.decision.time) >= _SAME_TIME
                parts.append(action_phrase(a, f" at {when(a)}" if later else ""))
            previous = a
        return "; ".join(parts)


def explain(entries: Iterable[Entry], domain: str, vcpu: int | None = None) -> list[str]:
    """One sentence per decision about ``domain`` (name, domid or uuid) / ``vcpu``, in order.

    Actions are attached to the decision they name; actions about the domain
    that name no decision (a restore at start-up, say) get a sentence of their own.
    """
    stories: dict[int, _Story] = {}
    lines: list[tuple[int, _Story | str]] = []
    for entry in entries:
        if entry.kind == records.DECISION and about(entry, domain, vcpu):
            story = _Story(entry)
            stories[entry.seq] = story
            lines.append((entry.seq, story))
        elif entry.kind == records.ACTION:
            linked = stories.get(entry.get("decision"))
            if linked is not None:
                linked.actions.append(entry)
            elif about(entry, domain, vcpu):
                lines.append(
                    (entry.seq, f"At {when(entry)} {party(entry.subject)}: {action_phrase(entry)}.")
                )
    return [item.sentence() if isinstance(item, _Story) else item for _, item in lines]
