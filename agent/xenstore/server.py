"""The trio transport of the embedded xenstored.

``serve_stream`` serves one client on any ``trio.abc.Stream`` (in-memory
streams let tests and the simulator run under MockClock); ``serve_unix``
listens on a unix socket. Every client is a privileged dom0 tool, like the
unix-socket clients of the C daemon.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket as pysocket
import stat
from functools import partial

import trio

from agent.xenstore.connections import Connection
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.wire import Packet

log = logging.getLogger(__name__)

RECEIVE_SIZE = 65536
FLUSH_TIMEOUT = 5.0  # a client that hung up gets its queued replies this long


def _hub(target: XenstoreHub | XenstoreDaemon) -> XenstoreHub:
    return target if isinstance(target, XenstoreHub) else XenstoreHub.of(target)


async def _write_packets(
    hub: XenstoreHub,
    conn: Connection,
    stream: trio.abc.Stream,
    queue: trio.MemoryReceiveChannel[Packet],
    cancel_scope: trio.CancelScope,
) -> None:
    try:
        async for packet in queue:
            batch = [packet]
            while True:  # send everything queued in one write
                try:
                    batch.append(queue.receive_nowait())
                except (trio.WouldBlock, trio.EndOfChannel):
                    break
            # Taken for writing counts as delivered (C frees a message once
            # write() took it): the peer may answer before this task resumes.
            hub.daemon.delivered(conn, len(batch))
            await stream.send_all(b"".join(p.encode() for p in batch))
    except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
        log.debug("%r: write failed (%s): dropping the client", conn, exc)
        cancel_scope.cancel()


async def _read_packets(hub: XenstoreHub, conn: Connection, stream: trio.abc.Stream) -> None:
    while not conn.closed:
        try:
            data = await stream.receive_some(RECEIVE_SIZE)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return
        if not data:
            return
        hub.receive(conn, bytes(data))


async def serve_stream(target: XenstoreHub | XenstoreDaemon, stream: trio.abc.Stream) -> None:
    """Serve one client until it hangs up, or breaks the protocol (then it is
    dropped without a reply, its queued replies unsent, as the C daemon does).
    Closes the stream."""
    hub = _hub(target)
    send, queue = trio.open_memory_channel[Packet](math.inf)
    conn = hub.attach(send.send_nowait)
    conn.track_delivery = True
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_write_packets, hub, conn, stream, queue, nursery.cancel_scope)
            try:
                await _read_packets(hub, conn, stream)
            finally:
                dropped = conn.closed
                if not conn.closed:
                    hub.detach(conn)
                send.close()
            if dropped:
                nursery.cancel_scope.cancel()
            else:  # hung up: flush what is queued while the peer still reads
                nursery.cancel_scope.deadline = trio.current_time() + FLUSH_TIMEOUT
    finally:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            await stream.aclose()


async def serve_unix(
    target: XenstoreHub | XenstoreDaemon,
    path: str | os.PathLike[str],
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on a unix socket (mode 0600, a stale socket file is replaced,
    as xenstored does) until cancelled; the socket file is removed on exit."""
    hub = _hub(target)
    path = os.fspath(path)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    sock = trio.socket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    try:
        await sock.bind(path)
        os.chmod(path, 0o600)
        sock.listen(128)
        inode = os.stat(path).st_ino
        task_status.started(path)
        try:
            await trio.serve_listeners(partial(serve_stream, hub), [trio.SocketListener(sock)])
        finally:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(path).st_ino == inode:
                    os.unlink(path)
    finally:
        sock.close()
