"""The placement socket: a unix socket speaking ``agent.placement.wire``.

The socket is made mode 0600 (root's toolstack asks; nobody else may reserve
host memory). Connections are bounded in number, in message size and in idle
time; a client that breaks the protocol gets one error reply and is dropped.
"""

from __future__ import annotations

import contextlib
import os
import socket as pysocket
import stat
from functools import partial
from typing import Any

import msgpack
import trio

from agent.placement import wire
from agent.placement.request import RequestError, check_id, check_request
from agent.placement.service import PlacementService, next_id

DEFAULT_SOCKET = "/run/xnuma/placement.sock"
SOCKET_ENV = "XNUMA_PLACEMENT_SOCKET"
MAX_CONNECTIONS = 64
IDLE_TIMEOUT_S = 60.0
ID_PREFIX = "sock-"


def socket_path() -> str:
    return os.environ.get(SOCKET_ENV) or DEFAULT_SOCKET


async def handle_message(service: PlacementService, message: dict[str, Any]) -> dict[str, Any]:
    """The reply to one checked message (``wire.check_message``)."""
    op = message.get("op")
    fields = {k: v for k, v in message.items() if k not in ("v", "op", "id")}
    if op == "place":
        raw_id = message.get("id")
        try:
            ident = ID_PREFIX + (check_id(raw_id, "socket") if raw_id is not None
                                 else next_id(""))
            request = check_request(fields, "socket", ident)
        except RequestError as exc:
            return {"error": str(exc)}
        reply = await service.place(request, "socket")
        return {"op": "place", "reply": reply.to_wire()}
    if op == "cancel":
        full_id = message.get("id")
        if fields or not isinstance(full_id, str) or len(full_id) > 64:
            return {"error": "cancel takes one field, id: the request id a place reply gave"}
        return {"op": "cancel", "cancelled": service.cancel(full_id) is not None}
    if op == "list":
        now = service.now()
        return {"op": "list", "reservations": [
            {"request": r.request, "name": r.name, "uuid": r.uuid, "nodes": list(r.nodes),
             "memory_mib": list(r.memory_mib), "expires_in_s": round(r.expires - now, 3)}
            for r in service.reservations()
        ]}
    return {"error": f"unknown op {op!r} (ops: {', '.join(wire.OPS)})"}


async def serve_connection(service: PlacementService, stream: trio.abc.Stream) -> None:
    """Answer requests on one connection until the peer hangs up or idles out."""
    reader = wire.unpacker()
    async with stream:
        while True:
            with trio.move_on_after(IDLE_TIMEOUT_S):
                data = await stream.receive_some(wire.MAX_MESSAGE)
                if not data:
                    return
                try:
                    reader.feed(data)
                    messages = list(reader)
                except (msgpack.BufferFull, ValueError, msgpack.ExtraData,
                        msgpack.FormatError, msgpack.StackError) as exc:
                    await _send(stream, {"error": f"unreadable message: {exc or 'too large'}"})
                    return
                for raw in messages:
                    try:
                        message = wire.check_message(raw)
                    except wire.ProtocolError as exc:
                        await _send(stream, {"error": str(exc)})
                        return
                    await _send(stream, await handle_message(service, message))
                continue
            return  # idle too long


async def _send(stream: trio.abc.Stream, message: dict[str, Any]) -> None:
    with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
        await stream.send_all(wire.pack(message))


async def serve_placement(
    service: PlacementService,
    path: str | os.PathLike[str] | None = None,
    *,
    mode: int = 0o600,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen until cancelled; a stale socket file is replaced, and removed on exit."""
    where = os.fspath(path) if path is not None else socket_path()
    os.makedirs(os.path.dirname(where) or ".", mode=0o755, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        if stat.S_ISSOCK(os.lstat(where).st_mode):
            os.unlink(where)
    sock = trio.socket.socket(pysocket.AF_UNIX, pysocket.SOCK_STREAM)
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def limited(stream: trio.abc.Stream) -> None:
        async with limiter:
            await serve_connection(service, stream)

    try:
        await sock.bind(where)
        os.chmod(where, mode)
        sock.listen(MAX_CONNECTIONS)
        inode = os.stat(where).st_ino
        task_status.started(where)
        try:
            await trio.serve_listeners(partial(limited), [trio.SocketListener(sock)])
        finally:
            with contextlib.suppress(FileNotFoundError):
                if os.stat(where).st_ino == inode:
                    os.unlink(where)
    finally:
        sock.close()
