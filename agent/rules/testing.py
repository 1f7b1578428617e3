"""Rule test files: a starting host, timed events and changes, expected decisions.

Like ``promtool test rules``: a test file names the rule files under test,
describes a small host, then lists steps. At each step the runner applies the
changes, observes the host (through ``agent.state.build_state``, as the agent
does), hands the event to ``decide`` and compares the decisions with those the
step expects. ``rules/tests/*_test.toml`` are the worked examples; the format:

    rules = ["../affinity_fixup.toml"]     # files or directories, relative to this file
    [host]
    nodes = 2          # NUMA nodes
    cpus = 4           # pCPUs per node; ids go node by node (node 1 has 4-7)
    memory_mib = 16384 # per node
    # distances = [[10, 20], [20, 10]]    reserved_mib = [0, 0]

    [[domain]]                 # dom0 is a domain with domid = 0
    domid = 1
    name = "A"
    vcpus = 4
    memory_mib = 4096
    soft = [0]                 # soft affinity, as nodes (default: every node)
    hard = [0, 1]              # hard affinity, as nodes (default: every node)
    pin = [0, 0, 1, 1]         # per-vCPU hard affinity node, instead of hard (dom0
                               # style); in a change, pin = [] removes the pins
    memory = [4096, 0]         # MiB on each node (default: all on the soft node if
                               # there is one, else not measured)
    run = [0, 0, 0, 1]         # node each vCPU is on now (-1: offline; default: soft/home)
    rate = 1.0                 # run rate of each vCPU (or a list); 0 = blocked
    state = "running"          # or paused, blocked, ...
    agent_pinned = []          # vCPUs the agent holds a temporary pin on

    [[backend]]
    pid = 900
    kind = "vbd"
    domid = 1
    cpus = [0, 1]              # dom0 vCPUs it may run on (default: all)

    [[step]]
    at = 1.0                   # seconds; steps in time order
    set = [{domain = 1, vcpu = 3, run = 0}]     # changes first (see below)
    event = "tick"             # or {type = "vcpu.off_node", domid = 1, vcpu = 3}
    expect = [{rule = "affinity-fixup", subject = "vcpu 1.3", outcome = "act",
               action = {type = "vcpu.fixup", node = 0}}]

Changes: ``{domain = D, <domain key> = ...}``, ``{domain = D, vcpu = V, run = N,
rate = R, agent_pinned = B}``, ``{create = {<domain table>}}``, ``{destroy = D}``,
``{backend = PID, cpus = [...]}``, ``{add_backend = {<backend table>}}``,
``{remove_backend = PID}``, ``{node = N, reserved_mib = M}``.

TOML inline tables must fit on one line: write a long expectation or change as
its own table instead (``[[step.expect]]``, ``[[step.set]]`` under the step).

Expectations: at a step with ``expect``, the ``act`` and ``dry-run`` decisions
must be exactly those listed; a listed ``suppressed`` one (``reason`` = hold,
cooldown, conflict or budget) must occur, and unlisted suppressed ones are not
checked. ``action`` compares the keys it lists. A step without ``expect``
checks nothing. ``expect = []`` asserts that nothing acts.
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.hypervisor.model import (
    DomainInfo,
    DomainState,
    Node,
    Topology,
    VcpuInfo,
    VcpuState,
)
from agent.rules.actions import action_record
from agent.rules.decide import Decision, Memory, Outcome, Reason, decide
from agent.rules.events import Event, EventError, make_event
from agent.rules.expr import suggest
from agent.rules.loader import check_paths
from agent.rules.ruleset import RuleSet
from agent.rules.subjects import format_key, parse_key
from agent.rules.trace import plain, show
from agent.state import BackendInfo, HostView, Observation, build_state

KIB_PER_MIB = 1024
_TOP_KEYS = ("description", "rules", "host", "domain", "backend", "step")
_HOST_KEYS = ("nodes", "cpus", "memory_mib", "distances", "reserved_mib")
_DOMAIN_KEYS = ("domid", "name", "vcpus", "memory_mib", "soft", "hard", "pin", "memory", "run",
                "rate", "state", "agent_pinned", "weight", "cap")
_BACKEND_KEYS = ("pid", "kind", "domid", "devid", "kthread", "cpus")
_STEP_KEYS = ("at", "set", "event", "expect")
_EXPECT_KEYS = ("rule", "subject", "outcome", "reason", "action")
_VCPU_CHANGE_KEYS = ("domain", "vcpu", "run", "rate", "agent_pinned")


class TestFileError(Exception):
    """A test file that cannot be run as written."""


def _bounded(t: Mapping[str, Any], key: str, default: int, low: int, high: int, where: str) -> int:
    """An integer key in [low, high] (a scheduler weight or cap), else ``default``."""
    value = t.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise TestFileError(f"{where} {key}: {value!r} is not an integer in {low}-{high}")
    return value


@dataclass
class _Dom:
    domid: int
    name: str
    vcpus: int
    memory_mib: int
    soft: list[int] | None
    hard: list[int] | None
    pin: list[int] | None
    memory: list[int] | None
    run: list[int]
    rate: list[float]
    state: str
    agent_pinned: set[int]
    weight: int = 256
    cap: int = 0


@dataclass(frozen=True, slots=True)
class Expectation:
    rule: str
    subject: str
    outcome: str
    reason: str | None
    action: Mapping[str, Any] | None

    def matches(self, d: Decision) -> bool:
        if (d.rule, format_key(d.subject), d.outcome.value) != (self.rule, self.subject,
                                                                 self.outcome):
            return False
        if self.reason is not None and (d.reason is None or d.reason.value != self.reason):
            return False
        if self.action is not None:
            record = action_record(d.action)
            return all(k in record and record[k] == plain(v) for k, v in self.action.items())
        return True

    def __str__(self) -> str:
        outcome = f"{self.outcome}({self.reason})" if self.reason else self.outcome
        action = ""
        if self.action is not None:
            action = " " + " ".join(f"{k}={show(v)}" for k, v in self.action.items())
        return f"{outcome} {self.rule} on {self.subject}{action}"


@dataclass
class StepResult:
    index: int
    at: float
    event: Event
    decisions: list[Decision]
    missing: list[Expectation] = field(default_factory=list)
    unexpected: list[Decision] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unexpected


@dataclass
class TestResult:
    file: str
    errors: list[str] = field(default_factory=list)  # the file could not be run
    steps: list[StepResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors and all(s.ok for s in self.steps)

    def report(self, verbose: bool = False) -> str:
        if self.errors:
            return "\n".join(f"{self.file}: {e}" for e in self.errors)
        lines: list[str] = []
        failed = [s for s in self.steps if not s.ok]
        status = "ok" if not failed else f"FAILED ({len(failed)} of {len(self.steps)} steps)"
        lines.append(f"{self.file}: {status}")
        for s in self.steps:
            if s.ok and not verbose:
                continue
            lines.append(f"  step {s.index + 1} at {s.at:g} s, event {s.event.type}:")
            for e in s.missing:
                lines.append(f"  - {e}")
            for d in s.unexpected:
                lines.append(f"  + {_line(d)}")
            if not s.ok or verbose:
                lines.append("    decisions at this step:" if s.decisions else
                             "    no decisions at this step")
                for d in s.decisions:
                    lines.append(f"      {_line(d)}")
                    if not s.ok or verbose:
                        lines.extend(f"          {t}" for t in d.trace)
        return "\n".join(lines)


def _line(d: Decision) -> str:
    return str(d)


def run_file(path: str | Path) -> TestResult:
    """Run one test file; never raises for a bad file (errors are in the result)."""
    path = Path(path)
    result = TestResult(str(path))
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        result.errors.append(f"cannot read: {exc}")
        return result
    try:
        _Runner(path, doc, result).run()
    except TestFileError as exc:
        result.errors.append(str(exc))
    return result


def run_paths(paths: Sequence[str | Path]) -> list[TestResult]:
    """Run test files named, and ``*_test.toml`` directly inside directories named."""
    results: list[TestResult] = []
    for p in map(Path, paths):
        if p.is_dir():
            results.extend(run_file(f) for f in sorted(p.glob("*_test.toml")))
        else:
            results.append(run_file(p))
    return results


def _check_keys(table: Any, allowed: Sequence[str], where: str) -> Mapping[str, Any]:
    if not isinstance(table, dict):
        raise TestFileError(f"{where}: expected a table, got {table!r}")
    for key in table:
        if key not in allowed:
            raise TestFileError(f"{where}: unknown key {key!r}{suggest(key, allowed)} "
                                f"(keys: {', '.join(allowed)})")
    return table


def _ints(value: Any, where: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise TestFileError(f"{where}: expected a list of integers, got {value!r}")
    return list(value)


def _need(table: Mapping[str, Any], key: str, kind: type | tuple[type, ...], where: str) -> Any:
    if key not in table:
        raise TestFileError(f"{where}: missing {key!r}")
    value = table[key]
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise TestFileError(f"{where}: {key!r} has the wrong type: {value!r}")
    return value


class HostModel:
    """A small host described as in a test file ([host], [[domain]], [[backend]]
    tables), changed step by step and observed into a ``HostView``."""

    def __init__(
        self,
        host: Mapping[str, Any],
        domains: Sequence[Mapping[str, Any]] = (),
        backends: Sequence[Mapping[str, Any]] = (),
    ) -> None:
        host = _check_keys(host, _HOST_KEYS, "[host]")
        self.n_nodes = int(_need({"nodes": 2, **host}, "nodes", int, "[host]"))
        self.cpus = int(_need({"cpus": 4, **host}, "cpus", int, "[host]"))
        self.node_mib = int(_need({"memory_mib": 16384, **host}, "memory_mib", int, "[host]"))
        if self.n_nodes < 1 or self.cpus < 1:
            raise TestFileError("[host]: nodes and cpus must be at least 1")
        self.distances = host.get("distances") or [
            [10 if i == j else 20 for j in range(self.n_nodes)] for i in range(self.n_nodes)
        ]
        self.reserved = _ints(host.get("reserved_mib", [0] * self.n_nodes), "[host] reserved_mib")
        self.domains: dict[int, _Dom] = {}
        for n, table in enumerate(domains):
            dom = self.domain(table, f"[[domain]] #{n + 1}")
            self.domains[dom.domid] = dom
        self.backends: dict[int, BackendInfo] = {}
        for n, table in enumerate(backends):
            b = self.backend(table, f"[[backend]] #{n + 1}")
            self.backends[b.pid] = b

    def node_cpus(self, node: int) -> frozenset[int]:
        return frozenset(range(node * self.cpus, (node + 1) * self.cpus))

    def nodes_cpus(self, nodes: Sequence[int] | None) -> frozenset[int]:
        if nodes is None:
            return frozenset(range(self.n_nodes * self.cpus))
        return frozenset().union(*(self.node_cpus(n) for n in nodes))

    def check_nodes(self, nodes: Sequence[int], where: str, allow_offline: bool = False) -> None:
        low = -1 if allow_offline else 0
        for n in nodes:
            if not low <= n < self.n_nodes:
                raise TestFileError(f"{where}: node {n} does not exist (nodes 0-"
                                    f"{self.n_nodes - 1})")

    def domain(self, raw: Any, where: str) -> _Dom:
        t = _check_keys(raw, _DOMAIN_KEYS, where)
        domid = _need(t, "domid", int, where)
        vcpus = _need(t, "vcpus", int, where)
        soft = _ints(t["soft"], f"{where} soft") if "soft" in t else None
        hard = _ints(t["hard"], f"{where} hard") if "hard" in t else None
        pin = _ints(t["pin"], f"{where} pin") if t.get("pin") else None  # [] clears
        memory = _ints(t["memory"], f"{where} memory") if "memory" in t else None
        memory_mib = int(t.get("memory_mib", 1024))
        if memory is None and soft is not None and len(soft) == 1:
            memory = [memory_mib if n == soft[0] else 0 for n in range(self.n_nodes)]
        home = soft[0] if soft else 0
        run = _ints(t.get("run", [home] * vcpus), f"{where} run")
        for nodes, key in ((soft, "soft"), (hard, "hard"), (pin, "pin")):
            if nodes is not None:
                self.check_nodes(nodes, f"{where} {key}")
        self.check_nodes(run, f"{where} run", allow_offline=True)
        if len(run) != vcpus or (pin is not None and len(pin) != vcpus):
            raise TestFileError(f"{where}: run and pin need one entry per vCPU ({vcpus})")
        if memory is not None and len(memory) != self.n_nodes:
            raise TestFileError(f"{where}: memory needs one entry per node ({self.n_nodes})")
        state = t.get("state", "running")
        if state not in {s.value for s in DomainState}:
            raise TestFileError(f"{where}: state {state!r} is not one of "
                                + ", ".join(s.value for s in DomainState))
        return _Dom(
            domid=domid, name=str(t.get("name", f"d{domid}")), vcpus=vcpus,
            memory_mib=memory_mib, soft=soft, hard=hard, pin=pin, memory=memory, run=run,
            rate=self.rates(t.get("rate", 1.0), vcpus, where), state=state,
            agent_pinned=set(_ints(t.get("agent_pinned", []), f"{where} agent_pinned")),
            weight=_bounded(t, "weight", 256, 1, 65535, where),
            cap=_bounded(t, "cap", 0, 0, 65535, where),
        )

    def rates(self, value: Any, vcpus: int, where: str) -> list[float]:
        if isinstance(value, int | float) and not isinstance(value, bool):
            return [float(value)] * vcpus
        if isinstance(value, list) and len(value) == vcpus and all(
            isinstance(v, int | float) and not isinstance(v, bool) for v in value
        ):
            return [float(v) for v in value]
        raise TestFileError(f"{where}: rate must be a number or one number per vCPU")

    def backend(self, raw: Any, where: str) -> BackendInfo:
        t = _check_keys(raw, _BACKEND_KEYS, where)
        return BackendInfo(
            pid=_need(t, "pid", int, where), kind=str(t.get("kind", "vbd")),
            domid=_need(t, "domid", int, where), devid=int(t.get("devid", -1)),
            kthread=bool(t.get("kthread", False)),
            cpus=frozenset(_ints(t.get("cpus", []), f"{where} cpus")),
        )

    # -- observing -----------------------------------------------------------------

    def observe(self, at: float, previous: HostView | None = None) -> HostView:
        """The host now, as ``build_state`` makes it from what an agent would see."""
        used = [0] * self.n_nodes
        for d in self.domains.values():
            for n, mib in enumerate(d.memory or []):
                used[n] += mib
        topo = Topology(
            nodes=tuple(
                Node(
                    n, self.node_cpus(n), self.node_mib * KIB_PER_MIB,
                    max(self.node_mib - used[n], 0) * KIB_PER_MIB,
                )
                for n in range(self.n_nodes)
            ),
            distances=tuple(tuple(row) for row in self.distances),
        )
        domains, vcpus, rates = [], [], {}
        memory: dict[int, tuple[int, ...]] = {}
        pinned: set[tuple[int, int]] = set()
        for d in sorted(self.domains.values(), key=lambda d: d.domid):
            uuid = f"00000000-0000-4000-8000-{d.domid:012d}"
            state = DomainState(d.state)
            domains.append(DomainInfo(d.domid, d.name, uuid, state, d.vcpus,
                                      d.memory_mib * KIB_PER_MIB, weight=d.weight, cap=d.cap))
            if d.memory is not None:
                memory[d.domid] = tuple(m * KIB_PER_MIB for m in d.memory)
            for v in range(d.vcpus):
                node = d.run[v]
                cpu = None if node < 0 else node * self.cpus + v % self.cpus
                if node < 0:
                    vstate = VcpuState.OFFLINE
                elif state is DomainState.PAUSED:
                    vstate = VcpuState.PAUSED
                else:
                    vstate = VcpuState.RUNNING if d.rate[v] > 0 else VcpuState.BLOCKED
                running = vstate is VcpuState.RUNNING
                hard = self.node_cpus(d.pin[v]) if d.pin is not None else self.nodes_cpus(d.hard)
                vcpus.append(VcpuInfo(d.domid, v, cpu, vstate, 0, hard, self.nodes_cpus(d.soft)))
                rates[(d.domid, v)] = d.rate[v] if running else 0.0
                if v in d.agent_pinned:
                    pinned.add((d.domid, v))
        obs = Observation(
            time=at, topology=topo, domains=tuple(domains), vcpus=tuple(vcpus),
            memory_kib=memory, backends=tuple(self.backends.values()),
            reserved_mib=tuple(self.reserved), agent_pinned=frozenset(pinned), run_rates=rates,
        )
        return build_state(obs, previous)

    # -- changes ---------------------------------------------------------------------

    def apply(self, raw: Any, where: str = "change") -> None:
        """One change, as in a step's ``set`` list."""
        if not isinstance(raw, dict) or not raw:
            raise TestFileError(f"{where}: a change is a table")
        if "create" in raw:
            dom = self.domain(raw["create"], f"{where} create")
            self.domains[dom.domid] = dom
        elif "destroy" in raw:
            self.dom(raw["destroy"], where)
            del self.domains[raw["destroy"]]
        elif "add_backend" in raw:
            b = self.backend(raw["add_backend"], f"{where} add_backend")
            self.backends[b.pid] = b
        elif "remove_backend" in raw:
            self.backends.pop(raw["remove_backend"], None)
        elif "backend" in raw:
            t = _check_keys(raw, ("backend", "cpus"), where)
            old = self.backends.get(t["backend"])
            if old is None:
                raise TestFileError(f"{where}: no backend with pid {t['backend']!r}")
            cpus = frozenset(_ints(t.get("cpus", []), f"{where} cpus"))
            self.backends[old.pid] = BackendInfo(old.pid, old.kind, old.domid, old.devid,
                                                 old.kthread, cpus)
        elif "node" in raw:
            t = _check_keys(raw, ("node", "reserved_mib"), where)
            self.check_nodes([t["node"]], where)
            self.reserved[t["node"]] = int(t.get("reserved_mib", 0))
        elif "vcpu" in raw:
            self.vcpu_change(raw, where)
        elif "domain" in raw:
            self.domain_change(raw, where)
        else:
            raise TestFileError(f"{where}: unknown change {raw!r}")

    def dom(self, domid: Any, where: str) -> _Dom:
        dom = self.domains.get(domid) if isinstance(domid, int) else None
        if dom is None:
            raise TestFileError(f"{where}: no domain with domid {domid!r}")
        return dom

    def vcpu_change(self, raw: Mapping[str, Any], where: str) -> None:
        t = _check_keys(raw, _VCPU_CHANGE_KEYS, where)
        dom = self.dom(t.get("domain"), where)
        v = t["vcpu"]
        if not isinstance(v, int) or not 0 <= v < dom.vcpus:
            raise TestFileError(f"{where}: domain {dom.domid} has no vCPU {v!r}")
        if "run" in t:
            self.check_nodes([t["run"]], where, allow_offline=True)
            dom.run[v] = t["run"]
        if "rate" in t:
            dom.rate[v] = float(t["rate"])
        if "agent_pinned" in t:
            (dom.agent_pinned.add if t["agent_pinned"] else dom.agent_pinned.discard)(v)

    def domain_change(self, raw: Mapping[str, Any], where: str) -> None:
        t = _check_keys(raw, ("domain", *_DOMAIN_KEYS[2:]), where)
        dom = self.dom(t["domain"], where)
        merged = {
            "domid": dom.domid, "name": dom.name, "vcpus": dom.vcpus,
            "memory_mib": dom.memory_mib, "run": dom.run, "rate": dom.rate,
            "state": dom.state, "agent_pinned": sorted(dom.agent_pinned),
        }
        for key, value in (("soft", dom.soft), ("hard", dom.hard), ("pin", dom.pin),
                           ("memory", dom.memory)):
            if value is not None:
                merged[key] = value
        merged.update({k: v for k, v in t.items() if k != "domain"})
        self.domains[dom.domid] = self.domain(merged, where)


class _Runner:
    def __init__(self, path: Path, doc: Mapping[str, Any], result: TestResult) -> None:
        self.path = path
        self.doc = _check_keys(doc, _TOP_KEYS, "file")
        self.result = result
        self.model = HostModel(doc.get("host", {}), doc.get("domain", []), doc.get("backend", []))

    def run(self) -> None:
        files = self.doc.get("rules")
        if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
            raise TestFileError("rules = [\"../some_rules.toml\", ...] is required: the rule "
                                "files under test, relative to this file")
        ruleset, errors = check_paths([self.path.parent / f for f in files])
        if ruleset is None:
            raise TestFileError("the rules under test do not load:\n  "
                                + "\n  ".join(str(e) for e in errors))
        steps = self.doc.get("step", [])
        if not isinstance(steps, list) or not steps:
            raise TestFileError("no [[step]] tables")
        state: HostView | None = None
        memory = Memory()
        last_at = float("-inf")
        for i, raw in enumerate(steps):
            where = f"[[step]] #{i + 1}"
            t = _check_keys(raw, _STEP_KEYS, where)
            at = float(_need(t, "at", (int, float), where))
            if at < last_at:
                raise TestFileError(f"{where}: at = {at:g} is before the previous step")
            last_at = at
            for n, change in enumerate(t.get("set", [])):
                self.model.apply(change, f"{where} set #{n + 1}")
            state = self.model.observe(at, state)
            if "event" not in t:
                if "expect" in t:
                    raise TestFileError(f"{where}: expect needs an event")
                continue
            event = self.event(t["event"], where)
            decisions, memory = decide(state, event, at, ruleset, memory)
            result = StepResult(i, at, event, decisions)
            if "expect" in t:
                self.compare(result, t["expect"], where, ruleset)
            self.result.steps.append(result)

    def event(self, raw: Any, where: str) -> Event:
        if isinstance(raw, str):
            raw = {"type": raw}
        if not isinstance(raw, dict) or not isinstance(raw.get("type"), str):
            raise TestFileError(f"{where}: event is a type name or a table with 'type'")
        fields = {k: v for k, v in raw.items() if k != "type"}
        try:
            return make_event(raw["type"], **fields)
        except EventError as exc:
            raise TestFileError(f"{where}: {exc}") from None

    def compare(self, result: StepResult, raw: Any, where: str, ruleset: RuleSet) -> None:
        if not isinstance(raw, list):
            raise TestFileError(f"{where}: expect is a list of tables")
        expected = [self.expectation(e, f"{where} expect #{n + 1}", ruleset)
                    for n, e in enumerate(raw)]
        unmatched = list(result.decisions)
        for e in expected:
            hit = next((d for d in unmatched if e.matches(d)), None)
            if hit is None:
                result.missing.append(e)
            else:
                unmatched.remove(hit)
        result.unexpected = [d for d in unmatched if d.outcome is not Outcome.SUPPRESSED]

    def expectation(self, raw: Any, where: str, ruleset: RuleSet) -> Expectation:
        t = _check_keys(raw, _EXPECT_KEYS, where)
        rule = _need(t, "rule", str, where)
        if ruleset.rule(rule) is None:
            names = [r.name for r in ruleset.rules]
            raise TestFileError(f"{where}: no rule named {rule!r}{suggest(rule, names)}")
        subject = _need(t, "subject", str, where)
        try:
            subject = format_key(parse_key(subject))
        except ValueError as exc:
            raise TestFileError(f"{where}: {exc}") from None
        outcome = _need(t, "outcome", str, where)
        if outcome not in {o.value for o in Outcome}:
            raise TestFileError(f"{where}: outcome {outcome!r} is not one of "
                                + ", ".join(o.value for o in Outcome))
        reason = t.get("reason")
        if reason is not None and reason not in {r.value for r in Reason}:
            raise TestFileError(f"{where}: reason {reason!r} is not one of "
                                + ", ".join(r.value for r in Reason))
        if reason is not None and outcome != Outcome.SUPPRESSED.value:
            raise TestFileError(f"{where}: only a suppressed decision has a reason")
        action = t.get("action")
        if action is not None and not isinstance(action, dict):
            raise TestFileError(f"{where}: action is a table of the keys to compare")
        return Expectation(rule, subject, outcome, reason, action)
