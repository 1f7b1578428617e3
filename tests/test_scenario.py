"""Scenario files: parsing, defaults, overrides and every kind of validation error."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.sim.scenario import (
    DOM0_NAME,
    Event,
    ScenarioError,
    load_scenario,
    parse_scenario,
    shipped_scenarios,
)
from agent.sim.spec import Bursty, CpuBound, Idle, IoLike

SMALL = """
name = "small"
duration_s = 3
seed = 7

[host]
[[host.nodes]]
cpus = 4
memory_mib = 4096
[[host.nodes]]
cpus = 4
memory_mib = 4096

[domains.web]
vcpus = 2
memory_mib = 1024
soft = "node:1"
memory_nodes = [1]
workload = { kind = "bursty", on_ms = 5, off_ms = 15 }

[domains.db]
vcpus = 3
memory_mib = 2048
hard = [0, 1, 2, 3]
workloads = ["cpu-bound", "idle", { kind = "io-like" }]
paused = true

[[timeline]]
at_s = 2
action = "set-affinity"
domain = "web"
vcpus = 1
soft = "0-3"

[[timeline]]
at_s = 1
action = "unpause"
domain = "db"
phase = "db up"

[[timeline]]
at_s = 1.5
action = "set-load"
domain = "db"
vcpus = "0-1"
workload = "idle"
"""


def errors_of(text: str) -> tuple[str, ...]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(text, source="s.toml")
    assert str(info.value).startswith("s.toml: ")
    return info.value.errors


def test_small_scenario_parses_with_defaults() -> None:
    s = parse_scenario(SMALL, source="small.toml")
    assert s.name == "small"
    assert s.duration_ns == 3_000_000_000
    assert s.seed == 7
    assert s.host.scheduler == "credit1"
    assert s.host.distances is None and s.host.remote_speed_default == 0.7
    web, db = s.domains
    assert web.soft == frozenset(range(4, 8)) and web.hard is None
    assert web.memory_nodes == (1,)
    assert web.workload == Bursty(on_ms=5.0, off_ms=15.0)
    assert db.hard == frozenset(range(4))
    assert db.workload == (CpuBound(), Idle(), IoLike())
    assert s.initial == ("web", "db")
    assert s.start_paused == {"db"}
    # Sorted by time; file order breaks ties.
    assert [e.at_s for e in s.timeline] == [1.0, 1.5, 2.0]
    assert s.timeline[0] == Event(at_ns=1_000_000_000, action="unpause", domain="db",
                                  phase="db up")
    assert s.timeline[1].vcpus == (0, 1) and s.timeline[1].workload == Idle()
    assert s.timeline[2].describe() == "set-affinity web vcpus 1 soft 0-3"
    assert s.first_phase == "start"


def test_overrides_replace_seed_scheduler_and_cut_the_timeline() -> None:
    s = parse_scenario(SMALL, source="small.toml")
    t = s.with_overrides(seed=3, duration_s=1.5, scheduler="credit2")
    assert t.seed == 3 and t.host.scheduler == "credit2"
    assert [e.at_s for e in t.timeline] == [1.0]  # 1.5 is the end: not reached
    assert t.duration_ns == 1_500_000_000
    with pytest.raises(ValueError, match="positive"):
        s.with_overrides(duration_s=0)


def test_shipped_seed_scenario() -> None:
    assert {"seed-abc", "seed-abc-4node"} <= set(shipped_scenarios())
    s = load_scenario("seed-abc")
    assert s.name == "seed-abc"
    assert [n.cpus for n in s.host.nodes] == [28, 28]
    dom0, a, b, c = s.domains
    assert dom0.name == DOM0_NAME and dom0.is_dom0 and dom0.pool == "Pool-0"
    (guests,) = s.host.pools
    # Pool-0 keeps two pCPUs per node for dom0; the guests exactly fill the rest.
    assert guests.cpus == frozenset(range(56)) - {0, 1, 28, 29}
    assert a.vcpus + c.vcpus == len(guests.cpus)
    assert a.soft == frozenset(range(28)) and b.soft == c.soft == frozenset(range(28, 56))
    assert (a.memory_nodes, b.memory_nodes, c.memory_nodes) == ((0,), (1,), (1,))
    assert [(e.at_s, e.action, e.domain) for e in s.timeline] == [
        (10.0, "pause", "A"), (20.0, "unpause", "A"), (21.0, "pause", "B")]
    assert load_scenario("seed-abc.toml") == s


def test_shipped_four_node_variant() -> None:
    s = load_scenario("seed-abc-4node")
    assert len(s.host.nodes) == 4
    assert s.host.distances is not None and s.host.distances[0][3] > s.host.distances[0][1]


def test_load_from_path_and_missing(tmp_path: Path) -> None:
    path = tmp_path / "mine.toml"
    path.write_text(SMALL.replace('name = "small"\n', ""))
    assert load_scenario(path).name == "mine"  # the file's stem
    with pytest.raises(ScenarioError, match="no such file, and no shipped scenario"):
        load_scenario(tmp_path / "nope.toml")
    with pytest.raises(ScenarioError, match="not a regular file"):
        load_scenario(tmp_path)


def test_toml_syntax_error_names_the_file() -> None:
    (error,) = errors_of("duration_s = \n")
    assert error.startswith("invalid TOML")


def test_every_error_is_reported_with_table_and_key() -> None:
    text = SMALL.replace("seed = 7", "seed = -1\nbogus = 1").replace(
        "vcpus = 2\n", "vcpus = 2\nvcpu = 2\n").replace(
        'soft = "node:1"', 'soft = "node:5"').replace(
        "on_ms = 5,", "on_ms = -5,")
    errors = errors_of(text)
    assert any(e.startswith("top level key 'seed': expected an integer between 0 and")
               for e in errors)
    assert any(e.startswith("top level key 'bogus': unknown key (expected one of: name,")
               for e in errors)
    assert any(e.startswith("[domains.web] key 'vcpu': unknown key (expected one of: vcpus,")
               for e in errors)
    assert "[domains.web] key 'soft': node 5 does not exist (the host has 2 nodes)" in errors
    assert "[domains.web.workload] key 'on_ms': expected a number > 0, got -5" in errors
    assert len(errors) == 5


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("cpus = 4\nmemory_mib = 4096\n[[host.nodes]]", "cpus = 4\n[[host.nodes]]",
         "[[host.nodes]] #1 key 'memory_mib': missing (expected memory_mib or memory_gib)"),
        ("cpus = 4\nmemory_mib = 4096\n[[host.nodes]]",
         "cpus = 'four'\nmemory_mib = 4096\n[[host.nodes]]",
         "[[host.nodes]] #1 key 'cpus': expected an integer, got a string"),
        ("[host]\n", "[host]\nthreads_per_core = 3\n",
         "[[host.nodes]] #1 key 'cpus': 4 pCPUs do not split into cores of threads_per_core = 3"),
        ("[host]\n", "[host]\ndistances = [[10, 20], [20, 11]]\n",
         "[host] key 'distances': distance[1][1] = 11: expected a 2x2 array of integers"),
        ("[host]\n", "[host]\nremote_speed_by_distance = { 21 = 1.5 }\n",
         "[host.remote_speed_by_distance] key '21': expected a number between 0.0 and 1.0"),
        ('hard = [0, 1, 2, 3]', 'hard = "0-9"',
         "[domains.db] key 'hard': pCPUs 8-9 do not exist (the host has pCPUs 0-7)"),
        ('hard = [0, 1, 2, 3]', 'hard = "3-1"',
         "[domains.db] key 'hard': bad pCPU list item '3-1'"),
        ('vcpus = 3', 'vcpus = 0', "[domains.db] key 'vcpus': expected an integer between 1 and"),
        ('workloads = ["cpu-bound", "idle", { kind = "io-like" }]', 'workloads = ["idle"]',
         "[domains.db] key 'workloads': expected 3 workloads (one per vCPU), got 1"),
        ('workloads = ["cpu-bound", "idle", { kind = "io-like" }]',
         'workloads = ["cpu-bound", "idle", { kind = "busy" }]',
         "[domains.db] key 'workloads[2]': unknown workload kind 'busy'"),
        ('{ kind = "bursty", on_ms = 5, off_ms = 15 }', '{ kind = "bursty", on_ms = 5 }',
         "[domains.web.workload] key 'off_ms': missing (expected a number of ms > 0)"),
        ('{ kind = "bursty", on_ms = 5, off_ms = 15 }', '"cpu-bound"\nworkloads = ["idle"]',
         "[domains.web] key 'workloads': give workload (all vCPUs) or workloads"),
        ('memory_mib = 2048', 'memory_mib = 2048\nmemory_gib = 2',
         "[domains.db] key 'memory_gib': give memory_mib or memory_gib, not both"),
        ('memory_nodes = [1]', 'memory_nodes = [2]',
         "[domains.web] key 'memory_nodes': expected an integer between 0 and 1, got 2"),
        ('[domains.db]\n', '[domains.db]\npool = "fast"\n',
         "[domains.db] key 'pool': no cpupool named 'fast' (pools: Pool-0)"),
        ('duration_s = 3', 'duration_s = 1.5',
         "[[timeline]] #1 key 'at_s': 2 is not before the end of the run (duration_s = 1.5)"),
        ('domain = "web"\nvcpus = 1', 'domain = "web"\nvcpus = 2',
         "[[timeline]] #1 key 'vcpus': vCPUs [2] do not exist (the domain has 2: 0-1)"),
        ('action = "unpause"', 'action = "resume"',
         "[[timeline]] #2 key 'action': expected one of create, destroy, pause, unpause"),
        ('action = "unpause"\ndomain = "db"', 'action = "unpause"\ndomain = "dbx"',
         "[[timeline]] #2 key 'domain': no domain named 'dbx' (domains: web, db)"),
        ('vcpus = 1\nsoft = "0-3"', 'vcpus = 1\nworkload = "idle"',
         "[[timeline]] #1 key 'workload': unknown key (expected one of: at_s, action, domain"),
        ('vcpus = "0-1"\nworkload = "idle"', 'vcpus = "0-1"',
         "[[timeline]] #3 key 'workload': missing (expected the new workload"),
        ('at_s = 1\n', 'at_s = 0\n', "[[timeline]] #2 key 'at_s': expected a number > 0, got 0"),
        ("paused = true", "paused = false",
         "[[timeline]] #2 key 'action': at 1 s: cannot unpause db, which is running then"),
    ],
)
def test_one_error(old: str, new: str, expected: str) -> None:
    assert old in SMALL
    errors = errors_of(SMALL.replace(old, new, 1))
    assert any(e.startswith(expected) for e in errors), errors


def test_pools_and_dom0_rules() -> None:
    text = SMALL.replace("[host]\n", """[host]
[[host.pools]]
name = "Pool-0"
cpus = "0-1"
[[host.pools]]
name = "a"
cpus = "node:0"
[[host.pools]]
name = "b"
cpus = "3-4"
""").replace("[domains.web]", """[dom0]
vcpus = 1
memory_mib = 512
pool = "a"
paused = true
[domains.web]""")
    errors = errors_of(text)
    assert any(e.startswith("[[host.pools]] #1 key 'name': Pool-0 holds every pCPU")
               for e in errors)
    assert "[[host.pools]] #3 key 'cpus': pCPUs 3 are already in another pool (a pCPU belongs " \
        "to one pool)" in errors
    assert any(e.startswith("[dom0] key 'pool': dom0 always runs in Pool-0") for e in errors)
    assert any(e.startswith("[dom0] key 'paused': unknown key") for e in errors)


def test_pool0_must_keep_a_cpu_and_dom0_events_are_limited() -> None:
    text = SMALL.replace("[host]\n", '[host]\n[[host.pools]]\nname = "all"\ncpus = "all"\n')
    errors = errors_of(text)
    assert any("Pool-0 (dom0's pool) must keep at least one pCPU" in e for e in errors)
    text = SMALL.replace("[domains.web]", "[dom0]\nvcpus = 1\nmemory_mib = 512\n[domains.web]")
    text += '[[timeline]]\nat_s = 2.5\naction = "pause"\ndomain = "Domain-0"\n'
    errors = errors_of(text)
    assert errors == ("[[timeline]] #4 key 'action': pause does not apply to Domain-0",)


def test_create_and_destroy_story() -> None:
    # web's first event is not a create: web exists from the start, so creating it at 2.5 s
    # is an error.
    text = SMALL + """
[[timeline]]
at_s = 2.5
action = "create"
domain = "web"
"""
    errors = errors_of(text)
    assert errors == ("[[timeline]] #4 key 'action': at 2.5 s: cannot create web, which "
                      "is running then",)
    # First event a create: web waits for it; destroyed and created again later.
    text = SMALL.replace("at_s = 2\n", "at_s = 2.7\n") + """
[[timeline]]
at_s = 2.5
action = "create"
domain = "web"
[[timeline]]
at_s = 2.8
action = "destroy"
domain = "web"
[[timeline]]
at_s = 2.9
action = "create"
domain = "web"
"""
    s = parse_scenario(text, source="s.toml")
    assert s.initial == ("db",)
    assert [(e.at_s, e.action) for e in s.timeline][-4:] == [
        (2.5, "create"), (2.7, "set-affinity"), (2.8, "destroy"), (2.9, "create")]


def test_set_affinity_needs_a_mask_in_the_pool() -> None:
    text = SMALL.replace('vcpus = 1\nsoft = "0-3"', "vcpus = 1")
    assert errors_of(text) == ("[[timeline]] #1: set-affinity needs hard, soft or both",)
    text = SMALL.replace("[host]\n", '[host]\n[[host.pools]]\nname = "p"\ncpus = "node:1"\n')
    text = text.replace('[domains.web]\n', '[domains.web]\npool = "p"\nhard = "0-1"\n')
    errors = errors_of(text)
    assert errors == ("[domains.web] key 'hard': no pCPU of 0-1 is in pool 'p' (4-7): Xen "
                      "refuses such a mask",)


def test_missing_sections() -> None:
    errors = errors_of("")
    assert "top level key 'duration_s': missing (expected seconds > 0)" in errors
    assert "top level key 'host': missing (expected a [host] table with [[host.nodes]])" in errors
    errors = errors_of("duration_s = 1\n[host]\n[[host.nodes]]\ncpus = 1\nmemory_mib = 1\n")
    assert errors == ("top level key 'domains': missing (expected at least one [domains.NAME] "
                      "table)",)


def test_a_domain_in_a_pool_already_reported_bad_is_an_error_not_a_crash() -> None:
    # The pool's own error is the one to read; the domain adds none but was once
    # built anyway (an AssertionError instead of the error list).
    text = (Path(__file__).parents[1] / "agent/sim/scenarios/seed-abc.toml").read_text()
    bad = text.replace('cpus = "2-27,30-55"', 'cpus = "2-27,30-99"')
    assert bad != text
    errors = errors_of(bad)
    assert errors == ("[[host.pools]] #1 key 'cpus': pCPUs 56-99 do not exist "
                      "(the host has pCPUs 0-55)",)
