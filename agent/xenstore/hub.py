"""Routing the embedded xenstored's output, and its in-process dom0 API.

The daemon returns ``(connection, packet)`` pairs; a watch event caused by one
client goes to another. ``XenstoreHub`` owns the daemon's connections and
hands each packet to the sink of the connection it is for (a socket writer,
an in-process session). Everything here is synchronous: a request is fully
answered when ``handle``/``receive`` returns.

``Dom0Session`` is the in-process toolstack view (what xl/libxl do through
libxenstore), typed and raising ``XenstoreError`` like a client would.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable, Sequence
from typing import ClassVar

from agent.xenstore.connections import Connection, Outgoing
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.domain_lifecycle import DomainStatus
from agent.xenstore.wire import (
    PAYLOAD_MAX,
    Op,
    Packet,
    Perm,
    XenstoreError,
    encode_perms,
    join,
    parse_perms,
    split,
    write_payload,
)

Sink = Callable[[Packet], None]
EventCallback = Callable[[bytes, bytes], None]
PathLike = str | bytes


class XenstoreHub:
    """One per daemon (``XenstoreHub.of(daemon)``): the transports attach
    their connections here."""

    _hubs: ClassVar[weakref.WeakKeyDictionary[XenstoreDaemon, XenstoreHub]] = (
        weakref.WeakKeyDictionary()
    )

    def __init__(self, daemon: XenstoreDaemon | None = None) -> None:
        self.daemon = daemon if daemon is not None else XenstoreDaemon()
        if self.daemon in self._hubs:
            raise ValueError("this daemon already has a hub: use XenstoreHub.of(daemon)")
        self._hubs[self.daemon] = self
        self._sinks: dict[Connection, Sink] = {}
        self.undeliverable = 0  # packets for connections nobody holds (guest rings)

    @classmethod
    def of(cls, daemon: XenstoreDaemon) -> XenstoreHub:
        hub = cls._hubs.get(daemon)
        return hub if hub is not None else cls(daemon)

    def attach(self, sink: Sink, domid: int = 0) -> Connection:
        """A new dom0 socket-style connection (or an introduced guest's ring)
        whose packets go to ``sink``."""
        conn = self.daemon.connect(domid)
        if conn in self._sinks:
            raise ValueError(f"{conn!r} is already attached")
        self._sinks[conn] = sink
        return conn

    def detach(self, conn: Connection) -> None:
        self._sinks.pop(conn, None)
        self._route(self.daemon.disconnect(conn))

    def receive(self, conn: Connection, data: bytes) -> None:
        self._route(self.daemon.receive(conn, data))
        if conn.closed:
            self._sinks.pop(conn, None)

    def handle(self, conn: Connection, packet: Packet) -> None:
        self._route(self.daemon.handle(conn, packet))

    def _route(self, out: list[Outgoing]) -> None:
        for conn, packet in out:
            sink = self._sinks.get(conn)
            if sink is None:
                self.undeliverable += 1
                if conn.track_delivery:
                    self.daemon.delivered(conn)
            else:
                sink(packet)

    def check_domains(self, status: Callable[[int], DomainStatus | None]) -> None:
        """The hypervisor says domains changed state: see
        ``XenstoreDaemon.check_domains`` (fires @releaseDomain)."""
        self._route(self.daemon.check_domains(status))

    def session(self, on_event: EventCallback | None = None) -> Dom0Session:
        return Dom0Session(self, on_event)


def _path(path: PathLike) -> bytes:
    return path.encode() if isinstance(path, str) else path


def _value(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


class Dom0Session:
    """A privileged in-process client, as the toolstack uses xenstore.

    Watch events go to ``on_event(path, token)`` if given, else they queue up
    for ``take_events()``. Values are bytes; ``str`` arguments are UTF-8.
    """

    def __init__(self, hub: XenstoreHub, on_event: EventCallback | None = None) -> None:
        self._hub = hub
        self._on_event = on_event
        self._events: deque[tuple[bytes, bytes]] = deque()
        self._replies: dict[int, Packet] = {}
        self._req_id = 0
        self.conn = hub.attach(self._deliver)

    def _deliver(self, packet: Packet) -> None:
        if packet.op == Op.WATCH_EVENT:
            parts = split(packet.payload)
            path, token = [*parts, b"", b""][:2]
            if self._on_event is not None:
                self._on_event(path, token)
            else:
                self._events.append((path, token))
        else:
            self._replies[packet.req_id] = packet

    def request(self, op: int, payload: bytes, tx: int = 0) -> bytes:
        """Send one request; its reply payload, or XenstoreError."""
        if self.conn.closed:
            raise XenstoreError("EIO", "session is closed")
        if len(payload) > PAYLOAD_MAX:  # libxenstore refuses these itself
            raise XenstoreError("E2BIG", f"{Op(op).name} payload of {len(payload)} bytes")
        self._req_id = (self._req_id + 1) & 0xFFFFFFFF
        req_id = self._req_id
        self._hub.handle(self.conn, Packet(op, req_id, tx, payload))
        reply = self._replies.pop(req_id)
        name = reply.error_name()
        if name is not None:
            raise XenstoreError(name, f"{Op(op).name} {payload[:80]!r}")
        return reply.payload

    # -- the tree -------------------------------------------------------------------

    def read(self, path: PathLike, tx: int = 0) -> bytes:
        return self.request(Op.READ, join(_path(path)), tx)

    def write(self, path: PathLike, value: str | bytes, tx: int = 0) -> None:
        self.request(Op.WRITE, write_payload(_path(path), _value(value)), tx)

    def mkdir(self, path: PathLike, tx: int = 0) -> None:
        self.request(Op.MKDIR, join(_path(path)), tx)

    def rm(self, path: PathLike, tx: int = 0) -> None:
        self.request(Op.RM, join(_path(path)), tx)

    def directory(self, path: PathLike, tx: int = 0) -> list[bytes]:
        return split(self.request(Op.DIRECTORY, join(_path(path)), tx))

    def exists(self, path: PathLike, tx: int = 0) -> bool:
        try:
            self.read(path, tx)
        except XenstoreError as exc:
            if exc.name == "ENOENT":
                return False
            raise
        return True

    def get_perms(self, path: PathLike, tx: int = 0) -> list[Perm]:
        return parse_perms(self.request(Op.GET_PERMS, join(_path(path)), tx))

    def set_perms(self, path: PathLike, perms: Sequence[Perm], tx: int = 0) -> None:
        self.request(Op.SET_PERMS, join(_path(path)) + encode_perms(list(perms)), tx)

    # -- transactions ---------------------------------------------------------------

    def transaction_start(self) -> int:
        return int(self.request(Op.TRANSACTION_START, b"\0").rstrip(b"\0"))

    def transaction_end(self, tx: int, commit: bool = True) -> None:
        """Raises XenstoreError("EAGAIN") if the commit conflicts."""
        self.request(Op.TRANSACTION_END, b"T\0" if commit else b"F\0", tx)

    # -- watches --------------------------------------------------------------------

    def watch(self, path: PathLike, token: PathLike) -> None:
        """Register a watch; it fires once at once, then on every change."""
        self.request(Op.WATCH, join(_path(path), _path(token)))

    def unwatch(self, path: PathLike, token: PathLike) -> None:
        self.request(Op.UNWATCH, join(_path(path), _path(token)))

    def take_events(self) -> list[tuple[bytes, bytes]]:
        """Queued (path, token) events, oldest first (without ``on_event``)."""
        out = list(self._events)
        self._events.clear()
        return out

    # -- domains --------------------------------------------------------------------

    def introduce_domain(self, domid: int, gfn: int = 0, port: int = 1) -> None:
        """Fires @introduceDomain. ``port`` must not be 0 (EINVAL)."""
        self.request(Op.INTRODUCE, join(b"%d" % domid, b"%d" % gfn, b"%d" % port))

    def release_domain(self, domid: int) -> None:
        """Removes the nodes the domain owns and fires @releaseDomain."""
        self.request(Op.RELEASE, join(b"%d" % domid))

    def resume_domain(self, domid: int) -> None:
        self.request(Op.RESUME, join(b"%d" % domid))

    def set_target(self, domid: int, target: int) -> None:
        self.request(Op.SET_TARGET, join(b"%d" % domid, b"%d" % target))

    def is_domain_introduced(self, domid: int) -> bool:
        return self.request(Op.IS_DOMAIN_INTRODUCED, join(b"%d" % domid)) == b"T\0"

    def get_domain_path(self, domid: int) -> bytes:
        return self.request(Op.GET_DOMAIN_PATH, join(b"%d" % domid)).rstrip(b"\0")

    def control(self, *args: PathLike) -> bytes:
        return self.request(Op.CONTROL, join(*(_path(a) for a in args)))

    def close(self) -> None:
        if not self.conn.closed:
            self._hub.detach(self.conn)
