"""Putting an agent together from its config: rules, journal, audit log, metrics.

``open_agent`` is what ``xnuma run``, ``xnuma demo`` and ``xnuma sim --agent``
use, so all three run the same agent; it closes the journal and the audit log
when the block ends.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import trio

from agent.audit.writer import AuditWriter
from agent.daemon.config import AgentConfig
from agent.daemon.loop import Agent
from agent.daemon.recorder import Recorder
from agent.journal import PinJournal
from agent.rules import RuleReloader
from agent.sdnotify import Notifier
from agent.telemetry.agent_metrics import AgentMetrics
from agent.xenstore.transport import Transport


class SinceStart:
    """Seconds since the first reading: trio's own clock starts at a random offset, so
    a real agent's records carry the time since it started."""

    def __init__(self) -> None:
        self._start: float | None = None

    def __call__(self) -> float:
        now = trio.current_time()
        if self._start is None:
            self._start = now
        return now - self._start


def shipped_rules_dir() -> Path:
    """``rules/`` of a source checkout (the demo's and the simulator's default)."""
    return Path(__file__).resolve().parents[2] / "rules"


@contextlib.contextmanager
def open_agent(
    config: AgentConfig,
    *,
    xenstore: Transport | None = None,
    notifier: Notifier | None = None,
    handle_signals: bool = False,
    watch_rule_files: bool = True,
    keep_records: bool = False,
    clock: Callable[[], float] | None = None,
) -> Iterator[Agent]:
    """An ``Agent`` for ``config``; raises ``RuleLoadError``, ``JournalError`` or
    ``AuditLogError`` (each naming the file) if one of its files cannot be used."""
    rules = RuleReloader([config.rules_dir])
    metrics = AgentMetrics() if (config.metrics_textfile or config.metrics_port) else None
    with contextlib.ExitStack() as stack:
        journal = stack.enter_context(PinJournal(config.journal))
        writer = None
        if config.audit_log:
            writer = stack.enter_context(AuditWriter(config.audit_log))
        recorder = Recorder(writer, metrics, keep=keep_records, clock=clock or SinceStart())
        yield Agent(config, rules=rules, journal=journal, recorder=recorder, xenstore=xenstore,
                    notifier=notifier, metrics=metrics, handle_signals=handle_signals,
                    watch_rule_files=watch_rule_files)
