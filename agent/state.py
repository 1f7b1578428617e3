"""The host as the rule engine reads it: a snapshot of views with derived values.

The agent observes raw values (``agent.hypervisor.model``) and feeds them to
``build_state``, a pure function of the new observation and the previous
snapshot. Derived values need that history: run rates come from the change of
cumulative run time, ``off_node_s`` from when a vCPU was first seen off its soft
affinity, ``age_s`` and ``soft_changed`` from when a domain was first seen.

Views are plain slotted objects linked to each other (a vCPU knows its domain, a
node its vCPUs). They are built once by ``build_state`` and never changed after:
treat them as immutable. Every field a rule may read is listed, with its type
and unit, in ``agent.rules.catalogue``; units are also in the names (``_s``
seconds, ``_mib`` MiB, ``_cpus`` pCPU equivalents, ``share`` a fraction 0..1).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass, field, replace

from agent.fairness import fair_shares
from agent.hypervisor.model import (
    CpuSet,
    DomainInfo,
    DomainState,
    Topology,
    VcpuInfo,
    VcpuState,
)

NS_PER_S = 1_000_000_000
KIB_PER_MIB = 1024

VcpuKey = tuple[int, int]  # (domid, vcpu)


# -- observations that have no type in the hypervisor model ----------------------


@dataclass(frozen=True, slots=True)
class BackendInfo:
    """A dom0 process or kernel thread serving a guest's PV device."""

    pid: int
    kind: str  # "vbd", "vif", "qdisk", "qemu", "tapdisk", ...
    domid: int  # the guest (frontend) it serves
    devid: int = -1
    kthread: bool = False
    # Linux CPUs (= dom0 vCPU ids) the backend may run on; empty = all of them.
    cpus: frozenset[int] = frozenset()


@dataclass(frozen=True, slots=True)
class Observation:
    """Everything the agent saw of the host at one instant."""

    time: float  # seconds on the agent's monotonic clock
    topology: Topology
    domains: tuple[DomainInfo, ...]
    vcpus: tuple[VcpuInfo, ...]
    # Fresh per-node memory measurements, KiB per node, by domid. A domain
    # missing here keeps its previous measurement (they are rate-limited).
    memory_kib: Mapping[int, tuple[int, ...]] = field(default_factory=dict)
    backends: tuple[BackendInfo, ...] = ()
    # MiB reserved on each node by pending placements (index = node id).
    reserved_mib: tuple[int, ...] = ()
    # vCPUs on which the agent holds a temporary hard pin right now.
    agent_pinned: frozenset[VcpuKey] = frozenset()
    # Run rates measured by the source itself (fraction of one pCPU); when
    # None they are derived from the change of ``VcpuInfo.time_ns``.
    run_rates: Mapping[VcpuKey, float] | None = None
    # Demand of each vCPU: the share of one pCPU it wants (running or queued),
    # as the source estimates it. A run rate understates it on a node where
    # vCPUs queue; when None (or a vCPU is missing) its run rate stands in.
    demand: Mapping[VcpuKey, float] | None = None
    # pCPUs of each cpupool by name, as far as the source knows them; a pool
    # not listed spans every pCPU. vCPUs compete only within their pool.
    pool_cpus: Mapping[str, CpuSet] = field(default_factory=dict)


# -- views --------------------------------------------------------------------


@dataclass(slots=True, eq=False)
class NodeView:
    id: int
    cpus: int
    memory_mib: int
    free_memory_mib: int
    reserved_mib: int
    available_mib: int
    busy_cpus: float
    idle_cpus: float
    load: float
    running_vcpus: int
    home_demand: float
    pressure: float
    cpu_set: CpuSet = field(repr=False)
    vcpus: list[VcpuView] = field(default_factory=list, repr=False)
    domains: list[DomainView] = field(default_factory=list, repr=False)


@dataclass(slots=True, eq=False)
class VcpuView:
    domid: int
    id: int
    cpu: int
    node: int
    state: str
    hard_nodes: frozenset[int]
    soft_nodes: frozenset[int]
    on_soft: bool
    home_node: int
    on_home: bool
    off_node_s: float
    run_rate: float
    demand: float
    misplaced: bool
    pinned: bool
    agent_pinned: bool
    domain: DomainView = field(repr=False)
    # history kept for the next build, not read by rules
    hard: CpuSet = field(repr=False)
    soft: CpuSet = field(repr=False)
    time_ns: int = field(repr=False)
    off_since: float | None = field(repr=False)


@dataclass(slots=True, eq=False)
class BackendView:
    pid: int
    kind: str
    domid: int
    devid: int
    kthread: bool
    node: int
    home_node: int
    on_home: bool
    placeable: bool
    domain: DomainView = field(repr=False)


@dataclass(slots=True, eq=False)
class DomainView:
    domid: int
    name: str
    uuid: str
    state: str
    is_dom0: bool
    pool: str
    vcpu_count: int
    memory_mib: int
    home_node: int
    soft_nodes: frozenset[int]
    hard_nodes: frozenset[int]
    soft_changed: bool
    memory_known: bool
    memory_node: int
    memory_node_share: float
    home_memory_share: float
    soft_memory_share: float
    demand: float
    locality: float
    off_node_vcpus: int
    age_s: float
    vcpus: list[VcpuView] = field(default_factory=list, repr=False)
    backends: list[BackendView] = field(default_factory=list, repr=False)
    # history kept for the next build, not read by rules
    first_seen: float = field(default=0.0, repr=False)
    boot_soft: frozenset[int] = field(default=frozenset(), repr=False)
    memory_per_node_mib: tuple[int, ...] = field(default=(), repr=False)
    # its weight-fair share of its pool / its demand (1 while the pool has room for
    # every domain's demand): the part of each vCPU's demand the model counts.
    fair_scale: float = field(default=1.0, repr=False)
    # scheduler weight (1-65535, default 256) and cap (% of one pCPU, 0 = none), as the
    # hypervisor reports them: what the fair split above is weighted and capped by.
    weight: int = field(default=256, repr=False)
    cap: int = field(default=0, repr=False)


@dataclass(slots=True, eq=False)
class HostView:
    now: float
    node_count: int
    cpus: int
    busy_cpus: float
    idle_cpus: float
    load: float
    min_load: float
    max_load: float
    dom0_node_bound: bool
    nodes: list[NodeView] = field(repr=False)
    # Per (cpupool, node): what its pCPUs offer and what the vCPUs homed there want.
    balance: dict[tuple[str, int], NodeBalance] = field(repr=False)
    # Per (cpupool, home node, other node): pCPUs of the other node the home's
    # overflow may use without costing work (the model's spill, nearest first).
    flows: dict[tuple[str, int, int], float] = field(repr=False)
    domains: list[DomainView] = field(repr=False)
    vcpus: list[VcpuView] = field(repr=False)
    backends: list[BackendView] = field(repr=False)
    distances: tuple[tuple[int, ...], ...] = field(repr=False)
    node_by_id: dict[int, NodeView] = field(repr=False)
    domain_by_id: dict[int, DomainView] = field(repr=False)
    vcpu_by_key: dict[VcpuKey, VcpuView] = field(repr=False)
    backend_by_pid: dict[int, BackendView] = field(repr=False)

    def node_at(self, node_id: int) -> NodeView:
        """The node with this id, or ``ABSENT_NODE`` (all zero) for an unknown id."""
        return self.node_by_id.get(node_id, ABSENT_NODE)

    def domain_at(self, domid: int) -> DomainView:
        return self.domain_by_id.get(domid, ABSENT_DOMAIN)

    def distance(self, a: int, b: int) -> int:
        """SLIT distance; 0 when either node is unknown."""
        n = len(self.distances)
        if 0 <= a < n and 0 <= b < len(self.distances[a]):
            return self.distances[a][b]
        return 0


def _absent_node() -> NodeView:
    return NodeView(
        id=-1, cpus=0, memory_mib=0, free_memory_mib=0, reserved_mib=0, available_mib=0,
        busy_cpus=0.0, idle_cpus=0.0, load=0.0, running_vcpus=0, home_demand=0.0,
        pressure=0.0, cpu_set=frozenset(),
    )


def _absent_domain() -> DomainView:
    return DomainView(
        domid=-1, name="", uuid="", state="dying", is_dom0=False, pool="", vcpu_count=0,
        memory_mib=0, home_node=-1, soft_nodes=frozenset(), hard_nodes=frozenset(),
        soft_changed=False, memory_known=False, memory_node=-1, memory_node_share=0.0,
        home_memory_share=0.0, soft_memory_share=0.0, demand=0.0, locality=0.0,
        off_node_vcpus=0, age_s=0.0,
    )


# What ``node_at``/``domain_at`` return for an id that is not on the host: a
# value every field of which reads as zero/empty, so conditions never fail.
ABSENT_NODE = _absent_node()
ABSENT_DOMAIN = _absent_domain()


# -- the efficiency model --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeBalance:
    """One node as one cpupool sees it, in pCPUs."""

    capacity: int  # the pool's pCPUs on the node
    home_demand: float  # demand of the pool's vCPUs homed on the node
    spill: float  # of that, how much may run elsewhere without costing work

    @property
    def spare(self) -> float:
        """pCPUs its own vCPUs leave free."""
        return max(self.capacity - self.home_demand, 0.0)

    @property
    def overflow(self) -> float:
        """Demand of its own vCPUs beyond its pCPUs."""
        return max(self.home_demand - self.capacity, 0.0)


# A remote vCPU is "justified" while it fills spare pCPUs with demand its home
# cannot serve; rounding to whole vCPUs: up to half a vCPU of slack.
_SLACK_VCPU = 0.5


def fair_demand(v: VcpuView) -> float:
    """The part of the vCPU's demand its domain's weight-fair share covers."""
    return v.demand * v.domain.fair_scale


def _fair_scales(domains: list[DomainView], capacity: int) -> dict[int, float]:
    """Per domain of one pool: weight-fair share / demand, where the pool is overcommitted.

    credit1 and credit2 give each domain a share of the pool in proportion to its
    weight (``xl sched-credit[2] -w``), capped at its demand and at its cap (``-c``,
    percent of one pCPU; a capped domain cannot use more, so what it leaves goes to
    the others).
    """
    wants = {d.domid: d.demand for d in domains if d.demand > 0}
    usable = {d.domid: min(d.demand, d.cap / 100) if d.cap > 0 else d.demand
              for d in domains if d.demand > 0}
    if sum(usable.values()) <= capacity and usable == wants:
        return {}
    shares = fair_shares(float(capacity), usable, {d.domid: d.weight for d in domains})
    return {domid: shares[domid] / demand for domid, demand in wants.items()}

Flows = dict[tuple[str, int, int], float]  # (pool, home node, other node) -> pCPUs


def _balance(
    topo: Topology, vcpus: list[VcpuView], pool_cpus: Mapping[str, CpuSet]
) -> tuple[dict[tuple[str, int], NodeBalance], Flows]:
    """Per pool and node: capacity, home demand and spill; and where the spill goes.

    The most useful work a pool can do puts each node's own vCPUs on it up to
    its pCPUs, and the overflow on other nodes' spare pCPUs, nearest first (a
    remote vCPU does less work than a local one, but more than a queued one).

    Within weight-fair shares: where the pool cannot give every domain its demand,
    the scheduler owes each its fair share (``agent.fairness``), across nodes, so
    the spill is worked out on fair demand (each vCPU's demand x its domain's
    ``fair_scale``). A node whose own domains would take more than their fair
    share keeps only that, and the rest of its pCPUs is room for other nodes'
    overflow: the agent must not buy locality by starving a domain. Where the
    pool has room for all (no domain held below its demand), nothing changes.
    ``NodeBalance.home_demand`` stays the full demand (a node still overflows).
    """
    node_ids = sorted(n.id for n in topo.nodes)
    nearest = {h: sorted((m for m in node_ids if m != h), key=lambda m: (_dist(topo, h, m), m))
               for h in node_ids}
    balance: dict[tuple[str, int], NodeBalance] = {}
    flows: Flows = {}
    for pool in sorted({v.domain.pool for v in vcpus}):
        cpus = pool_cpus.get(pool, topo.all_cpus)
        cap = {n.id: len(n.cpus & cpus) for n in topo.nodes}
        members = {id(v.domain): v.domain for v in vcpus if v.domain.pool == pool}
        scales = _fair_scales(list(members.values()), sum(cap.values()))
        for dom in members.values():
            dom.fair_scale = scales.get(dom.domid, 1.0)
        demand = dict.fromkeys(node_ids, 0.0)
        fair = dict.fromkeys(node_ids, 0.0)
        for v in vcpus:
            if v.domain.pool == pool and v.home_node in demand:
                demand[v.home_node] += v.demand
                fair[v.home_node] += fair_demand(v)
        spare = {n: max(cap[n] - fair[n], 0.0) for n in node_ids}
        for h in node_ids:
            over = fair[h] - cap[h]
            spill = 0.0
            for m in nearest[h]:
                if over <= 0:
                    break
                flow = min(over, spare[m])
                if flow > 0:
                    flows[(pool, h, m)] = flow
                    over -= flow
                    spare[m] -= flow
                    spill += flow
            balance[(pool, h)] = NodeBalance(cap[h], demand[h], spill)
    return balance, flows


def _dist(topo: Topology, a: int, b: int) -> int:
    try:
        return topo.distances[a][b]
    except IndexError:
        return 0


def _mark_misplaced(vcpus: list[VcpuView], flows: Flows) -> None:
    """Set ``misplaced`` on each busy vCPU off its home node beyond the spill the
    model allows its home's overflow on that node: there it costs work (or takes
    a pCPU another node's domains are due). Each counts its ``fair_demand``."""
    busy = (VcpuState.RUNNING.value, VcpuState.RUNNABLE.value)
    used: Flows = {}
    for v in vcpus:
        if v.home_node < 0 or v.node < 0 or v.node == v.home_node or v.demand <= 0:
            continue
        if v.state not in busy:
            continue
        key = (v.domain.pool, v.home_node, v.node)
        taken = used.get(key, 0.0)
        wants = fair_demand(v)
        # half a vCPU of slack, of a vCPU that counts for its fair part only
        if taken + wants <= flows.get(key, 0.0) + _SLACK_VCPU * v.domain.fair_scale:
            used[key] = taken + wants
        else:
            v.misplaced = True


# -- the builder ----------------------------------------------------------------


class _Masks:
    """Per-build memo of what a pCPU mask means: masks repeat across vCPUs, and
    set operations in C beat walking hundreds of pCPUs in Python."""

    def __init__(self, topo: Topology) -> None:
        self.nodes = [(n.id, n.cpus) for n in topo.nodes]
        self.all = topo.all_cpus
        self._nodes: dict[CpuSet, frozenset[int]] = {}
        self._narrow: dict[CpuSet, bool] = {}

    def nodes_of(self, mask: CpuSet) -> frozenset[int]:
        found = self._nodes.get(mask)
        if found is None:
            found = frozenset(i for i, cpus in self.nodes if not mask.isdisjoint(cpus))
            self._nodes[mask] = found
        return found

    def narrower_than_all(self, mask: CpuSet) -> bool:
        found = self._narrow.get(mask)
        if found is None:
            found = not self.all <= mask
            self._narrow[mask] = found
        return found


def _share(part: int, total: int) -> float:
    return part / total if total > 0 else 0.0


def _run_rate(
    info: VcpuInfo, prev: VcpuView | None, prev_time: float | None, obs: Observation
) -> float:
    if obs.run_rates is not None:
        rate = obs.run_rates.get((info.domid, info.vcpu), 0.0)
    elif prev is None or prev_time is None or obs.time <= prev_time:
        return 0.0
    else:
        delta_ns = info.time_ns - prev.time_ns
        if delta_ns < 0:  # a new vCPU under a reused domid
            return 0.0
        rate = delta_ns / ((obs.time - prev_time) * NS_PER_S)
    return min(max(rate, 0.0), 1.0)


def build_state(obs: Observation, previous: HostView | None = None) -> HostView:
    """The snapshot for ``obs``; ``previous`` (the last snapshot) supplies history.

    Pure: reads its arguments only, returns new views, changes nothing.
    """
    topo = obs.topology
    node_of_cpu = {cpu: node.id for node in topo.nodes for cpu in node.cpus}
    masks = _Masks(topo)
    prev_time = previous.now if previous is not None else None
    prev_domains = previous.domain_by_id if previous is not None else {}
    prev_vcpus = previous.vcpu_by_key if previous is not None else {}

    vcpus_of: dict[int, list[VcpuInfo]] = {}
    for v in sorted(obs.vcpus, key=lambda v: (v.domid, v.vcpu)):
        vcpus_of.setdefault(v.domid, []).append(v)

    domains: list[DomainView] = []
    vcpus: list[VcpuView] = []
    for info in sorted(obs.domains, key=lambda d: d.domid):
        prev_dom = prev_domains.get(info.domid)
        if prev_dom is not None and prev_dom.uuid != info.uuid:
            prev_dom = None  # the domid was reused by another domain
        domains.append(
            _build_domain(info, vcpus_of.get(info.domid, []), prev_dom, prev_vcpus,
                          prev_time, obs, node_of_cpu, masks)
        )
        vcpus.extend(domains[-1].vcpus)

    nodes = _build_nodes(obs, topo, vcpus, domains)
    balance, flows = _balance(topo, vcpus, obs.pool_cpus)
    _mark_misplaced(vcpus, flows)
    node_by_id = {n.id: n for n in nodes}
    domain_by_id = {d.domid: d for d in domains}
    backends = _build_backends(obs, domain_by_id, node_by_id)

    cpus = sum(n.cpus for n in nodes)
    busy = sum(n.busy_cpus for n in nodes)
    loads = [n.load for n in nodes] or [0.0]
    dom0 = domain_by_id.get(0)
    dom0_bound = dom0 is not None and bool(dom0.vcpus) and all(
        len(v.hard_nodes) == 1 for v in dom0.vcpus
    )
    return HostView(
        now=obs.time, node_count=len(nodes), cpus=cpus, busy_cpus=busy,
        idle_cpus=max(cpus - busy, 0.0), load=busy / cpus if cpus else 0.0,
        min_load=min(loads), max_load=max(loads), dom0_node_bound=dom0_bound,
        nodes=nodes, balance=balance, flows=flows, domains=domains, vcpus=vcpus, backends=backends,
        distances=topo.distances, node_by_id=node_by_id, domain_by_id=domain_by_id,
        vcpu_by_key={(v.domid, v.id): v for v in vcpus},
        backend_by_pid={b.pid: b for b in backends},
    )


def patch_domains(previous: HostView, obs: Observation, domids: Collection[int]) -> HostView:
    """``previous`` with the guests ``domids`` looked at again; every other view kept.

    For an event about a few domains (one created, destroyed, unpaused) without
    rebuilding thousands of vCPU views: each of ``domids`` found in ``obs.domains``
    is built anew from ``obs`` (its vCPUs, memory, backends), one missing there is
    dropped. Nodes are rebuilt from ``obs.topology`` (free memory now) and every
    vCPU's run rate. What ties all vCPUs together (``balance``, ``flows``, the
    others' ``misplaced``) stays as in ``previous``, and so does ``now``: the next
    ``build_state`` measures run rates from the last full build. dom0 is not
    patched (its vCPUs decide where backends may go): change it with a full build.

    Pure: ``previous`` and its views are not changed.
    """
    touched = frozenset(domids)
    if 0 in touched:
        raise ValueError("patch_domains: dom0 changes need a full build_state")
    topo = obs.topology
    node_of_cpu = {cpu: node.id for node in topo.nodes for cpu in node.cpus}
    masks = _Masks(topo)
    vcpus_of: dict[int, list[VcpuInfo]] = {}
    for v in sorted((v for v in obs.vcpus if v.domid in touched),
                    key=lambda v: (v.domid, v.vcpu)):
        vcpus_of.setdefault(v.domid, []).append(v)
    by_id = {k: d for k, d in previous.domain_by_id.items() if k not in touched}
    fresh: list[DomainView] = []
    for info in obs.domains:
        if info.domid not in touched:
            continue
        prev_dom = previous.domain_by_id.get(info.domid)
        if prev_dom is not None and prev_dom.uuid != info.uuid:
            prev_dom = None  # the domid was reused by another domain
        dom = _build_domain(info, vcpus_of.get(info.domid, []), prev_dom,
                            previous.vcpu_by_key, previous.now, obs, node_of_cpu, masks)
        by_id[info.domid] = dom
        fresh.append(dom)
    new_vcpus = [v for d in fresh for v in d.vcpus]
    _mark_misplaced(new_vcpus, previous.flows)  # against the others' last spill
    domains = [by_id[k] for k in sorted(by_id)]
    vcpus = [v for d in domains for v in d.vcpus]
    nodes = _build_nodes(obs, topo, vcpus, domains)
    node_by_id = {n.id: n for n in nodes}
    mine = replace(obs, backends=tuple(b for b in obs.backends if b.domid in touched))
    backends = sorted([b for b in previous.backends if b.domid not in touched]
                      + _build_backends(mine, by_id, node_by_id), key=lambda b: b.pid)
    vcpu_by_key = {k: v for k, v in previous.vcpu_by_key.items() if k[0] not in touched}
    vcpu_by_key.update(((v.domid, v.id), v) for v in new_vcpus)
    cpus = sum(n.cpus for n in nodes)
    busy = sum(n.busy_cpus for n in nodes)
    loads = [n.load for n in nodes] or [0.0]
    return HostView(
        now=previous.now, node_count=len(nodes), cpus=cpus, busy_cpus=busy,
        idle_cpus=max(cpus - busy, 0.0), load=busy / cpus if cpus else 0.0,
        min_load=min(loads), max_load=max(loads), dom0_node_bound=previous.dom0_node_bound,
        nodes=nodes, balance=previous.balance, flows=previous.flows, domains=domains,
        vcpus=vcpus, backends=backends, distances=topo.distances, node_by_id=node_by_id,
        domain_by_id=by_id, vcpu_by_key=vcpu_by_key,
        backend_by_pid={b.pid: b for b in backends},
    )


def _build_domain(
    info: DomainInfo,
    vinfos: list[VcpuInfo],
    prev: DomainView | None,
    prev_vcpus: Mapping[VcpuKey, VcpuView],
    prev_time: float | None,
    obs: Observation,
    node_of_cpu: Mapping[int, int],
    masks: _Masks,
) -> DomainView:
    n_nodes = len(obs.topology.nodes)
    measured = obs.memory_kib.get(info.domid)
    if measured is not None:
        memory = tuple(kib // KIB_PER_MIB for kib in measured[:n_nodes])
    elif prev is not None:
        memory = prev.memory_per_node_mib
    else:
        memory = ()
    total = sum(memory)
    known = total > 0
    memory_node = max(range(len(memory)), key=lambda i: (memory[i], -i)) if known else -1

    soft_nodes = frozenset().union(*(masks.nodes_of(v.soft) for v in vinfos))
    hard_nodes = frozenset().union(*(masks.nodes_of(v.hard) for v in vinfos))
    if len(soft_nodes) == 1:
        home = next(iter(soft_nodes))
    elif known and (not soft_nodes or memory_node in soft_nodes):
        home = memory_node
    elif known:  # several soft nodes: the one of them holding most memory
        home = max(sorted(soft_nodes), key=lambda i: memory[i] if i < len(memory) else 0)
    else:
        home = -1

    def mem_on(nodes: frozenset[int]) -> int:
        return sum(memory[i] for i in nodes if 0 <= i < len(memory))

    first_seen = prev.first_seen if prev is not None else obs.time
    boot_soft = prev.boot_soft if prev is not None else soft_nodes
    dom = DomainView(
        domid=info.domid, name=info.name, uuid=info.uuid, state=info.state.value,
        is_dom0=info.domid == 0, pool=info.pool, vcpu_count=info.vcpus,
        memory_mib=info.memory_kib // KIB_PER_MIB, home_node=home, soft_nodes=soft_nodes,
        hard_nodes=hard_nodes,
        soft_changed=(prev is not None and prev.soft_changed) or soft_nodes != boot_soft,
        memory_known=known, memory_node=memory_node,
        memory_node_share=_share(memory[memory_node], total) if known else 0.0,
        home_memory_share=_share(mem_on(frozenset({home})), total),
        soft_memory_share=_share(mem_on(soft_nodes), total),
        demand=0.0, locality=0.0, off_node_vcpus=0, age_s=obs.time - first_seen,
        first_seen=first_seen, boot_soft=boot_soft, memory_per_node_mib=memory,
        # the pool's last split until _balance works it out again (patch_domains keeps it)
        fair_scale=prev.fair_scale if prev is not None else 1.0,
        weight=info.weight, cap=info.cap,
    )
    paused = info.state is DomainState.PAUSED
    for v in vinfos:
        key = (v.domid, v.vcpu)
        prev_v = prev_vcpus.get(key) if prev is not None else None
        node = node_of_cpu.get(v.cpu, -1) if v.cpu is not None else -1
        own_soft = masks.nodes_of(v.soft)
        v_home = next(iter(own_soft)) if len(own_soft) == 1 else home
        on_soft = v.cpu is None or v.cpu in v.soft or not v.soft
        off = not on_soft and not paused and v.state not in (VcpuState.OFFLINE, VcpuState.PAUSED)
        rate = _run_rate(v, prev_v, prev_time, obs)
        wants = obs.demand.get(key) if obs.demand is not None else None
        if wants is None or paused or v.state in (VcpuState.OFFLINE, VcpuState.PAUSED):
            wants = rate
        off_since = None
        if off:
            off_since = obs.time
            if prev_v is not None and prev_v.off_since is not None:
                off_since = prev_v.off_since
        dom.vcpus.append(
            VcpuView(
                domid=v.domid, id=v.vcpu, cpu=v.cpu if v.cpu is not None else -1, node=node,
                state=v.state.value, hard_nodes=masks.nodes_of(v.hard),
                soft_nodes=own_soft, on_soft=on_soft, home_node=v_home,
                on_home=node == v_home and node >= 0,
                off_node_s=obs.time - off_since if off_since is not None else 0.0,
                run_rate=rate, demand=min(max(float(wants), rate, 0.0), 1.0), misplaced=False,
                pinned=masks.narrower_than_all(v.hard), agent_pinned=key in obs.agent_pinned,
                domain=dom, hard=v.hard, soft=v.soft, time_ns=v.time_ns, off_since=off_since,
            )
        )
    dom.demand = sum(v.demand for v in dom.vcpus)
    run = sum(v.run_rate for v in dom.vcpus)
    on_soft_rate = sum(v.run_rate for v in dom.vcpus if v.on_soft)
    dom.locality = on_soft_rate / run if run > 0 else 1.0
    dom.off_node_vcpus = sum(1 for v in dom.vcpus if not v.on_soft)
    return dom


def _build_nodes(
    obs: Observation, topo: Topology, vcpus: list[VcpuView], domains: list[DomainView]
) -> list[NodeView]:
    nodes: list[NodeView] = []
    for n in sorted(topo.nodes, key=lambda n: n.id):
        reserved = obs.reserved_mib[n.id] if n.id < len(obs.reserved_mib) else 0
        free = n.memory_free_kib // KIB_PER_MIB
        nodes.append(
            NodeView(
                id=n.id, cpus=len(n.cpus), memory_mib=n.memory_total_kib // KIB_PER_MIB,
                free_memory_mib=free, reserved_mib=reserved,
                available_mib=max(free - reserved, 0), busy_cpus=0.0, idle_cpus=0.0, load=0.0,
                running_vcpus=0, home_demand=0.0, pressure=0.0, cpu_set=n.cpus,
            )
        )
    by_id = {n.id: n for n in nodes}
    running = (VcpuState.RUNNING.value, VcpuState.RUNNABLE.value)
    for v in vcpus:
        here = by_id.get(v.node)
        if here is not None:
            here.vcpus.append(v)
            here.busy_cpus += v.run_rate
            if v.state in running:
                here.running_vcpus += 1
        home = by_id.get(v.home_node)
        if home is not None:
            home.home_demand += v.demand
    for d in domains:
        home = by_id.get(d.home_node)
        if home is not None:
            home.domains.append(d)
    for view in nodes:
        view.busy_cpus = min(view.busy_cpus, float(view.cpus))
        view.idle_cpus = view.cpus - view.busy_cpus
        view.load = view.busy_cpus / view.cpus if view.cpus else 0.0
        view.pressure = view.home_demand / view.cpus if view.cpus else 0.0
    return nodes


def _build_backends(
    obs: Observation,
    domain_by_id: Mapping[int, DomainView],
    node_by_id: Mapping[int, NodeView],
) -> list[BackendView]:
    dom0 = domain_by_id.get(0)
    dom0_vcpus = dom0.vcpus if dom0 is not None else []
    # Nodes that have a dom0 vCPU hard-bound inside them: a backend can go there.
    placeable_on = {
        n.id for n in node_by_id.values()
        if any(v.hard and v.hard <= n.cpu_set for v in dom0_vcpus)
    }
    node_of_cpus: dict[frozenset[int], int] = {}
    backends: list[BackendView] = []
    for b in sorted(obs.backends, key=lambda b: b.pid):
        guest = domain_by_id.get(b.domid)
        if guest is None:  # its guest is gone: nothing to place
            continue
        node = node_of_cpus.get(b.cpus)
        if node is None:
            allowed = [v for v in dom0_vcpus if not b.cpus or v.id in b.cpus]
            nodes = frozenset().union(*(v.hard_nodes for v in allowed))
            node = node_of_cpus[b.cpus] = next(iter(nodes)) if len(nodes) == 1 else -1
        home = guest.home_node
        placeable = home in placeable_on
        view = BackendView(
            pid=b.pid, kind=b.kind, domid=b.domid, devid=b.devid, kthread=b.kthread, node=node,
            home_node=home, on_home=node == home and home >= 0, placeable=placeable,
            domain=guest,
        )
        guest.backends.append(view)
        backends.append(view)
    return backends
