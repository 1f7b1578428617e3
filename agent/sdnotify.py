"""systemd's notify protocol, agent side, with the standard library only.

``Type=notify`` services tell systemd they are up (``READY=1``), what they are
doing (``STATUS=``), that they are alive (``WATCHDOG=1``, at least every
``WatchdogSec``) and that they are stopping (``STOPPING=1``), by sending
newline-separated assignments in one datagram to the unix socket named by
``$NOTIFY_SOCKET`` (a path, or ``@name`` for the abstract namespace). With no
``$NOTIFY_SOCKET`` every call is a no-op returning False.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Callable, Mapping
from types import TracebackType

import trio

log = logging.getLogger(__name__)


def socket_address(value: str) -> str | bytes:
    """``$NOTIFY_SOCKET`` as a ``sendto`` address: a path, or ``@name`` -> abstract ``\\0name``."""
    if value.startswith("@"):
        return b"\0" + value[1:].encode()
    if value.startswith("/"):
        return value
    raise ValueError(f"NOTIFY_SOCKET={value!r}: only a path or @abstract name is supported")


def watchdog_interval(env: Mapping[str, str] | None = None, pid: int | None = None) -> float | None:
    """Seconds between watchdog pings (half of ``$WATCHDOG_USEC``), or None if not asked.

    ``$WATCHDOG_PID``, when set, must be our pid: otherwise the watchdog is
    meant for another process (a parent that exec'd us, say).
    """
    env = os.environ if env is None else env
    raw = env.get("WATCHDOG_USEC")
    if not raw:
        return None
    target = env.get("WATCHDOG_PID")
    if target and target.strip() != str(os.getpid() if pid is None else pid):
        return None
    try:
        usec = int(raw)
    except ValueError:
        log.warning("ignoring WATCHDOG_USEC=%r: not an integer", raw)
        return None
    if usec <= 0:
        log.warning("ignoring WATCHDOG_USEC=%r: not positive", raw)
        return None
    return usec / 2 / 1_000_000


class Notifier:
    def __init__(self, address: str | None = None, *, env: Mapping[str, str] | None = None) -> None:
        """``address`` overrides ``$NOTIFY_SOCKET`` (from ``env``, default the process's)."""
        if address is None:
            address = (os.environ if env is None else env).get("NOTIFY_SOCKET") or None
        self._address: str | bytes | None = None
        self._sock: socket.socket | None = None
        self._warned = False
        if address:
            try:
                self._address = socket_address(address)
            except ValueError as exc:
                log.warning("systemd notifications off: %s", exc)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=value`` lines in one datagram; True if it was sent."""
        if self._address is None:
            return False
        for a in assignments:
            if "=" not in a or "\n" in a:
                raise ValueError(f"bad notify assignment {a!r}: one KEY=value, no newline")
        if self._sock is None:
            self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            self._sock.setblocking(False)
        try:
            self._sock.sendto("\n".join(assignments).encode(), self._address)
        except OSError as exc:
            # systemd gone or its queue full: never fatal to the agent, say it once.
            if not self._warned:
                log.warning("systemd notification to %r failed: %s", self._address, exc)
                self._warned = True
            return False
        return True

    @staticmethod
    def _status(text: str) -> str:
        return "STATUS=" + " ".join(text.split("\n"))

    def ready(self, status: str | None = None) -> bool:
        return self.send("READY=1", *([self._status(status)] if status else []))

    def status(self, text: str) -> bool:
        return self.send(self._status(text))

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def reloading(self) -> bool:
        """Before a rule reload (``Type=notify-reload`` wants the monotonic time too)."""
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        return self.send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self, status: str | None = None) -> bool:
        return self.send("STOPPING=1", *([self._status(status)] if status else []))

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

    def __enter__(self) -> Notifier:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


async def watchdog_pinger(
    notifier: Notifier,
    interval: float | None = None,
    *,
    healthy: Callable[[], bool] | None = None,
    task_status: trio.TaskStatus[float | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Trio task: ``WATCHDOG=1`` now and every ``interval`` (default: from the environment).

    Returns at once (started with None) when there is no watchdog. ``healthy``,
    if given, is asked before each ping: a stuck agent stops pinging and systemd
    restarts it, which is the point of the watchdog.
    """
    if interval is None:
        interval = watchdog_interval()
    if interval is None or not notifier.enabled:
        task_status.started(None)
        return
    if interval <= 0:
        raise ValueError(f"watchdog interval must be > 0, got {interval}")
    task_status.started(interval)
    while True:
        if healthy is None or healthy():
            notifier.watchdog()
        await trio.sleep(interval)
