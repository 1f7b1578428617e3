"""Placement through the production agent (``Agent`` with ``standard_hooks``) on a small
simulated host in virtual time: two requests at one instant that each fit only one node
get different nodes (and collide with the ledger off); a site rule of higher priority
answers a request before the shipped one; several requests in one scan are each
answered (a host-wide subject is no conflict)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, cast

import trio
import trio.testing

from agent.backends.hooks import BackendHooks
from agent.daemon.actions import Actions, Pending
from agent.daemon.build import open_agent, shipped_rules_dir, standard_hooks
from agent.daemon.hooks import AgentHooks
from agent.daemon.loop import Agent
from agent.daemon.recorder import Recorder
from agent.daemon.simhost import embedded_transport, sim_config
from agent.placement.hooks import PlacementHooks
from agent.placement.placer import Placer
from agent.placement.xs_requests import BASE
from agent.rules.actions import PlaceDomain
from agent.rules.decide import Decision, Outcome
from agent.sim.run import Runner
from agent.sim.scenario import parse_scenario
from agent.sim.toolstack import SimToolstack
from agent.state import HostView

GIB = 1024

# Node 0 has 14 GiB free (dom0 and A hold 2), node 1 has 16: a 10 GiB domain fits
# either node, two do not fit one.
TWO_NODES = """
name = "two-nodes"
scheduler = "credit1"
duration_s = 3.0
seed = 1
[host]
[[host.nodes]]
cpus = 4
memory_gib = 16
[[host.nodes]]
cpus = 4
memory_gib = 16
[dom0]
vcpus = 2
memory_gib = 1
memory_nodes = [0]
pins = [0, 4]
workload = "idle"
[domains.A]
vcpus = 2
memory_gib = 1
soft = "node:0"
memory_nodes = [0]
workload = "idle"
"""

SITE_RULE = """
[[rule]]
name = "large-on-node-0"
description = "large domains go to node 0 or nowhere"
on = ["placement.request"]
for_each = "host"
when = "event.memory_mib >= 8192"
priority = 10

[rule.action]
type = "domain.place"
request = "event.request"
name = "event.name"
vcpus = "event.vcpus"
memory_mib = "event.memory_mib"
policy = "'strict'"
preferred = "{0}"
"""

Hooks = Callable[[Recorder], list[AgentHooks]]


async def run_agent(
    rules_dir: Path, asks: Callable[[SimToolstack], Awaitable[None]],
    hooks: Callable[[SimToolstack, Any], Hooks] | None = None,
) -> Agent:
    """The agent beside the two-node host for its 3 s; ``asks`` plays the toolstack."""
    scenario = parse_scenario(TWO_NODES, source="two-nodes.toml")
    toolstack = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, listeners=[toolstack])
    with tempfile.TemporaryDirectory() as tmp:
        config = sim_config(Path(tmp), rules_dir=str(rules_dir))
        make = (hooks(toolstack, config) if hooks is not None
                else standard_hooks(config, toolstack.dom0))
        async with trio.open_nursery() as nursery:
            transport = embedded_transport(toolstack.hub, nursery)
            with open_agent(config, xenstore=transport, watch_rule_files=False,
                            keep_records=True, hooks=make) as agent:
                nursery.start_soon(asks, toolstack)
                await runner.run_async(agent)
            nursery.cancel_scope.cancel()
    return agent


async def ask_two_at_once(toolstack: SimToolstack, answers: dict[str, dict[str, bytes]]) -> None:
    await trio.sleep(1.0)
    for ident in ("x", "y"):  # one after the other, with no time in between
        toolstack.session.write(f"{BASE}/{ident}/request", f"vcpus=2 memory_mib={10 * GIB}")
    for ident in ("x", "y"):
        while not toolstack.session.exists(f"{BASE}/{ident}/result"):
            await trio.sleep(0.01)
        answers[ident] = {k: toolstack.session.read(f"{BASE}/{ident}/{k}")
                          for k in ("result", "nodes", "reason")}


def kept(agent: Agent, kind: str, type_: str | None = None) -> list[dict[str, Any]]:
    return [b for _, b in agent.recorder.kept or []
            if b["kind"] == kind and (type_ is None or b.get("type") == type_)]


async def test_two_requests_at_one_instant_get_different_nodes(
    autojump_clock: trio.testing.MockClock,
) -> None:
    answers: dict[str, dict[str, bytes]] = {}
    agent = await run_agent(shipped_rules_dir(), lambda ts: ask_two_at_once(ts, answers))
    assert {a["result"] for a in answers.values()} == {b"ok"}
    assert {a["nodes"] for a in answers.values()} == {b"0", b"1"}
    places = kept(agent, "action", "domain.place")
    assert sorted(p["params"]["request"] for p in places) == ["xs-x", "xs-y"]
    assert all(p["outcome"] == "ok" and p["decision"] for p in places)


async def test_without_the_ledger_they_collide(autojump_clock: trio.testing.MockClock) -> None:
    def no_ledger(toolstack: SimToolstack, config: Any) -> Hooks:
        def make(recorder: Recorder) -> list[AgentHooks]:
            return [PlacementHooks(recorder, placer=Placer(use_ledger=False)),
                    BackendHooks(recorder, toolstack.dom0)]
        return make

    answers: dict[str, dict[str, bytes]] = {}
    await run_agent(shipped_rules_dir(), lambda ts: ask_two_at_once(ts, answers), no_ledger)
    # Both told node 1, the one with most free memory, where only one of them fits.
    assert [answers[i]["nodes"] for i in ("x", "y")] == [b"1", b"1"]


async def test_a_site_rule_of_higher_priority_answers_first(
    autojump_clock: trio.testing.MockClock, tmp_path: Path,
) -> None:
    for name in ("placement.toml", "engine.toml"):
        shutil.copy(shipped_rules_dir() / name, tmp_path / name)
    (tmp_path / "site.toml").write_text(SITE_RULE)
    answers: dict[str, dict[str, bytes]] = {}
    agent = await run_agent(tmp_path, lambda ts: ask_two_at_once(ts, answers))
    # Strict on node 0: the first request gets it, the second finds it full.
    results = sorted((a["result"], a["nodes"]) for a in answers.values())
    assert results == [(b"failed", b""), (b"ok", b"0")]
    failed = next(a for a in answers.values() if a["result"] == b"failed")
    assert b"node 0" in failed["reason"]
    by_rule = {}
    for d in kept(agent, "decision"):
        by_rule.setdefault(d["rule"], []).append(d["outcome"])
    assert by_rule["large-on-node-0"] == ["act", "act"]
    # The shipped rule's decisions were taken too, and their actions not carried out:
    # one answer per request.
    skipped = [a for a in kept(agent, "action", "domain.place") if a["outcome"] == "skipped"]
    assert len(skipped) == 2
    assert all(a["error"] == "an earlier action of this scan acted on it" for a in skipped)
    answered = [a for a in kept(agent, "action", "domain.place") if a["outcome"] != "skipped"]
    assert sorted(a["params"]["policy"] for a in answered) == ["strict", "strict"]


async def test_requests_in_one_scan_are_each_carried_out() -> None:
    """Their decisions share the host as subject; what they touch is each its request."""
    done: list[str] = []

    async def place(action: Any, seq: int | None, view: HostView) -> str:
        await trio.lowlevel.checkpoint()
        done.append(action.request)
        return "ok"

    recorder = Recorder(keep=True, clock=lambda: 0.0)
    actions = Actions(cast(Any, None), cast(Any, None), recorder,
                      handlers={PlaceDomain.TYPE: place})

    def pending(rule: str, request: str) -> Pending:
        return Pending(Decision(rule, ("host",), Outcome.ACT,
                                PlaceDomain(request, "", 1, 1024)), None)

    await actions.run([pending("a", "r1"), pending("a", "r2"), pending("b", "r1")],
                      cast(HostView, None))
    assert done == ["r1", "r2"]  # r1 answered once, by the first decision
    (skipped,) = [b for _, b in recorder.kept or [] if b["kind"] == "action"]
    assert skipped["outcome"] == "skipped" and skipped["params"]["request"] == "r1"
