"""Daemon fixtures: the embedded xenstored on a unix socket (served by trio in
a background thread, so plain blocking clients, subprocesses and pyxs can use
it) and Debian's real C xenstored (skipped when its cache is missing)."""

from __future__ import annotations

import contextlib
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.server import serve_unix

try:  # tests/ on sys.path (pytest's default import mode)
    from realxs.harness import RealXenstored, real_xenstored_available, unavailable_reason
except ImportError:  # repo root on sys.path
    from tests.realxs.harness import (  # type: ignore[no-redef]
        RealXenstored,
        real_xenstored_available,
        unavailable_reason,
    )


class EmbeddedXenstored:
    """The embedded xenstored served on a unix socket from a thread.

    ``daemon`` is the live XenstoreDaemon: read it only while no request is in
    flight (e.g. after every reply has arrived).
    """

    def __init__(self) -> None:
        # sun_path is 108 bytes: keep the socket in a short /tmp directory.
        self._dir = Path(tempfile.mkdtemp(prefix="xnuma-xsd-"))
        self.socket_path = self._dir / "socket"
        self.daemon = XenstoreDaemon()
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._scope: trio.CancelScope | None = None
        self._ready = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="embedded-xenstored", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("embedded xenstored did not start")
        if self._error is not None:
            raise RuntimeError("embedded xenstored failed to start") from self._error

    def _run(self) -> None:
        async def main() -> None:
            self._token = trio.lowlevel.current_trio_token()
            with trio.CancelScope() as scope:
                self._scope = scope
                async with trio.open_nursery() as nursery:
                    await nursery.start(serve_unix, self.daemon, str(self.socket_path))
                    self._ready.set()

        try:
            trio.run(main)
        except BaseException as exc:  # reported by start()/stop()
            self._error = exc
        finally:
            self._ready.set()

    def restart(self) -> None:
        """A fresh daemon (initial tree) on the same socket."""
        self.stop()
        self.daemon = XenstoreDaemon()
        self._ready.clear()
        self.start()

    def stop(self) -> None:
        if self._thread is None:
            return
        if self._token is not None and self._scope is not None:
            with contextlib.suppress(trio.RunFinishedError):
                trio.from_thread.run_sync(self._scope.cancel, trio_token=self._token)
        self._thread.join(10)
        self._thread = None
        if self._error is not None:
            raise RuntimeError("embedded xenstored crashed") from self._error

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._dir, ignore_errors=True)


@contextlib.contextmanager
def running_embedded_xenstored() -> Iterator[EmbeddedXenstored]:
    xs = EmbeddedXenstored()
    xs.start()
    try:
        yield xs
    finally:
        xs.close()


@pytest.fixture
def embedded_xenstored() -> Iterator[EmbeddedXenstored]:
    with running_embedded_xenstored() as xs:
        yield xs


@pytest.fixture(scope="module")
def embedded_xenstored_module() -> Iterator[EmbeddedXenstored]:
    """One embedded xenstored for a whole test module (``restart()`` to reset)."""
    with running_embedded_xenstored() as xs:
        yield xs


@pytest.fixture
def real_xenstored(tmp_path: Path) -> Iterator[RealXenstored]:
    if not real_xenstored_available():
        pytest.skip(unavailable_reason())
    xs = RealXenstored(tmp_path)
    xs.start()
    try:
        yield xs
    finally:
        xs.close()
