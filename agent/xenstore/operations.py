"""The typed XenStore operations, shared by the client and its transactions.

Each method encodes its request with the codec, sends it through
``_request`` (which the client and a transaction implement: the latter adds
its tx_id) and decodes the reply. Values are bytes, never decoded; paths and
tokens may be given as str for convenience and are sent as UTF-8 (the
daemon, not the client, judges whether a path is valid).
"""

from __future__ import annotations

from collections.abc import Sequence

from agent.xenstore import wire
from agent.xenstore.wire import Op

PathArg = bytes | str

# DIRECTORY_PART restarts from offset 0 when the node changes between two
# parts; a node that never holds still gets EAGAIN after this many.
DIRECTORY_PART_RESTARTS = 16


def as_bytes(value: PathArg, what: str = "path") -> bytes:
    if isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return value.encode()
    raise TypeError(f"{what} must be bytes or str, not {type(value).__name__}")


def _num(value: int, what: str) -> bytes:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{what} must be an int, not {type(value).__name__}")
    return b"%d" % value


def _string(reply: bytes) -> bytes:
    """A single-string reply without its terminating NUL."""
    return reply[:-1] if reply.endswith(b"\0") else reply


class Operations:
    """Everything but watches and transaction control."""

    async def _request(self, op: Op, payload: bytes) -> bytes:
        raise NotImplementedError

    # -- the tree -------------------------------------------------------------

    async def read(self, path: PathArg) -> bytes:
        return await self._request(Op.READ, wire.join(as_bytes(path)))

    async def write(self, path: PathArg, value: bytes) -> None:
        if not isinstance(value, bytes | bytearray | memoryview):
            raise TypeError(f"write value must be bytes, not {type(value).__name__}")
        await self._request(Op.WRITE, wire.write_payload(as_bytes(path), bytes(value)))

    async def mkdir(self, path: PathArg) -> None:
        await self._request(Op.MKDIR, wire.join(as_bytes(path)))

    async def rm(self, path: PathArg) -> None:
        await self._request(Op.RM, wire.join(as_bytes(path)))

    async def exists(self, path: PathArg) -> bool:
        """True if the node exists; ENOENT gives False, other errors raise."""
        try:
            await self._request(Op.GET_PERMS, wire.join(as_bytes(path)))
        except wire.XenstoreError as exc:
            if exc.name == "ENOENT":
                return False
            raise
        return True

    async def directory(self, path: PathArg) -> list[bytes]:
        """The children's names. A listing too big for one reply (E2BIG) is
        fetched with DIRECTORY_PART, as libxenstore does."""
        p = as_bytes(path)
        try:
            return wire.split(await self._request(Op.DIRECTORY, wire.join(p)))
        except wire.XenstoreError as exc:
            if exc.name != "E2BIG":
                raise
        return await self._directory_parts(p)

    async def _directory_parts(self, path: bytes) -> list[bytes]:
        for _ in range(DIRECTORY_PART_RESTARTS):
            listing = bytearray()
            generation: bytes | None = None
            while True:
                try:
                    reply = await self._request(
                        Op.DIRECTORY_PART, wire.join(path, b"%d" % len(listing))
                    )
                except wire.XenstoreError as exc:
                    if exc.name == "ENOSYS":  # a daemon without DIRECTORY_PART
                        raise wire.XenstoreError("E2BIG", "DIRECTORY (no DIRECTORY_PART)") from exc
                    raise
                gen, _, part = reply.partition(b"\0")
                if generation is not None and gen != generation:
                    break  # the node changed under us: start over
                generation = gen
                listing += part
                # The last part ends with an extra NUL: "name\0\0", or "\0" alone.
                if len(listing) <= 1 or listing.endswith(b"\0\0"):
                    return wire.split(bytes(listing[:-1]))
        raise wire.XenstoreError("EAGAIN", f"DIRECTORY_PART: {path!r} kept changing")

    async def get_perms(self, path: PathArg) -> list[wire.Perm]:
        return wire.parse_perms(await self._request(Op.GET_PERMS, wire.join(as_bytes(path))))

    async def set_perms(self, path: PathArg, perms: Sequence[wire.Perm]) -> None:
        """The first entry names the owner and the default access."""
        if not perms:
            raise ValueError("set_perms needs at least one permission (the owner)")
        payload = wire.join(as_bytes(path)) + wire.encode_perms(list(perms))
        await self._request(Op.SET_PERMS, payload)

    # -- domains --------------------------------------------------------------

    async def get_domain_path(self, domid: int) -> bytes:
        return _string(await self._request(Op.GET_DOMAIN_PATH, wire.join(_num(domid, "domid"))))

    async def introduce(self, domid: int, gfn: int, evtchn: int) -> None:
        payload = wire.join(_num(domid, "domid"), _num(gfn, "gfn"), _num(evtchn, "evtchn"))
        await self._request(Op.INTRODUCE, payload)

    async def release(self, domid: int) -> None:
        await self._request(Op.RELEASE, wire.join(_num(domid, "domid")))

    async def resume(self, domid: int) -> None:
        await self._request(Op.RESUME, wire.join(_num(domid, "domid")))

    async def is_domain_introduced(self, domid: int) -> bool:
        reply = await self._request(Op.IS_DOMAIN_INTRODUCED, wire.join(_num(domid, "domid")))
        return _string(reply) == b"T"

    async def set_target(self, domid: int, target: int) -> None:
        payload = wire.join(_num(domid, "domid"), _num(target, "target"))
        await self._request(Op.SET_TARGET, payload)

    async def control(self, command: PathArg, *args: bytes) -> bytes:
        """A CONTROL (ex DEBUG) command, e.g. ``control("check")``; returns the
        daemon's answer without its final NUL."""
        payload = wire.join(as_bytes(command, "command"), *args)
        return _string(await self._request(Op.CONTROL, payload))
