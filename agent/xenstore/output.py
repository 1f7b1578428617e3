"""Replies and watch events of the embedded xenstored, queued as C queues them.

Each queued packet is charged to the connection's memory quota, and a
guest's request stays outstanding (``nboutstanding``) until its reply and
every watch event it caused are delivered (``free_buffered_data``).
"""

from __future__ import annotations

import errno as E
from typing import TYPE_CHECKING, Final

from agent.xenstore import connections, watches
from agent.xenstore.wire import HEADER_SIZE, PAYLOAD_MAX, Op, Packet

if TYPE_CHECKING:
    from agent.xenstore.connections import Connection, Queued, Request
    from agent.xenstore.daemon import XenstoreDaemon

ERRNO_NAMES: Final = {
    E.EINVAL: b"EINVAL",
    E.EACCES: b"EACCES",
    E.EEXIST: b"EEXIST",
    E.EISDIR: b"EISDIR",
    E.ENOENT: b"ENOENT",
    E.ENOMEM: b"ENOMEM",
    E.ENOSPC: b"ENOSPC",
    E.EIO: b"EIO",
    E.ENOTEMPTY: b"ENOTEMPTY",
    E.ENOSYS: b"ENOSYS",
    E.EROFS: b"EROFS",
    E.EBUSY: b"EBUSY",
    E.EAGAIN: b"EAGAIN",
    E.EISCONN: b"EISCONN",
    E.E2BIG: b"E2BIG",
    E.EPERM: b"EPERM",
}

_DEFAULT_BUFFER_SIZE = 16


def send_reply(xsd: XenstoreDaemon, conn: Connection, op: int, data: bytes) -> None:
    if len(data) > PAYLOAD_MAX:
        send_error(xsd, conn, E.E2BIG)
        return
    req, packet = conn.current, conn.current_packet
    if req is None or packet is None:
        return
    # Short replies fit the request's buffer; longer ones need memory.
    big = len(data) > _DEFAULT_BUFFER_SIZE
    if xsd.store.domains.memory_add(conn.id, len(data) + HEADER_SIZE, not big) and big:
        send_error(xsd, conn, E.ENOMEM)
        return
    conn.current = None
    req.on_out_list = True
    reply = Packet(op, packet.req_id, packet.tx_id, data)
    conn.out.append(connections.Queued(reply, False, req))
    if conn.domain is not None:
        conn.domain.nboutstanding += 1
    xsd.pending.append((conn, reply))


def send_ack(xsd: XenstoreDaemon, conn: Connection, op: int) -> None:
    send_reply(xsd, conn, op, b"OK\0")


def send_error(xsd: XenstoreDaemon, conn: Connection, err: int) -> None:
    send_reply(xsd, conn, Op.ERROR, ERRNO_NAMES.get(err, b"EINVAL") + b"\0")


def send_event(
    xsd: XenstoreDaemon, req: Request | None, conn: Connection, path: bytes, token: bytes
) -> None:
    payload = watches.event_payload(path, token)
    if len(payload) > PAYLOAD_MAX or conn.closed or conn.is_ignored:
        return
    if not path.startswith(b"@") and any(
        o.is_event and o.packet.payload == payload for o in conn.out
    ):
        return  # an identical event is still queued: C drops the duplicate
    if xsd.store.domains.memory_add(conn.id, len(payload) + HEADER_SIZE, False):
        return
    event = Packet(Op.WATCH_EVENT, 0, 0, payload)
    conn.out.append(connections.Queued(event, True, req))
    if req is not None:
        req.event_cnt += 1
    xsd.pending.append((conn, event))


def free_out(xsd: XenstoreDaemon, conn: Connection, out: Queued) -> None:
    """``free_buffered_data``: a request stays outstanding for its domain
    until its reply and every watch event it caused are delivered."""
    xsd.store.domains.memory_add(conn.id, -(len(out.packet.payload) + HEADER_SIZE), True)
    req = out.req
    if out.is_event:
        if req is not None:
            req.event_cnt -= 1
            if not req.event_cnt and not req.on_out_list and req.on_ref_list:
                req.on_ref_list = False
                req.conn.ref_list.remove(req)
                d = xsd.store.domains.find_introduced(req.conn.id)
                if d is not None:
                    d.nboutstanding -= 1
        return
    if req is None:
        return
    req.on_out_list = False
    if req.event_cnt:
        req.on_ref_list = True
        conn.ref_list.append(req)
    elif conn.domain is not None:
        conn.domain.nboutstanding -= 1


def free_buffered(xsd: XenstoreDaemon, conn: Connection) -> None:
    while conn.out:
        free_out(xsd, conn, conn.out.popleft())
