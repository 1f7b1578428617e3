"""The decision function: host state + one event + clock + rules -> decisions.

Pure. The engine's own memory (holds in progress, dead bands switched on, last
action per rule and subject, recent actions for the budget) goes in as a value
and comes back as a new value; nothing else is read or written.

For each rule listening to the event, for each of its subjects (see
``subjects``): the dead band, ``when`` and the ``with`` finders decide whether
it matches. Each match becomes one decision, and matches are settled in a fixed
order: real rules before dry-run ones, then higher priority first, then rule
name, then subject. A match is

* ``suppressed / hold`` while its condition has been true for less than ``hold``;
* ``suppressed / cooldown`` within ``cooldown`` of this rule's last action on the
  subject;
* ``suppressed / conflict`` when an earlier decision in this call acts on the
  same subject or on one its action touches (a domain covers its vCPUs);
* ``suppressed / budget`` when the host-wide actions-per-minute budget is spent;
* otherwise ``act`` (``dry-run`` for a ``dry_run`` rule, which claims no subject
  and spends no budget, so it never changes what real rules do).

A ``note`` action touches nothing and spends no budget.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.rules.actions import ACTIONS, Action, action_record, build_action
from agent.rules.events import Event
from agent.rules.expr import EVENT, FIRST_FREE_SLOT, HOST, TRACE
from agent.rules.ruleset import Rule, RuleSet
from agent.rules.subjects import (
    Subject,
    SubjectKey,
    format_key,
    key_of,
    subjects_for,
)
from agent.rules.trace import TraceStep, show
from agent.state import BackendView, HostView, VcpuView

BUDGET_WINDOW_S = 60.0

MemoryKey = tuple[str, SubjectKey]  # (rule name, subject)


class Outcome(enum.Enum):
    ACT = "act"
    DRY_RUN = "dry-run"
    SUPPRESSED = "suppressed"


class Reason(enum.Enum):
    HOLD = "hold"
    COOLDOWN = "cooldown"
    CONFLICT = "conflict"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class Decision:
    rule: str
    subject: SubjectKey
    outcome: Outcome
    action: Action  # what it does, or would have done
    reason: Reason | None = None
    detail: str = ""  # for a suppressed one, why in words
    priority: int = 0
    trace: tuple[TraceStep, ...] = ()

    @property
    def acts(self) -> bool:
        """The agent should carry out ``action``."""
        return self.outcome is Outcome.ACT

    def to_record(self) -> dict[str, Any]:
        """Plain values (msgpack-ready) for the audit log."""
        return {
            "rule": self.rule,
            "subject": format_key(self.subject),
            "outcome": self.outcome.value,
            "reason": self.reason.value if self.reason is not None else None,
            "detail": self.detail,
            "priority": self.priority,
            "action": action_record(self.action),
            "trace": [s.to_record() for s in self.trace],
        }

    def __str__(self) -> str:
        why = f" ({self.reason.value}: {self.detail})" if self.reason is not None else ""
        act = action_record(self.action)
        params = " ".join(f"{k}={show(v)}" for k, v in act.items() if k != "type")
        return (f"{self.outcome.value} {self.rule} on {format_key(self.subject)}: "
                f"{act['type']} {params}{why}")


@dataclass(frozen=True, slots=True)
class Memory:
    """The engine's state between calls. Start with ``Memory()``."""

    pending: Mapping[MemoryKey, float] = field(default_factory=dict)  # condition true since
    latched: frozenset[MemoryKey] = frozenset()  # dead band switched on
    last_act: Mapping[MemoryKey, float] = field(default_factory=dict)
    recent: tuple[float, ...] = ()  # times of host-changing actions, for the budget


class _Claims:
    """Subjects taken by earlier decisions of one call, indexed so that a check
    costs the same with 3 or 3,000 of them."""

    def __init__(self) -> None:
        self.by_key: dict[SubjectKey, tuple[Rule, SubjectKey]] = {}
        self.vcpus_of: dict[int, tuple[Rule, SubjectKey]] = {}  # domid -> a claimed vCPU's

    def add(self, key: SubjectKey, rule: Rule, subject: SubjectKey) -> None:
        self.by_key.setdefault(key, (rule, subject))
        if key[0] == "vcpu":
            self.vcpus_of.setdefault(key[1], (rule, subject))

    def holder(self, key: SubjectKey) -> tuple[Rule, SubjectKey] | None:
        """Who took ``key``, or something it covers or is covered by."""
        found = self.by_key.get(key)
        if found is None and key[0] == "vcpu":
            found = self.by_key.get(("domain", key[1]))
        if found is None and key[0] == "domain":
            found = self.vcpus_of.get(key[1])
        return found


@dataclass(slots=True)
class _Match:
    rule: Rule
    subject: Subject
    key: SubjectKey
    started: bool | None  # dead band: True if switched on now, False if already on


def decide(
    state: HostView, event: Event, now: float, rules: RuleSet, memory: Memory
) -> tuple[list[Decision], Memory]:
    """The decisions for ``event`` at ``now``, and the engine's next memory."""
    pending = dict(memory.pending)
    latched = set(memory.latched)
    last_act = dict(memory.last_act)
    recent = [t for t in memory.recent if now - t < BUDGET_WINDOW_S]

    matches: list[_Match] = []
    for rule in rules.by_event.get(event.type, ()):
        matches.extend(_evaluate(rule, state, event, pending, latched))
    matches.sort(key=lambda m: (m.rule.dry_run, -m.rule.priority, m.rule.name, m.key))

    decisions: list[Decision] = []
    claims = _Claims()
    for m in matches:
        decisions.append(_settle(m, state, event, now, rules, pending, last_act, recent, claims))

    if event.type == "tick":
        _prune(state, rules, now, pending, latched, last_act)
    elif event.type == "domain.destroy":
        _forget_domain(event.domid, pending, latched, last_act)
    new_memory = Memory(pending, frozenset(latched), last_act, tuple(recent))
    return decisions, new_memory


def _bind(env: list[Any], rule: Rule, subject: Subject) -> None:
    """Put the subject (and, for a vCPU or backend, its domain) in its slots."""
    if rule.for_each == "host":
        return
    env[FIRST_FREE_SLOT] = subject
    if isinstance(subject, VcpuView | BackendView):
        env[FIRST_FREE_SLOT + 1] = subject.domain


def _evaluate(
    rule: Rule,
    state: HostView,
    event: Event,
    pending: dict[MemoryKey, float],
    latched: set[MemoryKey],
) -> list[_Match]:
    env: list[Any] = [None] * rule.env_size
    env[HOST] = state
    env[EVENT] = event
    out: list[_Match] = []
    when = rule.when.fast if rule.when is not None else None
    start = rule.start.fast if rule.start is not None else None
    stop = rule.stop.fast if rule.stop is not None else None
    for subject in subjects_for(state, event, rule.for_each):
        _bind(env, rule, subject)
        key = key_of(subject)
        mkey = (rule.name, key)
        started: bool | None = None
        if start is not None and stop is not None:
            if mkey in latched:
                if stop(env):
                    latched.discard(mkey)
                    pending.pop(mkey, None)
                    continue
                started = False
            elif start(env):
                latched.add(mkey)
                started = True
            else:
                pending.pop(mkey, None)
                continue
        if when is not None and not when(env):
            pending.pop(mkey, None)
            continue
        found = True
        for b in rule.bindings:
            obj = b.expr.fast(env)
            if obj is None:
                found = False
                break
            env[b.slot] = obj
        if not found:
            pending.pop(mkey, None)
            continue
        out.append(_Match(rule, subject, key, started))
    return out


def _trace_and_action(m: _Match, state: HostView, event: Event) -> tuple[list[TraceStep], Action]:
    """Evaluate the match again, traced, and build its action."""
    rule = m.rule
    trace: list[TraceStep] = []
    env: list[Any] = [None] * rule.env_size
    env[HOST] = state
    env[EVENT] = event
    _bind(env, rule, m.subject)
    env[TRACE] = trace
    if rule.start is not None and rule.stop is not None:
        band = rule.start if m.started else rule.stop
        band.traced(env)
        word = "switched on by start" if m.started else "on; stop not met"
        trace.append(TraceStep("dead band", (), word))
    if rule.when is not None:
        rule.when.traced(env)
    for b in rule.bindings:
        env[b.slot] = b.expr.traced(env)
    env[TRACE] = None
    values = {
        p.name: p.expr.fast(env) if p.expr is not None else p.value for p in rule.params
    }
    return trace, build_action(rule.action_type, values)


def _settle(
    m: _Match,
    state: HostView,
    event: Event,
    now: float,
    rules: RuleSet,
    pending: dict[MemoryKey, float],
    last_act: dict[MemoryKey, float],
    recent: list[float],
    claims: _Claims,
) -> Decision:
    rule = m.rule
    mkey = (rule.name, m.key)
    trace, action = _trace_and_action(m, state, event)

    def suppressed(reason: Reason, detail: str) -> Decision:
        return Decision(rule.name, m.key, Outcome.SUPPRESSED, action, reason, detail,
                        rule.priority, tuple(trace))

    since = pending.setdefault(mkey, now)
    if now - since < rule.hold_s:
        return suppressed(Reason.HOLD, f"true for {now - since:.6g} s of {rule.hold_s:.6g} s")
    last = last_act.get(mkey)
    if last is not None and now - last < rule.cooldown_s:
        return suppressed(Reason.COOLDOWN, f"acted {now - last:.6g} s ago; cooldown "
                                           f"{rule.cooldown_s:.6g} s")
    changes_host = ACTIONS[rule.action_type].changes_host
    touched = (m.key, *action.targets()) if changes_host else ()
    for t in touched:
        holder = claims.holder(t)
        if holder is not None:
            winner, winner_subject = holder
            rank = "higher priority" if winner.priority > rule.priority else "same priority"
            return suppressed(Reason.CONFLICT,
                              f"lost to rule {winner.name!r} ({rank} {winner.priority}) "
                              f"acting on {format_key(winner_subject)}")
    if changes_host and len(recent) >= rules.budget_per_minute:
        return suppressed(Reason.BUDGET, f"{len(recent)} actions in the last "
                                         f"{BUDGET_WINDOW_S:.0f} s; budget "
                                         f"{rules.budget_per_minute}")
    last_act[mkey] = now
    if rule.dry_run:
        return Decision(rule.name, m.key, Outcome.DRY_RUN, action, None, "", rule.priority,
                        tuple(trace))
    for t in touched:
        claims.add(t, rule, m.key)
    if changes_host:
        recent.append(now)
    return Decision(rule.name, m.key, Outcome.ACT, action, None, "", rule.priority, tuple(trace))


def _exists(state: HostView, key: SubjectKey) -> bool:
    kind = key[0]
    if kind == "vcpu":
        return (key[1], key[2]) in state.vcpu_by_key
    if kind == "domain":
        return key[1] in state.domain_by_id
    if kind == "node":
        return key[1] in state.node_by_id
    if kind == "backend":
        return key[1] in state.backend_by_pid
    return True


def _prune(
    state: HostView,
    rules: RuleSet,
    now: float,
    pending: dict[MemoryKey, float],
    latched: set[MemoryKey],
    last_act: dict[MemoryKey, float],
) -> None:
    """Drop memory of rules no longer loaded, subjects gone, cooldowns over."""
    cooldown = {r.name: r.cooldown_s for r in rules.rules}
    for table in (pending, last_act):
        for mkey in list(table):
            name, key = mkey
            if name not in cooldown or not _exists(state, key):
                del table[mkey]
    for mkey, t in list(last_act.items()):
        if now - t >= cooldown[mkey[0]]:
            del last_act[mkey]
    for mkey in list(latched):
        if mkey[0] not in cooldown or not _exists(state, mkey[1]):
            latched.discard(mkey)


def _forget_domain(
    domid: int,
    pending: dict[MemoryKey, float],
    latched: set[MemoryKey],
    last_act: dict[MemoryKey, float],
) -> None:
    """A destroyed domain's id may be reused: its holds and cooldowns must not carry over."""

    def gone(key: SubjectKey) -> bool:
        return key[0] in ("vcpu", "domain") and key[1] == domid

    for table in (pending, last_act):
        for mkey in [k for k in table if gone(k[1])]:
            del table[mkey]
    for mkey in [k for k in latched if gone(k[1])]:
        latched.discard(mkey)
