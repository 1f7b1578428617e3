"""One policy on one scenario, measured: the numbers behind one row of each table.

Every policy runs on the same simulated host (``agent.sim``), driven by the
same ``Runner``, so efficiency, locality, recovery and migrations are measured
alike. Agents (the xnuma agent, with xnuma's rules or a baseline's, and the
Python numad port) run beside the host in virtual time (trio's ``MockClock``)
and reach it through the ``Hypervisor`` interface, wrapped here to count their
affinity calls. The xnuma agent is the production one, run by
``run_with_agent`` as ``xnuma sim --agent`` runs it (its xenstore client on the
simulator's embedded xenstored), with a rule directory or file.

A run is deterministic: the same scenario and policy give the same record.
"""

from __future__ import annotations

import resource
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import trio
import trio.testing

from agent.hypervisor.interface import Forwarding, Hypervisor
from agent.hypervisor.model import CpuSet
from agent.sim.accounting import Accounting
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.metrics import Score
from agent.sim.run import Agent as SimAgent
from agent.sim.run import Runner, RunResult
from agent.sim.scenario import NS_PER_S, Scenario
from agent.sim.spec import DomainSpec, HostSpec
from benchmarks.fairness import DomainUse, FairTally
from benchmarks.policies import Policy

if TYPE_CHECKING:
    from agent.daemon.simhost import AgentRun

SERIES_BIN_NS = 250_000_000  # efficiency over time: one point per 250 ms
AGENT_DELAY_S = 0.099  # agents start just before the first round second (as simhost does)


# -- recording what the host accounted --------------------------------------------------


class RecordingHost(SimHost):
    """A SimHost that keeps each accounting window per domain (for fairness)."""

    def __init__(self, spec: HostSpec) -> None:
        super().__init__(spec)
        self.specs: dict[int, DomainSpec] = {}
        # (start ns, end ns, {domid: (run ns, demand ns)})
        self.windows: list[tuple[int, int, dict[int, tuple[int, int]]]] = []

    def create_domain(self, spec: DomainSpec, *, paused: bool = False) -> int:
        domid = super().create_domain(spec, paused=paused)
        self.specs[domid] = spec
        return domid

    def take_accounting(self) -> Accounting:
        acc = super().take_accounting()
        per: dict[int, tuple[int, int]] = {}
        for (domid, _), a in acc.vcpus.items():
            run, demand = per.get(domid, (0, 0))
            per[domid] = (run + sum(a.run_ns), demand + a.demand_ns)
        self.windows.append((acc.start_ns, acc.end_ns, per))
        return acc


# -- counting what an agent does ---------------------------------------------------------


@dataclass(slots=True)
class Calls:
    affinity: int = 0  # set_vcpu_affinity calls
    narrowings: int = 0  # ... that made a vCPU's hard affinity narrower
    widenings: int = 0  # ... that made it wider (a restore)
    soft: int = 0  # ... that changed soft affinity


class CountingHypervisor(Forwarding[SimHypervisor]):
    """The Hypervisor an agent is given: the simulator's, with its changes counted."""

    def __init__(self, inner: SimHypervisor) -> None:
        super().__init__(inner)
        self.calls = Calls()

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        before = next((v for v in self.inner.host.vcpu_info(domid) if v.vcpu == vcpu), None)
        await self.inner.set_vcpu_affinity(domid, vcpu, hard, soft)
        self.calls.affinity += 1
        if before is None:
            return
        if hard is not None and hard != before.hard:
            if hard < before.hard:
                self.calls.narrowings += 1
            elif hard > before.hard:
                self.calls.widenings += 1
        if soft is not None and soft != before.soft:
            self.calls.soft += 1


# -- the record of one run ---------------------------------------------------------------


@dataclass(slots=True)
class PhaseRecord:
    name: str
    start_s: float
    end_s: float
    efficiency: float
    locality: float | None
    jain: float
    worst: tuple[str, float] | None  # the domain with the smallest CPU time / fair share


@dataclass(slots=True)
class RunRecord:
    """Plain values (it crosses process boundaries)."""

    scenario: str
    policy: str
    scheduler: str
    duration_s: float
    efficiency: float
    locality: float | None
    phases: list[PhaseRecord]
    recovery_s: list[tuple[float, str, float | None]]  # (at, what, seconds or never)
    migrations: int
    node_moves: int
    affinity_calls: int
    narrowings: int
    narrowed_at_end: int  # vCPUs whose hard affinity is narrower than configured, at the end
    actions: dict[str, int]
    jain: float
    worst: tuple[str, float] | None
    shares: dict[str, float]  # domain -> CPU time / fair share, whole run
    series: list[tuple[float, float]]  # (mid time s, efficiency over the bin)
    # Useful work (each domain's counted up to its fair share) / the best placement that
    # keeps every domain within its weight-fair share (agent/sim/metrics.py).
    fair_efficiency: float = 0.0
    wall_s: float = 0.0
    cpu_s: float = 0.0
    notes: dict[str, Any] = field(default_factory=dict)


def efficiency_series(scores: Sequence[Score], bin_ns: int = SERIES_BIN_NS
                      ) -> list[tuple[float, float]]:
    """Efficiency per ``bin_ns`` of run time (1.0 where nothing was wanted)."""
    sums: dict[int, list[float]] = {}
    for s in scores:
        acc = sums.setdefault(s.start_ns // bin_ns, [0.0, 0.0])
        acc[0] += s.useful_ns
        acc[1] += s.optimum_ns
    return [((b + 0.5) * bin_ns / NS_PER_S, min(u / o, 1.0) if o > 0 else 1.0)
            for b, (u, o) in sorted(sums.items())]


def fairness(host: RecordingHost, pool_cpus: dict[str, int], start_ns: int, end_ns: int
             ) -> FairTally:
    tally = FairTally()
    names = {d: s.name for d, s in host.specs.items()}
    pool_of = {s.name: s.pool for s in host.specs.values()}
    weights = {s.name: float(s.weight) for s in host.specs.values()}
    for w_start, w_end, per in host.windows:
        if w_end <= w_start or w_start < start_ns or w_end > end_ns:
            continue
        use = {names[d]: DomainUse(run, demand) for d, (run, demand) in per.items()}
        tally.add_bucket(w_end - w_start, pool_cpus, pool_of, weights, use)
    return tally


def narrowed_at_end(runner: Runner) -> int:
    host = cast(SimHost, runner.host)
    count = 0
    for live in runner.live.values():
        for vcpu, mask in enumerate(host.effective_hard(live.domid)):
            if mask != live.allowed[vcpu]:
                count += 1
    return count


def record(policy: Policy, runner: Runner, result: RunResult, calls: Calls,
           actions: dict[str, int], wall_s: float, cpu_s: float) -> RunRecord:
    host = cast(RecordingHost, runner.host)
    pool_cpus = {name: len(cpus) for name, cpus in runner.pools.items()}
    phases = []
    for p in result.phases:
        tally = fairness(host, pool_cpus, p.start_ns, p.end_ns)
        phases.append(PhaseRecord(p.name, p.start_ns / NS_PER_S, p.end_ns / NS_PER_S,
                                  p.tally.efficiency, p.tally.host_locality, tally.jain(),
                                  tally.worst()))
    whole = fairness(host, pool_cpus, 0, result.scenario.duration_ns)
    sc = result.scenario
    return RunRecord(
        scenario=sc.name, policy=policy.name, scheduler=sc.scheduler_label(),
        duration_s=sc.duration_s, efficiency=result.total.efficiency,
        locality=result.total.host_locality, phases=phases,
        recovery_s=[(e.at_ns / NS_PER_S, e.what,
                     None if e.recovery_ns is None else e.recovery_ns / NS_PER_S)
                    for e in result.events],
        migrations=result.total.migrations, node_moves=result.total.node_moves,
        affinity_calls=calls.affinity, narrowings=calls.narrowings,
        narrowed_at_end=narrowed_at_end(runner), actions=dict(sorted(actions.items())),
        jain=whole.jain(), worst=whole.worst(), shares=whole.ratios(),
        series=efficiency_series(runner.scores),
        fair_efficiency=result.total.fair_efficiency,
        wall_s=wall_s, cpu_s=cpu_s,
    )


# -- running ------------------------------------------------------------------------------


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def run_policy(scenario: Scenario, policy: Policy) -> RunRecord:
    """Run ``scenario`` under ``policy`` from start to end; deterministic."""
    wall, cpu = time.perf_counter(), _cpu()
    if policy.kind == "scheduler":
        scenario = scenario.with_overrides(scheduler=policy.scheduler)
        runner = Runner(scenario, RecordingHost)
        result = runner.run()
        calls, actions = Calls(), dict[str, int]()
    elif policy.kind == "agent":
        assert policy.make is not None
        runner, result, calls, actions = _run_agent(scenario, cast(SimAgent, policy.make()))
    else:
        assert policy.rules_path is not None
        runner, result, calls, actions = run_rules(scenario, policy.rules_path)
    return record(policy, runner, result, calls, actions, time.perf_counter() - wall,
                  _cpu() - cpu)


def _run_agent(scenario: Scenario, agent: SimAgent
               ) -> tuple[Runner, RunResult, Calls, dict[str, int]]:
    from agent.daemon.simhost import Delayed

    runner = Runner(scenario, RecordingHost)
    hv = CountingHypervisor(SimHypervisor(cast(SimHost, runner.host)))

    async def main() -> RunResult:
        return await runner.run_async(Delayed(agent, AGENT_DELAY_S), hypervisor=hv)

    result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return runner, result, hv.calls, dict(result.report.actions)


def run_rules(
    scenario: Scenario, rules: Path,
    wrap: Callable[[SimHypervisor], CountingHypervisor] = CountingHypervisor,
) -> tuple[Runner, RunResult, Calls, dict[str, int]]:
    """The production agent as ``xnuma sim --agent`` runs it (``run_with_agent``:
    placement and backend pinning on the simulated dom0 included) with ``rules``
    (a directory or a file), on a recording host and a counting hypervisor
    (``wrap`` makes it)."""
    from agent.daemon.simhost import run_with_agent, sim_config

    counting: list[CountingHypervisor] = []

    def hypervisor_for(runner: Runner) -> Hypervisor:
        counting.append(wrap(SimHypervisor(cast(SimHost, runner.host))))
        return counting[-1]

    with tempfile.TemporaryDirectory(prefix="xnuma-bench-") as tmp:
        config = sim_config(Path(tmp), rules_dir=str(rules))

        async def main() -> AgentRun:
            return await run_with_agent(scenario, config, start_delay_s=AGENT_DELAY_S,
                                        clock=trio.current_time, host_factory=RecordingHost,
                                        hypervisor_for=hypervisor_for)

        run = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return run.runner, run.result, counting[0].calls, dict(run.result.report.actions)
