"""Placement requests through xenstore, for toolstacks that speak xenstore only.

The protocol (``BASE`` = ``/local/domain/0/xnuma/placement``; the agent makes it
owned by dom0 with no access for any other domain, so only dom0 may ask)::

    # the toolstack asks, in one write (key=value tokens, whitespace apart):
    xenstore-write $BASE/<id>/request \\
        "vcpus=8 memory_mib=16384 policy=strict preferred=0,1 name=web uuid=<uuid>"
    # and watches $BASE/<id>/result; the agent answers beside the request,
    # every key in one transaction:
    $BASE/<id>/result    ok | failed | invalid | cancelled
    $BASE/<id>/nodes     0,1          node ids (xl cpu-list syntax)
    $BASE/<id>/cpus      0-27,56-83   their pCPUs (for cpus_soft=)
    $BASE/<id>/memory    8192,8192    MiB reserved on each of nodes, in order
    $BASE/<id>/fallback  0 | 1        best-effort went past the preferred nodes
    $BASE/<id>/expires   120          seconds the reservation is held
    $BASE/<id>/shortfall 0            MiB missing (when failed)
    $BASE/<id>/reason    text         why these nodes, or why not
    # to release the reservation (the build failed): write $BASE/<id>/cancel
    # (any value); result becomes "cancelled". Removing <id> does not cancel.

``<id>`` matches ``[A-Za-z0-9][A-Za-z0-9_.-]{0,59}``. Keys of the request:
``vcpus`` (1..4096) and ``memory_mib`` (1..64 TiB) required; ``policy``
(best-effort | strict), ``preferred`` (node list), ``name`` (no whitespace,
at most 128), ``uuid`` (lower-case), ``max_nodes`` optional. The value is at
most 1024 bytes of printable ASCII; a repeated or unknown key, a bad value,
or a request node another domain could write makes the answer ``invalid``
with the reason. Answered entries are removed after ``keep_s`` (the
toolstack may remove them sooner); at most ``max_entries`` are looked at.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from agent.hypervisor.model import format_cpuset
from agent.placement.request import (
    ID_RE,
    MAX_NAME,
    PlacementReply,
    RequestError,
    check_id,
    check_request,
    parse_nodes,
)
from agent.placement.service import PlacementService
from agent.xenstore.client import Client, ConnectionLost, Transaction
from agent.xenstore.wire import Access, Perm, XenstoreError

BASE = "/local/domain/0/xnuma/placement"
ID_PREFIX = "xs-"
MAX_REQUEST_BYTES = 1024
MAX_REASON_BYTES = 2048
DEFAULT_KEEP_S = 600.0
DEFAULT_MAX_ENTRIES = 1024
MAX_IN_FLIGHT = 64
_INT_KEYS = ("vcpus", "memory_mib", "max_nodes")
_KEYS = (*_INT_KEYS, "policy", "preferred", "name", "uuid")


def parse_request_value(value: bytes, where: str, request_id: str) -> dict[str, object]:
    """``key=value`` tokens -> checked request fields (``RequestError`` names the key)."""
    if len(value) > MAX_REQUEST_BYTES:
        raise RequestError(f"{where}: {len(value)} bytes (at most {MAX_REQUEST_BYTES})")
    try:
        text = value.decode("ascii")
    except UnicodeDecodeError:
        raise RequestError(f"{where}: not ASCII") from None
    if any(not (ch.isprintable() or ch in " \t") for ch in text):
        raise RequestError(f"{where}: has a control character")
    fields: dict[str, object] = {}
    for token in text.split():
        key, sep, raw = token.partition("=")
        if not sep:
            raise RequestError(f"{where}: token {token[:40]!r} is not key=value")
        if key not in _KEYS:
            raise RequestError(f"{where}: unknown key {key[:40]!r} (keys: {', '.join(_KEYS)})")
        if key in fields:
            raise RequestError(f"{where}: key {key!r} given twice")
        if key in _INT_KEYS:
            if not raw.isdigit() or len(raw) > 12:
                raise RequestError(f"{where}: {key}={raw[:40]!r} is not a whole number")
            fields[key] = int(raw)
        elif key == "preferred":
            try:
                fields[key] = sorted(parse_nodes(raw)) if raw else []
            except RequestError as exc:
                raise RequestError(f"{where}: preferred: {exc}") from None
        else:
            if len(raw) > MAX_NAME:
                raise RequestError(f"{where}: {key} is {len(raw)} characters (at most "
                                   f"{MAX_NAME})")
            fields[key] = raw
    check_request(fields, where, ID_PREFIX + request_id)  # every bound, once
    return fields


def reply_entries(reply: PlacementReply) -> dict[str, str]:
    """The keys the agent writes beside a request, ``result`` last."""
    reason = reply.reason.encode()[:MAX_REASON_BYTES].decode("utf-8", "ignore")
    return {
        "nodes": format_cpuset(reply.nodes) if reply.nodes else "",
        "cpus": format_cpuset(reply.cpus) if reply.cpus else "",
        "memory": ",".join(str(m) for m in reply.memory_mib),
        "fallback": "1" if reply.fallback else "0",
        "expires": f"{reply.expires_s:g}",
        "shortfall": str(reply.shortfall_mib),
        "reason": reason,
        "result": "ok" if reply.ok else "failed",
    }


def dom0_only(perms: list[Perm]) -> bool:
    """Owned by dom0, and no other domain may write it."""
    if not perms or perms[0].domid != 0:
        return False
    if perms[0].access.can_write:  # the owner's letter is everyone else's access
        return False
    return not any(p.access.can_write and p.domid != 0 for p in perms[1:])


@dataclass(slots=True)
class _Entry:
    answered_at: float | None = None


class XenstorePlacement:
    """The agent's side of the protocol, on one xenstore client."""

    def __init__(self, xs: Client, service: PlacementService, *, base: str = BASE,
                 keep_s: float = DEFAULT_KEEP_S, max_entries: int = DEFAULT_MAX_ENTRIES,
                 log: Callable[[str], None] | None = None) -> None:
        self.xs = xs
        self.service = service
        self.base = base.rstrip("/")
        self.keep_s = keep_s
        self.max_entries = max_entries
        self.log = log or (lambda message: None)
        self._entries: dict[str, _Entry] = {}
        self._busy: set[str] = set()
        self._limiter = trio.CapacityLimiter(MAX_IN_FLIGHT)

    async def ensure_base(self) -> None:
        """Make the request directory, dom0-only (``n0``)."""
        await self.xs.mkdir(self.base)
        await self.xs.set_perms(self.base, [Perm(Access.NONE, 0)])

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Answer requests until cancelled."""
        await self.ensure_base()
        async with self.xs.watch(self.base) as events, trio.open_nursery() as nursery:
            nursery.start_soon(self._sweep, nursery)
            task_status.started()
            async for event in events:
                path = event.path.decode("utf-8", "replace")
                if event.resync or path == self.base:
                    await self.scan(nursery)
                    continue
                rest = path[len(self.base) + 1:] if path.startswith(self.base + "/") else ""
                ident, _, leaf = rest.partition("/")
                if leaf in ("request", "cancel"):
                    self._start(nursery, ident)

    async def _sweep(self, nursery: trio.Nursery) -> None:
        """Rescan now and then, so answered entries go after ``keep_s``."""
        while True:
            await trio.sleep(max(min(self.keep_s / 2, 60.0), 1.0))
            await self.scan(nursery)

    async def scan(self, nursery: trio.Nursery) -> None:
        """Look at every entry: answer new requests, handle cancels, drop old ones."""
        try:
            await self._scan(nursery)
        except ConnectionLost as exc:  # the client reconnects; its watch's resync rescans
            self.log(f"{self.base}: scan cut short: {exc}")

    async def _scan(self, nursery: trio.Nursery) -> None:
        try:
            names = await self.xs.directory(self.base)
        except XenstoreError as exc:
            if exc.name != "ENOENT":
                self.log(f"{self.base}: cannot list it: {exc}")
                return
            await self.ensure_base()  # removed under us: make it again
            names = []
        now = self.service.now()
        present = set()
        for raw in names[: self.max_entries]:
            ident = raw.decode("utf-8", "replace")
            present.add(ident)
            entry = self._entries.get(ident)
            if (entry is not None and entry.answered_at is not None
                    and now - entry.answered_at >= self.keep_s):
                try:
                    await self._remove(ident)
                except XenstoreError as exc:
                    self.log(f"{self.base}/{ident}: cannot remove it: {exc}")
                continue
            self._start(nursery, ident)
        if len(names) > self.max_entries:
            self.log(f"{self.base}: {len(names)} entries, looked at the first "
                     f"{self.max_entries}")
        for gone in set(self._entries) - present:
            del self._entries[gone]

    def _start(self, nursery: trio.Nursery, ident: str) -> None:
        if ident in self._busy:
            return
        self._busy.add(ident)
        nursery.start_soon(self._handle, ident)

    async def _handle(self, ident: str) -> None:
        try:
            async with self._limiter:
                await self._handle_one(ident)
        except (XenstoreError, ConnectionLost) as exc:  # removed under our feet, and the like
            self.log(f"{self.base}/{ident}: {exc}")
        finally:
            self._busy.discard(ident)

    async def _handle_one(self, ident: str) -> None:
        where = f"{self.base}/{ident}"
        try:
            check_id(ident, where)
        except RequestError as exc:
            self.log(f"ignored: {exc}")  # not a name to write an answer under
            return
        result = await self._read(f"{where}/result")
        if await self._read(f"{where}/cancel") is not None:
            if result != b"cancelled":
                held = self.service.cancel(ID_PREFIX + ident) is not None
                await self._answer(ident, {"result": "cancelled", "reason": (
                    "reservation released" if held else "nothing was reserved")})
            return
        if result is not None:
            self._entries.setdefault(ident, _Entry(self.service.now()))
            return
        value = await self._read(f"{where}/request")
        if value is None:
            return
        try:
            if not dom0_only(await self.xs.get_perms(f"{where}/request")):
                raise RequestError(f"{where}/request: another domain may write it; "
                                   "requests must be dom0's alone")
            fields = parse_request_value(value, f"{where}/request", ident)
        except RequestError as exc:
            await self._answer(ident, {"result": "invalid", "reason": str(exc)})
            return
        request = check_request(fields, f"{where}/request", ID_PREFIX + ident)
        reply = await self.service.place(request, "xenstore")
        await self._answer(ident, reply_entries(reply))

    async def _read(self, path: str) -> bytes | None:
        try:
            return await self.xs.read(path)
        except XenstoreError as exc:
            if exc.name == "ENOENT":
                return None
            raise

    async def _answer(self, ident: str, entries: dict[str, str]) -> None:
        where = f"{self.base}/{ident}"

        async def write(tx: Transaction) -> None:
            for key, value in entries.items():
                await tx.write(f"{where}/{key}", value.encode())

        await self.xs.transact(write)
        self._entries[ident] = _Entry(self.service.now())

    async def _remove(self, ident: str) -> None:
        try:
            await self.xs.rm(f"{self.base}/{ident}")
        except XenstoreError as exc:
            if exc.name != "ENOENT":
                raise
        self._entries.pop(ident, None)


__all__ = ["BASE", "ID_RE", "XenstorePlacement", "dom0_only", "parse_request_value",
           "reply_entries"]
