"""Scenario files: TOML in, host + domains + timeline out.

A scenario says what host to simulate (NUMA nodes, distances, SMT, cpupools,
scheduler), which domains run on it (dom0 included) and what happens when
(create, destroy, pause, unpause, set-load, set-affinity at given seconds).
``agent/sim/scenarios/seed-abc.toml`` is the commented reference.

Validation is strict and complete: every unknown key is an error, and all the
errors of a file are reported together, each naming the file, the table and
the key and saying what was expected.

Where things are:

- ``model``: ``Scenario``, ``Event``, ``ScenarioError`` and the names and units they use.
- ``load``: ``load_scenario`` (a path or a shipped name) and ``shipped_scenarios``.
- ``parser``: ``parse_scenario``, the top-level keys, and how the tables join up.
- ``reader``: error collection and the generic value readers (integer, string, memory...).
- ``masks``: pCPU masks (``"node:1"``, ``"0-3"``), node lists, vCPU lists.
- ``host``: the [host] table: nodes, distances, remote speeds, cpupools.
- ``domains``: the [dom0] and [domains.NAME] tables.
- ``workloads``: workload values.
- ``timeline``: [[timeline]] events and the replay that checks their order.
"""

from agent.sim.scenario.load import SCENARIO_PACKAGE, load_scenario, shipped_scenarios
from agent.sim.scenario.model import (
    ACTIONS,
    DOM0_NAME,
    NS_PER_S,
    POOL0_NAME,
    SCHEDULERS,
    Action,
    Event,
    Scenario,
    ScenarioError,
    describe_workload,
)
from agent.sim.scenario.parser import parse_scenario

__all__ = [
    "ACTIONS",
    "DOM0_NAME",
    "NS_PER_S",
    "POOL0_NAME",
    "SCENARIO_PACKAGE",
    "SCHEDULERS",
    "Action",
    "Event",
    "Scenario",
    "ScenarioError",
    "describe_workload",
    "load_scenario",
    "parse_scenario",
    "shipped_scenarios",
]
