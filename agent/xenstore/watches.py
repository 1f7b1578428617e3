"""Watch records and the path rules of ``xenstored_watch.c``."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(eq=False, slots=True)
class Watch:
    node: bytes  # canonical (absolute or @special) path
    token: bytes
    relative_path: bytes | None  # the connection's home if registered relative


def is_child(child: bytes, parent: bytes) -> bool:
    """Is ``child`` the node ``parent`` or below it (everything is below /)?"""
    if parent == b"/":
        return True
    if not child.startswith(parent):
        return False
    return len(child) == len(parent) or child[len(parent)] == ord("/")


def watch_path(watch: Watch, name: bytes) -> bytes:
    """The path an event reports: relative to the connection's home when the
    watch was registered with a relative path."""
    if watch.relative_path is None:
        return name
    path = name[len(watch.relative_path) :]
    return path[1:] if path.startswith(b"/") else path


def event_payload(path: bytes, token: bytes) -> bytes:
    return path + b"\0" + token + b"\0"
