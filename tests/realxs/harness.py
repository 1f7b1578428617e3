"""Run Debian's real C ``xenstored`` 4.17 and ``xenstore-utils`` on a host without Xen.

The binaries and libraries are unpacked by ``tests/realxs/fetch.sh`` into a cache directory
(``$XNUMA_XEN_CACHE``, default ``<repo>/.cache/xen``); ``xenshim.so`` (``xenshim.c``) is
preloaded into the daemon so that its libxenctrl/libxenevtchn/libxengnttab calls never reach a
hypervisor.  See ``tests/realxs/README.md`` for the command line, the initial tree and the
protocol quirks of the real daemon.

Pure stdlib; used by pytest fixtures and by benchmarks.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]

#: Commands of Debian's multicall ``xenstore`` binary (``xenstore-<name>`` or ``xenstore <name>``).
XENSTORE_COMMANDS = frozenset({"read", "write", "ls", "rm", "chmod", "watch", "exists", "list"})

# sockaddr_un.sun_path is 108 bytes including the NUL; xenstored refuses longer paths.
_SUN_PATH_MAX = 107

_LIVE: weakref.WeakSet[RealXenstored] = weakref.WeakSet()


def xen_cache() -> Path:
    """Directory filled by ``fetch.sh``: ``$XNUMA_XEN_CACHE`` or ``<repo>/.cache/xen``."""
    env = os.environ.get("XNUMA_XEN_CACHE")
    return Path(env) if env else REPO_ROOT / ".cache" / "xen"


def xenstored_binary(cache: Path | None = None) -> Path:
    return (cache or xen_cache()) / "bin" / "xenstored"


def xenshim_library(cache: Path | None = None) -> Path:
    return (cache or xen_cache()) / "xenshim.so"


def xen_library_dir(cache: Path | None = None) -> Path:
    return (cache or xen_cache()) / "lib"


def real_xenstored_available() -> bool:
    """True when ``fetch.sh`` completed (``.ready``) and the binaries are there."""
    cache = xen_cache()
    return (
        (cache / ".ready").is_file()
        and xenstored_binary(cache).is_file()
        and xenshim_library(cache).is_file()
        and (cache / "bin" / "xenstore").is_file()
    )


def unavailable_reason() -> str:
    """Human-readable skip reason for tests when the cache is missing."""
    return (
        f"real xenstored cache not ready at {xen_cache()} "
        "(run `bash tests/realxs/fetch.sh .cache/xen` or `make test`; "
        "or set XNUMA_XEN_CACHE)"
    )


def _clean_env(extra: Mapping[str, str]) -> dict[str, str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("XENSTORED_") and k not in ("LD_PRELOAD", "LD_LIBRARY_PATH")
    }
    env.update(extra)
    return env


def _socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        try:
            s.connect(str(path))
        except OSError:
            return False
        return True


class RealXenstored:
    """One real ``xenstored -N`` process with its run dir inside ``tmpdir``.

    The tree lives in memory (xenstored 4.17 defaults to an internal TDB), so every start,
    including :meth:`restart`, begins with the initial tree: ``/``, ``/tool``,
    ``/tool/xenstored``, all owned by dom0 with no access for others (``n0``).
    Unix-socket clients are privileged (treated like dom0 tools).
    """

    def __init__(
        self,
        tmpdir: Path,
        *,
        cache: Path | None = None,
        trace: bool = False,
        extra_args: Sequence[str] = (),
        domains: Sequence[int] | None = None,
        start_timeout: float = 10.0,
    ) -> None:
        self.cache = cache or xen_cache()
        self.tmpdir = Path(tmpdir)
        self.rundir = self.tmpdir / "xenstored-run"
        self.stderr_path = self.tmpdir / "xenstored.stderr"
        self.trace_path: Path | None = self.tmpdir / "xenstored.trace" if trace else None
        self.extra_args = tuple(extra_args)
        self.domains = None if domains is None else tuple(domains)
        self.start_timeout = start_timeout
        self._short_dir: Path | None = None
        self.socket_path = self.rundir / "socket"
        if len(str(self.socket_path)) > _SUN_PATH_MAX - 8:
            # Deep pytest tmp dirs can exceed sun_path: put only the socket somewhere short.
            self._short_dir = Path(tempfile.mkdtemp(prefix="xs-", dir="/tmp"))
            self.socket_path = self._short_dir / "socket"
        self._proc: subprocess.Popen[bytes] | None = None
        self._stderr_file: int | None = None

    # ------------------------------------------------------------------ properties

    @property
    def argv(self) -> list[str]:
        argv = [str(xenstored_binary(self.cache)), "--no-fork"]
        if self.trace_path is not None:
            argv += ["--trace-file", str(self.trace_path)]
        return argv + list(self.extra_args)

    @property
    def env(self) -> dict[str, str]:
        extra = {
            "LD_PRELOAD": str(xenshim_library(self.cache)),
            "LD_LIBRARY_PATH": str(xen_library_dir(self.cache)),
            "XENSTORED_RUNDIR": str(self.rundir),
            "XENSTORED_PATH": str(self.socket_path),
        }
        if self.domains is not None:
            extra["XENSHIM_DOMAINS"] = ",".join(str(d) for d in self.domains)
        return _clean_env(extra)

    @property
    def pid(self) -> int:
        if self._proc is None:
            raise RuntimeError("xenstored is not started")
        return self._proc.pid

    @property
    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stderr_text(self) -> str:
        try:
            return self.stderr_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    # ------------------------------------------------------------------ lifecycle

    def start(self) -> None:
        if self.running:
            raise RuntimeError(f"xenstored already running (pid {self.pid})")
        if not xenstored_binary(self.cache).is_file():
            raise RuntimeError(unavailable_reason())
        self.rundir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.socket_path.unlink()
        with open(self.stderr_path, "ab") as err:
            self._proc = subprocess.Popen(
                self.argv,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=err,
                stderr=err,
                cwd=self.tmpdir,
                start_new_session=True,  # keep terminal signals (^C) away from it
            )
        _LIVE.add(self)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                code = self._proc.returncode
                self._proc = None
                raise RuntimeError(
                    f"xenstored exited with status {code} during start-up\n"
                    f"argv: {self.argv}\nstderr:\n{self.stderr_text()}"
                )
            if self.socket_path.exists() and _socket_accepts(self.socket_path):
                return
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(
                    f"xenstored did not accept connections on {self.socket_path} within "
                    f"{self.start_timeout}s\nargv: {self.argv}\nstderr:\n{self.stderr_text()}"
                )
            time.sleep(0.01)

    def kill(self) -> None:
        """SIGKILL the daemon (its socket file stays, but nothing answers)."""
        self._terminate(signal.SIGKILL, 0.0)

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 5 s.  Safe to call more than once."""
        self._terminate(signal.SIGTERM, 5.0)

    def restart(self) -> None:
        """Stop (if running) and start a fresh daemon on the same socket path."""
        self.stop()
        self.start()

    def close(self) -> None:
        self.stop()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
            self._short_dir = None

    def _terminate(self, sig: signal.Signals, grace: float) -> None:
        proc, self._proc = self._proc, None
        if proc is None:
            return
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                proc.send_signal(sig)
            try:
                proc.wait(timeout=grace if grace > 0 else 5.0)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait()

    def __enter__(self) -> RealXenstored:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def util(
        self, name: str, *args: str, timeout: float = 10
    ) -> subprocess.CompletedProcess[bytes]:
        """:func:`xenstore_util` against this daemon."""
        return xenstore_util(
            name, *args, socket=self.socket_path, timeout=timeout, cache=self.cache
        )


@contextlib.contextmanager
def start_real_xenstored(
    tmpdir: Path,
    *,
    trace: bool = False,
    extra_args: Sequence[str] = (),
    domains: Sequence[int] | None = None,
) -> Iterator[RealXenstored]:
    """Start a real xenstored in ``tmpdir``; it is always stopped on exit."""
    xs = RealXenstored(tmpdir, trace=trace, extra_args=extra_args, domains=domains)
    try:
        xs.start()
        yield xs
    finally:
        xs.close()


def xenstore_util_argv(name: str, *args: str, cache: Path | None = None) -> list[str]:
    """argv for ``xenstore-<cmd>``: the hard link if unpacked, else the multicall binary."""
    cmd = name.removeprefix("xenstore-")
    if cmd not in XENSTORE_COMMANDS:
        raise ValueError(f"unknown xenstore-utils command {name!r}")
    cache = cache or xen_cache()
    link = cache / "usr" / "bin" / f"xenstore-{cmd}"
    if link.is_file():
        return [str(link), *args]
    return [str(cache / "bin" / "xenstore"), cmd, *args]


def xenstore_util(
    name: str,
    *args: str,
    socket: Path,
    timeout: float = 10,
    cache: Path | None = None,
) -> subprocess.CompletedProcess[bytes]:
    """Run Debian's ``xenstore-<name>`` (``read``, ``write``, ``ls`` ...) against ``socket``.

    ``name`` may be given with or without the ``xenstore-`` prefix.  Returns the completed
    process (not checked); stdout/stderr are bytes.
    """
    cache = cache or xen_cache()
    env = _clean_env(
        {"XENSTORED_PATH": str(socket), "LD_LIBRARY_PATH": str(xen_library_dir(cache))}
    )
    return subprocess.run(
        xenstore_util_argv(name, *args, cache=cache),
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


@atexit.register
def _kill_leftovers() -> None:
    for xs in list(_LIVE):
        xs.kill()
