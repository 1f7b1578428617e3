"""Client of the placement socket (what ``xnuma place`` and a toolstack use)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import msgpack
import trio

from agent.placement import wire
from agent.placement.request import PlacementReply, RequestError


class PlacementError(Exception):
    """The agent could not be asked, or said the request was unreadable."""


async def call(path: str | os.PathLike[str], message: Mapping[str, Any],
               *, timeout_s: float = 30.0) -> dict[str, Any]:
    """Send one request, return its reply map (``PlacementError`` on an error reply)."""
    where = os.fspath(path)
    with trio.move_on_after(timeout_s) as scope:
        try:
            stream = await trio.open_unix_socket(where)
        except OSError as exc:
            raise PlacementError(f"cannot reach the agent at {where}: "
                                 f"{exc.strerror or exc}") from None
        async with stream:
            await stream.send_all(wire.pack(dict(message)))
            reader = wire.unpacker()
            while True:
                data = await stream.receive_some(wire.MAX_MESSAGE)
                if not data:
                    raise PlacementError(f"the agent at {where} hung up without a reply")
                try:
                    reader.feed(data)
                    for reply in reader:
                        checked = wire.check_message(reply)
                        if "error" in checked:
                            raise PlacementError(f"the agent refused the request: "
                                                 f"{checked['error']}")
                        return checked
                except (msgpack.BufferFull, ValueError, msgpack.ExtraData,
                        msgpack.FormatError, msgpack.StackError, wire.ProtocolError) as exc:
                    raise PlacementError(f"unreadable reply from {where}: {exc}") from None
    assert scope.cancelled_caught
    raise PlacementError(f"no reply from the agent at {where} within {timeout_s:g} s")


async def place(path: str | os.PathLike[str], fields: Mapping[str, Any],
                *, timeout_s: float = 30.0) -> PlacementReply:
    reply = await call(path, {"op": "place", **fields}, timeout_s=timeout_s)
    try:
        return PlacementReply.from_wire(reply.get("reply"))
    except RequestError as exc:
        raise PlacementError(str(exc)) from None


async def cancel(path: str | os.PathLike[str], request_id: str,
                 *, timeout_s: float = 30.0) -> bool:
    reply = await call(path, {"op": "cancel", "id": request_id}, timeout_s=timeout_s)
    return reply.get("cancelled") is True


async def reservations(path: str | os.PathLike[str],
                       *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
    reply = await call(path, {"op": "list"}, timeout_s=timeout_s)
    found = reply.get("reservations")
    if not isinstance(found, list) or not all(isinstance(r, dict) for r in found):
        raise PlacementError("unreadable reply: reservations is not a list of maps")
    return found
