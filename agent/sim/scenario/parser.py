"""The whole file: top-level keys, then host, domains and timeline, into a ``Scenario``."""

from __future__ import annotations

import tomllib
from typing import Any

from agent.hypervisor.model import CpuSet
from agent.sim.scenario.domains import DomainReader
from agent.sim.scenario.model import DOM0_NAME, NS_PER_S, Event, Scenario, ScenarioError
from agent.sim.scenario.reader import MISSING, NAME_RE, type_name
from agent.sim.scenario.timeline import TimelineReader
from agent.sim.spec import DomainSpec, HostSpec, SchedulerName

TOP_KEYS = ("name", "description", "scheduler", "duration_s", "seed", "first_phase", "host",
            "dom0", "domains", "timeline")


class ScenarioParser(DomainReader, TimelineReader):
    """Every table reader together: one instance parses one file."""

    def scenario(self, doc: dict[str, Any], default_name: str) -> Scenario | None:
        self.check_keys("", doc, TOP_KEYS)
        name = self.optional("", doc, "name", self.name_string, default_name)
        description = self.optional("", doc, "description", self.any_string, "")
        first_phase = self.optional("", doc, "first_phase", self.any_string, "start")
        default_scheduler: SchedulerName = "credit1"
        scheduler = self.optional("", doc, "scheduler", self.scheduler_name, default_scheduler)
        duration_s = self.required("", doc, "duration_s", self.positive, "seconds > 0")
        seed = self.optional(
            "", doc, "seed", lambda t, k, v: self.integer(t, k, v, low=0, high=2**63 - 1), 0
        )

        host_raw = doc.get("host", MISSING)
        host: HostSpec | None = None
        pool_cpus: dict[str, CpuSet] = {}
        if host_raw is MISSING:
            self.err("", "host", "missing (expected a [host] table with [[host.nodes]])")
        else:
            host_table = self.table("", "host", host_raw)
            if host_table is not None:  # a bad scheduler or seed is reported already
                host, pool_cpus = self.host(host_table, scheduler or default_scheduler, seed or 0)
        if not self.node_cpus:
            return None  # without nodes and pCPUs nothing else can be checked

        domains: list[DomainSpec] = []
        paused: set[str] = set()
        if "dom0" in doc:
            dom0_table = self.table("", "dom0", doc["dom0"])
            if dom0_table is not None:
                dom0 = self.domain("dom0", DOM0_NAME, dom0_table, pool_cpus, is_dom0=True)
                if dom0 is not None:
                    domains.append(dom0)
        names_ok = True
        if "domains" in doc:
            all_domains = self.table("", "domains", doc["domains"])
            if all_domains is not None:
                for dname, raw in all_domains.items():
                    table = f"domains.{dname}"
                    if not NAME_RE.fullmatch(dname):
                        self.err(table, None, "a domain name is 1-64 letters, digits, '_', '.' or "
                                 "'-', starting with a letter or digit")
                        names_ok = False
                        continue
                    if dname == DOM0_NAME:
                        self.err(table, None, f"{DOM0_NAME} is configured in [dom0]")
                        names_ok = False
                        continue
                    dtable = self.table("domains", dname, raw)
                    if dtable is None:
                        names_ok = False
                        continue
                    spec = self.domain(table, dname, dtable, pool_cpus, is_dom0=False)
                    if spec is None:
                        names_ok = False
                        continue
                    domains.append(spec)
                    if dtable.get("paused") is True:
                        paused.add(dname)
        if not any(not d.is_dom0 for d in domains) and names_ok:
            self.err("", "domains", "missing (expected at least one [domains.NAME] table)")

        timeline: list[tuple[str, Event]] = []  # (where in the file, event)
        if "timeline" in doc:
            raw_timeline = doc["timeline"]
            if not isinstance(raw_timeline, list) or not all(
                isinstance(e, dict) for e in raw_timeline
            ):
                self.err("", "timeline", "expected [[timeline]] entries (an array of tables), "
                         f"got {type_name(raw_timeline)}")
            else:
                specs = {d.name: d for d in domains}
                for i, raw_event in enumerate(raw_timeline, start=1):
                    where = f"[[timeline]] #{i}"
                    event = self.event(where, raw_event, specs, names_ok, pool_cpus)
                    if event is not None:
                        timeline.append((where, event))
        timeline.sort(key=lambda we: we[1].at_ns)  # stable: file order within one instant
        if duration_s is not None:
            for where, event in timeline:
                if event.at_ns >= round(duration_s * NS_PER_S):
                    self.err(where, "at_s", f"{event.at_s:g} is not before the end of the run "
                             f"(duration_s = {duration_s:g})")
        if (duration_s is None or name is None or description is None or first_phase is None
                or host is None):
            return None
        if self.errors:
            return None  # replaying a broken timeline would only repeat the errors above
        # A domain whose first event is a create waits for it; the others exist from 0.
        first_action: dict[str, str] = {}
        for _, e in timeline:
            first_action.setdefault(e.domain, e.action)
        created_later = {name for name, action in first_action.items() if action == "create"}
        initial = tuple(d.name for d in domains if d.name not in created_later)
        self.check_story(timeline, domains, initial, paused)
        if self.errors:
            return None
        return Scenario(
            name=name,
            source=self.source,
            description=description,
            host=host,
            domains=tuple(domains),
            initial=initial,
            start_paused=frozenset(paused),
            timeline=tuple(e for _, e in timeline),
            duration_ns=round(duration_s * NS_PER_S),
            first_phase=first_phase,
        )


def parse_scenario(data: bytes | str, *, source: str, default_name: str = "scenario") -> Scenario:
    """Parse and validate a scenario; raise ``ScenarioError`` listing every problem."""
    text = data.decode("utf-8") if isinstance(data, bytes) else data
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ScenarioError(source, [f"invalid TOML: {exc}"]) from exc
    except UnicodeDecodeError as exc:
        raise ScenarioError(source, [f"not UTF-8 text: {exc}"]) from exc
    parser = ScenarioParser(source)
    scenario = parser.scenario(doc, default_name)
    if parser.errors or scenario is None:
        raise ScenarioError(source, parser.errors or ["invalid scenario"])
    return scenario
