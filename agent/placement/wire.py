"""The placement socket's messages: msgpack maps, one reply per request, in order.

Requests (``v`` is the protocol version, 1)::

    {"v": 1, "op": "place", "id"?: str, "vcpus": int, "memory_mib": int,
     "policy"?: "best-effort" | "strict", "preferred"?: [int], "name"?: str,
     "uuid"?: str, "max_nodes"?: int}
    {"v": 1, "op": "cancel", "id": str}          # the full id a place reply gave
    {"v": 1, "op": "list"}

Replies::

    {"v": 1, "op": "place", "reply": {request, ok, reason, nodes, cpus,
                                      memory_mib, policy, fallback,
                                      shortfall_mib, expires_s}}
    {"v": 1, "op": "cancel", "cancelled": bool}
    {"v": 1, "op": "list", "reservations": [{request, name, uuid, nodes,
                                             memory_mib, expires_in_s}]}
    {"v": 1, "error": str}                       # a request it could not read

A message is at most ``MAX_MESSAGE`` bytes; anything larger, or not a map, or
not msgpack, gets an error reply and the connection is closed.
"""

from __future__ import annotations

from typing import Any

import msgpack

VERSION = 1
MAX_MESSAGE = 16 * 1024
OPS = ("place", "cancel", "list")


class ProtocolError(Exception):
    """A message that breaks the protocol (the text is safe to send back)."""


def pack(message: dict[str, Any]) -> bytes:
    data: bytes = msgpack.packb({"v": VERSION, **message}, use_bin_type=True)
    return data


def unpacker() -> msgpack.Unpacker:
    """A streaming reader with every size bounded."""
    return msgpack.Unpacker(
        raw=False, max_buffer_size=MAX_MESSAGE, max_str_len=MAX_MESSAGE,
        max_bin_len=MAX_MESSAGE, max_array_len=4096, max_map_len=64, max_ext_len=0,
        strict_map_key=True,
    )


def check_message(message: object) -> dict[str, Any]:
    if not isinstance(message, dict):
        raise ProtocolError(f"expected a map, got {type(message).__name__}")
    version = message.get("v")
    if version != VERSION:
        raise ProtocolError(f"protocol version {version!r} is not supported (this is {VERSION})")
    return message
