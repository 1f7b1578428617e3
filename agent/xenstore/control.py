"""XS_CONTROL, as ``xenstored_control.c`` of 4.17 answers it.

``run`` returns the reply payload, or an errno for an ERROR reply. Commands
that make the C daemon touch files (``logfile``, ``memreport <file>``,
``live-update -f``) do not here; everything else answers the same.
"""

from __future__ import annotations

import errno as E
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

from agent.xenstore import lookup
from agent.xenstore.cstring import U32, count_strings, cstr, get_strings

if TYPE_CHECKING:
    from agent.xenstore.daemon import XenstoreDaemon
    from agent.xenstore.domains import Quotas

log = logging.getLogger(__name__)

OK: Final = b"OK\0"

# (name, Quotas attribute, description) in the C tables' order
_HARD: Final = (
    ("nodes", "nodes", "Nodes per domain"),
    ("watches", "watches", "Watches per domain"),
    ("transactions", "transactions", "Transactions per domain"),
    ("outstanding", "outstanding", "Outstanding requests per domain"),
    ("transaction-nodes", "transaction_nodes", "Max. number of accessed nodes per transaction"),
    ("memory", "memory", "Total Xenstore memory per domain (error level)"),
    ("node-size", "node_size", "Max. size of a node"),
    ("path-max", "path_max", "Max. length of a node path"),
    ("permissions", "permissions", "Max. number of permissions per node"),
)
_SOFT: Final = (("memory", "memory_soft", "Total Xenstore memory per domain (warning level)"),)

Result = bytes | int
_Cmd = Callable[["XenstoreDaemon", list[bytes]], Result]


@dataclass(frozen=True, slots=True)
class _Command:
    name: bytes
    func: _Cmd
    pars: bytes
    max_pars: int = 0  # limit of the argument vector, the command included


def _check(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    return E.EINVAL if args else OK  # our store cannot be inconsistent: nothing to check


def _log(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    if len(args) != 1 or args[0] not in (b"on", b"off"):
        return E.EINVAL
    return OK


def _logfile(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    return OK if len(args) == 1 else E.EINVAL


def _memreport(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    # C: no trace file -> EBADF (sent as EINVAL); we never write a report file.
    return E.EINVAL if len(args) > 1 else E.EBADF


def _print(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    if len(args) != 1:
        return E.EINVAL
    log.info("control: %s", args[0].decode(errors="replace"))
    return OK


def _show(quotas: Quotas, table: tuple[tuple[str, str, str], ...]) -> bytes:
    text = "Quota settings:\n"
    for name, attr, descr in table:
        text += f"{name:<17}: {getattr(quotas, attr):8d} {descr}\n"
    return text.encode() + b"\0"


def _set(xsd: XenstoreDaemon, args: list[bytes], table: tuple[tuple[str, str, str], ...]) -> Result:
    if len(args) != 2:
        return E.EINVAL
    val = lookup.c_atoi(xsd, args[1])
    if val < 1:
        return E.EINVAL
    for name, attr, _ in table:
        if args[0] == name.encode():
            setattr(xsd.quotas, attr, val)
            return OK
    return E.EINVAL


def _quota(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    if not args:
        return _show(xsd.quotas, _HARD)
    if args[0] == b"set":
        return _set(xsd, args[1:], _HARD)
    if len(args) != 1:
        return E.EINVAL
    domid = lookup.c_atoi(xsd, args[0]) & U32
    d = xsd.store.domains.find(domid)
    if d is None:
        return E.ENOENT
    ta = len(d.conn.transactions) if d.conn is not None else 0
    text = f"Domain {domid}:\n"
    for name, value in (
        ("nodes", d.nbentry),
        ("watches", d.nbwatch),
        ("transactions", ta),
        ("outstanding", d.nboutstanding),
        ("memory", d.memory),
    ):
        text += f"{name:<16}: {value:8d}\n"
    return text.encode() + b"\0"


def _quota_soft(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    if not args:
        return _show(xsd.quotas, _SOFT)
    if args[0] == b"set":
        return _set(xsd, args[1:], _SOFT)
    return E.EINVAL


def _live_update(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    """No live-update session can ever be started here (``-f`` is refused),
    so every step answers as the C daemon does without a session."""
    if not args:
        return E.EINVAL
    flag = args[0]
    if flag == b"-a":
        return b"No live-update session active.\0" if len(args) == 1 else E.EINVAL
    if flag == b"-c":
        return b"Not in live-update session.\0" if len(args) == 2 else E.EINVAL
    if flag == b"-s":
        i = 1
        while i < len(args):
            if args[i] == b"-t" and i < len(args) - 1:
                lookup.c_atoi(xsd, args[i + 1])
                i += 1
            elif args[i] != b"-F":
                return E.EINVAL
            i += 1
        return b"Not in live-update session.\0"
    if len(args) == 2 and flag == b"-f":
        return b"Live update is not supported by the embedded xenstored.\0"
    xsd.store.errno = E.EINVAL
    return E.EINVAL


def _help(xsd: XenstoreDaemon, args: list[bytes]) -> Result:
    if args:
        return E.EINVAL
    return b"".join(c.name + b"\t" + c.pars + b"\n" for c in COMMANDS) + b"\0"


COMMANDS: Final = (
    _Command(b"check", _check, b""),
    _Command(b"log", _log, b"on|off"),
    _Command(
        b"live-update",
        _live_update,
        b"[-c <cmdline>] [-F] [-t <timeout>] <file>\n    Default timeout is 60 seconds.",
        5,
    ),
    _Command(b"logfile", _logfile, b"<file>"),
    _Command(b"memreport", _memreport, b"[<file>]"),
    _Command(b"print", _print, b"<string>"),
    _Command(b"quota", _quota, b"[set <name> <val>|<domid>]"),
    _Command(b"quota-soft", _quota_soft, b"[set <name> <val>]"),
    _Command(b"help", _help, b""),
)


def run(xsd: XenstoreDaemon, payload: bytes) -> Result:
    """``do_control``: the first string names the command, the rest are its
    arguments."""
    if b"\0" not in payload:
        return E.EINVAL
    name = cstr(payload)
    for cmd in COMMANDS:
        if cmd.name == name:
            break
    else:
        return E.EINVAL
    num = count_strings(payload)
    if cmd.max_pars:
        num = min(num, cmd.max_pars)
    _, vec = get_strings(payload, num)
    return cmd.func(xsd, vec[1:])
