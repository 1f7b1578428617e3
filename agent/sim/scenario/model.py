"""The parsed scenario: its names and units, ``Event``, ``Scenario`` and ``ScenarioError``."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from agent.hypervisor.model import CpuSet, format_cpuset
from agent.sim.spec import Bursty, CpuBound, DomainSpec, HostSpec, Idle, SchedulerName, Workload

DOM0_NAME = "Domain-0"
POOL0_NAME = "Pool-0"
SCHEDULERS: tuple[SchedulerName, ...] = ("credit1", "credit2")
ACTIONS = ("create", "destroy", "pause", "unpause", "set-load", "set-affinity")
Action = Literal["create", "destroy", "pause", "unpause", "set-load", "set-affinity"]
NS_PER_S = 1_000_000_000


class ScenarioError(Exception):
    """A scenario file is missing, unreadable or invalid; ``errors`` lists every problem."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = tuple(errors)
        lines = [f"{source}: {e}" for e in self.errors]
        super().__init__("\n".join(lines))


@dataclass(frozen=True, slots=True)
class Event:
    """One timeline entry."""

    at_ns: int
    action: Action
    domain: str
    vcpus: tuple[int, ...] | None = None  # set-load / set-affinity; None = every vCPU
    workload: Workload | None = None  # set-load
    hard: CpuSet | None = None  # set-affinity; None = keep
    soft: CpuSet | None = None  # set-affinity; None = keep
    phase: str | None = None  # name of the phase this event opens

    @property
    def at_s(self) -> float:
        return self.at_ns / NS_PER_S

    def describe(self) -> str:
        """Short human text, stable across runs: ``pause A``, ``set-load B vcpus 0-3 idle``."""
        parts = [self.action, self.domain]
        if self.vcpus is not None:
            parts.append(f"vcpus {format_cpuset(self.vcpus)}")
        if self.workload is not None:
            parts.append(describe_workload(self.workload))
        if self.hard is not None:
            parts.append(f"hard {format_cpuset(self.hard)}")
        if self.soft is not None:
            parts.append(f"soft {format_cpuset(self.soft)}")
        return " ".join(parts)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    source: str  # the file it came from
    description: str
    host: HostSpec
    # Every domain the run may create, dom0 first, then in file order.
    domains: tuple[DomainSpec, ...]
    # Domains created at time 0 (the others wait for a ``create`` event).
    initial: tuple[str, ...]
    start_paused: frozenset[str]
    timeline: tuple[Event, ...]  # ordered by time, then file order
    duration_ns: int
    first_phase: str = "start"  # name of the phase before the first event

    @property
    def seed(self) -> int:
        return self.host.seed

    @property
    def duration_s(self) -> float:
        return self.duration_ns / NS_PER_S

    def domain(self, name: str) -> DomainSpec:
        for spec in self.domains:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def schedulers(self) -> dict[str, SchedulerName]:
        """Scheduler of each cpupool, Pool-0 first."""
        result: dict[str, SchedulerName] = {POOL0_NAME: self.host.scheduler}
        for pool in self.host.pools:
            result[pool.name] = pool.scheduler
        return result

    def scheduler_label(self) -> str:
        """One scheduler name if every pool uses it, else ``Pool-0:credit1,guests:credit2``."""
        by_pool = self.schedulers()
        names = set(by_pool.values())
        if len(names) == 1:
            return names.pop()
        return ",".join(f"{pool}:{sched}" for pool, sched in by_pool.items())

    def with_overrides(
        self,
        *,
        seed: int | None = None,
        duration_s: float | None = None,
        scheduler: SchedulerName | None = None,
    ) -> Scenario:
        """The same scenario with the seed, the length or every pool's scheduler replaced.

        A shorter run drops the timeline events at or after its end.
        """
        host = self.host
        if seed is not None:
            if seed < 0:
                raise ValueError(f"seed must be >= 0, got {seed}")
            host = dataclasses.replace(host, seed=seed)
        if scheduler is not None:
            pools = tuple(dataclasses.replace(p, scheduler=scheduler) for p in host.pools)
            host = dataclasses.replace(host, scheduler=scheduler, pools=pools)
        duration_ns = self.duration_ns
        timeline = self.timeline
        if duration_s is not None:
            if not (math.isfinite(duration_s) and duration_s > 0):
                raise ValueError(f"duration must be a positive number of seconds, got {duration_s}")
            duration_ns = round(duration_s * NS_PER_S)
            timeline = tuple(e for e in timeline if e.at_ns < duration_ns)
        return dataclasses.replace(self, host=host, duration_ns=duration_ns, timeline=timeline)


def describe_workload(w: Workload) -> str:
    if isinstance(w, CpuBound):
        return "cpu-bound"
    if isinstance(w, Idle):
        return "idle"
    if isinstance(w, Bursty):
        return f"bursty(on={_num(w.on_ms)}ms,off={_num(w.off_ms)}ms)"
    return f"io-like(run={_num(w.run_us)}us,block={_num(w.block_us)}us)"


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(x)
