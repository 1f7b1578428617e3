"""Everything the agent saw, decided and did: audit records, metrics and counts.

One ``Recorder`` per agent. Each record goes to the audit log (when there is
one), counts towards the Prometheus metrics (when exported) and towards
``counts`` (what the agent reports, e.g. to the simulator). With ``keep``,
the record bodies are also kept in memory with their sequence numbers (tests).
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import trio

from agent.audit import records
from agent.audit.records import Body, Subject
from agent.audit.writer import AuditWriter
from agent.rules import Decision, Event, ReloadResult, RuleSet, VcpuSwap
from agent.rules.actions import action_record
from agent.rules.events import default_of
from agent.rules.subjects import SubjectKey
from agent.state import HostView
from agent.telemetry.agent_metrics import AgentMetrics

VERSION = "0.1.0"
_EVENT_SUBJECT = ("domid", "vcpu", "node")


def subject_of(key: SubjectKey, view: HostView | None) -> Subject:
    """The audit subject for a rule engine subject key, named from ``view``."""
    kind = key[0]
    if kind in ("vcpu", "domain"):
        d = view.domain_by_id.get(key[1]) if view is not None else None
        return Subject(domain=d.name if d else None, domid=key[1], uuid=d.uuid if d else None,
                       vcpu=key[2] if kind == "vcpu" else None)
    if kind == "node":
        return Subject(node=key[1])
    if kind == "backend":
        b = view.backend_by_pid.get(key[1]) if view is not None else None
        return Subject(backend=str(key[1]), domid=b.domid if b else None)
    return Subject()


def vcpu_subject(view: HostView | None, domid: int, vcpu: int | None = None,
                 node: int | None = None) -> Subject:
    d = view.domain_by_id.get(domid) if view is not None else None
    return Subject(domain=d.name if d else None, domid=domid, uuid=d.uuid if d else None,
                   vcpu=vcpu, node=node)


def _file_hash(path: str) -> str:
    try:
        return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    except OSError:
        return "unreadable"


class Recorder:
    def __init__(
        self,
        writer: AuditWriter | None = None,
        metrics: AgentMetrics | None = None,
        *,
        clock: Callable[[], float] = trio.current_time,
        keep: bool = False,
    ) -> None:
        self.writer = writer
        self.metrics = metrics
        self.clock = clock
        self.kept: list[tuple[int, Body]] | None = [] if keep else None
        self.counts: Counter[str] = Counter()
        self._seq = 0
        self._file_hashes: dict[str, str] = {}
        self._hashes_for = ""

    # -- the one way out ----------------------------------------------------------

    def append(self, body: Body, *, sync: bool = False) -> int:
        now = self.clock()
        if self.writer is not None:
            seq = self.writer.append(body, mono=now, sync=sync).seq
        else:
            self._seq += 1
            seq = self._seq
        if self.kept is not None:
            self.kept.append((seq, body))
        if self.metrics is not None:
            self.metrics.audit_record(str(body["kind"]))
        return seq

    # -- records ------------------------------------------------------------------

    def start(self, config: Mapping[str, Any], backend: str, dry_run: bool) -> int:
        if self.metrics is not None:
            import time

            self.metrics.start_time.set(time.time())
        return self.append(records.agent_start(VERSION, os.getpid(), dry_run, backend,
                                               dict(config)), sync=True)

    def stop(self, reason: str, exit_code: int) -> int:
        return self.append(records.agent_stop(reason, exit_code), sync=True)

    def event(self, event: Event, view: HostView | None = None) -> int:
        self.counts[f"event:{event.type}"] += 1
        subject = {k: getattr(event, k) for k in _EVENT_SUBJECT
                   if getattr(event, k) != default_of(k)}
        dom = view.domain_by_id.get(event.domid) if view is not None else None
        if event.name or dom is not None:
            subject["domain"] = event.name or (dom.name if dom is not None else "")
        if dom is not None:
            subject["uuid"] = dom.uuid
        data = {k: getattr(event, k) for k in ("name", "off_s", "load", "previous", "pid",
                                               "kind", "request")
                if getattr(event, k) != default_of(k)}
        return self.append(records.event(event.type, subject, data))

    def decision(
        self, d: Decision, ruleset: RuleSet, view: HostView | None, event_seq: int | None,
        *, forced_dry_run: bool = False,
    ) -> int:
        outcome = "dry-run" if forced_dry_run and d.acts else d.outcome.value
        self.counts[f"decision:{outcome}"] += 1
        rule = ruleset.rule(d.rule)
        peer = None
        if isinstance(d.action, VcpuSwap):
            peer = vcpu_subject(view, d.action.with_domid, d.action.with_vcpu)
        suppressed_by = d.reason.value if d.reason is not None else None
        detail = d.detail or ("the agent runs with --dry-run" if forced_dry_run and d.acts
                              else None)
        if self.metrics is not None:
            self.metrics.decision(d.rule, outcome, suppressed_by)
        return self.append(records.decision(
            d.rule, self._rule_hash(ruleset, rule.file if rule else None),
            subject_of(d.subject, view), outcome,
            rule.description if rule is not None and rule.description else d.rule,
            d.trace, suppressed_by=suppressed_by, detail=detail,
            rule_file=rule.file if rule is not None else None, peer=peer, event_seq=event_seq,
            action=action_record(d.action), priority=d.priority,
        ))

    def action(
        self, type: str, params: Mapping[str, Any], subject: Subject, outcome: str, *,
        error: str | None = None, attempts: int = 1, duration: float = 0.0,
        decision_seq: int | None = None, **extra: Any,
    ) -> int:
        self.counts[f"action:{type}:{outcome}"] += 1
        if self.metrics is not None:
            self.metrics.action(type, outcome)
        return self.append(records.action(
            type, params, subject, outcome, error=error, attempts=attempts,
            duration=duration, decision_seq=decision_seq, **extra,
        ))

    def reload(self, result: ReloadResult) -> int:
        self.counts[f"reload:{'ok' if result.ok else 'rejected'}"] += 1
        if self.metrics is not None:
            self.metrics.rule_reload(result.ok)
        files = {f: _file_hash(f) for f in result.ruleset.files}
        return self.append(records.rule_reload(
            result.ok, files, len(result.ruleset.rules), [str(e) for e in result.errors],
            cause=result.cause, changed=result.changed,
        ))

    def _rule_hash(self, ruleset: RuleSet, file: str | None) -> str:
        if self._hashes_for != ruleset.digest:
            self._file_hashes = {}
            self._hashes_for = ruleset.digest
        if file is None:
            return ruleset.digest[:16]
        found = self._file_hashes.get(file)
        if found is None:
            found = self._file_hashes[file] = _file_hash(file)
        return found

    def action_counts(self) -> dict[str, int]:
        """Carried-out actions by type (``ok`` outcomes), for reports."""
        out: dict[str, int] = {}
        for key, n in self.counts.items():
            kind, _, rest = key.partition(":")
            if kind == "action" and rest.endswith(":ok"):
                out[rest[: -len(":ok")]] = out.get(rest[: -len(":ok")], 0) + n
        return dict(sorted(out.items()))
