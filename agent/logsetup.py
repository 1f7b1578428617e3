"""Logging the usual systemd way: one line per message on stderr, levels kept.

Under systemd, stderr is a stream into journald, which stamps each line with
time, unit and pid by itself. A line that starts with ``<N>`` (N a syslog
priority, 0-7) is stored at that priority, so ``journalctl -p warning`` and
the colours work. systemd says the stream is its own by putting the stream's
``device:inode`` in ``$JOURNAL_STREAM``; when stderr is anything else (a
terminal, a pipe, a file) the lines are plain, with a timestamp and level name.

Convention for callers (the daemon loop and everything it calls): nothing is
logged per tick or per poll at INFO or above. INFO is for things an operator
wants to see in ``journalctl -u xnuma`` a few times a day at most: start,
stop, rule reloads, actions taken, backend reconnects. Per-tick and per-event
detail is DEBUG; what the agent decided and why belongs in the audit log.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from typing import Final, TextIO

LEVELS: Final[Mapping[str, int]] = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
}

# syslog(3) priorities: 2 crit, 3 err, 4 warning, 6 info, 7 debug.
_SYSLOG_PRIORITY: Final[tuple[tuple[int, int], ...]] = (
    (logging.CRITICAL, 2),
    (logging.ERROR, 3),
    (logging.WARNING, 4),
    (logging.INFO, 6),
)

PLAIN_FORMAT: Final = "%(asctime)s %(levelname)s %(name)s: %(message)s"
JOURNAL_FORMAT: Final = "%(name)s: %(message)s"


def parse_level(level: str) -> int:
    """``"info"`` (any case) -> ``logging.INFO``; a clear error for anything else."""
    try:
        return LEVELS[level.strip().lower()]
    except KeyError:
        raise ValueError(
            f"log level {level!r}: expected one of {', '.join(LEVELS)}"
        ) from None


def syslog_priority(levelno: int) -> int:
    for threshold, priority in _SYSLOG_PRIORITY:
        if levelno >= threshold:
            return priority
    return 7


def stderr_is_journal(
    stream: TextIO | None = None, env: Mapping[str, str] | None = None
) -> bool:
    """True if ``stream`` (default stderr) is the journald stream systemd gave us.

    ``$JOURNAL_STREAM`` is ``"<st_dev>:<st_ino>"`` of that stream; a child
    whose stderr was redirected inherits the variable but not the stream, hence
    the comparison rather than a mere presence test.
    """
    value = (os.environ if env is None else env).get("JOURNAL_STREAM", "")
    dev, sep, ino = value.partition(":")
    if not sep:
        return False
    try:
        want = (int(dev), int(ino))
        st = os.fstat((sys.stderr if stream is None else stream).fileno())
    except (ValueError, OSError):
        return False
    return (st.st_dev, st.st_ino) == want


class JournalFormatter(logging.Formatter):
    """``<N>logger: message``, and the same ``<N>`` on every continuation line
    (tracebacks), since journald reads each line as a record of its own."""

    def __init__(self) -> None:
        super().__init__(JOURNAL_FORMAT)

    def format(self, record: logging.LogRecord) -> str:
        prefix = f"<{syslog_priority(record.levelno)}>"
        return "\n".join(prefix + line for line in super().format(record).split("\n"))


class _Handler(logging.StreamHandler[TextIO]):
    """Marks the handler as ours, so a second setup replaces it instead of doubling lines."""


def setup_logging(
    level: str,
    *,
    journald_prefix: bool | None = None,
    stream: TextIO | None = None,
) -> logging.Handler:
    """Route the root logger to ``stream`` (default stderr) at ``level``.

    ``journald_prefix``: True writes ``<N>`` priority prefixes, False plain
    timestamped lines, None (default) decides by :func:`stderr_is_journal`.
    Calling it again replaces the handler it installed before (a reload with a
    new level, say); handlers installed by others are left alone.
    """
    levelno = parse_level(level)
    out = sys.stderr if stream is None else stream
    if journald_prefix is None:
        journald_prefix = stderr_is_journal(out)
    handler = _Handler(out)
    handler.setFormatter(JournalFormatter() if journald_prefix else logging.Formatter(PLAIN_FORMAT))
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _Handler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(levelno)
    return handler
