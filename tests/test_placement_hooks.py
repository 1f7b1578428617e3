"""PlacementHooks in an agent-shaped loop: requests through xenstore and the socket, the
shipped rule, reservations in the observation, settled when the domain is built,
and requests no rule acted on answered at once."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import trio
import trio.testing

from agent.audit import records
from agent.audit.records import Body, Subject
from agent.placement import client
from agent.placement.hooks import Handler, PlacementHooks
from agent.placement.xs_requests import BASE
from agent.rules import Memory, RuleSet, decide, load_paths, make_event
from agent.rules.events import Event
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.spec import DomainSpec, HostSpec, Idle, NodeSpec
from agent.state import HostView, Observation, build_state
from agent.xenstore.client import Client, open_client
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream

RULES = Path(__file__).resolve().parent.parent / "rules"
GIB = 1024


class FakeRecorder:
    """What the agent's recorder offers the hooks; keeps every body."""

    def __init__(self) -> None:
        self.bodies: list[Body] = []

    def append(self, body: Body, *, sync: bool = False) -> int:
        self.bodies.append(body)
        return len(self.bodies)

    def action(self, type: str, params: Any, subject: Subject, outcome: str, *,
               error: str | None = None, attempts: int = 1, duration: float = 0.0,
               decision_seq: int | None = None, **extra: Any) -> int:
        return self.append(records.action(type, params, subject, outcome, error=error,
                                          attempts=attempts, duration=duration,
                                          decision_seq=decision_seq, **extra))

    def of(self, kind: str, type: str) -> list[Body]:
        return [b for b in self.bodies if b["kind"] == kind and b["type"] == type]


class Hooks(Protocol):
    @property
    def handlers(self) -> dict[str, Handler]: ...

    async def augment(self, obs: Observation) -> tuple[Observation, list[Event]]: ...

    def after_scan(self) -> None: ...


class MiniAgent:
    """The agent's loop, reduced to the four calls the hooks need."""

    def __init__(self, hv: SimHypervisor, hooks: Sequence[Hooks], rules: RuleSet) -> None:
        self.hv, self.hooks, self.rules = hv, hooks, rules
        self.memory = Memory()
        self.view: HostView | None = None
        self.wakeup = trio.Event()
        self.scans = 0

    def wake(self) -> None:
        self.wakeup.set()

    async def scan(self, *, tick: bool = False) -> None:
        self.scans += 1
        obs = Observation(trio.current_time(), await self.hv.topology(),
                          tuple(await self.hv.domains()), tuple(await self.hv.vcpus()))
        events: list[Event] = []
        for h in self.hooks:
            obs, more = await h.augment(obs)
            events += more
        self.view = view = build_state(obs, self.view)
        if tick:
            events.append(make_event("tick"))
        handlers = {k: v for h in self.hooks for k, v in h.handlers.items()}
        for event in events:
            decisions, self.memory = decide(view, event, view.now, self.rules, self.memory)
            for seq, d in enumerate(decisions):
                if d.acts:
                    await handlers[d.action.TYPE](d.action, seq, view)
        for h in self.hooks:
            h.after_scan()

    async def run(self) -> None:
        while True:
            with trio.move_on_after(1.0):  # the poll
                await self.wakeup.wait()
            self.wakeup = trio.Event()
            await self.scan()


@asynccontextmanager
async def xenstore(hub: XenstoreHub) -> AsyncIterator[Client]:
    async with trio.open_nursery() as nursery:
        async def connect() -> trio.abc.Stream:
            mine, theirs = trio.testing.memory_stream_pair()
            nursery.start_soon(serve_stream, hub, theirs)
            return mine

        async with open_client(connect) as xs:
            yield xs
        nursery.cancel_scope.cancel()


def host() -> SimHost:
    h = SimHost(HostSpec(nodes=(NodeSpec(4, 11 * GIB), NodeSpec(4, 11 * GIB))))
    h.create_domain(DomainSpec("Domain-0", 2, 2 * GIB, Idle(), is_dom0=True, pins=(0, 4)))
    return h


@asynccontextmanager
async def agent_with(rule_files: list[str], hooks_kw: dict[str, Any] | None = None,
                     ) -> AsyncIterator[tuple[SimHost, PlacementHooks, FakeRecorder, Client,
                                              MiniAgent]]:
    sim = host()
    hub = XenstoreHub.of(XenstoreDaemon())
    recorder = FakeRecorder()
    hooks = PlacementHooks(recorder, **(hooks_kw or {}))
    agent = MiniAgent(SimHypervisor(sim), [hooks],
                      load_paths([RULES / f for f in rule_files]))
    async with xenstore(hub) as xs, trio.open_nursery() as nursery:
        await nursery.start(hooks.run, xs, agent.wake)
        nursery.start_soon(agent.run)
        yield sim, hooks, recorder, xs, agent
        nursery.cancel_scope.cancel()


async def wait_result(xs: Client, ident: str) -> dict[str, str]:
    where = f"{BASE}/{ident}"
    with trio.fail_after(60):
        while not await xs.exists(f"{where}/result"):
            await trio.sleep(0.05)
    return {k.decode(): (await xs.read(f"{where}/{k.decode()}")).decode()
            for k in await xs.directory(where)}


async def test_xenstore_requests_through_the_rule_reserve_and_settle(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with agent_with(["placement.toml", "engine.toml"]) as (sim, _hooks, rec, xs, agent):
        await xs.write(f"{BASE}/a/request", b"vcpus=2 memory_mib=8192 name=a")
        await xs.write(f"{BASE}/b/request", b"vcpus=2 memory_mib=8192 name=b")
        a, b = await wait_result(xs, "a"), await wait_result(xs, "b")
        assert {a["nodes"], b["nodes"]} == {"0", "1"}
        # The next observation carries the reservations (what rules see as reserved_mib).
        await agent.scan()
        assert agent.view is not None
        assert [n.reserved_mib for n in agent.view.nodes] == [8 * GIB, 8 * GIB]
        assert [n.available_mib for n in agent.view.nodes] == [2 * GIB, 2 * GIB]
        # The toolstack builds "a" where it was told: its reservation settles.
        sim.create_domain(DomainSpec("a", 2, 8 * GIB, Idle(), memory_nodes=(int(a["nodes"]),)))
        await agent.scan()
        assert [n.reserved_mib for n in agent.view.nodes if n.id == int(a["nodes"])] == [0]
        assert [s["subject"]["domain"] for s in rec.of("event", "reservation.settled")] == ["a"]
    places = rec.of("action", "domain.place")
    assert sorted((p["params"]["request"], p["outcome"], p["source"]) for p in places) == [
        ("xs-a", "ok", "xenstore"), ("xs-b", "ok", "xenstore")]
    assert all(p["decision"] is not None for p in places)


async def test_a_request_no_rule_acts_on_is_answered_in_its_scan(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with agent_with(["engine.toml", "backend_placement.toml"]) as (_, __, rec, xs, ___):
        start = trio.current_time()
        await xs.write(f"{BASE}/lonely/request", b"vcpus=1 memory_mib=1024")
        got = await wait_result(xs, "lonely")
        assert trio.current_time() - start < 1.0  # not the 10 s answer timeout
    assert got["result"] == "failed" and "no rule acted on this request" in got["reason"]
    assert rec.of("action", "domain.place") == []


async def test_socket_requests_and_cancel_through_the_hooks(tmp_path: Path) -> None:
    # Real clock: the unix socket is real I/O.
    path = str(tmp_path / "p.sock")
    with trio.fail_after(30):
        async with agent_with(["placement.toml", "engine.toml"],
                              {"socket_path": path}) as (_, _hooks, rec, __, ___):
            reply = await client.place(path, {"vcpus": 2, "memory_mib": 4 * GIB, "name": "w",
                                              "policy": "strict", "preferred": [1]})
            assert reply.ok and reply.nodes == (1,) and reply.policy == "strict"
            assert await client.cancel(path, reply.request)
    assert [b["type"] for b in rec.bodies] == ["domain.place", "reservation.cancelled"]
