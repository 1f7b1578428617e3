"""Putting an agent together from its config: rules, journal, audit log, metrics,
and its extensions.

``open_agent`` is what ``xnuma run``, ``xnuma demo`` and ``xnuma sim --agent``
use, so all three run the same agent; it closes the journal and the audit log
when the block ends. ``standard_hooks`` are the extensions all of them run:
placement requests (the config's socket, and xenstore) and dom0 backend
pinning (on the real ``/proc``, or the simulator's dom0).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import trio

from agent.audit.writer import AuditWriter
from agent.backends.hooks import BackendHooks
from agent.backends.procs import ProcessTable
from agent.daemon.config import AgentConfig
from agent.daemon.hooks import AgentHooks
from agent.daemon.loop import Agent
from agent.daemon.recorder import Recorder
from agent.journal import PinJournal
from agent.placement.hooks import PlacementHooks
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


def standard_hooks(
    config: AgentConfig, procs: ProcessTable
) -> Callable[[Recorder], list[AgentHooks]]:
    """Placement (socket ``config.placement_socket`` if any, and xenstore) and
    backend pinning on ``procs``, recording through the agent's recorder."""

    def make(recorder: Recorder) -> list[AgentHooks]:
        return [PlacementHooks(recorder, socket_path=config.placement_socket),
                BackendHooks(recorder, procs)]

    return make


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
    hooks: Callable[[Recorder], Iterable[AgentHooks]] | None = None,
) -> Iterator[Agent]:
    """An ``Agent`` for ``config``; raises ``RuleLoadError``, ``JournalError`` or
    ``AuditLogError`` (each naming the file) if one of its files cannot be used.
    ``hooks`` makes the agent's extensions, which record through its recorder."""
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
                    watch_rule_files=watch_rule_files,
                    hooks=tuple(hooks(recorder)) if hooks is not None else ())
