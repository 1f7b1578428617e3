"""Scenario files: TOML in, host + domains + timeline out.

A scenario says what host to simulate (NUMA nodes, distances, SMT, cpupools,
scheduler), which domains run on it (dom0 included) and what happens when
(create, destroy, pause, unpause, set-load, set-affinity at given seconds).
``agent/sim/scenarios/seed-abc.toml`` is the commented reference.

Validation is strict and complete: every unknown key is an error, and all the
errors of a file are reported together, each naming the file, the table and
the key and saying what was expected.
"""

from __future__ import annotations

import dataclasses
import importlib.resources
import math
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from agent.hypervisor.model import CpuSet, format_cpuset
from agent.sim.spec import (
    Bursty,
    CpuBound,
    DomainSpec,
    HostSpec,
    Idle,
    IoLike,
    NodeSpec,
    PoolSpec,
    SchedulerName,
    Workload,
)

DOM0_NAME = "Domain-0"
POOL0_NAME = "Pool-0"
SCHEDULERS: tuple[SchedulerName, ...] = ("credit1", "credit2")
ACTIONS = ("create", "destroy", "pause", "unpause", "set-load", "set-affinity")
Action = Literal["create", "destroy", "pause", "unpause", "set-load", "set-affinity"]
NS_PER_S = 1_000_000_000

T = TypeVar("T")


class ScenarioError(Exception):
    """A scenario file is missing, unreadable or invalid; ``errors`` lists every problem."""

    def __init__(self, source: str, errors: Sequence[str]) -> None:
        self.source = source
        self.errors = tuple(errors)
        lines = [f"{source}: {e}" for e in self.errors]
        super().__init__("\n".join(lines))


# -- the parsed scenario ---------------------------------------------------------


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


# -- loading -----------------------------------------------------------------------


SCENARIO_PACKAGE = "agent.sim.scenarios"


def shipped_scenarios() -> list[str]:
    """Names of the scenarios that ship inside the package (``seed-abc``, ...)."""
    root = importlib.resources.files(SCENARIO_PACKAGE)
    return sorted(p.name[: -len(".toml")] for p in root.iterdir() if p.name.endswith(".toml"))


def load_scenario(path_or_name: str | Path) -> Scenario:
    """Load a scenario file, or a shipped scenario by name (``seed-abc``)."""
    path = Path(path_or_name)
    if path.is_file():
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ScenarioError(str(path), [f"cannot read: {exc.strerror}"]) from exc
        return parse_scenario(data, source=str(path), default_name=path.stem)
    name = str(path_or_name)
    name = name.removesuffix(".toml")
    if re.fullmatch(r"[A-Za-z0-9_.-]+", name) and name in shipped_scenarios():
        resource = importlib.resources.files(SCENARIO_PACKAGE).joinpath(f"{name}.toml")
        return parse_scenario(resource.read_bytes(), source=f"{name}.toml", default_name=name)
    if path.exists():
        raise ScenarioError(str(path), ["not a regular file"])
    shipped = ", ".join(shipped_scenarios()) or "none"
    raise ScenarioError(
        str(path_or_name),
        [f"no such file, and no shipped scenario by that name (shipped: {shipped})"],
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
    parser = _Parser(source)
    scenario = parser.scenario(doc, default_name)
    if parser.errors or scenario is None:
        raise ScenarioError(source, parser.errors or ["invalid scenario"])
    return scenario


# -- the validating parser -----------------------------------------------------------------

TOP_KEYS = ("name", "description", "scheduler", "duration_s", "seed", "first_phase", "host",
            "dom0", "domains", "timeline")
HOST_KEYS = ("nodes", "distances", "threads_per_core", "pools", "remote_speed",
             "remote_speed_by_distance")
NODE_KEYS = ("cpus", "memory_mib", "memory_gib")
POOL_KEYS = ("name", "cpus", "scheduler")
DOMAIN_KEYS = ("vcpus", "memory_mib", "memory_gib", "workload", "workloads", "soft", "hard",
               "pins", "memory_nodes", "pool", "weight", "cap", "uuid", "paused")
DOM0_KEYS = tuple(k for k in DOMAIN_KEYS if k != "paused")
WORKLOAD_KEYS: dict[str, tuple[str, ...]] = {
    "cpu-bound": (),
    "idle": (),
    "bursty": ("on_ms", "off_ms"),
    "io-like": ("run_us", "block_us"),
}
EVENT_KEYS: dict[str, tuple[str, ...]] = {
    "create": (),
    "destroy": (),
    "pause": (),
    "unpause": (),
    "set-load": ("vcpus", "workload"),
    "set-affinity": ("vcpus", "hard", "soft"),
}
EVENT_COMMON = ("at_s", "action", "domain", "phase")
NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")

_MISSING = object()


def _type_name(value: object) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


class _Parser:
    def __init__(self, source: str) -> None:
        self.source = source
        self.errors: list[str] = []
        self.node_cpus: list[CpuSet] = []
        self.bad_pools: set[str] = set()  # declared but invalid: reported once, not per domain

    def err(self, table: str, key: str | None, message: str) -> None:
        where = (table if table.startswith("[[") else f"[{table}]") if table else "top level"
        self.errors.append(f"{where} key '{key}': {message}" if key else f"{where}: {message}")

    # -- generic value readers; each returns None after recording an error --

    def check_keys(self, table: str, value: Mapping[str, Any], allowed: Sequence[str]) -> None:
        for key in value:
            if key not in allowed:
                self.err(table, key, f"unknown key (expected one of: {', '.join(allowed)})")

    def table(self, where: str, key: str, value: object) -> dict[str, Any] | None:
        if not isinstance(value, dict):
            self.err(where, key, f"expected a table, got {_type_name(value)}")
            return None
        return cast(dict[str, Any], value)

    def integer(
        self, table: str, key: str, value: object, *, low: int | None = None,
        high: int | None = None,
    ) -> int | None:
        if isinstance(value, bool) or not isinstance(value, int):
            self.err(table, key, f"expected an integer, got {_type_name(value)}")
            return None
        if (low is not None and value < low) or (high is not None and value > high):
            bounds = (
                f">= {low}" if high is None else f"<= {high}" if low is None
                else f"between {low} and {high}"
            )
            self.err(table, key, f"expected an integer {bounds}, got {value}")
            return None
        return value

    def number(
        self, table: str, key: str, value: object, *, positive: bool = False,
        low: float | None = None, high: float | None = None,
    ) -> float | None:
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.err(table, key, f"expected a number, got {_type_name(value)}")
            return None
        x = float(value)
        if not math.isfinite(x):
            self.err(table, key, f"expected a finite number, got {value}")
            return None
        if positive and x <= 0:
            self.err(table, key, f"expected a number > 0, got {value}")
            return None
        if (low is not None and x < low) or (high is not None and x > high):
            self.err(table, key, f"expected a number between {low} and {high}, got {value}")
            return None
        return x

    def string(
        self, table: str, key: str, value: object, *, choices: Sequence[str] | None = None,
        pattern: re.Pattern[str] | None = None, what: str = "",
    ) -> str | None:
        if not isinstance(value, str):
            self.err(table, key, f"expected a string, got {_type_name(value)}")
            return None
        if choices is not None and value not in choices:
            self.err(table, key, f"expected one of {', '.join(choices)}, got {value!r}")
            return None
        if pattern is not None and not pattern.fullmatch(value):
            self.err(table, key, f"expected {what}, got {value!r}")
            return None
        return value

    def optional(
        self, table: str, value: Mapping[str, Any], key: str,
        read: Callable[[str, str, object], T | None], default: T,
    ) -> T | None:
        """``read`` the key if present, else ``default``; None after an error."""
        raw = value.get(key, _MISSING)
        if raw is _MISSING:
            return default
        return read(table, key, raw)

    def required(
        self, table: str, value: Mapping[str, Any], key: str,
        read: Callable[[str, str, object], T | None], what: str,
    ) -> T | None:
        raw = value.get(key, _MISSING)
        if raw is _MISSING:
            self.err(table, key, f"missing (expected {what})")
            return None
        return read(table, key, raw)

    def memory(self, table: str, value: Mapping[str, Any]) -> int | None:
        has_mib, has_gib = "memory_mib" in value, "memory_gib" in value
        if has_mib and has_gib:
            self.err(table, "memory_gib", "give memory_mib or memory_gib, not both")
            return None
        if has_gib:
            gib = self.number(table, "memory_gib", value["memory_gib"], positive=True)
            if gib is None:
                return None
            mib = gib * 1024
            if not mib.is_integer():
                self.err(table, "memory_gib", f"expected a whole number of MiB, got {gib} GiB")
                return None
            return int(mib)
        if has_mib:
            return self.integer(table, "memory_mib", value["memory_mib"], low=1)
        self.err(table, "memory_mib", "missing (expected memory_mib or memory_gib)")
        return None

    # -- cpu and node masks --

    @property
    def all_cpus(self) -> CpuSet:
        return frozenset().union(*self.node_cpus)

    def cpus(self, table: str, key: str, value: object) -> CpuSet | None:
        """A pCPU mask: ``"0-27"``, ``"node:1"``, ``"nodes:0-1,56"``, ``"all"`` or ``[0, 1]``."""
        if isinstance(value, list):
            ints: list[int] = []
            for item in value:
                if isinstance(item, bool) or not isinstance(item, int):
                    self.err(table, key, f"expected pCPU numbers, got {_type_name(item)} in list")
                    return None
                ints.append(item)
            return self.known_cpus(table, key, frozenset(ints))
        if not isinstance(value, str):
            self.err(table, key, "expected a pCPU list such as \"0-27\", \"node:1\", \"all\" "
                     f"or an array of pCPU numbers, got {_type_name(value)}")
            return None
        text = value.strip()
        if text == "all":
            return self.all_cpus
        result: set[int] = set()
        for item in text.split(","):
            item = item.strip()
            prefix, colon, rest = item.partition(":")
            if colon and prefix in ("node", "nodes"):
                nodes = _range(rest)
                if nodes is None:
                    self.err(table, key, f"bad node range {item!r} in {value!r}")
                    return None
                for node in sorted(nodes):
                    if node >= len(self.node_cpus):
                        self.err(table, key, f"node {node} does not exist "
                                 f"(the host has {len(self.node_cpus)} nodes)")
                        return None
                    result |= self.node_cpus[node]
                continue
            cpus = _range(item)
            if cpus is None:
                self.err(table, key, f"bad pCPU list item {item!r} in {value!r} (expected N, N-M, "
                         "node:N, nodes:N-M or all)")
                return None
            result |= cpus
        return self.known_cpus(table, key, frozenset(result))

    def known_cpus(self, table: str, key: str, cpus: CpuSet) -> CpuSet | None:
        if not cpus:
            self.err(table, key, "expected at least one pCPU, got an empty mask")
            return None
        unknown = cpus - self.all_cpus
        if unknown:
            self.err(table, key, f"pCPUs {format_cpuset(unknown)} do not exist "
                     f"(the host has pCPUs {format_cpuset(self.all_cpus)})")
            return None
        return cpus

    def node_list(self, table: str, key: str, value: object) -> tuple[int, ...] | None:
        if not isinstance(value, list) or not value:
            self.err(table, key, f"expected a non-empty array of node numbers, "
                     f"got {_type_name(value)}")
            return None
        nodes: list[int] = []
        for item in value:
            node = self.integer(table, key, item, low=0, high=max(len(self.node_cpus) - 1, 0))
            if node is None:
                return None
            if node in nodes:
                self.err(table, key, f"node {node} listed twice")
                return None
            nodes.append(node)
        return tuple(nodes)

    def vcpu_list(self, table: str, key: str, value: object, count: int) -> tuple[int, ...] | None:
        """``3``, ``[0, 2]`` or ``"0-3"``; each below ``count``."""
        chosen: frozenset[int] | None
        if isinstance(value, int) and not isinstance(value, bool):
            chosen = frozenset([value])
        elif isinstance(value, str):
            chosen = _range_list(value)
        elif isinstance(value, list) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in value
        ):
            chosen = frozenset(cast(list[int], value))
        else:
            chosen = None
        if not chosen:
            self.err(table, key, f"expected vCPU numbers (3, [0, 2] or \"0-3\"), got {value!r}")
            return None
        bad = sorted(v for v in chosen if v < 0 or v >= count)
        if bad:
            self.err(table, key,
                     f"vCPUs {bad} do not exist (the domain has {count}: 0-{count - 1})")
            return None
        return tuple(sorted(chosen))

    # -- workloads --

    def workload(self, table: str, key: str, value: object) -> Workload | None:
        kind: object
        if isinstance(value, str):
            kind, params = value, {}
        elif isinstance(value, dict):
            params = dict(cast(dict[str, Any], value))
            kind = params.pop("kind", _MISSING)
            if kind is _MISSING:
                self.err(table, key,
                         f"missing 'kind' (expected one of: {', '.join(WORKLOAD_KEYS)})")
                return None
        else:
            self.err(table, key, "expected a workload: \"cpu-bound\", \"idle\", or a table such as "
                     f"{{ kind = \"bursty\", on_ms = 5, off_ms = 5 }}, got {_type_name(value)}")
            return None
        if not isinstance(kind, str) or kind not in WORKLOAD_KEYS:
            self.err(table, key, f"unknown workload kind {kind!r} "
                     f"(expected one of: {', '.join(WORKLOAD_KEYS)})")
            return None
        where = _sub(table, key)
        ok = len(self.errors)
        self.check_keys(where, params, ("kind", *WORKLOAD_KEYS[kind]))
        if kind == "cpu-bound":
            result: Workload = CpuBound()
        elif kind == "idle":
            result = Idle()
        elif kind == "bursty":
            on = self.required(where, params, "on_ms", self.positive, "a number of ms > 0")
            off = self.required(where, params, "off_ms", self.positive, "a number of ms > 0")
            if on is None or off is None:
                return None
            result = Bursty(on_ms=on, off_ms=off)
        else:
            default = IoLike()
            run = self.optional(where, params, "run_us", self.positive, default.run_us)
            block = self.optional(where, params, "block_us", self.positive, default.block_us)
            if run is None or block is None:
                return None
            result = IoLike(run_us=run, block_us=block)
        return result if len(self.errors) == ok else None

    def positive(self, table: str, key: str, value: object) -> float | None:
        return self.number(table, key, value, positive=True)

    # -- sections --

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

        host_raw = doc.get("host", _MISSING)
        host: HostSpec | None = None
        pool_cpus: dict[str, CpuSet] = {}
        if host_raw is _MISSING:
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
                         f"got {_type_name(raw_timeline)}")
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

    def name_string(self, table: str, key: str, value: object) -> str | None:
        return self.string(table, key, value, pattern=NAME_RE,
                           what="1-64 letters, digits, '_', '.' or '-'")

    def any_string(self, table: str, key: str, value: object) -> str | None:
        return self.string(table, key, value)

    def scheduler_name(self, table: str, key: str, value: object) -> SchedulerName | None:
        return cast(SchedulerName | None, self.string(table, key, value, choices=SCHEDULERS))

    def host(
        self, table: dict[str, Any], scheduler: SchedulerName, seed: int
    ) -> tuple[HostSpec | None, dict[str, CpuSet]]:
        """The host, or None after an error; and the pCPUs of each pool that is valid."""
        self.check_keys("host", table, HOST_KEYS)
        threads = self.optional("host", table, "threads_per_core",
                                lambda t, k, v: self.integer(t, k, v, low=1, high=8), 1)
        raw_nodes = table.get("nodes", _MISSING)
        if raw_nodes is _MISSING:
            self.err("host", "nodes", "missing (expected [[host.nodes]] tables with cpus and "
                     "memory_mib)")
            return None, {}
        if not isinstance(raw_nodes, list) or not raw_nodes or not all(
            isinstance(n, dict) for n in raw_nodes
        ):
            self.err("host", "nodes", "expected one or more [[host.nodes]] tables, "
                     f"got {_type_name(raw_nodes)}")
            return None, {}
        nodes: list[NodeSpec] = []
        for i, raw in enumerate(cast(list[dict[str, Any]], raw_nodes)):
            where = f"[[host.nodes]] #{i + 1}"
            self.check_keys(where, raw, NODE_KEYS)
            cpus = self.required(where, raw, "cpus",
                                 lambda t, k, v: self.integer(t, k, v, low=1, high=4096),
                                 "the number of pCPUs on this node")
            memory = self.memory(where, raw)
            if cpus is not None and threads is not None and cpus % threads:
                self.err(where, "cpus", f"{cpus} pCPUs do not split into cores of "
                         f"threads_per_core = {threads}")
            if cpus is not None and memory is not None:
                nodes.append(NodeSpec(cpus=cpus, memory_mib=memory))
        if len(nodes) != len(raw_nodes) or threads is None:
            return None, {}
        first = 0
        for node in nodes:
            self.node_cpus.append(frozenset(range(first, first + node.cpus)))
            first += node.cpus

        distances = self.optional("host", table, "distances", self.distances, None)
        speed_default = self.optional(
            "host", table, "remote_speed",
            lambda t, k, v: self.number(t, k, v, low=0.0, high=1.0), 0.7)
        no_speeds: tuple[tuple[int, float], ...] = ()
        speeds = self.optional("host", table, "remote_speed_by_distance", self.speed_table,
                               no_speeds)
        pools, pool_cpus = self.pools(table.get("pools", _MISSING), scheduler)
        if speed_default is not None and speed_default <= 0:
            self.err("host", "remote_speed",
                     "expected a number > 0 and <= 1 (1 = as fast as local)")
        if distances is None and "distances" in table:
            return None, pool_cpus
        if speed_default is None or speeds is None or pools is None:
            return None, pool_cpus
        spec = HostSpec(
            nodes=tuple(nodes),
            distances=distances,
            threads_per_core=threads,
            scheduler=scheduler,
            pools=pools,
            remote_speed=speeds,
            remote_speed_default=speed_default,
            seed=seed,
        )
        return spec, pool_cpus

    def distances(self, table: str, key: str, value: object) -> tuple[tuple[int, ...], ...] | None:
        n = len(self.node_cpus)
        expect = f"a {n}x{n} array of integers (ACPI SLIT: 10 on the diagonal, 11-254 elsewhere)"
        if not isinstance(value, list) or len(value) != n:
            self.err(table, key, f"expected {expect}, got {_type_name(value)}"
                     + (f" of {len(value)} rows" if isinstance(value, list) else ""))
            return None
        rows: list[tuple[int, ...]] = []
        for i, row in enumerate(value):
            if not isinstance(row, list) or len(row) != n or not all(
                isinstance(d, int) and not isinstance(d, bool) for d in row
            ):
                self.err(table, key, f"row {i}: expected {n} integers, got {row!r}")
                return None
            for j, d in enumerate(row):
                if (i == j and d != 10) or (i != j and not 10 < d <= 254):
                    self.err(table, key, f"distance[{i}][{j}] = {d}: expected {expect}")
                    return None
            rows.append(tuple(row))
        return tuple(rows)

    def speed_table(
        self, table: str, key: str, value: object
    ) -> tuple[tuple[int, float], ...] | None:
        entries = self.table(table, key, value)
        if entries is None:
            return None
        result: list[tuple[int, float]] = []
        for dist, speed in entries.items():
            if not dist.isdigit() or not 10 < int(dist) <= 254:
                self.err(_sub(table, key), dist, "expected a NUMA distance 11-254 as key, "
                         "e.g. 21 = 0.75")
                continue
            s = self.number(f"{table}.{key}", dist, speed, low=0.0, high=1.0)
            if s is not None and s <= 0:
                self.err(_sub(table, key), dist, "expected a speed > 0 and <= 1")
            elif s is not None:
                result.append((int(dist), s))
        return tuple(sorted(result))

    def pools(
        self, raw: object, scheduler: SchedulerName
    ) -> tuple[tuple[PoolSpec, ...] | None, dict[str, CpuSet]]:
        pool_cpus: dict[str, CpuSet] = {}
        if raw is _MISSING:
            return (), {POOL0_NAME: self.all_cpus}
        if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
            self.err("host", "pools", f"expected [[host.pools]] tables, got {_type_name(raw)}")
            return None, {}
        pools: list[PoolSpec] = []
        taken: set[int] = set()
        ok = True
        for i, praw in enumerate(cast(list[dict[str, Any]], raw)):
            where = f"[[host.pools]] #{i + 1}"
            self.check_keys(where, praw, POOL_KEYS)
            name = self.required(where, praw, "name", self.name_string, "a pool name")
            cpus = self.required(where, praw, "cpus", self.cpus, "its pCPUs, e.g. \"node:1\"")
            sched = self.optional(where, praw, "scheduler", self.scheduler_name, scheduler)
            if name == POOL0_NAME:
                self.err(where, "name", f"{POOL0_NAME} holds every pCPU not in another pool and is "
                         "not declared")
                name = None
            elif name is not None and name in pool_cpus:
                self.err(where, "name", f"pool {name!r} declared twice")
                name = None
            if cpus is not None and cpus & taken:
                self.err(where, "cpus", f"pCPUs {format_cpuset(cpus & taken)} are already in "
                         "another pool (a pCPU belongs to one pool)")
                cpus = None
            if name is None or cpus is None or sched is None:
                ok = False
                if name is not None:
                    self.bad_pools.add(name)
                continue
            taken |= cpus
            pool_cpus[name] = cpus
            pools.append(PoolSpec(name=name, cpus=cpus, scheduler=sched))
        rest = self.all_cpus - taken
        if ok and not rest:
            self.err("host", "pools", f"{POOL0_NAME} (dom0's pool) must keep at least one pCPU: "
                     "the declared pools take them all")
            ok = False
        pool_cpus = {POOL0_NAME: frozenset(rest), **pool_cpus}
        return (tuple(pools) if ok else None), pool_cpus

    def domain(
        self, table: str, name: str, value: dict[str, Any], pool_cpus: Mapping[str, CpuSet],
        *, is_dom0: bool,
    ) -> DomainSpec | None:
        ok = len(self.errors)
        self.check_keys(table, value, DOM0_KEYS if is_dom0 else DOMAIN_KEYS)
        vcpus = self.required(table, value, "vcpus",
                              lambda t, k, v: self.integer(t, k, v, low=1, high=512),
                              "the number of vCPUs")
        memory = self.memory(table, value)
        pool = self.optional(table, value, "pool", self.any_string, POOL0_NAME)
        if pool is not None and pool not in pool_cpus:
            if pool not in self.bad_pools:
                self.err(table, "pool",
                         f"no cpupool named {pool!r} (pools: {', '.join(pool_cpus)})")
            pool = None
        if is_dom0 and pool is not None and pool != POOL0_NAME:
            self.err(table, "pool", f"dom0 always runs in {POOL0_NAME} (Xen cannot move it); "
                     "isolate dom0 by moving the guests' pCPUs to another pool instead")
            pool = None
        hard = self.optional(table, value, "hard", self.cpus, None)
        soft = self.optional(table, value, "soft", self.cpus, None)
        if hard is not None and pool is not None and not hard & pool_cpus[pool]:
            self.err(table, "hard", f"no pCPU of {format_cpuset(hard)} is in pool {pool!r} "
                     f"({format_cpuset(pool_cpus[pool])}): Xen refuses such a mask")
        pins = None
        if "pins" in value and vcpus is not None:
            pins = self.pin_list(table, value["pins"], vcpus,
                                 pool_cpus[pool] if pool is not None else None)
            if hard is not None:
                self.err(table, "pins", "give hard (one mask for every vCPU) or pins (one "
                         "pCPU per vCPU), not both")
        memory_nodes = self.optional(table, value, "memory_nodes", self.node_list, None)
        weight = self.optional(table, value, "weight",
                               lambda t, k, v: self.integer(t, k, v, low=1, high=65535), 256)
        cap = self.optional(table, value, "cap",
                            lambda t, k, v: self.integer(t, k, v, low=0, high=100 * 512), 0)
        uuid = self.optional(
            table, value, "uuid",
            lambda t, k, v: self.string(t, k, v, pattern=UUID_RE, what="a lower-case UUID"), None)
        if "paused" in value:
            self.optional(table, value, "paused", self.boolean, False)
        workload: Workload | tuple[Workload, ...] | None = CpuBound()
        if "workload" in value and "workloads" in value:
            self.err(table, "workloads", "give workload (all vCPUs) or workloads (one per vCPU), "
                     "not both")
        elif "workload" in value:
            workload = self.workload(table, "workload", value["workload"])
        elif "workloads" in value:
            workload = self.per_vcpu_workloads(table, value["workloads"], vcpus)
        if len(self.errors) != ok:
            return None
        assert vcpus is not None and memory is not None and pool is not None
        assert weight is not None and cap is not None and workload is not None
        return DomainSpec(
            name=name,
            vcpus=vcpus,
            memory_mib=memory,
            workload=workload,
            hard=hard,
            pins=pins,
            soft=soft,
            memory_nodes=memory_nodes,
            pool=pool,
            weight=weight,
            cap=cap,
            is_dom0=is_dom0,
            uuid=uuid,
        )

    def pin_list(
        self, table: str, value: object, vcpus: int, pool: CpuSet | None
    ) -> tuple[int, ...] | None:
        """One pCPU per vCPU (``xl vcpu-pin`` each), all in the domain's pool."""
        if not isinstance(value, list) or len(value) != vcpus:
            self.err(table, "pins", f"expected an array of {vcpus} pCPU numbers (one per "
                     f"vCPU), got {_type_name(value)}"
                     + (f" of {len(value)}" if isinstance(value, list) else ""))
            return None
        pins: list[int] = []
        for item in value:
            cpu = self.integer(table, "pins", item, low=0, high=max(len(self.all_cpus) - 1, 0))
            if cpu is None:
                return None
            pins.append(cpu)
        if pool is not None and not set(pins) <= pool:
            outside = sorted(set(pins) - pool)
            self.err(table, "pins", f"pCPUs {outside} are not in the domain's pool "
                     f"({format_cpuset(pool)})")
            return None
        return tuple(pins)

    def boolean(self, table: str, key: str, value: object) -> bool | None:
        if not isinstance(value, bool):
            self.err(table, key, f"expected true or false, got {_type_name(value)}")
            return None
        return value

    def per_vcpu_workloads(
        self, table: str, value: object, vcpus: int | None
    ) -> tuple[Workload, ...] | None:
        if not isinstance(value, list):
            self.err(table, "workloads", f"expected an array with one workload per vCPU, "
                     f"got {_type_name(value)}")
            return None
        if vcpus is not None and len(value) != vcpus:
            self.err(table, "workloads", f"expected {vcpus} workloads (one per vCPU), "
                     f"got {len(value)}")
            return None
        result = [self.workload(table, f"workloads[{i}]", w) for i, w in enumerate(value)]
        if any(w is None for w in result):
            return None
        return tuple(cast(list[Workload], result))

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


def _sub(table: str, key: str) -> str:
    """Name of a table inside a table: ``domains.A.workload``, ``[[timeline]] #2 workload``."""
    return f"{table} {key}" if table.startswith("[[") else f"{table}.{key}"


def _range(text: str) -> frozenset[int] | None:
    """``N`` or ``N-M`` (ascending) -> the integers; None if malformed."""
    lo, sep, hi = text.strip().partition("-")
    if not lo.isdigit() or (sep and not hi.isdigit()):
        return None
    first, last = int(lo), int(hi) if sep else int(lo)
    return frozenset(range(first, last + 1)) if last >= first else None


def _range_list(text: str) -> frozenset[int] | None:
    result: set[int] = set()
    for part in text.split(","):
        r = _range(part)
        if r is None:
            return None
        result |= r
    return frozenset(result)
