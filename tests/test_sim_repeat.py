"""Same scenario, same seed, twice in one process: the same JSON, with and without the agent.

Nothing may carry over from one run to the next (module-level state, caches
keyed by ``id()`` of objects that died, iteration over sets of objects): a run
must not depend on what ran before it in the process, nor on where the
allocator put its objects.
"""

from __future__ import annotations

from agent.daemon.simhost import run_virtual, run_without_agent
from agent.sim.scenario import load_scenario


def test_a_run_without_the_agent_repeats_exactly() -> None:
    scenario = load_scenario("seed-abc").with_overrides(scheduler="credit2", duration_s=12.0)
    first = run_without_agent(scenario).to_json()
    assert run_without_agent(scenario).to_json() == first


def test_a_run_with_the_agent_repeats_exactly() -> None:
    # The 4-node seed under credit1 makes the agent place vCPUs by spread_cpu
    # (agent/daemon/fixup.py) often: its per-view cache was keyed by id(view), so
    # a new view allocated where a dead one had been reused the stale pCPU loads,
    # and a second run in the same process (other addresses) gave other results.
    scenario = load_scenario("seed-abc-4node")
    first = run_virtual(scenario).result.to_json()
    assert run_virtual(scenario).result.to_json() == first
