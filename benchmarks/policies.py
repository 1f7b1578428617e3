"""The policies xnuma is compared with, and xnuma itself.

Each policy names where its behaviour comes from (``source``); BENCHMARKS.md
prints them. Kinds:

- ``scheduler``: the scheduler alone (credit1 or credit2), no agent;
- ``rules``: the production agent (``open_agent``, as ``xnuma run``) with a
  rule directory or file: xnuma's shipped rules, or a baseline written as rules
  (``rules/baselines/``: static pinning, the seed's workaround), which tests the
  rule language too;
- ``agent``: a program beside the host that talks to it through the same
  ``Hypervisor`` interface the xnuma agent uses: numad, which the rule language
  cannot say faithfully (see ``Numad``).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import trio

from agent.hypervisor.interface import Hypervisor, HypervisorError, NoSuchDomain
from agent.hypervisor.model import CpuSet, Topology, VcpuInfo
from agent.sim.run import AgentReport
from agent.sim.spec import SchedulerName

ROOT = Path(__file__).resolve().parents[1]
Kind = Literal["scheduler", "agent", "rules"]


def nodes_of(topo: Topology, cpus: CpuSet) -> frozenset[int]:
    return frozenset(n.id for n in topo.nodes if not n.cpus.isdisjoint(cpus))


# -- numad --------------------------------------------------------------------------------

# numad.c (numad 20160428, Bill Gray, Red Hat): its constants, in its units
# (CPU in hundredths of a CPU, memory in MB, time in seconds).
NUMAD_MIN_INTERVAL = 5
NUMAD_MAX_INTERVAL = 15
NUMAD_CPU_THRESHOLD = 50  # candidates use more than half a CPU...
NUMAD_MEMORY_THRESHOLD = 300  # ... and more than 300 MB
NUMAD_TARGET_UTILIZATION = 85
NUMAD_TARGET_MEMLOCALITY = 90
NUMAD_MIN_DELAY_FOR_REEVALUATION = 300  # s after a bind before a process is looked at again
NUMAD_MBS_MARGIN = 100
ONE_HUNDRED = 100


@dataclass(slots=True)
class NumadNode:
    id: int
    cpus_total: int  # hundredths of a CPU
    cpus_free: int
    mbs_total: int
    mbs_free: int
    distance: tuple[int, ...]
    magnitude: int = 0


@dataclass(slots=True)
class NumadProcess:
    """numad's process_data_t for a guest domain."""

    domid: int
    name: str
    threads: int  # vCPUs
    cpus_used: int = 0  # hundredths of a CPU over the last interval
    mbs_used: int = 0
    mbs_per_node: tuple[int, ...] = ()
    node_list: frozenset[int] | None = None  # None: not looked at yet
    bind_time: float | None = None  # None: never bound


def combined_value_of_weighted_resources(mbs: int, cpus: int, mbs_free: int,
                                         cpus_free: int) -> int:
    """numad's node magnitude: weighted free memory x weighted free CPU."""
    needed_mem, excess_mem = (mbs, mbs_free - mbs) if mbs_free > mbs else (mbs_free, 0)
    needed_cpu, excess_cpu = (cpus, cpus_free - cpus) if cpus_free > cpus else (cpus_free, 0)
    return (needed_mem * 10 + excess_mem * 4) * (needed_cpu * 6 + excess_cpu * 1)


def _ceil_div(a: int, b: int) -> int:
    return -(-a // b)


def pick_numa_nodes(p: NumadProcess, cpus: int, mbs: int, nodes: Sequence[NumadNode],
                    assume_enough_cpus: bool) -> frozenset[int]:
    """The nodes numad would bind ``p`` to (``pick_numa_nodes`` for an existing pid)."""
    num = len(nodes)
    all_nodes = frozenset(range(num))
    current = p.node_list if p.node_list is not None else all_nodes
    tmp = [NumadNode(n.id, n.cpus_total, n.cpus_free, n.mbs_total, n.mbs_free, n.distance)
           for n in nodes]
    avg_free = p.cpus_used + sum(nodes[i].cpus_free for i in current)
    avg_free //= max(len(current), 1)
    sum_free = 0
    for i, n in enumerate(tmp):
        mine = p.mbs_per_node[i]
        if len(current) >= num:  # not bound: its own memory and CPU count as free here
            n.mbs_free += mine * 17 // 16
            n.cpus_free += p.cpus_used * mine // max(p.mbs_used, 1)
        else:
            n.mbs_free += mine * 5 // 4
            if i in current:
                n.cpus_free = avg_free
        sum_free += n.cpus_free
        n.cpus_free = min(n.cpus_free, n.cpus_total)
        n.mbs_free = min(n.mbs_free, n.mbs_total)
        n.cpus_free = max(n.cpus_free, 1)
        n.magnitude = combined_value_of_weighted_resources(mbs, cpus, n.mbs_free, n.cpus_free)
    if cpus > sum_free:
        assume_enough_cpus = True
    cpu_flex = (100 - NUMAD_TARGET_UTILIZATION) * nodes[0].cpus_total // 200
    mem_req = _ceil_div(mbs, nodes[0].mbs_total)
    cpu_req = _ceil_div(cpus - cpu_flex, nodes[0].cpus_total)
    min_req = min(max(mem_req, cpu_req), num)

    def by_distance(origin: int) -> list[int]:
        # nearest first, ties to the larger magnitude (numad's selection sort, stable)
        order = list(range(num))
        for j in range(num):
            best = j
            for k in range(j + 1, num):
                dk, db = tmp[order[k]].distance[origin], tmp[order[best]].distance[origin]
                if db > dk or (db == dk and tmp[order[best]].magnitude < tmp[order[k]].magnitude):
                    best = k
            order[j], order[best] = order[best], order[j]
        return order

    totmag = []
    for origin in range(num):
        order = by_distance(origin)
        totmag.append(sum(tmp[order[j]].magnitude // tmp[order[j]].distance[origin] ** 2
                          for j in range(min_req)))
    best_node = 0
    for i in range(num):
        if totmag[best_node] < totmag[i]:
            best_node = i
    order = by_distance(best_node)
    target: set[int] = set()
    k = 0
    while min_req > 0 or mbs > 0 or (cpus > cpu_flex and not assume_enough_cpus):
        n = tmp[order[k]]
        target.add(n.id)
        min_req -= 1
        if target == all_nodes:
            break
        if n.mbs_free >= mbs + NUMAD_MBS_MARGIN:
            n.mbs_free -= mbs
            mbs = 0
        else:
            mbs -= n.mbs_free - NUMAD_MBS_MARGIN
            n.mbs_free = NUMAD_MBS_MARGIN
        if n.cpus_free >= cpus:
            n.cpus_free -= cpus
            cpus = 0
        else:
            cpus -= n.cpus_free
            n.cpus_free = 0
        k += 1
    return frozenset(target)


@dataclass(slots=True)
class Numad:
    """numad's ``manage_loads`` loop, with a Xen guest for a process.

    From numad.c (https://github.com/yhaenggi/numad, a mirror of Red Hat's
    numad 20160428): every cycle it measures each process's CPU use over the
    interval and its memory per node; candidates use > 0.5 CPU and > 300 MB;
    not-yet-bound ones come first, biggest CPU x memory first, then bound ones;
    a process bound less than 300 s ago is skipped (unless it sits on the
    busiest node and moving it would even the nodes out); ``pick_numa_nodes``
    chooses nodes by free memory and CPU (its own memory counted as free where
    it lies, biased toward it) and distance; the first candidate that is not
    already where it should be is bound (``sched_setaffinity`` of every thread
    to the nodes' CPUs: a hard binding) and the cycle ends: one move per cycle.
    The next cycle is 5 s later after a move, 15 s otherwise. Xen has no page
    migration, so the binding moves the vCPUs and not the memory (numad's
    ``migrate_pages`` step has nothing to call); the binding is the vCPUs' hard
    affinity, as ``xl vcpu-pin <dom> all <cpus>`` sets it.

    Python, not a rule set (``domain.set_hard`` could make its bindings): the
    rule language cannot say the rest faithfully. Its cycle is 5 s after a
    move and 15 s otherwise (a rule's cooldown is one fixed length per rule and
    subject); one move per cycle host-wide is a choice among all domains by an
    order the language has no way to write (unbound ones first by CPU x memory,
    then bound ones in 20 % magnitude bins by bind time); the 300 s cooldown has
    an exception that compares the node loads before and after the move; and
    ``pick_numa_nodes`` returns a set of nodes built by a greedy walk over
    distance-sorted nodes with weighted free-memory x free-CPU magnitudes,
    where a rule's node set can only be a field, a literal or a list of
    expressions. CPU use is numad's own, measured over its 5-15 s interval,
    not the agent's per-poll rates.
    """

    min_interval: int = NUMAD_MIN_INTERVAL
    max_interval: int = NUMAD_MAX_INTERVAL
    processes: dict[int, NumadProcess] = field(default_factory=dict)
    binds: list[tuple[float, int, frozenset[int]]] = field(default_factory=list)
    cycles: list[tuple[float, int]] = field(default_factory=list)  # (time, interval chosen)
    calls: int = 0
    _vcpu_ns: dict[tuple[int, int], int] = field(default_factory=dict)
    _last_sample: float = 0.0

    async def run(self, hv: Hypervisor) -> None:
        await self._sample(hv)  # the first look only starts the CPU counters
        # numad's first manage_loads returns min_interval / 2 (its tables are new).
        await trio.sleep(self.min_interval // 2)
        while True:
            nodes = await self._sample(hv)
            interval = await self.manage_loads(hv, nodes)
            self.cycles.append((trio.current_time(), interval))
            await trio.sleep(interval)

    def report(self) -> AgentReport:
        return AgentReport({"bind": len(self.binds)}, 0)

    # -- measuring (numad's update_nodes / update_processes) --

    async def _sample(self, hv: Hypervisor) -> list[NumadNode]:
        now = trio.current_time()
        elapsed_ns = max(round((now - self._last_sample) * 1e9), 1)
        self._last_sample = now
        topo = await hv.topology()
        vcpus = await hv.vcpus()
        by_dom: dict[int, list[VcpuInfo]] = {}
        for v in vcpus:
            by_dom.setdefault(v.domid, []).append(v)
        busy = [0] * len(topo.nodes)  # hundredths of a CPU
        seen: set[int] = set()
        for dom in await hv.domains():
            seen.add(dom.domid)
            mine = by_dom.get(dom.domid, [])
            used_ns = 0
            for v in mine:  # each vCPU's time since the last look, on the node it is on
                last = self._vcpu_ns.get((dom.domid, v.vcpu))
                self._vcpu_ns[(dom.domid, v.vcpu)] = v.time_ns
                if last is None or v.cpu is None:
                    continue
                used_ns += v.time_ns - last
                busy[topo.node_of(v.cpu)] += (v.time_ns - last) * ONE_HUNDRED // elapsed_ns
            p = self.processes.get(dom.domid)
            if p is None or p.name != dom.name:
                p = self.processes[dom.domid] = NumadProcess(dom.domid, dom.name, dom.vcpus)
            p.cpus_used = max(used_ns * ONE_HUNDRED // elapsed_ns, 0)
            if dom.domid != 0:
                try:
                    kib = await hv.memory_per_node(dom.domid)
                except NoSuchDomain:
                    continue
                p.mbs_per_node = tuple(k // 1024 for k in kib)
                p.mbs_used = sum(p.mbs_per_node)
            if p.node_list is None:  # initialize_mem_node_list
                hard = frozenset().union(*(v.hard for v in mine)) if mine else topo.all_cpus
                p.node_list = nodes_of(topo, hard)
                if len(p.node_list) < len(topo.nodes):
                    p.bind_time = now - 1800  # bound by someone else: "30 minutes ago"
        for gone in set(self.processes) - seen:
            del self.processes[gone]
        for key in [k for k in self._vcpu_ns if k[0] not in seen]:
            del self._vcpu_ns[key]
        return [NumadNode(n.id, len(n.cpus) * ONE_HUNDRED,
                          max(len(n.cpus) * ONE_HUNDRED - busy[n.id], 0),
                          n.memory_total_kib // 1024, n.memory_free_kib // 1024,
                          topo.distances[n.id]) for n in topo.nodes]

    # -- deciding (numad's manage_loads) --

    def candidates(self, now: float) -> list[NumadProcess]:
        """Unbound first by CPU x memory, biggest first; then bound ones, in bins of
        magnitude within 20 %, oldest bind first."""
        cands = [p for p in self.processes.values()
                 if p.domid != 0 and p.cpus_used > NUMAD_CPU_THRESHOLD
                 and p.mbs_used > NUMAD_MEMORY_THRESHOLD]
        unbound = sorted((p for p in cands if p.bind_time is None),
                         key=lambda p: (-p.cpus_used * p.mbs_used, p.domid))
        bound = [p for p in cands if p.bind_time is not None]
        ordered: list[NumadProcess] = []
        while bound:  # numad's selection sort, kept as it is
            best = bound[0]
            for p in bound[1:]:
                mag, best_mag = p.cpus_used * p.mbs_used, best.cpus_used * best.mbs_used
                # numad computes best - this one unsigned: a bigger one always wins;
                # a smaller one within 20 % is ordered by bind time, older first.
                if mag > best_mag:
                    best = p
                elif mag < best_mag and mag // (best_mag - mag) < 5:
                    continue
                elif (p.bind_time or 0.0) <= (best.bind_time or 0.0):
                    best = p
            ordered.append(best)
            bound.remove(best)
        return unbound + ordered

    async def manage_loads(self, hv: Hypervisor, nodes: list[NumadNode]) -> int:
        now = trio.current_time()
        cands = self.candidates(now)
        sum_used = sum(p.cpus_used for p in cands)
        sum_total = sum(n.cpus_total for n in nodes)
        free = [n.cpus_free for n in nodes]
        mfree = [n.mbs_free for n in nodes]
        min_cpu_ix = min(range(len(nodes)), key=lambda i: (free[i], i))
        min_mb_ix = min(range(len(nodes)), key=lambda i: (mfree[i], i))
        avg_cpu, avg_mb = sum(free) // len(nodes), sum(mfree) // len(nodes)
        for p in cands:
            mb_request = p.mbs_used * 100 // NUMAD_TARGET_UTILIZATION
            cpu_request = min(p.cpus_used * 100 // NUMAD_TARGET_UTILIZATION,
                              p.threads * ONE_HUNDRED)
            if p.bind_time is not None and p.bind_time + NUMAD_MIN_DELAY_FOR_REEVALUATION > now:
                assert p.node_list is not None
                on_busiest = min_cpu_ix in p.node_list or min_mb_ix in p.node_list
                evens_cpu = (abs(min(free) + p.cpus_used - avg_cpu)
                             + abs(max(free) - p.cpus_used - avg_cpu)
                             < max(free) - min(free) - NUMAD_CPU_THRESHOLD)
                evens_mb = (abs(min(mfree) + p.mbs_used - avg_mb)
                            + abs(max(mfree) - p.mbs_used - avg_mb)
                            < max(mfree) - min(mfree))
                fits = cpu_request < nodes[0].cpus_total and mb_request < nodes[0].mbs_total
                if not (on_busiest and fits and evens_cpu and evens_mb):
                    continue  # "done too recently"
            target = pick_numa_nodes(p, cpu_request, mb_request, nodes,
                                     sum_used <= sum_total)
            local = sum(p.mbs_per_node[i] for i in target)
            nonlocal_pct = 100 * (p.mbs_used - local) // max(p.mbs_used, 1)
            if (p.bind_time is not None and nonlocal_pct <= 100 - NUMAD_TARGET_MEMLOCALITY
                    and target == p.node_list):
                p.bind_time = now  # already there
                continue
            if await self._bind(hv, p, target, nodes):
                p.bind_time, p.node_list = now, target
                self.binds.append((now, p.domid, target))
                return self.min_interval
        return self.max_interval

    async def _bind(self, hv: Hypervisor, p: NumadProcess, target: frozenset[int],
                    nodes: list[NumadNode]) -> bool:
        topo = await hv.topology()
        cpus = frozenset().union(*(topo.nodes[i].cpus for i in target))
        try:
            for v in await hv.vcpus(p.domid):
                if v.hard != cpus:
                    await hv.set_vcpu_affinity(p.domid, v.vcpu, cpus, None)
                    self.calls += 1
        except NoSuchDomain:
            return False
        except HypervisorError:
            return False
        return True


# -- the registry -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Policy:
    name: str  # short id, used on the command line and in tables
    label: str
    kind: Kind
    source: str  # where its behaviour comes from
    scheduler: SchedulerName | None = None  # for kind "scheduler": run under it
    rules: str | None = None  # for kind "rules": a rule directory or file, from the root
    make: Callable[[], object] | None = None  # for kind "agent": its factory

    @property
    def rules_path(self) -> Path | None:
        return None if self.rules is None else ROOT / self.rules


POLICIES: tuple[Policy, ...] = (
    Policy("credit1", "credit1 alone", "scheduler",
           "Xen 4.17 xen/common/sched/credit.c, as modelled by agent/sim/credit1.py",
           scheduler="credit1"),
    Policy("credit2", "credit2 alone", "scheduler",
           "Xen 4.17 xen/common/sched/credit2.c, as modelled by agent/sim/credit2.py",
           scheduler="credit2"),
    Policy("static", "static hard pinning", "rules",
           "common practice: `xl vcpu-pin <dom> all node:N -` after `xl create` (xl.cfg(5) "
           "`cpus=\"node:N\"` beside `cpus_soft=`): hard = the node of the soft affinity, "
           "for good", rules="rules/baselines/static_pinning.toml"),
    Policy("seed-workaround", "seed workaround", "rules",
           "seed-numa-balancing-in-xen.txt: \"periodically set hard-affinity to move vCPUs "
           "back\"; here every 10 s, for 2 s, hard = soft",
           rules="rules/baselines/seed_workaround.toml"),
    Policy("numad", "numad-like", "agent",
           "numad.c (numad 20160428) manage_loads/pick_numa_nodes: 5-15 s cycle, one bind "
           "per cycle, 300 s before a bound domain is looked at again; binds hard affinity",
           make=Numad),
    Policy("xnuma", "xnuma", "rules", "the shipped rules (rules/*.toml) run by the agent",
           rules="rules"),
)


def policy(name: str) -> Policy:
    for p in POLICIES:
        if p.name == name:
            return p
    raise KeyError(f"no policy {name!r} (known: {', '.join(p.name for p in POLICIES)})")
