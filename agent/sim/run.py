"""Drive a scenario through a simulated host and measure it.

The runner owns the clock of the run: it advances the host bucket by bucket
(10 ms of simulated time by default, cut at every timeline event), applies the
timeline's events when their time comes, turns each bucket's accounting into
metrics, and groups the buckets into phases (a phase runs from one event
instant to the next).

An agent plugs in three ways, all in simulated time:
- ``Runner.run_async(agent)``: the run executes under trio, the host moving
  with trio's clock (virtual under MockClock), while the ``Agent`` runs in the
  same nursery and talks to the host through the Hypervisor interface
  (``SimHypervisor``): the production agent, unchanged;
- ``Runner.run(hook)``: a ``BucketHook`` is called after every bucket with the
  runner (hence the host) and may act on it before time moves on;
- ``Runner.step()`` / ``Runner.next_stop_ns()``: a driver that owns the loop.
Either way the agent reports its action counts and outstanding temporary pins
through ``AgentReport``; the result carries them.

The efficiency optimum respects the hard affinity the *scenario* sets (domain
definitions and set-affinity events), not an agent's temporary pins: a pin is
the agent's choice, and must not lower the bar it is measured against.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from agent.hypervisor.interface import Hypervisor
from agent.hypervisor.model import CpuSet, DomainInfo
from agent.sim.accounting import Accounting
from agent.sim.metrics import (
    Bucket,
    BucketSums,
    FairOptimum,
    Optimum,
    Score,
    Shape,
    Tally,
    VcpuUsage,
    efficiency,
    recovery_ns,
)
from agent.sim.scenario import NS_PER_S, POOL0_NAME, Event, Scenario
from agent.sim.spec import DomainSpec, HostSpec, Workload

BUCKET_NS = 10_000_000  # 10 ms: one credit1 tick
WINDOW_NS = 250_000_000  # the recovery window
RECOVERED = 0.99  # efficiency that counts as recovered


class Host(Protocol):
    """What the runner needs of a simulated host (``agent.sim.engine.SimHost``)."""

    @property
    def now_ns(self) -> int: ...

    def create_domain(self, spec: DomainSpec, *, paused: bool = False) -> int: ...

    def pause(self, domid: int) -> None: ...

    def unpause(self, domid: int) -> None: ...

    def destroy(self, domid: int) -> None: ...

    def set_workload(self, domid: int, vcpu: int | None, workload: Workload) -> None: ...

    def set_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None: ...

    def advance(self, until_ns: int) -> None: ...

    def domain_info(self) -> list[DomainInfo]: ...

    def memory_per_node(self, domid: int) -> tuple[int, ...]: ...

    def take_accounting(self) -> Accounting: ...


class DomainListener(Protocol):
    """Told when the run creates or destroys a domain (the toolstack's xenstore work)."""

    def domain_created(self, host: Host, domid: int) -> None: ...

    def domain_destroyed(self, host: Host, domid: int) -> None: ...


@dataclass(frozen=True, slots=True)
class AgentReport:
    """What an agent did: actions by type, and temporary hard pins not yet restored."""

    actions: dict[str, int] = field(default_factory=dict)
    temporary_pins_outstanding: int = 0


class Agent(Protocol):
    """An agent running beside the simulated host under trio (``Runner.run_async``)."""

    async def run(self, hypervisor: Hypervisor) -> None:
        """Watch and act until cancelled."""
        ...

    def report(self) -> AgentReport: ...


class BucketHook(Protocol):
    """An agent running inside the simulation, called after every bucket."""

    def on_bucket(self, runner: Runner) -> None: ...

    def report(self) -> AgentReport: ...


# -- results ------------------------------------------------------------------------------


@dataclass(slots=True)
class Phase:
    name: str
    start_ns: int
    end_ns: int
    tally: Tally


@dataclass(frozen=True, slots=True)
class EventResult:
    at_ns: int
    what: str
    recovery_ns: int | None
    fair_recovery_ns: int | None = None  # the same for fair efficiency


@dataclass(frozen=True, slots=True)
class Sample:
    """Run time of each domain on each node over one bucket (what ``--plot`` draws)."""

    start_ns: int
    end_ns: int
    run_ns: dict[str, tuple[int, ...]]


def _r(x: float | None, digits: int = 4) -> float | None:
    if x is None:
        return None
    y = round(x, digits)
    return 0.0 if y == 0 else y  # no "-0.0"


def _s(ns: int | float) -> float:
    return round(ns / NS_PER_S, 3)


@dataclass(frozen=True, slots=True)
class BackendTally:
    """dom0's backend threads at the end of a run: how many may run only on their
    guest's home node (``agent.sim.dom0_procs``), of how many."""

    on_home: int
    total: int


@dataclass(slots=True)
class RunResult:
    scenario: Scenario
    shape: Shape
    phases: list[Phase]
    events: list[EventResult]
    total: Tally
    samples: list[Sample]
    agent: bool = False
    report: AgentReport = field(default_factory=AgentReport)
    lp_solved: int = 0
    backends: BackendTally | None = None  # measured when a toolstack built the guests

    @property
    def domain_names(self) -> list[str]:
        """Every domain the run knew, in scenario order."""
        return [d.name for d in self.scenario.domains]

    def _domains(self, tally: Tally) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        for name in self.domain_names:
            d = tally.domains.get(name)
            if d is None:
                continue
            out[name] = {
                "locality": _r(d.locality),
                "run_s": _s(d.run_ns),
                "fair_s": _s(d.fair_ns),
                "useful_s": _s(d.useful_ns),
                "demand_s": _s(d.demand_ns),
                "migrations": d.migrations,
                "node_moves": d.node_moves,
            }
        return out

    def to_dict(self) -> dict[str, Any]:
        """The ``xnuma sim --json`` object. Floats are rounded so output is stable."""
        sc = self.scenario
        return {
            "scenario": sc.name,
            "scheduler": sc.scheduler_label(),
            "agent": self.agent,
            "seed": sc.seed,
            "duration_s": _s(sc.duration_ns),
            "host_locality": _r(self.total.host_locality),
            "efficiency": _r(self.total.efficiency),
            "fair_efficiency": _r(self.total.fair_efficiency),
            "jain": _r(self.total.jain),
            "phases": [
                {
                    "name": p.name,
                    "start_s": _s(p.start_ns),
                    "end_s": _s(p.end_ns),
                    "host_locality": _r(p.tally.host_locality),
                    "efficiency": _r(p.tally.efficiency),
                    "fair_efficiency": _r(p.tally.fair_efficiency),
                    "jain": _r(p.tally.jain),
                    "migrations": p.tally.migrations,
                    "node_moves": p.tally.node_moves,
                    "utilisation": [_r(u, 3) for u in p.tally.utilisation(self.shape)],
                    "domains": self._domains(p.tally),
                }
                for p in self.phases
            ],
            "events": [
                {
                    "at_s": _s(e.at_ns),
                    "what": e.what,
                    "recovery_s": None if e.recovery_ns is None else _s(e.recovery_ns),
                    "fair_recovery_s": (None if e.fair_recovery_ns is None
                                        else _s(e.fair_recovery_ns)),
                }
                for e in self.events
            ],
            "migrations": self.total.migrations,
            "node_moves": self.total.node_moves,
            "actions": dict(sorted(self.report.actions.items())),
            "temporary_pins_outstanding": self.report.temporary_pins_outstanding,
            "backends": None if self.backends is None else {
                "on_home": self.backends.on_home, "total": self.backends.total},
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, allow_nan=False)

    def table(self) -> str:
        """The human report: one block per phase, then the events."""
        sc = self.scenario
        lines = [
            f"{sc.name}: {sc.scheduler_label()}, seed {sc.seed}, "
            f"{_s(sc.duration_ns):g} s simulated, " + ("with agent" if self.agent else "no agent"),
        ]
        for p in self.phases:
            t = p.tally
            util = "  ".join(f"n{i} {u:.2f}" for i, u in enumerate(t.utilisation(self.shape)))
            lines += [
                "",
                f"phase {p.name!r}: {_s(p.start_ns):.3f}-{_s(p.end_ns):.3f} s",
                f"  host locality {_fmt(t.host_locality)}  efficiency {t.efficiency:.4f}  "
                f"fair efficiency {t.fair_efficiency:.4f}  Jain {t.jain:.4f}  "
                f"migrations {t.migrations} ({t.node_moves} across nodes)",
                f"  node utilisation  {util}",
                f"  {'domain':<16}{'locality':>9}{'run s':>10}{'fair s':>10}{'useful s':>10}"
                f"{'moves':>7}",
            ]
            for name, d in self._domains(t).items():
                lines.append(f"  {name:<16}{_fmt(d['locality']):>9}{d['run_s']:>10.3f}"
                             f"{d['fair_s']:>10.3f}{d['useful_s']:>10.3f}{d['node_moves']:>7}")
        if self.events:
            lines += ["", "events (recovery: efficiency, then fair efficiency, over 250 ms back to "
                      "0.99 for good)"]
            for e in self.events:
                rec = "never" if e.recovery_ns is None else f"{_s(e.recovery_ns):.3f} s"
                fair = "never" if e.fair_recovery_ns is None else f"{_s(e.fair_recovery_ns):.3f} s"
                lines.append(f"  {_s(e.at_ns):9.3f} s  {e.what:<40} {rec:>9}  {fair:>9}")
        lines += ["", f"whole run: host locality {_fmt(self.total.host_locality)}  efficiency "
                  f"{self.total.efficiency:.4f}  fair efficiency {self.total.fair_efficiency:.4f}  "
                  f"migrations {self.total.migrations}"]
        if self.agent:
            acts = ", ".join(f"{k} {v}" for k, v in sorted(self.report.actions.items()))
            lines.append(f"agent actions: {acts or 'none'}; temporary pins outstanding: "
                         f"{self.report.temporary_pins_outstanding}")
        if self.backends is not None:
            lines.append(f"dom0 backend threads on their guest's home node: "
                         f"{self.backends.on_home} of {self.backends.total}")
        return "\n".join(lines)


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.4f}"


# -- the runner ------------------------------------------------------------------------------


def pool_cpus(host: HostSpec) -> dict[str, CpuSet]:
    """pCPUs of each cpupool; Pool-0 has those no other pool has."""
    everything = frozenset(range(sum(n.cpus for n in host.nodes)))
    taken = frozenset().union(*(p.cpus for p in host.pools))
    return {POOL0_NAME: everything - taken, **{p.name: p.cpus for p in host.pools}}


@dataclass(slots=True)
class _Live:
    """A domain the run created and has not destroyed."""

    name: str
    domid: int
    home: int
    allowed: list[CpuSet]  # per vCPU: configured hard affinity within the pool


class Runner:
    """One run of a scenario on one host."""

    def __init__(
        self,
        scenario: Scenario,
        host_factory: Callable[[HostSpec], Host] | None = None,
        *,
        bucket_ns: int = BUCKET_NS,
        window_ns: int = WINDOW_NS,
        threshold: float = RECOVERED,
        listeners: Sequence[DomainListener] = (),
    ) -> None:
        if bucket_ns <= 0 or window_ns <= 0:
            raise ValueError("bucket and window must be > 0 ns")
        if host_factory is None:
            from agent.sim.engine import SimHost

            host_factory = SimHost
        self.scenario = scenario
        self.host: Host = host_factory(scenario.host)
        self.shape = Shape.of(scenario.host)
        self.pools = pool_cpus(scenario.host)
        self.bucket_ns = bucket_ns
        self.window_ns = window_ns
        self.threshold = threshold
        self.listeners = list(listeners)
        self.optimum = Optimum(self.shape)
        self.fair_optimum = FairOptimum(self.shape)
        self.live: dict[str, _Live] = {}
        self._gone: dict[int, _Live] = {}  # destroyed since the last bucket
        self._pending = list(scenario.timeline)
        self._scores: list[Score] = []
        self.total = Tally(nodes=len(scenario.host.nodes))
        self.phases: list[Phase] = [
            Phase(scenario.first_phase, 0, scenario.duration_ns, Tally(len(scenario.host.nodes)))
        ]
        self._phase_events: dict[int, list[Event]] = {}  # phase index -> events opening it
        self.samples: list[Sample] = []
        self.started = False
        self.done = False

    # -- driving --

    @property
    def scores(self) -> Sequence[Score]:
        """Every bucket's score so far (useful and optimum work), in time order."""
        return self._scores

    @property
    def now_ns(self) -> int:
        return self.host.now_ns

    def start(self) -> None:
        """Create the domains that exist from time 0."""
        if self.started:
            return
        self.started = True
        for name in self.scenario.initial:
            self._create(name)

    def next_stop_ns(self) -> int:
        """The next bucket boundary: the next grid point or event, whichever is first."""
        now = self.now_ns
        stop = min((now // self.bucket_ns + 1) * self.bucket_ns, self.scenario.duration_ns)
        if self._pending:
            stop = min(stop, self._pending[0].at_ns)
        return stop

    def step(self) -> bool:
        """Run one bucket (and the events at its end); False once the run is over."""
        self.start()
        if self.done:
            return False
        stop = self.next_stop_ns()
        self.host.advance(stop)
        self._account(self.host.take_accounting())
        if stop >= self.scenario.duration_ns:
            self.done = True
            return False
        due: list[Event] = []
        while self._pending and self._pending[0].at_ns <= stop:
            due.append(self._pending.pop(0))
        if due:
            self._begin_phase(stop, due)
            for event in due:
                self._apply(event)
        return True

    def run(self, hook: BucketHook | None = None) -> RunResult:
        """Run to the end, calling ``hook`` after every bucket."""
        while self.step():
            if hook is not None:
                hook.on_bucket(self)
        return self.result(hook.report() if hook is not None else None)

    async def run_async(
        self, agent: Agent | None = None, hypervisor: Hypervisor | None = None
    ) -> RunResult:
        """Run under trio with ``agent`` beside the host, one trio second per simulated
        second from now: virtual time under trio's MockClock, wall time otherwise.

        The agent talks to the host through ``hypervisor`` (by default a
        ``SimHypervisor`` over it); its actions land at the host's current time. Before
        each bucket the driver waits until every other task is blocked, so whatever the
        agent does at an instant is done before the host moves on, and a run is
        reproducible even though trio wakes simultaneous tasks in random order.
        """
        import trio
        import trio.testing

        if agent is not None and hypervisor is None:
            from agent.sim.backend import SimHypervisor
            from agent.sim.engine import SimHost

            if not isinstance(self.host, SimHost):
                raise TypeError("pass a hypervisor for a host that is not a SimHost")
            hypervisor = SimHypervisor(self.host)
        origin = trio.current_time() - self.now_ns / NS_PER_S
        self.start()
        async with trio.open_nursery() as nursery:
            if agent is not None:
                assert hypervisor is not None
                nursery.start_soon(agent.run, hypervisor)
            while not self.done:
                await trio.sleep_until(origin + self.next_stop_ns() / NS_PER_S)
                await trio.testing.wait_all_tasks_blocked()
                self.step()
            nursery.cancel_scope.cancel()
        return self.result(agent.report() if agent is not None else None)

    def result(self, report: AgentReport | None = None) -> RunResult:
        events: list[EventResult] = []
        for i, phase in enumerate(self.phases[1:], start=1):
            for event in self._phase_events[i]:
                rec, fair = (recovery_ns(self._scores, phase.start_ns, phase.end_ns,
                                         window_ns=self.window_ns, threshold=self.threshold,
                                         fair=f) for f in (False, True))
                events.append(EventResult(event.at_ns, event.describe(), rec, fair))
        return RunResult(
            scenario=self.scenario,
            shape=self.shape,
            phases=self.phases,
            events=events,
            total=self.total,
            samples=self.samples,
            agent=report is not None,
            report=report or AgentReport(),
            lp_solved=self.optimum.solved + self.fair_optimum.solved,
        )

    # -- timeline --

    def _begin_phase(self, at_ns: int, events: list[Event]) -> None:
        self.phases[-1].end_ns = at_ns
        name = next((e.phase for e in events if e.phase), None) or "; ".join(
            e.describe() for e in events)
        self.phases.append(Phase(name, at_ns, self.scenario.duration_ns,
                                 Tally(len(self.scenario.host.nodes))))
        self._phase_events[len(self.phases) - 1] = events

    def _apply(self, event: Event) -> None:
        if event.action == "create":
            self._create(event.domain)
            return
        live = self.live[event.domain]
        if event.action == "destroy":
            self.host.destroy(live.domid)
            del self.live[event.domain]
            self._gone[live.domid] = live
            for listener in self.listeners:
                listener.domain_destroyed(self.host, live.domid)
        elif event.action == "pause":
            self.host.pause(live.domid)
        elif event.action == "unpause":
            self.host.unpause(live.domid)
        elif event.action == "set-load":
            assert event.workload is not None
            if event.vcpus is None:
                self.host.set_workload(live.domid, None, event.workload)
            else:
                for vcpu in event.vcpus:
                    self.host.set_workload(live.domid, vcpu, event.workload)
        else:  # set-affinity
            spec = self.scenario.domain(event.domain)
            for vcpu in event.vcpus if event.vcpus is not None else range(spec.vcpus):
                self.host.set_affinity(live.domid, vcpu, event.hard, event.soft)
                if event.hard is not None:
                    live.allowed[vcpu] = event.hard & self.pools[spec.pool]

    def _create(self, name: str) -> None:
        spec = self.scenario.domain(name)
        domid = self.host.create_domain(spec, paused=name in self.scenario.start_paused)
        memory = self.host.memory_per_node(domid)
        home = max(range(len(memory)), key=lambda n: (memory[n], -n))
        pool = self.pools[spec.pool]
        allowed = pool if spec.hard is None else spec.hard & pool
        per_vcpu = ([frozenset({p}) & pool for p in spec.pins] if spec.pins is not None
                    else [allowed] * spec.vcpus)
        self.live[name] = _Live(name, domid, home, per_vcpu)
        for listener in self.listeners:
            listener.domain_created(self.host, domid)

    # -- accounting --

    def _account(self, acct: Accounting) -> None:
        if acct.end_ns <= acct.start_ns:
            return
        by_domid = {live.domid: live for live in self.live.values()}
        by_domid.update(self._gone)
        nodes = len(self.scenario.host.nodes)
        specs = {d.name: d for d in self.scenario.domains}
        usages: list[VcpuUsage] = []
        for (domid, vcpu), a in acct.vcpus.items():
            live = by_domid.get(domid)
            if live is None:
                raise RuntimeError(f"accounting names domid {domid}, which the run never created")
            usages.append(VcpuUsage(
                domain=live.name, vcpu=vcpu, home=live.home, allowed=live.allowed[vcpu],
                run_ns=a.run_ns, demand_ns=a.demand_ns, migrations=a.migrations,
                node_moves=a.cross_node_migrations, pool=specs[live.name].pool,
                weight=float(specs[live.name].weight),
            ))
        self._gone.clear()
        bucket = Bucket(acct.start_ns, acct.end_ns, tuple(usages), acct.node_busy_ns)
        optimum = self.optimum.of(bucket)
        sums = BucketSums.of(bucket, self.shape, optimum, self.fair_optimum.of(bucket, optimum))
        try:
            efficiency(sums.useful_ns, sums.optimum_ns)
        except ValueError as exc:  # fail at the bucket that broke, not at the end
            raise ValueError(f"bucket {bucket.start_ns}-{bucket.end_ns} ns: {exc}") from None
        self.total.add(sums)
        self.phases[-1].tally.add(sums)
        self._scores.append(sums.score(bucket.start_ns, bucket.end_ns))
        per_domain: dict[str, list[int]] = {}
        for v in usages:
            acc = per_domain.setdefault(v.domain, [0] * nodes)
            for node, ns in enumerate(v.run_ns):
                acc[node] += ns
        self.samples.append(Sample(bucket.start_ns, bucket.end_ns,
                                   {k: tuple(v) for k, v in per_domain.items()}))


def run_scenario(
    scenario: Scenario,
    host_factory: Callable[[HostSpec], Host] | None = None,
    *,
    hook: BucketHook | None = None,
    listeners: Iterable[DomainListener] = (),
    bucket_ns: int = BUCKET_NS,
) -> RunResult:
    """Run ``scenario`` from start to end and measure it."""
    runner = Runner(scenario, host_factory, bucket_ns=bucket_ns, listeners=tuple(listeners))
    return runner.run(hook)
