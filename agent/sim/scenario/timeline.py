"""[[timeline]] entries, and the replay that checks each finds its domain in a fit state."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any, cast

from agent.hypervisor.model import CpuSet, format_cpuset
from agent.sim.scenario.masks import MaskReader
from agent.sim.scenario.model import ACTIONS, DOM0_NAME, NS_PER_S, Action, Event
from agent.sim.scenario.workloads import WorkloadReader
from agent.sim.spec import DomainSpec, Workload

EVENT_KEYS: dict[str, tuple[str, ...]] = {
    "create": (),
    "destroy": (),
    "pause": (),
    "unpause": (),
    "set-load": ("vcpus", "workload"),
    "set-affinity": ("vcpus", "hard", "soft"),
}
EVENT_COMMON = ("at_s", "action", "domain", "phase")


class TimelineReader(MaskReader, WorkloadReader):
    def event(
        self, table: str, raw: dict[str, Any], specs: Mapping[str, DomainSpec], names_ok: bool,
        pool_cpus: Mapping[str, CpuSet],
    ) -> Event | None:
        ok = len(self.errors)
        action = self.required(table, raw, "action",
                               lambda t, k, v: self.string(t, k, v, choices=ACTIONS),
                               f"one of {', '.join(ACTIONS)}")
        self.check_keys(table, raw, EVENT_COMMON + (EVENT_KEYS[action] if action else ()))
        at_s = self.required(table, raw, "at_s",
                             lambda t, k, v: self.number(t, k, v, positive=True),
                             "seconds after the start, > 0")
        phase = self.optional(table, raw, "phase", self.any_string, None)
        domain = self.required(table, raw, "domain", self.any_string, "a domain name")
        spec: DomainSpec | None = None
        if domain is not None:
            spec = specs.get(domain)
            if spec is None:
                if names_ok:  # else the domain may exist but be invalid: already reported
                    self.err(table, "domain", f"no domain named {domain!r} (domains: "
                             f"{', '.join(specs)})")
                domain = None
            elif spec.is_dom0 and action not in ("set-load", "set-affinity"):
                self.err(table, "action", f"{action} does not apply to {DOM0_NAME}")
        vcpus: tuple[int, ...] | None = None
        workload: Workload | None = None
        hard: CpuSet | None = None
        soft: CpuSet | None = None
        if action in ("set-load", "set-affinity") and spec is not None and "vcpus" in raw:
            vcpus = self.vcpu_list(table, "vcpus", raw["vcpus"], spec.vcpus)
        if action == "set-load":
            if "workload" in raw:
                workload = self.workload(table, "workload", raw["workload"])
            else:
                self.err(table, "workload", "missing (expected the new workload, e.g. \"idle\")")
        if action == "set-affinity":
            hard = self.optional(table, raw, "hard", self.cpus, None)
            soft = self.optional(table, raw, "soft", self.cpus, None)
            if "hard" not in raw and "soft" not in raw:
                self.err(table, None, "set-affinity needs hard, soft or both")
            if hard is not None and spec is not None and not hard & pool_cpus[spec.pool]:
                self.err(table, "hard", f"no pCPU of {format_cpuset(hard)} is in pool "
                         f"{spec.pool!r}: Xen refuses such a mask")
        if len(self.errors) != ok or action is None or at_s is None or domain is None:
            return None
        return Event(
            at_ns=round(at_s * NS_PER_S),
            action=cast(Action, action),
            domain=domain,
            vcpus=vcpus,
            workload=workload,
            hard=hard,
            soft=soft,
            phase=phase,
        )

    def check_story(
        self, timeline: Sequence[tuple[str, Event]], domains: Iterable[DomainSpec],
        initial: Sequence[str], paused: set[str],
    ) -> None:
        """Replay the timeline: every event must find its domain in a state it applies to."""
        state = {d.name: "absent" for d in domains}
        for name in initial:
            state[name] = "paused" if name in paused else "running"
        needs = {
            "create": ("absent",),
            "destroy": ("running", "paused"),
            "pause": ("running",),
            "unpause": ("paused",),
            "set-load": ("running", "paused"),
            "set-affinity": ("running", "paused"),
        }
        after = {"create": "running", "destroy": "absent", "pause": "paused",
                 "unpause": "running"}
        for where, event in timeline:
            now = state[event.domain]
            if now not in needs[event.action]:
                self.err(where, "action", f"at {event.at_s:g} s: cannot {event.action} "
                         f"{event.domain}, which is {now} then")
                continue
            if event.action == "create" and event.domain in paused:
                state[event.domain] = "paused"  # created paused, as `xl create -p`
            else:
                state[event.domain] = after.get(event.action, now)
