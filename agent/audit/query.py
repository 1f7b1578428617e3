"""Filters over audit entries, and the time syntax ``--since``/``--until`` accept."""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from agent.audit import records
from agent.audit.reader import Entry

_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?)\s*(s|m|h|d|w)$")
_UNIT = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_time(text: str, now: Callable[[], float] = time.time) -> float:
    """Epoch seconds from ISO 8601 (naive means UTC), ``-10m`` style, ``@EPOCH`` or ``now``."""
    text = text.strip()
    if text == "now":
        return now()
    m = _RELATIVE.match(text)
    if m:
        return now() - float(m.group(1)) * _UNIT[m.group(2)]
    if text.startswith("@"):
        try:
            return float(text[1:])
        except ValueError:
            pass
    else:
        try:
            parsed = datetime.fromisoformat(text)
        except ValueError:
            pass
        else:
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            return parsed.timestamp()
    raise ValueError(
        f"bad time {text!r}: use ISO 8601 (2024-05-01T12:00:00Z), a relative time "
        "like -10m / -2h / -1d, @EPOCH-SECONDS or now"
    )


def party_matches(party: dict[str, Any], domain: str | None, vcpu: int | None) -> bool:
    """Does a subject/peer map name this domain (name, domid or uuid) and vCPU?"""
    if domain is not None and domain not in (
        party.get("domain"),
        str(party.get("domid")) if party.get("domid") is not None else None,
        party.get("uuid"),
    ):
        return False
    return vcpu is None or party.get("vcpu") == vcpu


def about(entry: Entry, domain: str | None, vcpu: int | None) -> bool:
    if domain is None and vcpu is None:
        return True
    return party_matches(entry.subject, domain, vcpu) or (
        bool(entry.peer) and party_matches(entry.peer, domain, vcpu)
    )


@dataclass(slots=True)
class Filter:
    since: float | None = None  # wall clock, seconds since the epoch
    until: float | None = None
    domain: str | None = None
    vcpu: int | None = None
    rule: str | None = None
    outcome: str | None = None
    kinds: frozenset[str] = frozenset()
    # Decisions taken by ``rule``: their actions match too (actions name no rule).
    _rule_decisions: set[int] = field(default_factory=set, init=False, repr=False)

    def __post_init__(self) -> None:
        unknown = self.kinds - records.KINDS
        if unknown:
            raise ValueError(
                f"unknown kind(s) {', '.join(sorted(unknown))}; "
                f"known: {', '.join(sorted(records.KINDS))}"
            )

    def matches(self, entry: Entry) -> bool:
        """Stateful for ``rule``: feed entries in log order."""
        if entry.kind == records.DECISION and self.rule and entry.get("rule") == self.rule:
            self._rule_decisions.add(entry.seq)
        if self.since is not None and entry.wall < self.since:
            return False
        if self.until is not None and entry.wall > self.until:
            return False
        if self.kinds and entry.kind not in self.kinds:
            return False
        if self.rule is not None:
            own = entry.kind == records.DECISION and entry.get("rule") == self.rule
            caused = entry.kind == records.ACTION and entry.get("decision") in self._rule_decisions
            if not (own or caused):
                return False
        if self.outcome is not None and entry.get("outcome") != self.outcome:
            return False
        return about(entry, self.domain, self.vcpu)

    def apply(self, entries: Iterable[Entry]) -> Iterator[Entry]:
        for entry in entries:
            if self.matches(entry):
                yield entry
