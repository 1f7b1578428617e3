"""Rule files: TOML in, a checked and compiled ``RuleSet`` out, or every error.

A file holds ``[[rule]]`` tables and at most one ``[engine]`` table in the whole
set. Each problem becomes a ``RuleError`` naming the file, rule, line and
column; checking never stops at the first problem of a file.
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.rules.actions import ACTIONS, param_problem
from agent.rules.catalogue import COMMON_NAMES, FOR_EACH
from agent.rules.errors import RuleError, RuleLoadError
from agent.rules.events import EVENT_TYPES
from agent.rules.expr import (
    FIRST_FREE_SLOT,
    FUNCTIONS,
    Compiled,
    ExprError,
    Scope,
    Slots,
    compile_expr,
    suggest,
)
from agent.rules.ruleset import DEFAULT_BUDGET_PER_MINUTE, Binding, Param, Rule, RuleSet
from agent.rules.tomlpos import PathKey, Pos, Span, scan
from agent.rules.types import BOOL, FLOAT, INT, NODESET, STR, Type

RULE_KEYS: Mapping[str, str] = {
    "name": "unique name, lower case: letters, digits, '-', '_', '.'",
    "description": "what the rule is for (free text)",
    "on": "event types that make it run, e.g. [\"vcpu.off_node\", \"tick\"]",
    "for_each": "what it is evaluated for: vcpu, domain, node, backend or host",
    "when": "condition (an expression); default true",
    "start": "dead band: condition that switches the rule on for a subject",
    "stop": "dead band: condition that switches it off again",
    "with": "table of name = first/argmin/argmax(...) finders the action can use",
    "hold": "how long the condition must stay true before acting: 30, \"30s\", \"2m\"",
    "cooldown": "least time between two actions of this rule on one subject",
    "priority": "integer; higher wins when rules want the same subject",
    "dry_run": "true: decide and record, never act",
    "action": "table: type = \"...\" and its parameters",
}
FILE_KEYS = ("rule", "engine")
ENGINE_KEYS = ("budget_per_minute",)
_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]*\Z")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNIT_S = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}
_TOML_AT = re.compile(r"\(at line (\d+), column (\d+)\)")


@dataclass
class _FileResult:
    rules: list[Rule] = field(default_factory=list)
    budget: int | None = None
    budget_at: Pos = (0, 0)
    errors: list[RuleError] = field(default_factory=list)
    name_at: list[Pos] = field(default_factory=list)  # where each rule's name is


def expand(paths: Iterable[str | Path]) -> tuple[list[Path], list[RuleError]]:
    """Files named, plus ``*.toml`` directly inside directories named (sorted)."""
    files: list[Path] = []
    errors: list[RuleError] = []
    for p in map(Path, paths):
        if p.is_dir():
            files.extend(sorted(f for f in p.glob("*.toml") if f.is_file()))
        elif p.is_file():
            files.append(p)
        else:
            errors.append(RuleError(str(p), 0, 0, "", "no such file or directory"))
    return files, errors


def check_paths(paths: Iterable[str | Path]) -> tuple[RuleSet | None, list[RuleError]]:
    """Load every rule file under ``paths``; the set, or None and all errors."""
    files, errors = expand(paths)
    sources: list[tuple[str, str]] = []
    for f in files:
        try:
            sources.append((str(f), f.read_text(encoding="utf-8")))
        except (OSError, UnicodeDecodeError) as exc:
            errors.append(RuleError(str(f), 0, 0, "", f"cannot read: {exc}"))
    ruleset, more = check_sources(sources)
    errors.extend(more)
    return (ruleset if not errors else None), sorted(errors)


def load_paths(paths: Iterable[str | Path]) -> RuleSet:
    """Like ``check_paths`` but raises ``RuleLoadError`` carrying every error."""
    ruleset, errors = check_paths(paths)
    if ruleset is None:
        raise RuleLoadError(errors)
    return ruleset


def check_sources(sources: Sequence[tuple[str, str]]) -> tuple[RuleSet | None, list[RuleError]]:
    """(file name, text) pairs -> the rule set, or None and every error."""
    errors: list[RuleError] = []
    rules: list[Rule] = []
    seen: dict[str, tuple[str, Pos]] = {}
    budget: int | None = None
    budget_file = ""
    digest = hashlib.sha256()
    for name, text in sources:
        digest.update(name.encode() + b"\0" + text.encode("utf-8", "replace") + b"\0")
        result = check_file(text, name)
        errors.extend(result.errors)
        for rule, (line_at, col_at) in zip(result.rules, result.name_at, strict=True):
            if rule.name in seen:
                other_file, (line, _) = seen[rule.name]
                errors.append(RuleError(name, line_at, col_at, rule.name,
                                        f"rule name already used at {other_file}:{line}"))
                continue
            seen[rule.name] = (name, (line_at, col_at))
            rules.append(rule)
        if result.budget is not None:
            if budget is not None:
                line, col = result.budget_at
                errors.append(RuleError(name, line, col, "",
                                        f"[engine] is already set in {budget_file}; the "
                                        "budget is host-wide, set it once"))
            else:
                budget, budget_file = result.budget, name
    if errors:
        return None, sorted(errors)
    ruleset = RuleSet.of(
        tuple(rules),
        budget if budget is not None else DEFAULT_BUDGET_PER_MINUTE,
        tuple(n for n, _ in sources),
        digest.hexdigest(),
    )
    return ruleset, []


def check_file(text: str, file: str) -> _FileResult:
    """Every rule of one file, or every error in it."""
    out = _FileResult()
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        m = _TOML_AT.search(str(exc))
        line, col = (int(m.group(1)), int(m.group(2))) if m else (1, 1)
        msg = _TOML_AT.sub("", str(exc)).strip()
        out.errors.append(RuleError(file, line, col, "", f"TOML syntax: {msg}"))
        return out
    spans = scan(text)
    _FileChecker(file, spans, out).document(doc)
    return out


class _FileChecker:
    def __init__(self, file: str, spans: Mapping[PathKey, Span], out: _FileResult) -> None:
        self.file = file
        self.spans = spans
        self.out = out

    def where(self, path: PathKey, value: bool = False) -> Pos:
        """Position of a key (or its value), else of the nearest enclosing table."""
        for n in range(len(path), -1, -1):
            span = self.spans.get(path[:n])
            if span is not None:
                return span.value if value and n == len(path) else span.key
        return (1, 1)

    def error(self, pos: Pos, rule: str, message: str) -> None:
        self.out.errors.append(RuleError(self.file, pos[0], pos[1], rule, message))

    def document(self, doc: Mapping[str, Any]) -> None:
        for key in doc:
            if key not in FILE_KEYS:
                hint = suggest(key, FILE_KEYS)
                self.error(self.where((key,)), "",
                           f"unknown key {key!r}{hint} (a rule file holds [[rule]] tables "
                           "and one [engine] table)")
        if "engine" in doc:
            self.engine(doc["engine"])
        rules = doc.get("rule", [])
        if not isinstance(rules, list) or not all(isinstance(r, dict) for r in rules):
            self.error(self.where(("rule",)), "", "rules are [[rule]] tables")
            return
        for i, table in enumerate(rules):
            rule = _RuleChecker(self, i, table).check()
            if rule is not None:
                self.out.rules.append(rule)

    def engine(self, table: Any) -> None:
        at = self.where(("engine",))
        if not isinstance(table, dict):
            self.error(at, "", "[engine] must be a table")
            return
        for key in table:
            if key not in ENGINE_KEYS:
                self.error(self.where(("engine", key)), "",
                           f"unknown key {key!r} in [engine]{suggest(key, ENGINE_KEYS)} "
                           f"(keys: {', '.join(ENGINE_KEYS)})")
        budget = table.get("budget_per_minute", DEFAULT_BUDGET_PER_MINUTE)
        if not _is_int(budget) or budget < 0:
            self.error(self.where(("engine", "budget_per_minute"), True), "",
                       "budget_per_minute must be an integer >= 0 (actions per minute, "
                       "host-wide)")
            return
        self.out.budget = budget
        self.out.budget_at = at


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def parse_duration(value: Any) -> float | None:
    """Seconds from 30, 2.5, "30s", "500ms", "2m", "1h", "1m30s"; None if invalid."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    text = value.replace(" ", "")
    total, pos = 0.0, 0
    for m in _DURATION.finditer(text):
        if m.start() != pos:
            return None
        total += float(m.group(1)) * _UNIT_S[m.group(2)]
        pos = m.end()
    return total if pos == len(text) and text else None


class _RuleChecker:
    def __init__(self, parent: _FileChecker, index: int, table: Mapping[str, Any]) -> None:
        self.p = parent
        self.i = index
        self.t = table
        raw = table.get("name")
        self.name = raw if isinstance(raw, str) and raw else f"#{index + 1}"
        self.failed = False

    def path(self, *keys: str | int) -> PathKey:
        return ("rule", self.i, *keys)

    def err(self, pos: Pos, message: str) -> None:
        self.failed = True
        self.p.error(pos, self.name, message)

    def at(self, *keys: str | int, value: bool = False) -> Pos:
        return self.p.where(self.path(*keys), value)

    def expr_errors(self, keys: tuple[str | int, ...], errors: list[ExprError]) -> None:
        span = self.p.spans.get(self.path(*keys))
        for e in errors:
            pos = span.char(e.index) if span is not None else self.at(*keys, value=True)
            self.err(pos, f"{'.'.join(str(k) for k in keys)}: {e.message}")

    def check(self) -> Rule | None:
        t = self.t
        for key in t:
            if key not in RULE_KEYS:
                self.err(self.at(key), f"unknown key {key!r}{suggest(key, RULE_KEYS)} "
                                       f"(keys: {', '.join(RULE_KEYS)})")
        name = t.get("name")
        if not isinstance(name, str) or not _NAME.match(name):
            why = "missing 'name'" if name is None else f"bad name {name!r}"
            self.err(self.at("name", value=True),
                     f"{why}: a rule needs a unique name of lower-case letters, digits, "
                     "'-', '_' and '.'")
        description = t.get("description", "")
        if not isinstance(description, str):
            self.err(self.at("description", value=True), "description must be a string")
        on = self.events()
        for_each = t.get("for_each")
        if for_each not in FOR_EACH:
            shown = "missing" if for_each is None else repr(for_each)
            hint = suggest(for_each, FOR_EACH) if isinstance(for_each, str) else ""
            self.err(self.at("for_each", value=True),
                     f"for_each is {shown}, not one of {', '.join(FOR_EACH)}{hint}")
            for_each = None
        hold = self.duration("hold")
        cooldown = self.duration("cooldown")
        priority = t.get("priority", 0)
        if not _is_int(priority):
            self.err(self.at("priority", value=True), "priority must be an integer")
        dry_run = t.get("dry_run", False)
        if not isinstance(dry_run, bool):
            self.err(self.at("dry_run", value=True), "dry_run must be true or false")
        if for_each is None or on is None:
            self.action_shape()  # still report what can be checked without a scope
            return None
        return self.compile(on, for_each, hold, cooldown, priority, dry_run, description)

    def events(self) -> tuple[str, ...] | None:
        on = self.t.get("on")
        if not isinstance(on, list) or not on or not all(isinstance(e, str) for e in on):
            self.err(self.at("on", value=True),
                     "on must be a non-empty list of event types, e.g. on = [\"tick\"]; "
                     f"types: {', '.join(EVENT_TYPES)}")
            return None
        for j, e in enumerate(on):
            if e not in EVENT_TYPES:
                self.err(self.at("on", j, value=True),
                         f"unknown event type {e!r}{suggest(e, EVENT_TYPES)} "
                         f"(types: {', '.join(EVENT_TYPES)})")
        # The known ones still serve to check the expressions (the rule is refused anyway).
        return tuple(dict.fromkeys(e for e in on if e in EVENT_TYPES))

    def duration(self, key: str) -> float:
        if key not in self.t:
            return 0.0
        seconds = parse_duration(self.t[key])
        if seconds is None:
            self.err(self.at(key, value=True),
                     f"{key} must be seconds (a number >= 0) or a duration such as \"30s\", "
                     "\"500ms\", \"2m\", \"1h\"")
            return 0.0
        return seconds

    def action_shape(self) -> tuple[str, Mapping[str, Any]] | None:
        action = self.t.get("action")
        if not isinstance(action, dict):
            self.err(self.at("action"),
                     "missing [rule.action] table; type = one of " + ", ".join(ACTIONS))
            return None
        kind = action.get("type")
        if not isinstance(kind, str) or kind not in ACTIONS:
            hint = suggest(kind, ACTIONS) if isinstance(kind, str) else ""
            self.err(self.at("action", "type", value=True),
                     f"action type {kind!r} is not one of {', '.join(ACTIONS)}{hint}")
            return None
        spec = ACTIONS[kind]
        for key in action:
            if key != "type" and key not in spec.params:
                self.err(self.at("action", key),
                         f"unknown parameter {key!r} of {kind}{suggest(key, spec.params)} "
                         f"(parameters: {', '.join(spec.params)})")
        for p in spec.params.values():
            if p.required and p.name not in action:
                self.err(self.at("action"), f"action {kind} needs parameter {p.name!r} "
                                            f"({p.type}: {p.doc})")
        return kind, action

    def compile(
        self,
        on: tuple[str, ...],
        for_each: str,
        hold: float,
        cooldown: float,
        priority: Any,
        dry_run: Any,
        description: Any,
    ) -> Rule | None:
        t = self.t
        names: dict[str, tuple[Type, int]] = {n: (n, k + 1) for k, n in enumerate(COMMON_NAMES)}
        for k, n in enumerate(FOR_EACH[for_each]):
            names[n] = (n, FIRST_FREE_SLOT + k)
        raw_with = t.get("with", {})
        if not isinstance(raw_with, dict):
            self.err(self.at("with"), "with must be a table of name = \"first(...)\" entries")
            raw_with = {}
        slots = Slots(FIRST_FREE_SLOT + len(FOR_EACH[for_each]) + len(raw_with))
        later = "is bound in [rule.with]; it can be used in later [rule.with] entries and " \
                "in the action, not in when/start/stop"
        base = Scope(dict(names), on, {n: later for n in raw_with})

        when = self.condition("when", base, slots)
        start = self.condition("start", base, slots)
        stop = self.condition("stop", base, slots)
        if ("start" in t) != ("stop" in t):
            missing = "stop" if "start" in t else "start"
            self.err(self.at("start" if "start" in t else "stop"),
                     f"a dead band needs both 'start' and 'stop'; {missing!r} is "
                     "missing")

        bindings: list[Binding] = []
        slot = FIRST_FREE_SLOT + len(FOR_EACH[for_each])
        scope_names = dict(names)
        for bname, text in raw_with.items():
            if not _IDENT.match(bname) or bname in scope_names or bname in FUNCTIONS:
                self.err(self.at("with", bname),
                         f"with name {bname!r} must be a new identifier (not "
                         f"{', '.join(scope_names)} or a function)")
                slot += 1
                continue
            if not isinstance(text, str):
                self.err(self.at("with", bname, value=True), "a with entry is a string")
                slot += 1
                continue
            scope = Scope(dict(scope_names), on,
                          {n: later for n in raw_with if n not in scope_names})
            compiled, errors = compile_expr(text, scope, slots, finder=True)
            self.expr_errors(("with", bname), errors)
            if compiled is not None:
                bindings.append(Binding(bname, compiled, slot))
                scope_names[bname] = (compiled.type, slot)
            slot += 1

        shape = self.action_shape()
        params = self.params(shape, Scope(scope_names, on), slots) if shape else None
        if self.failed or shape is None or params is None:
            return None
        line = self.p.where(self.path())[0]
        self.p.out.name_at.append(self.at("name", value=True))
        return Rule(
            name=self.name, file=self.p.file, line=line, description=description,
            on=on, for_each=for_each, when=when, start=start, stop=stop,
            bindings=tuple(bindings), hold_s=hold, cooldown_s=cooldown, priority=priority,
            dry_run=dry_run, action_type=shape[0], params=params, env_size=slots.size,
        )

    def condition(self, key: str, scope: Scope, slots: Slots) -> Compiled | None:
        if key not in self.t:
            return None
        text = self.t[key]
        if not isinstance(text, str):
            self.err(self.at(key, value=True), f"{key} must be a string holding a condition")
            return None
        compiled, errors = compile_expr(text, scope, slots, want=BOOL)
        self.expr_errors((key,), errors)
        return compiled

    def params(
        self, shape: tuple[str, Mapping[str, Any]], scope: Scope, slots: Slots
    ) -> tuple[Param, ...] | None:
        kind, table = shape
        spec = ACTIONS[kind]
        params: list[Param] = []
        ok = True
        for pname, p in spec.params.items():
            if pname not in table:
                continue
            raw = table[pname]
            if isinstance(raw, str) and p.type == NODESET and raw.strip() in ("home", "soft"):
                # A natural guess: the sets are expressions over the rule's names.
                ok = False
                field = "[domain.home_node]" if raw.strip() == "home" else "domain.soft_nodes"
                self.err(self.at("action", pname, value=True),
                         f"action.{pname}: {raw.strip()!r} is not a name; node sets are "
                         f"expressions, e.g. {pname} = \"{field}\" or {pname} = [0, 1]")
                continue
            if isinstance(raw, str):
                compiled, errors = compile_expr(raw, scope, slots, want=p.type)
                self.expr_errors(("action", pname), errors)
                if compiled is None:
                    ok = False
                    continue
                params.append(Param(pname, compiled))
                continue
            literal = _literal(raw, p.type)
            if literal is None:
                ok = False
                self.err(self.at("action", pname, value=True),
                         f"parameter {pname!r} of {kind} is {p.type}; got {raw!r} (strings "
                         "are expressions: write \"'text'\" for a literal string)")
                continue
            problem = param_problem(p, literal)
            if problem is not None:
                ok = False
                self.err(self.at("action", pname, value=True),
                         f"action.{pname}: parameter {pname!r} of {kind} {problem} "
                         f"({p.doc})")
                continue
            params.append(Param(pname, None, literal))
        return tuple(params) if ok else None


def _literal(raw: Any, want: Type) -> Any:
    if want == INT and _is_int(raw):
        return raw
    if want == FLOAT and isinstance(raw, int | float) and not isinstance(raw, bool):
        return float(raw)
    if want == NODESET and isinstance(raw, list) and all(_is_int(v) for v in raw):
        return frozenset(raw)
    if want == BOOL and isinstance(raw, bool):
        return raw
    if want == STR:
        return None  # strings are expressions; a bare TOML string never gets here
    return None
