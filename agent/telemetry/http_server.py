"""``GET /metrics`` on a loopback port, with trio. Nothing else is served."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import trio

from agent.telemetry.prometheus import CONTENT_TYPE

MAX_REQUEST = 8192  # bytes of request head we read at most
READ_TIMEOUT = 5.0  # seconds a client may take to send its request


def check_loopback(host: str) -> None:
    if host == "localhost":
        return
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        raise ValueError(f"metrics host {host!r} is not an IP address or 'localhost'") from None
    if not loopback:
        raise ValueError(f"refusing to serve metrics on {host}: only loopback addresses")


def _response(status: str, body: bytes, content_type: str, extra: str = "") -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\n"
        f"Content-Length: {len(body)}\r\n{extra}Connection: close\r\n\r\n"
    )
    return head.encode() + body


def respond(head: bytes, render: Callable[[], str]) -> bytes:
    """The full HTTP response to a request head (pure, for tests)."""
    text = "text/plain; charset=utf-8"
    parts = head.split(b"\r\n", 1)[0].decode("latin-1").split()
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        return _response("400 Bad Request", b"bad request\n", text)
    method, target = parts[0], parts[1]
    if target.split("?", 1)[0] != "/metrics":
        return _response("404 Not Found", b"only /metrics is served here\n", text)
    if method not in ("GET", "HEAD"):
        return _response("405 Method Not Allowed", b"GET only\n", text, "Allow: GET, HEAD\r\n")
    body = render().encode()
    response = _response("200 OK", body, CONTENT_TYPE)
    return response[: len(response) - len(body)] if method == "HEAD" else response


async def _handle(stream: trio.SocketStream, render: Callable[[], str]) -> None:
    try:
        head = b""
        with trio.move_on_after(READ_TIMEOUT):
            while b"\r\n\r\n" not in head and len(head) < MAX_REQUEST:
                chunk = await stream.receive_some(4096)
                if not chunk:
                    return
                head += chunk
        if b"\r\n\r\n" in head:
            await stream.send_all(respond(head, render))
        elif len(head) >= MAX_REQUEST:
            await stream.send_all(
                _response("431 Request Header Fields Too Large", b"", "text/plain")
            )
    except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
        pass  # the client went away; nothing to tell it
    finally:
        await stream.aclose()


async def serve_metrics(
    render: Callable[[], str],
    port: int,
    host: str = "127.0.0.1",
    *,
    task_status: trio.TaskStatus[list[trio.SocketListener]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``render()`` at ``http://host:port/metrics`` until cancelled (port 0: any free one)."""
    check_loopback(host)

    async def handler(stream: trio.SocketStream) -> None:
        await _handle(stream, render)

    await trio.serve_tcp(handler, port, host=host, task_status=task_status)
