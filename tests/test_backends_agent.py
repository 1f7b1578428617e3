"""The production agent with the placement and backend hooks, on the simulated seed host
in virtual time: the seed's backends end on their guests' nodes, and a toolstack's
placement request through xenstore is answered by the shipped rule, all recorded."""

from __future__ import annotations

import tempfile
from pathlib import Path

import trio
import trio.testing

from agent.backends.hooks import BackendHooks
from agent.daemon.build import open_agent
from agent.daemon.hooks import AgentHooks
from agent.daemon.recorder import Recorder
from agent.daemon.simhost import embedded_transport, sim_config
from agent.placement.hooks import PlacementHooks
from agent.placement.xs_requests import BASE
from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import load_scenario
from agent.sim.toolstack import SimToolstack


async def test_agent_places_seed_backends_and_answers_a_request(
    autojump_clock: trio.testing.MockClock,
) -> None:
    scenario = load_scenario("seed-abc").with_overrides(duration_s=4.0)
    toolstack = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, listeners=[toolstack])
    answer: dict[str, bytes] = {}

    def hooks(recorder: Recorder) -> list[AgentHooks]:
        return [PlacementHooks(recorder), BackendHooks(recorder, toolstack.dom0)]

    async def toolstack_asks() -> None:
        await trio.sleep(2.0)
        toolstack.session.write(f"{BASE}/web/request", "vcpus=4 memory_mib=16384 name=web")
        while not toolstack.session.exists(f"{BASE}/web/result"):
            await trio.sleep(0.05)
        for key in ("result", "nodes", "reason"):
            answer[key] = toolstack.session.read(f"{BASE}/web/{key}")

    with tempfile.TemporaryDirectory() as tmp:
        config = sim_config(Path(tmp))
        async with trio.open_nursery() as nursery:
            transport = embedded_transport(toolstack.hub, nursery)
            with open_agent(config, xenstore=transport, watch_rule_files=False,
                            keep_records=True, hooks=hooks) as agent:
                nursery.start_soon(toolstack_asks)
                await runner.run_async(agent)
            nursery.cancel_scope.cancel()

    host = runner.host
    assert isinstance(host, SimHost)
    home = {runner.live[n].domid: h for n, h in (("A", 0), ("B", 1), ("C", 1))}
    placements = toolstack.dom0.placements(host)
    assert len(placements) == 9
    for p in placements:
        assert p.nodes == {home[p.domid]}, p
    assert answer["result"] == b"ok" and answer["nodes"] in (b"0", b"1")
    kept = [body for _, body in agent.recorder.kept or []]
    pins = [b for b in kept if b["kind"] == "action" and b["type"] == "backend.pin"]
    assert len(pins) == 9 and all(b["outcome"] == "ok" and b["decision"] for b in pins)
    (place,) = [b for b in kept if b["kind"] == "action" and b["type"] == "domain.place"]
    assert place["outcome"] == "ok" and place["params"]["request"] == "xs-web"
    assert [b["type"] for b in kept if b["kind"] == "event"].count("backend.appear") == 9
