"""The seed scenario on a real Xen 4.17 (QEMU/TCG) and in the simulator, side by side.

The ``xen``-marked tests (``make xen-test``) run tests/xen/seed.py's three setups on one
testbed boot, each without and with the agent (``xnuma run --backend xl`` in dom0), and
the same setups in the simulator; they print the side-by-side table (also kept in
``CACHE/run/pytest-seed/results.json`` for ``tests/xen/compare.py``) and check what the
agent promises on real Xen: in the last phase every vCPU is back on its home node within
a few polls and stays there, every pin it made is restored (``xl vcpu-list`` shows the
original hard affinity), and domain pause and unpause reach its audit log in real time.

The other tests check the pieces that need no Xen: the summaries, the table, the plan,
and that the simulator's scenarios play the testbed's timeline.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "xen"))
import seed
from seed import (
    GUESTS,
    PHASES,
    POLL_S,
    SETUP,
    SETUPS,
    Summary,
    hard_affinities,
    parse_cpupool_list_c,
    parse_list_c,
    summaries_from_json,
    summaries_to_json,
    summarise_real,
    summarise_sim,
    table,
)

from agent.sim.run import Runner
from agent.sim.scenario import load_scenario

FIXTURES = Path(__file__).parent / "fixtures" / "xl" / "2node-credit"

# "Within a few polls": the agent sees a pause at its next poll, swaps in one scan, and
# the settle window may re-pin a vCPU that wanders; under TCG a scan takes about a second.
SETTLE_POLLS = 5
# Setups where dom0 has pCPUs of its own: the seed's stuck state, which the agent must
# clear. With dom0 sharing the guests' pCPUs (``shared``) nothing is stuck: credit1
# churns, dom0's own load makes a node's guest vCPUs spill over, and the agent keeps the
# spill that does not cost work (by design, see rules/affinity_fixup.toml); there dom0 runs
# at a fraction of an emulated pCPU, so its polls come late as well.
STUCK = ("pool", "credit2")
LATE_DOM0_S = 30.0  # ``shared``: an event is still in the log, seconds late


# --- without Xen ---------------------------------------------------------------------------


def test_scenarios_play_the_testbed_timeline() -> None:
    at = 0.0
    expected = []
    for phase, after, cmds in PHASES[1:]:
        at += after
        expected += [(at, verb, dom, phase if i == 0 else None)
                     for i, (verb, dom) in enumerate(cmds)]
    end = at + seed.END_AFTER_S
    for setup in SETUPS:
        sc = load_scenario(setup.scenario)
        got = [(e.at_s, e.action, e.domain, e.phase) for e in sc.timeline]
        assert got == expected, setup.name
        assert sc.duration_s == end
        assert sc.first_phase == PHASES[0][0]
        for name, home in GUESTS:
            d = sc.domain(name)
            assert (d.vcpus, d.memory_nodes) == (seed.GUEST_VCPUS, (home,)), (setup.name, name)
            assert d.pool == (setup.guest_pool or "Pool-0"), (setup.name, name)
        pools = {p.name: p for p in sc.host.pools}
        if setup.guest_pool is not None:
            assert pools[setup.guest_pool].cpus == setup.guest_cpus
        sched = {"credit": "credit1", "credit2": "credit2"}[setup.guest_sched]
        assert sc.schedulers()[setup.guest_pool or "Pool-0"] == sched, setup.name


def _sample(t: float, **doms: tuple[bool, list[int | None]]) -> dict[str, Any]:
    return {"t": t, "domains": {
        name: {"domid": i + 1, "paused": paused,
               "vcpus": [[c, True, False, "0-7", "0-3"] for c in cpus]}
        for i, (name, (paused, cpus)) in enumerate(doms.items())}}


def _out(samples: list[dict[str, Any]], starts: list[float], end: float) -> dict[str, Any]:
    names = [p[0] for p in PHASES]
    return {"plan": {"agent": None}, "end_s": end, "samples": samples,
            "phases": [{"name": n, "start_s": s, "commands": []}
                       for n, s in zip(names, starts, strict=True)]}


def test_summarise_real_locality_and_settling() -> None:
    run = lambda a, c: dict(A=(False, a), B=(True, [5, 6, 7]), C=(False, c))  # noqa: E731
    samples = [
        _sample(0.5, A=(False, [1, 2, 3]), B=(False, [5, 6, 7]), C=(False, [5, 6, 2])),
        _sample(3.5, **run([1, 2, 5], [1, 6, 7])),   # last phase from 3: two off home
        _sample(4.5, **run([1, 2, 3], [5, 6, 7])),
        _sample(5.5, **run([1, 2, 7], [5, 6, 7])),   # one wanders off again
        _sample(6.5, **run([1, 2, 3], [5, 6, 7])),
        _sample(7.5, **run([1, 2, 3], [5, 6, 7])),
    ]
    s = summarise_real(_out(samples, [0.0, 1.0, 2.0, 3.0], 8.0))
    assert s.locality["all running"] == {"A": 1.0, "B": 1.0, "C": round(2 / 3, 3)}
    assert s.locality["A paused"] == {} and s.locality["A back"] == {}
    assert s.locality["B paused"] == {"A": round(13 / 15, 3), "C": round(14 / 15, 3)}
    assert s.settled_s == 3.5  # from 6.5 s on, 3.5 s into the phase
    assert s.off_at_end == 0
    stuck = summarise_real(_out(samples[:2], [0.0, 1.0, 2.0, 3.0], 8.0))
    assert stuck.settled_s is None and stuck.off_at_end == 2


def test_summarise_real_leaves_out_samples_taken_while_a_command_runs() -> None:
    samples = [_sample(0.5, A=(False, [1, 2, 3]), B=(False, [5, 6, 7]), C=(False, [5, 6, 7])),
               # `xl pause A` runs from 1.2 to 3.0: A may be paused or not yet.
               _sample(2.0, A=(False, [5, 6, 7]), B=(False, [5, 6, 7]), C=(False, [5, 6, 7])),
               _sample(3.5, A=(True, [1, 2, 3]), B=(False, [1, 6, 7]), C=(False, [5, 6, 7]))]
    out = _out(samples, [0.0, 3.0, 4.0, 5.0], 6.0)
    out["phases"][1]["commands"] = [{"op": ["pause", "A"], "start_s": 1.2, "end_s": 3.0}]
    s = summarise_real(out)
    assert s.locality["all running"] == {"A": 1.0, "B": 1.0, "C": 1.0}
    assert s.locality["A paused"] == {"B": round(2 / 3, 3), "C": 1.0}


def test_summarise_real_counts_the_agents_actions() -> None:
    samples = [_sample(0.5, A=(False, [1, 2, 3]))]
    audit = [{"kind": "action", "type": "narrow_hard", "outcome": "ok"},
             {"kind": "action", "type": "narrow_hard", "outcome": "failed"},
             {"kind": "action", "type": "restore_hard", "outcome": "ok"},
             {"kind": "event", "type": "domain.pause"}]
    s = summarise_real(_out(samples, [0.0, 1.0, 2.0, 3.0], 4.0), audit)
    assert s.actions == {"narrow_hard": 1, "restore_hard": 1}


def test_summarise_sim_and_the_table() -> None:
    sc = load_scenario(SETUP["pool"].scenario)
    result = Runner(sc.with_overrides(duration_s=30.0)).run()  # last phase 4 s
    s = summarise_sim(result)
    assert s.phases == [p[0] for p in PHASES]
    for phase, doms in s.locality.items():
        for dom, loc in doms.items():
            assert dom in dict(GUESTS) and loc is not None and 0 <= loc <= 1, (phase, dom)
    assert "A" not in s.locality["A paused"] and "B" not in s.locality["B paused"]
    assert 0 <= s.off_at_end <= 6
    runs = {"real": s, "sim": s}
    text = table({"pool": runs}, {"pool": "the title"})
    assert "[pool] the title" in text
    row = next(line for line in text.splitlines() if line.strip().startswith("B paused"))
    a = s.locality["B paused"]["A"]
    assert row.split()[-4:] == [f"{a:.2f}", "?", f"{a:.2f}", "?"]
    back = summaries_from_json(json.loads(json.dumps(summaries_to_json({"pool": runs}))))
    assert back == {"pool": runs}


def test_plan_and_argv() -> None:
    files = seed.agent_files("pool-agent")
    argv = seed.agent_argv(files)
    assert argv[:4] == ["python3", seed.DOM0_TOOL, "run", "--backend"]
    assert argv[argv.index("--poll-interval") + 1] == f"{POLL_S:g}"
    p = seed.plan(argv, {"from": files["dir"], "to": "/cmd/out/x"})
    assert [s["phase"] for s in p["steps"]] == [ph[0] for ph in PHASES]
    assert p["agent"]["argv"] == argv and p["domains"] == ["A", "B", "C"]
    assert seed.plan(None)["agent"] is None


def test_xl_parsers_on_captured_output() -> None:
    pools = parse_cpupool_list_c((FIXTURES / "pools-cpupool-list-c.txt").read_text())
    assert pools == {"Pool-0": frozenset({0, 1, 2, 3}), "guests": frozenset({4, 5, 6, 7})}
    assert parse_list_c((FIXTURES / "list-c.txt").read_text())["A"] == "Pool-0"
    hard = hard_affinities((FIXTURES / "vcpu-list.txt").read_text())
    assert hard[("Domain-0", 0)] == "all"
    with pytest.raises(ValueError, match="cpupool-list"):
        parse_cpupool_list_c("garbage")
    with pytest.raises(ValueError, match="vcpu-list"):
        hard_affinities("Name ID\nA 1 0 3 r-- 1.0 all\n")


# --- on the Xen testbed --------------------------------------------------------------------

RESULTS_NAME = "results.json"
# The module fixture runs every setup in the first test's setup: about ten minutes.
XEN = [pytest.mark.xen, pytest.mark.timeout(1800)]


@pytest.fixture(scope="module")
def results() -> Iterator[dict[str, Any]]:
    """Every setup on the testbed, without and with the agent, and in the simulator."""
    from shared import WORKDIR, bench

    b = bench()
    started = time.monotonic()
    real: dict[str, dict[str, Any]] = {}
    summaries: dict[str, dict[str, Summary]] = {s.name: {} for s in SETUPS}
    for name in seed.RUN_ORDER:
        for key, (out, audit) in b.run_setup(SETUP[name]).items():
            real[f"{name}/{key}"] = {"out": out, "audit": audit}
            summaries[name][key] = summarise_real(out, audit)
    b.tb.stop()  # the simulator runs on the host's CPUs
    for setup in SETUPS:
        for agent in (False, True):
            summaries[setup.name]["sim_agent" if agent else "sim"] = seed.run_sim(setup, agent)
    b.timings["seed_total_s"] = round(time.monotonic() - started, 1)
    data = {"summaries": summaries_to_json(summaries), "timings": b.timings,
            "titles": {s.name: s.title for s in SETUPS}, "xen_crashes": b.crashes}
    (WORKDIR / RESULTS_NAME).write_text(json.dumps(data, indent=1))
    (WORKDIR / "real-runs.json").write_text(json.dumps(real))
    yield {"summaries": summaries, "real": real, "timings": b.timings, "crashes": b.crashes}


@pytest.mark.xen
@pytest.mark.timeout(1800)
def test_side_by_side_table(results: dict[str, Any], capsys: pytest.CaptureFixture[str]) -> None:
    summaries = results["summaries"]
    text = table(summaries, {s.name: s.title for s in SETUPS})
    with capsys.disabled():
        print("\n" + text)
        print("timings (s): " + ", ".join(f"{k} {v}" for k, v in results["timings"].items()))
        for crash in results["crashes"]:  # Xen's, not the agent's: the setup ran again
            print(f"Xen crashed, setup rebooted and run again: {crash}")
    for setup in SETUPS:
        runs = summaries[setup.name]
        assert set(runs) == {"real", "real_agent", "sim", "sim_agent"}
        for key, s in runs.items():
            # Every phase was seen, with its running guests.
            assert s.phases == [p[0] for p in PHASES], (setup.name, key)
            assert set(s.locality["B paused"]) == {"A", "C"}, (setup.name, key)
            assert set(s.locality["A paused"]) == {"B", "C"}, (setup.name, key)
    assert "?" not in text


@pytest.mark.xen
@pytest.mark.parametrize("setup", STUCK)
def test_agent_brings_every_vcpu_home(results: dict[str, Any], setup: str) -> None:
    s: Summary = results["summaries"][setup]["real_agent"]
    out = results["real"][f"{setup}/real_agent"]["out"]
    assert out["sampler_errors"] == []
    assert s.settled_s is not None, f"{setup}: vCPUs still off home at the end"
    assert s.settled_s <= SETTLE_POLLS * POLL_S, f"{setup}: home only after {s.settled_s} s"
    assert s.off_at_end == 0


@pytest.mark.xen
@pytest.mark.parametrize("setup", [s.name for s in SETUPS])
def test_every_pin_restored(results: dict[str, Any], setup: str) -> None:
    run = results["real"][f"{setup}/real_agent"]
    out, audit = run["out"], run["audit"]
    assert out["agent_rc"] == 0, out.get("agent_log_tail")
    stops = [r for r in audit if r["kind"] == "agent_stop"]
    assert [(r["reason"], r["exit_code"]) for r in stops] == [("SIGTERM", 0)]
    narrowed = [r for r in audit if r["kind"] == "action" and r["outcome"] == "ok"
                and r["type"] in ("narrow_hard", "set_hard")]
    if setup in STUCK:
        assert narrowed, f"{setup}: the agent made no pin (nothing to restore: not tested)"
    # xl shows every guest vCPU's hard affinity as before the run: all pCPUs.
    hard = hard_affinities(out["vcpu_list_after"])
    guests = {k: v for k, v in hard.items() if k[0] in dict(GUESTS)}
    assert len(guests) == len(GUESTS) * seed.GUEST_VCPUS
    assert set(guests.values()) == {"all"}, guests
    first = {name: [v[3] for v in d["vcpus"]] for name, d in out["samples"][0]["domains"].items()}
    last = {name: [v[3] for v in d["vcpus"]] for name, d in out["after"]["domains"].items()}
    assert first == last


@pytest.mark.xen
def test_pause_and_unpause_reach_the_audit_log_in_real_time(results: dict[str, Any]) -> None:
    """Polling (no xenstore watch fires on pause) sees each pause and unpause within a
    few polls of it (``shared``: within LATE_DOM0_S)."""
    for setup in SETUPS:
        run = results["real"][f"{setup.name}/real_agent"]
        out, audit = run["out"], run["audit"]
        events = [(r["type"], r["subject"].get("domain"), r["t"]) for r in audit
                  if r["kind"] == "event" and r["type"] in ("domain.pause", "domain.unpause")]
        within = SETTLE_POLLS * POLL_S if setup.name in STUCK else LATE_DOM0_S
        for phase in out["phases"]:
            for cmd in phase["commands"]:
                verb, dom = cmd["op"]
                done = out["t0_wall"] + cmd["end_s"]
                start = out["t0_wall"] + cmd["start_s"]
                seen = [t for typ, d, t in events if typ == f"domain.{verb}" and d == dom
                        and start - 1.0 <= t <= done + within]
                assert seen, (setup.name, verb, dom, cmd, events)
