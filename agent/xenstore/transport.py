"""Ways to reach a xenstored: a transport is any zero-argument async callable
returning a fresh ``trio.abc.Stream``, called again on every reconnect.

- ``unix_socket(path)``: the daemon's socket (``$XENSTORED_PATH``, else
  ``/var/run/xenstored/socket``), as dom0 tools use it;
- ``xenbus_device(path)``: the ``/dev/xen/xenbus`` character device, the
  kernel's relay for domains without the socket;
- ``default_transport()``: what libxenstore's ``xs_open`` does, the socket if it
  exists, else the device;
- any other factory, e.g. one half of ``trio.testing.memory_stream_pair`` for
  tests and the simulator.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable

import trio

Transport = Callable[[], Awaitable[trio.abc.Stream]]

DEFAULT_SOCKET = "/var/run/xenstored/socket"
XENBUS_DEVICE = "/dev/xen/xenbus"


def socket_path() -> str:
    """Where the daemon's socket is: ``$XENSTORED_PATH``, else the default."""
    return os.environ.get("XENSTORED_PATH") or DEFAULT_SOCKET


def unix_socket(path: str | None = None) -> Transport:
    """Connect to a xenstored unix socket; ``None`` means ``socket_path()``
    resolved at each connect (so a changed environment is honoured)."""

    async def connect() -> trio.abc.Stream:
        return await trio.open_unix_socket(path or socket_path())

    connect.__qualname__ = f"unix_socket({path or socket_path()!r})"
    return connect


def xenbus_device(path: str = XENBUS_DEVICE) -> Transport:
    """Open the xenbus character device read-write; trio polls the fd."""

    async def connect() -> trio.abc.Stream:
        fd = await trio.to_thread.run_sync(os.open, path, os.O_RDWR | os.O_CLOEXEC)
        return trio.lowlevel.FdStream(fd)

    connect.__qualname__ = f"xenbus_device({path!r})"
    return connect


def default_transport() -> Transport:
    """The socket when ``$XENSTORED_PATH`` is set or the default socket
    exists, else the xenbus device (libxenstore's order)."""
    if os.environ.get("XENSTORED_PATH") or os.path.exists(DEFAULT_SOCKET):
        return unix_socket()
    return xenbus_device()
