"""``domain.set_hard`` carried out by the production agent, against the simulator.

The host: 2 nodes x 2 pCPUs, A (2 vCPUs) homed on node 0, C (2 vCPUs) on
node 1, both cpu-bound. A rule narrows A's hard affinity to its soft node.
What must hold: the narrowing lands, is journalled, is restored when its time
is up (and not before), a second action renews rather than re-pins, a pin for
good stays until the agent stops (SIGTERM restores it) or, after a kill, until
the next start restores it from the journal; a dry run changes nothing; every
step is in the audit log. Unit cases: a vCPU held by a fixup is not taken
over, a missing node or a domain gone is recorded as skipped.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, cast

import trio
import trio.testing

from agent.daemon.actions import Actions
from agent.daemon.hard import SET_HARD, HardSetter
from agent.daemon.loop import Agent
from agent.daemon.observe import Observer
from agent.daemon.pins import TEMPORARY, PinKeeper
from agent.daemon.recorder import Recorder
from agent.daemon.simhost import AgentRun, run_with_agent, sim_config
from agent.hypervisor.interface import Forwarding
from agent.hypervisor.model import CpuSet
from agent.journal import DomainKey, PinJournal
from agent.rules.actions import SetHardAffinity
from agent.rules.decide import Decision, Outcome
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import Scenario, parse_scenario
from agent.state import build_state

ALL: CpuSet = frozenset(range(4))
NODE0: CpuSet = frozenset({0, 1})

SCENARIO = """
name = "two-pairs"
scheduler = "credit1"
duration_s = {duration}
seed = 3
[host]
[[host.nodes]]
cpus = 2
memory_mib = 4096
[[host.nodes]]
cpus = 2
memory_mib = 4096
[dom0]
vcpus = 1
memory_mib = 256
memory_nodes = [0]
workload = "idle"
[domains.A]
vcpus = 2
memory_mib = 512
soft = "node:0"
memory_nodes = [0]
workload = "cpu-bound"
[domains.C]
vcpus = 2
memory_mib = 512
soft = "node:1"
memory_nodes = [1]
workload = "cpu-bound"
"""

RULE = """
[[rule]]
name = "pin-a"
on = ["tick"]
for_each = "domain"
when = 'domain.name == "A"'
cooldown = "{cooldown}"
{extra}
[rule.action]
type = "domain.set_hard"
domid = "domain.domid"
nodes = "domain.soft_nodes"
duration_s = {duration_s}
"""


def scenario(duration: float) -> Scenario:
    return parse_scenario(SCENARIO.format(duration=duration), source="two-pairs.toml")


class Logged(Forwarding[SimHypervisor]):
    """The simulator's hypervisor, with every affinity change and when it was made."""

    def __init__(self, inner: SimHypervisor) -> None:
        super().__init__(inner)
        self.changes: list[tuple[float, int, int, CpuSet | None]] = []

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        await self.inner.set_vcpu_affinity(domid, vcpu, hard, soft)
        self.changes.append((trio.current_time(), domid, vcpu, hard))


def run(
    tmp_path: Path, *, duration_s: float, cooldown: str = "100s", extra: str = "",
    seconds: float = 4.0, during: Callable[[Agent], Any] | None = None,
) -> tuple[AgentRun, Logged]:
    rules = tmp_path / "rules"
    rules.mkdir(exist_ok=True)
    (rules / "pin.toml").write_text(RULE.format(cooldown=cooldown, extra=extra,
                                                duration_s=duration_s))
    config = sim_config(tmp_path, rules_dir=str(rules))
    logged: list[Logged] = []

    def hypervisor_for(runner: Runner) -> Logged:
        assert isinstance(runner.host, SimHost)
        logged.append(Logged(SimHypervisor(runner.host)))
        return logged[-1]

    async def main() -> AgentRun:
        agents: list[Agent] = []
        async with trio.open_nursery() as nursery:
            if during is not None:
                async def later() -> None:
                    await trio.sleep(0)
                    await during(agents[0])
                nursery.start_soon(later)
            return await run_with_agent(scenario(seconds), config, keep_records=True,
                                        clock=trio.current_time, on_agent=agents.append,
                                        hypervisor_for=hypervisor_for)

    result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return result, logged[0]


def hard_of(run: AgentRun, domain: str) -> list[CpuSet]:
    host = run.runner.host
    assert isinstance(host, SimHost)
    return list(host.effective_hard(run.runner.live[domain].domid))


def actions(run: AgentRun, type: str) -> list[dict[str, Any]]:
    kept = run.agent.recorder.kept
    assert kept is not None
    return [body for _, body in kept if body["kind"] == "action" and body["type"] == type]


def a_changes(logged: Logged, run: AgentRun) -> list[tuple[float, int, CpuSet | None]]:
    domid = run.runner.live["A"].domid
    return [(t, v, hard) for t, d, v, hard in logged.changes if d == domid]


def test_a_timed_narrowing_lands_then_is_restored_when_its_time_is_up(tmp_path: Path) -> None:
    done, logged = run(tmp_path, duration_s=1.5)
    changes = a_changes(logged, done)
    narrowed = [(t, v) for t, v, hard in changes if hard == NODE0]
    restored = [(t, v) for t, v, hard in changes if hard == ALL]
    assert sorted(v for _, v in narrowed) == [0, 1]
    assert sorted(v for _, v in restored) == [0, 1]
    first = min(t for t, _ in narrowed)
    assert 1.0 < first < 1.3  # the first tick, 1 s after the agent started
    # Restored at the first scan once 1.5 s are up, within a poll (0.1 s).
    assert all(first + 1.5 - 1e-6 <= t <= first + 1.5 + 0.11 for t, _ in restored)
    assert hard_of(done, "A") == [ALL, ALL] and hard_of(done, "C") == [ALL, ALL]
    assert done.result.report is not None and done.result.report.temporary_pins_outstanding == 0
    [record] = actions(done, "domain.set_hard")
    assert record["outcome"] == "ok" and record["narrowed"] == [0, 1]
    assert record["params"] == {"domid": done.runner.live["A"].domid, "nodes": [0],
                                "duration_s": 1.5}
    assert [r["outcome"] for r in actions(done, "set_hard")] == ["ok", "ok"]
    restores = actions(done, "restore_hard")
    assert [(r["outcome"], r["params"]["why"]) for r in restores] == \
        [("ok", "domain.set_hard: time up")] * 2


def test_acting_again_renews_the_pin_without_touching_the_host(tmp_path: Path) -> None:
    done, logged = run(tmp_path, duration_s=1.5, cooldown="0s", seconds=3.5)
    changes = a_changes(logged, done)
    # Ticks at about 1.1, 2.1 and 3.1 s each act; only the first narrows, and each
    # later one moves the end on, so the pins are still there when the run ends.
    assert sorted(v for _, v, hard in changes if hard == NODE0) == [0, 1]
    assert not [c for c in changes if c[2] == ALL]
    records = actions(done, "domain.set_hard")
    assert [(r["narrowed"], r["renewed"]) for r in records] == \
        [([0, 1], []), ([], [0, 1]), ([], [0, 1])]
    assert hard_of(done, "A") == [NODE0, NODE0]


def test_a_pin_for_good_stays_and_the_next_start_restores_it(tmp_path: Path) -> None:
    done, _ = run(tmp_path, duration_s=0, seconds=3.0)
    assert hard_of(done, "A") == [NODE0, NODE0]
    assert done.result.report is not None and done.result.report.temporary_pins_outstanding == 2
    # The run ended by cancellation, as a kill -9 would end it: the journal holds both.
    with PinJournal(tmp_path / "pins.journal") as journal:
        assert sorted((p.vcpu, p.original_hard) for p in journal.outstanding()) == \
            [(0, ALL), (1, ALL)]
        host = done.runner.host
        assert isinstance(host, SimHost)
        keeper = PinKeeper(SimHypervisor(host), journal, Recorder())
        left = trio.run(keeper.restore_journal, clock=trio.testing.MockClock())
        assert left == 0 and journal.outstanding() == []
    assert hard_of(done, "A") == [ALL, ALL]


def test_sigterm_restores_a_pin_for_good(tmp_path: Path) -> None:
    async def stop_at_2s(agent: Agent) -> None:
        await trio.sleep(2.0)
        agent.stop("SIGTERM")

    done, _ = run(tmp_path, duration_s=0, seconds=3.0, during=stop_at_2s)
    assert done.agent.stopped_by == "SIGTERM" and done.agent.exit_code == 0
    assert hard_of(done, "A") == [ALL, ALL]
    with PinJournal(tmp_path / "pins.journal") as journal:
        assert journal.outstanding() == []
    assert [r["params"]["why"] for r in actions(done, "restore_hard")] == \
        ["agent stopping: SIGTERM"] * 2


def test_a_dry_run_rule_changes_nothing(tmp_path: Path) -> None:
    done, logged = run(tmp_path, duration_s=1.0, extra="dry_run = true")
    assert logged.changes == [] and actions(done, "domain.set_hard") == []
    kept = done.agent.recorder.kept
    assert kept is not None
    outcomes = [b["outcome"] for _, b in kept if b["kind"] == "decision"]
    assert outcomes[0] == "dry-run" and "act" not in outcomes  # (then its cooldown)


# -- unit cases: the setter on a host the test holds ----------------------------------


def setup(tmp_path: Path) -> tuple[SimHost, SimHypervisor, PinKeeper, HardSetter, Recorder]:
    sc = scenario(1.0)
    runner = Runner(sc)
    runner.start()
    host = runner.host
    assert isinstance(host, SimHost)
    hv = SimHypervisor(host)
    recorder = Recorder(keep=True)
    keeper = PinKeeper(hv, PinJournal(tmp_path / "pins.journal"), recorder)
    return host, hv, keeper, HardSetter(keeper, recorder), recorder


def test_a_vcpu_held_by_a_fixup_is_not_taken_over(tmp_path: Path) -> None:
    host, hv, keeper, setter, recorder = setup(tmp_path)

    async def main() -> None:
        view = build_state(await Observer(hv).observe(), None)
        a = next(d for d in view.domains if d.name == "A")
        await keeper.narrow(DomainKey(a.domid, a.name, a.uuid), 0, ALL, frozenset({0}), 0,
                            TEMPORARY, view=view, decision=None, reason="fixup")
        outcome = await setter.set_hard(SetHardAffinity(a.domid, frozenset({0}), 5.0), None,
                                        view)
        assert outcome == "ok"
        assert keeper.held[(a.domid, 0)].mode == TEMPORARY
        assert keeper.held[(a.domid, 1)].mode == SET_HARD
        assert list(host.effective_hard(a.domid)) == [frozenset({0}), NODE0]

    trio.run(main, clock=trio.testing.MockClock())
    kept = recorder.kept
    assert kept is not None
    [record] = [b for _, b in kept if b.get("type") == "domain.set_hard"]
    assert record["skipped"] == {"0": "held by the agent's temporary pin"}
    assert record["narrowed"] == [1]


def test_bad_targets_at_run_time_are_recorded_as_skipped(tmp_path: Path) -> None:
    _, hv, keeper, setter, recorder = setup(tmp_path)

    async def main() -> list[str]:
        view = build_state(await Observer(hv).observe(), None)
        a = next(d for d in view.domains if d.name == "A")
        return [await setter.set_hard(action, None, view) for action in (
            SetHardAffinity(a.domid, frozenset({7}), 1.0),  # no such node
            SetHardAffinity(a.domid, frozenset({-1}), 1.0),  # home_node -1 as an expression
            SetHardAffinity(a.domid, frozenset({0}), -3.0),
            SetHardAffinity(99, frozenset({0}), 1.0),
        )]

    assert trio.run(main, clock=trio.testing.MockClock()) == ["skipped"] * 4
    kept = recorder.kept
    assert kept is not None
    errors = [b["error"] for _, b in kept if b.get("type") == "domain.set_hard"]
    assert errors == ["no node 7 on this host", "nodes node id -1 is negative",
                      "duration_s must be >= 0; got -3", "no such domain any more"]
    assert keeper.held == {}


class Slow(SimHypervisor):
    """A hypervisor whose second affinity call hangs (a wedged xl)."""

    calls = 0

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        self.calls += 1
        if self.calls == 2:
            await trio.sleep(1000.0)
        await super().set_vcpu_affinity(domid, vcpu, hard, soft)


def test_an_action_cut_off_by_its_bound_still_ends_its_pins(tmp_path: Path) -> None:
    host, _, _, _, _ = setup(tmp_path)
    hv = Slow(host)
    recorder = Recorder(keep=True)
    keeper = PinKeeper(hv, PinJournal(tmp_path / "slow.journal"), recorder)
    setter = HardSetter(keeper, recorder)
    acts = Actions(cast(Any, None), cast(Any, None), recorder, hard=setter)

    async def main() -> None:
        view = build_state(await Observer(hv).observe(), None)
        a = next(d for d in view.domains if d.name == "A")
        action = SetHardAffinity(a.domid, frozenset({0}), 100.0)
        assert acts.bound_s(action, view) == 30.0 * 2 + 5.0 * 2
        start = trio.current_time()
        await acts.run_one(Decision("r", ("domain", a.domid), Outcome.ACT, action), None, view)
        assert trio.current_time() - start == 70.0
        # Both pins are held (the second may have happened): journalled, and due at 100 s.
        assert sorted(keeper.held) == [(a.domid, 0), (a.domid, 1)]
        await setter.expire(view)
        assert len(keeper.held) == 2  # not yet
        await trio.sleep(30.0)
        await setter.expire(view)
        assert keeper.held == {} and setter.until == {}
        assert list(host.effective_hard(a.domid)) == [ALL, ALL]

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    kept = recorder.kept
    assert kept is not None
    [record] = [b for _, b in kept if b.get("type") == "domain.set_hard"]
    assert record["outcome"] == "failed" and record["error"] == "did not finish within 70 s"
