"""Loaded rules: what the loader produces and ``decide`` consumes."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.rules.expr import Compiled

DEFAULT_BUDGET_PER_MINUTE = 60


@dataclass(frozen=True, slots=True)
class Binding:
    """A ``[rule.with]`` entry: a name bound to the object a finder picks."""

    name: str
    expr: Compiled
    slot: int


@dataclass(frozen=True, slots=True)
class Param:
    """An action parameter: a literal, or an expression evaluated per decision."""

    name: str
    expr: Compiled | None
    value: Any = None  # the literal, when expr is None


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    file: str
    line: int
    description: str
    on: tuple[str, ...]
    for_each: str
    when: Compiled | None
    start: Compiled | None  # start/stop: a dead band; the rule is live from a
    stop: Compiled | None  # true ``start`` until a true ``stop``, per subject
    bindings: tuple[Binding, ...]
    hold_s: float
    cooldown_s: float
    priority: int
    dry_run: bool
    action_type: str
    params: tuple[Param, ...]
    env_size: int


@dataclass(frozen=True, slots=True)
class RuleSet:
    rules: tuple[Rule, ...]
    budget_per_minute: int = DEFAULT_BUDGET_PER_MINUTE
    files: tuple[str, ...] = ()
    digest: str = ""  # sha256 of the sources, to tell rule sets apart in logs
    by_event: Mapping[str, tuple[Rule, ...]] = field(default_factory=dict)

    @staticmethod
    def of(
        rules: tuple[Rule, ...],
        budget_per_minute: int = DEFAULT_BUDGET_PER_MINUTE,
        files: tuple[str, ...] = (),
        digest: str = "",
    ) -> RuleSet:
        ordered = tuple(sorted(rules, key=lambda r: (-r.priority, r.name)))
        by_event: dict[str, list[Rule]] = {}
        for rule in ordered:
            for event_type in rule.on:
                by_event.setdefault(event_type, []).append(rule)
        return RuleSet(
            ordered, budget_per_minute, files, digest, {k: tuple(v) for k, v in by_event.items()}
        )

    def rule(self, name: str) -> Rule | None:
        return next((r for r in self.rules if r.name == name), None)


EMPTY = RuleSet.of(())
