"""The shipped seed scenario, end to end on the real engine.

The seed: under credit1, after A is paused, then unpaused, and B paused a second
later, C keeps vCPUs on A's node and A keeps vCPUs on C's node, to the end of
the run. The outcome must come out of the scheduler model: nothing here steers
it (the scenario file says why its timeline is what it is).
"""

from __future__ import annotations

import pytest

from agent.hypervisor.model import VcpuState
from agent.sim.engine import SimHost
from agent.sim.run import Runner, RunResult
from agent.sim.scenario import load_scenario

LAST_BUCKET_NS = 10_000_000


def off_home_at_end(runner: Runner, result: RunResult) -> dict[str, int]:
    """Per domain, vCPUs running away from their home node when the run ends."""
    host = runner.host
    assert isinstance(host, SimHost)
    topo = host.topology()
    out: dict[str, int] = {}
    for live in runner.live.values():
        out[live.name] = sum(
            1 for v in host.vcpu_info(live.domid)
            if v.state is VcpuState.RUNNING and v.cpu is not None
            and topo.node_of(v.cpu) != live.home
        )
    return out


@pytest.fixture(scope="module")
def credit1_run() -> tuple[Runner, RunResult]:
    runner = Runner(load_scenario("seed-abc"))
    return runner, runner.run()


def test_credit1_keeps_c_on_node_0_and_a_on_node_1_to_the_end(
    credit1_run: tuple[Runner, RunResult],
) -> None:
    runner, result = credit1_run
    last = result.phases[-1]
    assert last.name == "B paused"
    away = off_home_at_end(runner, result)
    assert away["A"] > 0 and away["C"] > 0
    # ... and not just at the last instant: throughout the last bucket.
    final = result.samples[-1]
    assert final.end_ns - final.start_ns == LAST_BUCKET_NS
    assert final.run_ns["A"][1] > 0 and final.run_ns["C"][0] > 0
    # The phase pays for it: not everyone at home, below the 0.99 recovery bar.
    assert last.tally.host_locality is not None and last.tally.host_locality < 1.0
    assert last.tally.efficiency < 0.99
    assert result.events[-1].recovery_ns is None


def test_credit1_seed_reports_every_phase(credit1_run: tuple[Runner, RunResult]) -> None:
    # Whatever the model gives, the run is reported in full and consistently.
    runner, result = credit1_run
    doc = result.to_dict()
    assert [p["name"] for p in doc["phases"]] == [
        "all running", "A paused", "A back", "B paused"]
    assert [(p["start_s"], p["end_s"]) for p in doc["phases"]] == [
        (0.0, 10.0), (10.0, 20.0), (20.0, 21.0), (21.0, 30.0)]
    assert [e["what"] for e in doc["events"]] == ["pause A", "unpause A", "pause B"]
    paused_a, last = doc["phases"][1], doc["phases"][3]
    assert "A" not in paused_a["domains"] and "B" not in last["domains"]
    # While A is paused, B and C (52 vCPUs) fill both nodes: half of them must run
    # away from home, and that is the best any placement could do.
    assert paused_a["host_locality"] == pytest.approx(0.5, abs=0.01)
    assert paused_a["efficiency"] > 0.99
    # The guests' pool is exactly full in the last phase.
    assert last["utilisation"][0] == pytest.approx(last["utilisation"][1], abs=0.01)
    assert off_home_at_end(runner, result)["B"] == 0  # paused: runs nowhere
