"""Choosing nodes for a new domain: a pure function of the request and the host.

The rule, in order:

1. Fewest nodes that fit: a set fits when its memory available (free minus
   what pending placements reserved) covers the domain's memory and it has at
   least as many pCPUs as the domain has vCPUs (as libxl's placement asks).
   With ``preferred`` nodes, only sets of those are tried here.
2. Among the sets of that size: most memory available (compared in steps of
   ``granularity_mib``, so that a few MiB do not outweigh the load), then the
   lowest vCPU load after placing (vCPUs homed there, reserved ones included,
   per pCPU), then the tightest set (sum of the distances between its nodes),
   then the lowest node ids: ties always break the same way.
3. Nothing fits where asked: ``strict`` refuses, naming the nodes it tried,
   what each has, and the shortfall. ``best-effort`` takes the fewest nodes
   that fit anywhere, nearest (by the SLIT distance matrix, both directions
   summed, as a matrix may be asymmetric) to the preferred nodes (or, with no
   preference, to the node with most memory available); if still none fits,
   it lets vCPUs outnumber pCPUs (Xen allows it); memory never overcommits.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from itertools import combinations, islice
from math import comb

from agent.hypervisor.model import format_cpuset
from agent.placement.request import PlacementRequest
from agent.state import HostView

DEFAULT_GRANULARITY_MIB = 1024
# Above this many candidate sets of one size, sets are built greedily instead.
MAX_SETS = 20_000


@dataclass(frozen=True, slots=True)
class NodeCapacity:
    id: int
    cpus: int  # pCPUs
    free_mib: int  # free memory as the hypervisor reports it
    vcpus: int = 0  # vCPUs of the domains whose home is here
    reserved_mib: int = 0  # held for pending placements
    reserved_vcpus: int = 0
    cpu_set: frozenset[int] = frozenset()

    @property
    def available_mib(self) -> int:
        return max(self.free_mib - self.reserved_mib, 0)

    def describe(self) -> str:
        return (f"node {self.id}: {self.available_mib} MiB available (free {self.free_mib} "
                f"- reserved {self.reserved_mib}), {self.cpus} pCPUs, "
                f"{self.vcpus + self.reserved_vcpus} vCPUs homed")


@dataclass(frozen=True, slots=True)
class HostCapacity:
    nodes: tuple[NodeCapacity, ...]
    distances: tuple[tuple[int, ...], ...]

    def node(self, node_id: int) -> NodeCapacity:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(f"no node {node_id}")

    def distance(self, a: int, b: int) -> int:
        """Both directions summed (an ACPI SLIT may be asymmetric); 20 for a
        node with itself."""
        try:
            return self.distances[a][b] + self.distances[b][a]
        except IndexError:
            return 0 if a == b else 2 * 255  # unknown: as far as SLIT goes

    def with_reservations(
        self, memory_mib: Sequence[int], vcpus: Sequence[int]
    ) -> HostCapacity:
        """The same host with these amounts reserved (index = node id)."""
        def at(seq: Sequence[int], i: int) -> int:
            return seq[i] if 0 <= i < len(seq) else 0
        return replace(self, nodes=tuple(
            replace(n, reserved_mib=at(memory_mib, n.id), reserved_vcpus=at(vcpus, n.id))
            for n in self.nodes))


def capacity_of(view: HostView) -> HostCapacity:
    """Capacities from the agent's host snapshot (reservations left at zero:
    the ledger adds its own, which are newer than any snapshot)."""
    nodes = tuple(
        NodeCapacity(id=n.id, cpus=n.cpus, free_mib=n.free_memory_mib,
                     vcpus=sum(d.vcpu_count for d in n.domains), cpu_set=n.cpu_set)
        for n in view.nodes
    )
    return HostCapacity(nodes, view.distances)


@dataclass(frozen=True, slots=True)
class Choice:
    nodes: tuple[int, ...]
    memory_mib: tuple[int, ...]  # to reserve on each of ``nodes``
    vcpus: tuple[int, ...]  # vCPUs counted on each of ``nodes``
    cpus: frozenset[int]  # the pCPUs of ``nodes``
    fallback: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Refusal:
    reason: str
    shortfall_mib: int
    nodes: tuple[int, ...]  # the nodes it tried


def choose(
    req: PlacementRequest, host: HostCapacity, *, granularity_mib: int = DEFAULT_GRANULARITY_MIB
) -> Choice | Refusal:
    ids = [n.id for n in sorted(host.nodes, key=lambda n: n.id)]
    if not ids:
        return Refusal("the host has no NUMA node", req.memory_mib, ())
    missing = sorted(req.preferred - set(ids))
    if missing:
        return Refusal(f"preferred node(s) {format_cpuset(missing)} do not exist "
                       f"(nodes: {format_cpuset(ids)})", 0, ())
    limit = min(req.max_nodes or len(ids), len(ids))
    ranker = _Ranker(req, host, granularity_mib)
    allowed = sorted(req.preferred) if req.preferred else ids
    found = ranker.best(allowed, limit, anchor=None, need_cpus=True)
    if found is not None:
        return ranker.choice(found, fallback=False, why=_why_fit(req, found))
    if req.strict:
        return ranker.refusal(allowed, limit, "strict")
    anchor = (tuple(sorted(req.preferred)) if req.preferred
              else (max(host.nodes, key=lambda n: (n.available_mib, -n.id)).id,))
    for need_cpus in (True, False):
        found = ranker.best(ids, limit, anchor=anchor, need_cpus=need_cpus)
        if found is not None:
            why = _why_fallback(req, host, found, anchor, overcommit=not need_cpus)
            return ranker.choice(found, fallback=True, why=why)
    return ranker.refusal(ids, limit, "best-effort")


class _Ranker:
    def __init__(self, req: PlacementRequest, host: HostCapacity, granularity: int) -> None:
        self.req = req
        self.host = host
        self.by_id = {n.id: n for n in host.nodes}
        self.granularity = max(granularity, 1)

    def available(self, nodes: Sequence[int]) -> int:
        return sum(self.by_id[i].available_mib for i in nodes)

    def cpus(self, nodes: Sequence[int]) -> int:
        return sum(self.by_id[i].cpus for i in nodes)

    def fits(self, nodes: Sequence[int], need_cpus: bool) -> bool:
        if self.available(nodes) < self.req.memory_mib:
            return False
        return not need_cpus or self.cpus(nodes) >= self.req.vcpus

    def key(self, nodes: tuple[int, ...], anchor: Sequence[int] | None) -> tuple[object, ...]:
        cpus = self.cpus(nodes)
        homed = sum(self.by_id[i].vcpus + self.by_id[i].reserved_vcpus for i in nodes)
        load = (homed + self.req.vcpus) / cpus if cpus else float("inf")
        spread = sum(self.host.distance(a, b) for a, b in combinations(nodes, 2))
        near = 0 if anchor is None else sum(
            min(self.host.distance(a, n) for a in anchor) for n in nodes)
        return (near, -(self.available(nodes) // self.granularity), load, spread, nodes)

    def best(self, allowed: Sequence[int], limit: int, *, anchor: Sequence[int] | None,
             need_cpus: bool) -> tuple[int, ...] | None:
        for size in range(1, min(limit, len(allowed)) + 1):
            fitting = [s for s in self.sets(allowed, size, anchor) if self.fits(s, need_cpus)]
            if fitting:
                return min(fitting, key=lambda s: self.key(s, anchor))
        return None

    def sets(self, allowed: Sequence[int], size: int,
             anchor: Sequence[int] | None) -> Iterable[tuple[int, ...]]:
        if comb(len(allowed), size) <= MAX_SETS:
            return combinations(allowed, size)
        return _greedy_sets(self, allowed, size, anchor)

    def choice(self, nodes: tuple[int, ...], *, fallback: bool, why: str) -> Choice:
        share = _split(self.req.memory_mib, [self.by_id[i].available_mib for i in nodes])
        vcpus = _split_by_weight(self.req.vcpus, [self.by_id[i].cpus for i in nodes])
        cpus = frozenset().union(*(self.by_id[i].cpu_set for i in nodes))
        return Choice(nodes, tuple(share), tuple(vcpus), cpus, fallback, why)

    def refusal(self, tried: Sequence[int], limit: int, policy: str) -> Refusal:
        req = self.req
        best_mem = max(
            (self.available(s) for size in range(1, min(limit, len(tried)) + 1)
             for s in islice(self.sets(tried, size, None), MAX_SETS)),
            default=0,
        )
        short = max(req.memory_mib - best_mem, 0)
        span = f"up to {limit} of " if limit < len(tried) else ""
        which = "preferred node" if req.preferred and policy == "strict" else "node"
        plural = "s" if len(tried) > 1 else ""
        lines = "; ".join(self.by_id[i].describe() for i in tried)
        if short:
            shortfall = f"short of {short} MiB"
        else:
            shortfall = (f"memory would fit but no such set has {req.vcpus} pCPUs "
                         f"(at most {max(self.cpus(s) for s in self.sets(tried, 1, None))} "
                         f"on one node)")
        reason = (f"{policy}: no set of {span}{which}{plural} {format_cpuset(tried)} fits "
                  f"{req.describe()}: {lines}; {shortfall}")
        return Refusal(reason, short, tuple(tried))


def _greedy_sets(
    r: _Ranker, allowed: Sequence[int], size: int, anchor: Sequence[int] | None
) -> Iterator[tuple[int, ...]]:
    """Candidate sets on a host too large to try every one: the nodes with most
    memory available, and (with an anchor) the nodes nearest to it."""
    by_memory = sorted(allowed, key=lambda i: (-r.by_id[i].available_mib, i))
    yield tuple(sorted(by_memory[:size]))
    if anchor is not None:
        by_distance = sorted(allowed, key=lambda i: (
            min(r.host.distance(a, i) for a in anchor), -r.by_id[i].available_mib, i))
        yield tuple(sorted(by_distance[:size]))


def _split(total: int, room: Sequence[int]) -> list[int]:
    """``total`` over nodes in even shares, none above its room (as Xen's
    allocator spreads extents round-robin over the node affinity)."""
    take = [0] * len(room)
    left = total
    open_ = [i for i, r in enumerate(room) if r > 0]
    while left > 0 and open_:
        share, extra = divmod(left, len(open_))
        full = [i for i in open_ if room[i] - take[i] <= share]
        if not full:
            for k, i in enumerate(open_):
                take[i] += share + (1 if k < extra else 0)
            return take
        for i in full:
            left -= room[i] - take[i]
            take[i] = room[i]
        open_ = [i for i in open_ if i not in full]
    return take


def _split_by_weight(total: int, weights: Sequence[int]) -> list[int]:
    """``total`` in proportion to ``weights``, largest remainders first."""
    wsum = sum(weights)
    if wsum <= 0:
        return [total] + [0] * (len(weights) - 1) if weights else []
    exact = [total * w / wsum for w in weights]
    parts = [int(x) for x in exact]
    order = sorted(range(len(weights)), key=lambda i: (-(exact[i] - parts[i]), i))
    for i in order[: total - sum(parts)]:
        parts[i] += 1
    return parts


def _why_fit(req: PlacementRequest, nodes: tuple[int, ...]) -> str:
    where = "preferred " if req.preferred else ""
    what = "node" if len(nodes) == 1 else f"{len(nodes)} nodes"
    return (f"fewest {where}nodes that fit: {what} {format_cpuset(nodes)}, "
            "ranked by memory available, then vCPU load, then distance")


def _why_fallback(req: PlacementRequest, host: HostCapacity, nodes: tuple[int, ...],
                  anchor: Sequence[int], *, overcommit: bool) -> str:
    dist = min(sum(host.distance(a, n) for n in nodes) // 2 for a in anchor)
    if req.preferred:
        head = f"preferred node(s) {format_cpuset(sorted(req.preferred))} do not fit"
    else:
        head = "no node set fits memory and vCPUs"
    tail = "; vCPUs outnumber its pCPUs" if overcommit else ""
    return (f"best-effort: {head}; nearest that fits: node(s) {format_cpuset(nodes)} "
            f"(distance {dist} from {format_cpuset(anchor)}){tail}")
