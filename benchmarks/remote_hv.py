"""The simulator's Hypervisor in another process, over a unix socket.

For the agent-cost benchmark: the agent runs alone in its own process (its
memory and CPU measured by themselves) and reaches the simulated host as it
would reach Xen through ``xl``: by asking another program. Messages are
msgpack arrays behind a 4-byte big-endian length; pCPU masks travel as text
(``0-63,128``) and are parsed on arrival, as the xl backend parses
``xl vcpu-list``, so the agent pays what it pays on a real host.

    request:  [method, args...]     topology | domains | vcpus [domid|nil] |
                                    memory [domid] | affinity [domid, vcpu, hard|nil, soft|nil]
    reply:    [true, result] | [false, error kind, message]
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import msgpack
import trio

from agent.hypervisor.interface import HypervisorError, NoSuchDomain
from agent.hypervisor.model import (
    CpuSet,
    DomainInfo,
    DomainState,
    Node,
    Topology,
    VcpuInfo,
    VcpuState,
    format_cpuset,
    parse_cpuset,
)

if TYPE_CHECKING:  # the agent's side imports no simulator
    from agent.sim.engine import SimHost

_LEN = struct.Struct(">I")
MAX_MESSAGE = 64 << 20


async def _read_exactly(stream: trio.abc.ReceiveStream, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = await stream.receive_some(n - len(buf))
        if not chunk:
            raise EOFError("connection closed")
        buf += chunk
    return bytes(buf)


async def read_message(stream: trio.abc.ReceiveStream) -> Any:
    (size,) = _LEN.unpack(await _read_exactly(stream, _LEN.size))
    if size > MAX_MESSAGE:
        raise ValueError(f"message of {size} bytes is over {MAX_MESSAGE}")
    return msgpack.unpackb(await _read_exactly(stream, size), use_list=True)


async def send_message(stream: trio.abc.SendStream, value: Any) -> None:
    data = msgpack.packb(value, use_bin_type=True)
    await stream.send_all(_LEN.pack(len(data)) + data)


# -- the server (beside the simulator) ---------------------------------------------------


class HostRows:
    """Encoded answers for a SimHost that stands still: built once, refreshed per
    domain when something changes it (an affinity call)."""

    def __init__(self, host: SimHost) -> None:
        self.host = host
        # `xl vcpu-list` prints a full mask as "all"
        self._masks: dict[CpuSet, str] = {host.topology().all_cpus: "all"}
        self._vcpus: dict[int, list[list[Any]]] = {}
        self.refresh_all()

    def _mask(self, cpus: CpuSet) -> str:
        text = self._masks.get(cpus)
        if text is None:
            text = self._masks[cpus] = format_cpuset(cpus)
        return text

    def _rows(self, infos: list[VcpuInfo]) -> list[list[Any]]:
        return [[v.domid, v.vcpu, v.cpu, v.state.value, v.time_ns, self._mask(v.hard),
                 self._mask(v.soft)] for v in infos]

    def refresh_all(self) -> None:
        by_dom: dict[int, list[VcpuInfo]] = {}
        for v in self.host.vcpu_info():
            by_dom.setdefault(v.domid, []).append(v)
        self._vcpus = {d: self._rows(vs) for d, vs in by_dom.items()}

    def refresh(self, domid: int) -> None:
        self._vcpus[domid] = self._rows(self.host.vcpu_info(domid))

    def vcpus(self, domid: int | None) -> list[list[Any]]:
        if domid is None:
            return [row for d in sorted(self._vcpus) for row in self._vcpus[d]]
        if domid not in self._vcpus:
            from agent.sim.engine import NoSuchDomainError

            raise NoSuchDomainError(f"no domain with domid {domid}")
        return self._vcpus[domid]

    def topology(self) -> list[Any]:
        t = self.host.topology()
        return [[[n.id, self._mask(n.cpus), n.memory_total_kib, n.memory_free_kib]
                 for n in t.nodes], [list(row) for row in t.distances]]

    def domains(self) -> list[list[Any]]:
        return [[d.domid, d.name, d.uuid, d.state.value, d.vcpus, d.memory_kib, d.pool]
                for d in self.host.domain_info()]


def _answer(rows: HostRows, request: list[Any], on_change: Callable[[int], None]) -> list[Any]:
    from agent.sim.engine import NoSuchDomainError, SimError

    method, *args = request
    host = rows.host
    try:
        if method == "topology":
            return [True, rows.topology()]
        if method == "domains":
            return [True, rows.domains()]
        if method == "vcpus":
            return [True, rows.vcpus(args[0])]
        if method == "memory":
            return [True, list(host.memory_per_node(args[0]))]
        if method == "affinity":
            domid, vcpu, hard, soft = args
            all_cpus = host.topology().all_cpus
            host.set_affinity(domid, vcpu,
                              None if hard is None else parse_cpuset(hard, all_cpus),
                              None if soft is None else parse_cpuset(soft, all_cpus))
            rows.refresh(domid)
            on_change(domid)
            return [True, None]
        return [False, "error", f"unknown method {method!r}"]
    except NoSuchDomainError as exc:
        return [False, "nosuchdomain", str(exc)]
    except SimError as exc:
        return [False, "error", str(exc)]


async def serve_hypervisor(
    rows: HostRows, path: str, *, on_change: Callable[[int], None] = lambda domid: None,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Answer requests on unix socket ``path`` until cancelled."""

    async def one(stream: trio.SocketStream) -> None:
        async with stream:
            try:
                while True:
                    request = await read_message(stream)
                    await send_message(stream, _answer(rows, request, on_change))
            except (EOFError, trio.BrokenResourceError, trio.ClosedResourceError):
                return

    sock = trio.socket.socket(trio.socket.AF_UNIX, trio.socket.SOCK_STREAM)
    if os.path.exists(path):
        os.unlink(path)
    await sock.bind(path)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    try:
        task_status.started()
        await trio.serve_listeners(one, [listener])
    finally:
        if os.path.exists(path):
            os.unlink(path)


# -- the client (in the agent's process) ---------------------------------------------------


class RemoteHypervisor:
    """``agent.hypervisor.interface.Hypervisor`` over ``serve_hypervisor``'s socket."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stream: trio.SocketStream | None = None
        self._lock = trio.Lock()
        self._all: CpuSet | None = None
        self.requests = 0

    async def _call(self, *request: Any) -> Any:
        async with self._lock:
            if self._stream is None:
                self._stream = await trio.open_unix_socket(self.path)
            await send_message(self._stream, list(request))
            reply = await read_message(self._stream)
            self.requests += 1
        if reply[0]:
            return reply[1]
        kind, message = reply[1], reply[2]
        if kind == "nosuchdomain":
            raise NoSuchDomain(message)
        raise HypervisorError(message)

    async def aclose(self) -> None:
        if self._stream is not None:
            await self._stream.aclose()
            self._stream = None

    async def topology(self) -> Topology:
        nodes, distances = await self._call("topology")
        topo = Topology(tuple(Node(i, parse_cpuset(cpus), total, free)
                              for i, cpus, total, free in nodes),
                        tuple(tuple(row) for row in distances))
        self._all = topo.all_cpus
        return topo

    async def domains(self) -> list[DomainInfo]:
        return [DomainInfo(d, name, uuid, DomainState(state), vcpus, mem, pool)
                for d, name, uuid, state, vcpus, mem, pool in await self._call("domains")]

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        if self._all is None:
            await self.topology()
        rows = await self._call("vcpus", domid)
        # Each mask parsed from its text, as the xl backend parses `xl vcpu-list`.
        return [VcpuInfo(d, v, cpu, VcpuState(state), t, parse_cpuset(hard, self._all),
                         parse_cpuset(soft, self._all))
                for d, v, cpu, state, t, hard, soft in rows]

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        return tuple(await self._call("memory", domid))

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        await self._call("affinity", domid, vcpu,
                         None if hard is None else format_cpuset(hard),
                         None if soft is None else format_cpuset(soft))
