"""Hot reload: a new rule set on SIGHUP or when a rule file changes, or none.

The reloader owns the current ``RuleSet``. A reload loads and checks every file
into a complete new set first, then swaps it in with one assignment, so the
engine sees the old set or the new one, never a mixture. If the new files fail
the check, the old set keeps running and every error is logged (and handed to
``on_reload``, for the audit log). Changes are noticed by polling the files'
contents, which works on any filesystem and needs no thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import trio

from agent.rules.errors import RuleError, RuleLoadError
from agent.rules.loader import check_paths, expand
from agent.rules.ruleset import RuleSet

log = logging.getLogger("xnuma.rules")

DEFAULT_POLL_S = 2.0


@dataclass(frozen=True, slots=True)
class ReloadResult:
    cause: str  # "sighup", "change" or "manual"
    ok: bool  # the files passed the check
    changed: bool  # a different set is now running
    ruleset: RuleSet  # the set running after this reload
    errors: tuple[RuleError, ...] = ()


def fingerprint(paths: Sequence[str | Path]) -> str:
    """A digest of which rule files exist under ``paths`` and what they hold."""
    files, errors = expand(paths)
    h = hashlib.sha256()
    for e in errors:
        h.update(f"missing:{e.file}\0".encode())
    for f in files:
        h.update(str(f).encode() + b"\0")
        try:
            h.update(f.read_bytes())
        except OSError as exc:
            h.update(f"unreadable:{exc.errno}".encode())
        h.update(b"\0")
    return h.hexdigest()


class RuleReloader:
    """The running rule set, kept up to date with the files under ``paths``."""

    def __init__(
        self,
        paths: Sequence[str | Path],
        *,
        poll_s: float = DEFAULT_POLL_S,
        on_reload: Callable[[ReloadResult], None] | None = None,
    ) -> None:
        """Load the rules now; raises ``RuleLoadError`` if they do not pass the check
        (there is no previous set to fall back on)."""
        self.paths = list(paths)
        self.poll_s = poll_s
        self.on_reload = on_reload
        self._seen = fingerprint(self.paths)
        ruleset, errors = check_paths(self.paths)
        if ruleset is None:
            raise RuleLoadError(errors)
        self.current: RuleSet = ruleset
        self.generation = 0  # bumped at each swap

    def reload(self, cause: str = "manual") -> ReloadResult:
        """Load the files again; swap the new set in only if it passes the check."""
        self._seen = fingerprint(self.paths)
        ruleset, errors = check_paths(self.paths)
        if ruleset is None:
            log.error("rules not reloaded (%s): %d errors; keeping the previous %d rules",
                      cause, len(errors), len(self.current.rules))
            for e in errors:
                log.error("%s", e)
            result = ReloadResult(cause, False, False, self.current, tuple(errors))
        else:
            changed = ruleset.digest != self.current.digest
            if changed:
                self.current = ruleset
                self.generation += 1
                log.info("rules reloaded (%s): %d rules from %d files", cause,
                         len(ruleset.rules), len(ruleset.files))
            result = ReloadResult(cause, True, changed, self.current)
        if self.on_reload is not None:
            self.on_reload(result)
        return result

    def changed_on_disk(self) -> bool:
        return fingerprint(self.paths) != self._seen

    async def run(
        self, *, sighup: bool = True, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Reload on SIGHUP and on file changes until cancelled. Use with
        ``nursery.start``: once started, the SIGHUP handler is in place."""
        with contextlib.ExitStack() as stack:
            signals = (
                stack.enter_context(trio.open_signal_receiver(signal.SIGHUP)) if sighup else None
            )
            async with trio.open_nursery() as nursery:
                if signals is not None:
                    nursery.start_soon(self._on_signals, signals)
                nursery.start_soon(self._poll)
                task_status.started()

    async def _on_signals(self, signals: AsyncIterator[int]) -> None:
        async for _ in signals:
            self.reload("sighup")

    async def _poll(self) -> None:
        while True:
            await trio.sleep(self.poll_s)
            if self.changed_on_disk():
                self.reload("change")
