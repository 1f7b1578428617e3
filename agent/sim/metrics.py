"""What a run is worth: locality, useful work, efficiency, recovery. Pure functions.

Running away from home is not wrong in itself (when A is paused, B and C
running on A's idle node beat waiting in their own node's queues), so both
sides of the trade are measured:

- locality: the share of a vCPU's run time spent on its home node, the node
  that holds most of its domain's memory;
- useful work: home run time + r(d) x remote run time, r(d) being the speed of
  a vCPU whose memory is at NUMA distance d;
- efficiency: useful work / the most useful work any placement could have done
  in the same time with the same demand. The optimum is a transportation
  linear program per accounting bucket: vCPU classes (same home node, same
  allowed pCPUs) supply demand, groups of pCPUs (same node, usable by the same
  classes) offer capacity, each pCPU serving one vCPU at a time and each vCPU
  using at most its demand. Hard affinity and cpupools bound who may go where;
  soft affinity does not. Summing per-bucket optima keeps demand in time: work
  wanted at one moment cannot be done by a pCPU that is idle at another;
- fair share: per bucket and cpupool, the weight-fair split of the pool's pCPU
  time among its domains, capped by each domain's demand (``agent.fairness``):
  what credit1 and credit2 promise through weights. Jain's index over each
  domain's CPU time / fair share says how evenly that promise was kept;
- fair efficiency: useful work counted only up to each domain's fair share
  (a domain that ran more than its due is credited the useful work of its due,
  in proportion) / the most useful work any placement could do in which no
  domain runs beyond its fair share: the same LP with one more row per domain.
  Efficiency alone rewards locality bought by starving a domain (the seed's
  node 0 given whole to A while B and C queue on node 1); fair efficiency does
  not. Shares are compared over the whole stretch (a phase, a recovery window),
  as schedulers are fair over their accounting periods, not within every 10 ms,
  and a domain counts as fairly served up to FAIR_TOLERANCE above its share:
  credit1 alone, on a fair placement, swings each domain of the seed's first
  phase by +-15 % over 250 ms and +-4 % over 1-2 s (its OVER/UNDER cycles).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from agent.fairness import DEFAULT_WEIGHT, fair_shares, jain
from agent.hypervisor.model import CpuSet
from agent.sim.spec import HostSpec

LOCAL_DISTANCE = 10
# A domain running up to this much above its fair share is still fairly served
# (the scheduler's own short-term swing, see above); beyond it, not credited.
FAIR_TOLERANCE = 0.05
POOL0 = "Pool-0"  # holds every pCPU no other cpupool has
# Actual useful work may exceed the LP optimum only by solver round-off.
_SOLVER_SLACK = 1e-6


@dataclass(frozen=True, slots=True)
class Shape:
    """What the metrics need of a host: its nodes, distances and r(d)."""

    node_cpus: tuple[CpuSet, ...]
    distances: tuple[tuple[int, ...], ...]
    remote_speed: Mapping[int, float] = field(default_factory=dict)
    remote_speed_default: float = 0.7
    # pCPUs of each cpupool other than Pool-0 (Pool-0 has the rest)
    pools: Mapping[str, CpuSet] = field(default_factory=dict)

    @classmethod
    def of(cls, host: HostSpec) -> Shape:
        node_cpus: list[CpuSet] = []
        first = 0
        for node in host.nodes:
            node_cpus.append(frozenset(range(first, first + node.cpus)))
            first += node.cpus
        n = len(host.nodes)
        distances = host.distances or tuple(
            tuple(LOCAL_DISTANCE if i == j else 20 for j in range(n)) for i in range(n)
        )
        return cls(tuple(node_cpus), distances, dict(host.remote_speed),
                   host.remote_speed_default, {p.name: p.cpus for p in host.pools})

    def pool_size(self, pool: str) -> int:
        """pCPUs of ``pool``: a pool the host does not define is Pool-0."""
        cpus = self.pools.get(pool)
        if cpus is not None and pool != POOL0:
            return len(cpus)
        everything = sum(len(c) for c in self.node_cpus)
        return everything - sum(len(c) for name, c in self.pools.items() if name != POOL0)

    def speed(self, home: int, node: int) -> float:
        """r(d): work done per ns by a vCPU homed on ``home`` running on ``node``."""
        d = self.distances[home][node]
        if d == LOCAL_DISTANCE:
            return 1.0
        return self.remote_speed.get(d, self.remote_speed_default)


@dataclass(frozen=True, slots=True)
class VcpuUsage:
    """One vCPU over one accounting bucket."""

    domain: str
    vcpu: int
    home: int  # node with most of its domain's memory
    allowed: CpuSet  # pCPUs it may run on: configured hard affinity within its pool
    run_ns: tuple[int, ...]  # run time on each node
    demand_ns: int  # time running or runnable
    migrations: int = 0  # pCPU changes
    node_moves: int = 0  # of those, to another node
    pool: str = POOL0  # its domain's cpupool
    weight: float = DEFAULT_WEIGHT  # its domain's scheduler weight

    @property
    def total_run_ns(self) -> int:
        return sum(self.run_ns)

    @property
    def home_ns(self) -> int:
        return self.run_ns[self.home]

    def useful_ns(self, shape: Shape) -> float:
        """home run time + r(d) x remote run time."""
        return sum(ns * shape.speed(self.home, node) for node, ns in enumerate(self.run_ns) if ns)


@dataclass(frozen=True, slots=True)
class Bucket:
    """The accounting of one stretch of simulated time."""

    start_ns: int
    end_ns: int
    vcpus: tuple[VcpuUsage, ...]
    node_busy_ns: tuple[int, ...]

    @property
    def length_ns(self) -> int:
        return self.end_ns - self.start_ns


# -- the optimum --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Demand:
    """vCPUs that are alike for placement: same home, same allowed pCPUs (and, where
    fair shares bound the work, the same domain)."""

    home: int
    allowed: CpuSet
    demand_ns: float
    domain: str = ""


def max_useful_work(
    demands: Sequence[Demand], shape: Shape, length_ns: float,
    caps: Mapping[str, float] | None = None,
) -> float:
    """Most useful work (ns at local speed) the host could do in ``length_ns`` for ``demands``.

    A transportation LP solved with HiGHS: x[c, g] = time pCPU group g gives class c;
    maximise sum speed(home_c, node_g) x[c, g] subject to sum_g x[c, g] <= demand_c
    and sum_c x[c, g] <= |g| * length; with ``caps`` (ns by domain), also
    sum over the domain's classes and groups of x <= its cap.
    """
    from scipy.optimize import linprog  # the sim extra; imported when first needed

    classes = [d for d in demands if d.demand_ns > 0]
    if not classes or length_ns <= 0:
        return 0.0
    # pCPUs that the same classes may use, on the same node, are one supply.
    groups: dict[tuple[int, frozenset[int]], int] = defaultdict(int)
    for node, cpus in enumerate(shape.node_cpus):
        for cpu in cpus:
            users = frozenset(i for i, c in enumerate(classes) if cpu in c.allowed)
            if users:
                groups[(node, users)] += 1
    supplies = sorted(groups.items(), key=lambda kv: (kv[0][0], sorted(kv[0][1])))
    variables = [(i, g) for g, ((_, users), _) in enumerate(supplies) for i in sorted(users)]
    if not variables:
        return 0.0
    capped = sorted({c.domain for c in classes if caps is not None and c.domain in caps})
    row_of = {name: len(classes) + len(supplies) + k for k, name in enumerate(capped)}
    scale = 1e-6  # ns -> ms keeps the numbers near 1 for the solver
    cost = [-shape.speed(classes[i].home, supplies[g][0][0]) for i, g in variables]
    rows = len(classes) + len(supplies) + len(capped)
    a_ub = [[0.0] * len(variables) for _ in range(rows)]
    for k, (i, g) in enumerate(variables):
        a_ub[i][k] = 1.0
        a_ub[len(classes) + g][k] = 1.0
        cap_row = row_of.get(classes[i].domain)
        if cap_row is not None:
            a_ub[cap_row][k] = 1.0
    b_ub = [c.demand_ns * scale for c in classes]
    b_ub += [count * length_ns * scale for (_, count) in supplies]
    b_ub += [max(caps[name], 0.0) * scale for name in capped] if caps is not None else []
    result = linprog(cost, A_ub=a_ub, b_ub=b_ub, bounds=(0, None), method="highs")
    if result.status != 0:
        raise RuntimeError(f"efficiency LP failed: {result.message}")
    return float(-result.fun) / scale


def fair_ns_of(bucket: Bucket, shape: Shape) -> dict[str, float]:
    """Each domain's weight-fair share of its cpupool's pCPU time over ``bucket``, ns."""
    demand: dict[str, dict[str, float]] = {}
    weight: dict[str, float] = {}
    for v in bucket.vcpus:
        in_pool = demand.setdefault(v.pool, {})
        in_pool[v.domain] = in_pool.get(v.domain, 0.0) + v.demand_ns
        weight[v.domain] = v.weight
    fair: dict[str, float] = {}
    for pool, wants in demand.items():
        fair.update(fair_shares(float(shape.pool_size(pool) * bucket.length_ns), wants,
                                {name: weight[name] for name in wants}))
    return fair


class Optimum:
    """The per-bucket optimum, computed as cheaply as it can be exactly.

    Classes that share no pCPU (different cpupools, disjoint hard affinity) never
    compete, so each connected group of classes is its own problem:
    - if its vCPUs ran at home for all the time they wanted, nothing could beat
      that (no one does more than its demand, and no speed exceeds 1);
    - a single class fills the fastest pCPUs first (a fractional knapsack);
    - otherwise the LP, cached: steady demand repeats the same problem.
    """

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self._cache: dict[tuple[float, tuple[tuple[int, CpuSet, int], ...]], float] = {}
        self.solved = 0  # LPs actually solved (cache misses)

    def of(self, bucket: Bucket) -> float:
        # class -> [demand, run at home, run elsewhere]
        classes: dict[tuple[int, CpuSet], list[int]] = {}
        for v in bucket.vcpus:
            if not v.demand_ns:
                continue
            acc = classes.get((v.home, v.allowed))
            if acc is None:
                acc = classes[(v.home, v.allowed)] = [0, 0, 0]
            acc[0] += v.demand_ns
            home = v.run_ns[v.home]
            acc[1] += home
            acc[2] += sum(v.run_ns) - home
        total = 0.0
        for group in _components(list(classes)):
            demand = sum(classes[c][0] for c in group)
            if all(classes[c][1] == classes[c][0] for c in group):
                total += demand
            elif len(group) == 1:
                (home, allowed), = group
                total += self._fill(home, allowed, demand, bucket.length_ns)
            else:
                total += self._solve(group, classes, bucket.length_ns)
        return total

    def _fill(self, home: int, allowed: CpuSet, demand: float, length_ns: int) -> float:
        offers = sorted(
            ((self.shape.speed(home, node), len(cpus & allowed) * length_ns)
             for node, cpus in enumerate(self.shape.node_cpus)),
            reverse=True,
        )
        done = 0.0
        for speed, capacity in offers:
            take = min(demand, capacity)
            done += take * speed
            demand -= take
            if demand <= 0:
                break
        return done

    def _solve(
        self, group: list[tuple[int, CpuSet]], classes: dict[tuple[int, CpuSet], list[int]],
        length_ns: int,
    ) -> float:
        key = (float(length_ns), tuple(sorted(
            ((home, allowed, classes[(home, allowed)][0]) for home, allowed in group),
            key=lambda t: (t[0], sorted(t[1]), t[2]),
        )))
        cached = self._cache.get(key)
        if cached is None:
            demands = [Demand(home, allowed, float(ns)) for home, allowed, ns in key[1]]
            cached = max_useful_work(demands, self.shape, length_ns)
            self._cache[key] = cached
            self.solved += 1
        return cached


@dataclass(frozen=True, slots=True)
class FairBound:
    """One bucket's fair shares (ns by domain) and the most useful work within them."""

    shares: dict[str, float]
    optimum_ns: float


class FairOptimum:
    """The per-bucket optimum under fair shares, on top of the plain one.

    Where no domain's fair share is below its demand (no cpupool is
    overcommitted), the fair rows bind nothing and the bound is the plain
    optimum. Otherwise the components holding a capped domain (classes linked by
    shared pCPUs or by their domain) are solved again with the domain rows, cached.
    """

    def __init__(self, shape: Shape) -> None:
        self.shape = shape
        self._cache: dict[tuple[object, ...], tuple[float, float]] = {}
        self.solved = 0

    def of(self, bucket: Bucket, optimum_ns: float) -> FairBound:
        shares = fair_ns_of(bucket, self.shape)
        classes: dict[tuple[str, int, CpuSet], int] = {}
        wants: dict[str, int] = {}
        for v in bucket.vcpus:
            if v.demand_ns:
                key = (v.domain, v.home, v.allowed)
                classes[key] = classes.get(key, 0) + v.demand_ns
                wants[v.domain] = wants.get(v.domain, 0) + v.demand_ns
        capped = {d: shares.get(d, 0.0) for d, ns in wants.items()
                  if shares.get(d, 0.0) < ns - _CAPPED_NS}
        if not capped:
            return FairBound(shares, optimum_ns)
        total = optimum_ns
        for group in _fair_components(list(classes)):
            caps = {d: capped[d] for d in sorted({c[0] for c in group}) if d in capped}
            if caps:
                plain, fair = self._solve(group, classes, caps, bucket.length_ns)
                total += fair - plain
        return FairBound(shares, max(min(total, optimum_ns), 0.0))

    def _solve(
        self, group: list[tuple[str, int, CpuSet]], classes: dict[tuple[str, int, CpuSet], int],
        caps: dict[str, float], length_ns: int,
    ) -> tuple[float, float]:
        items = tuple(sorted(((d, h, tuple(sorted(a)), classes[(d, h, a)]) for d, h, a in group)))
        key = (float(length_ns), items, tuple(sorted((d, round(c)) for d, c in caps.items())))
        found = self._cache.get(key)
        if found is None:
            demands = [Demand(h, frozenset(a), float(ns), d) for d, h, a, ns in items]
            found = (max_useful_work(demands, self.shape, length_ns),
                     max_useful_work(demands, self.shape, length_ns, caps))
            self._cache[key] = found
            self.solved += 1
        return found


# A domain whose fair share is this close to its demand (ns) is not held back.
_CAPPED_NS = 1000.0


def _fair_components(
    classes: list[tuple[str, int, CpuSet]]
) -> list[list[tuple[str, int, CpuSet]]]:
    """Group classes that share a pCPU or a domain, directly or through others."""
    groups: list[tuple[set[int], set[str], list[tuple[str, int, CpuSet]]]] = []
    for cls in classes:
        cpus, names, members = set(cls[2]), {cls[0]}, [cls]
        rest = []
        for g_cpus, g_names, g_members in groups:
            if g_cpus & cpus or g_names & names:
                cpus |= g_cpus
                names |= g_names
                members += g_members
            else:
                rest.append((g_cpus, g_names, g_members))
        groups = [*rest, (cpus, names, members)]
    return [members for _, _, members in groups]


def _components(classes: list[tuple[int, CpuSet]]) -> list[list[tuple[int, CpuSet]]]:
    """Group classes that can reach a common pCPU, directly or through others."""
    groups: list[tuple[set[int], list[tuple[int, CpuSet]]]] = []
    for cls in classes:
        cpus = set(cls[1])
        members = [cls]
        rest = []
        for g_cpus, g_members in groups:
            if g_cpus & cpus:
                cpus |= g_cpus
                members += g_members
            else:
                rest.append((g_cpus, g_members))
        groups = [*rest, (cpus, members)]
    return [members for _, members in groups]


def fair_efficiency(domains: Iterable[DomainTally], optimum_ns: float) -> float:
    """Useful work within fair shares / the fair optimum; 1 when nothing was due.

    Shares are compared over the whole stretch while the optimum is summed per
    bucket, so a domain ahead in one bucket and behind in the next can lift the
    ratio a hair above 1: it is capped there (the plain efficiency is the check
    on the accounting).
    """
    useful = sum(d.fair_useful_ns for d in domains)
    if optimum_ns <= 0:
        return 1.0
    return min(useful / optimum_ns, 1.0)


def efficiency(useful_ns: float, optimum_ns: float) -> float:
    """useful / optimum; 1 when nothing could have been done (no demand).

    Raises if the actual work beats the optimum beyond round-off: that would mean
    the accounting broke a rule the LP keeps (a pCPU serving two vCPUs at once, a
    vCPU running longer than it wanted, outside its hard affinity).
    """
    if optimum_ns <= 0:
        if useful_ns > _SOLVER_SLACK:
            raise ValueError(f"useful work {useful_ns} ns with no demand")
        return 1.0
    ratio = useful_ns / optimum_ns
    if ratio > 1 + _SOLVER_SLACK:
        raise ValueError(f"useful work {useful_ns:.0f} ns beats the optimum {optimum_ns:.0f} ns: "
                         "inconsistent accounting")
    return min(ratio, 1.0)


# -- totals over a stretch of time ------------------------------------------------------


@dataclass(slots=True)
class DomainTally:
    run_ns: int = 0
    home_ns: int = 0
    useful_ns: float = 0.0
    demand_ns: int = 0
    migrations: int = 0
    node_moves: int = 0
    fair_ns: float = 0.0  # weight-fair share of its pool's pCPU time

    @property
    def locality(self) -> float | None:
        """home run time / run time; None when the domain did not run."""
        return self.home_ns / self.run_ns if self.run_ns else None

    @property
    def fair_useful_ns(self) -> float:
        """Useful work counted up to its fair share (+ FAIR_TOLERANCE): beyond it, in
        proportion."""
        due = self.fair_ns * (1 + FAIR_TOLERANCE)
        if self.run_ns <= due:
            return self.useful_ns
        return self.useful_ns * due / self.run_ns

    @property
    def fair_ratio(self) -> float | None:
        """CPU time / fair share; None when it was due nothing."""
        return self.run_ns / self.fair_ns if self.fair_ns > 0 else None

    def add(self, other: DomainTally) -> None:
        self.run_ns += other.run_ns
        self.home_ns += other.home_ns
        self.useful_ns += other.useful_ns
        self.demand_ns += other.demand_ns
        self.migrations += other.migrations
        self.node_moves += other.node_moves
        self.fair_ns += other.fair_ns


@dataclass(frozen=True, slots=True)
class BucketSums:
    """One bucket's accounting summed per domain: what tallies add up."""

    length_ns: int
    optimum_ns: float
    useful_ns: float
    domains: dict[str, DomainTally]
    node_busy_ns: tuple[int, ...]
    fair_optimum_ns: float = 0.0

    @classmethod
    def of(
        cls, bucket: Bucket, shape: Shape, optimum_ns: float, fair: FairBound | None = None
    ) -> BucketSums:
        """``fair`` None: worked out here (uncached; the runner passes its own)."""
        if fair is None:
            fair = FairOptimum(shape).of(bucket, optimum_ns)
        domains: dict[str, DomainTally] = {}
        for v in bucket.vcpus:
            d = domains.get(v.domain)
            if d is None:
                d = domains[v.domain] = DomainTally()
            d.run_ns += v.total_run_ns
            d.home_ns += v.home_ns
            d.useful_ns += v.useful_ns(shape)
            d.demand_ns += v.demand_ns
            d.migrations += v.migrations
            d.node_moves += v.node_moves
        for name, share in fair.shares.items():
            domains[name].fair_ns = share
        useful = sum(d.useful_ns for d in domains.values())
        return cls(bucket.length_ns, optimum_ns, useful, domains, bucket.node_busy_ns,
                   fair.optimum_ns)

    def score(self, start_ns: int, end_ns: int) -> Score:
        return Score(start_ns, end_ns, self.useful_ns, self.optimum_ns, self.fair_optimum_ns,
                     {n: (d.useful_ns, d.run_ns, d.fair_ns) for n, d in self.domains.items()})


@dataclass(slots=True)
class Tally:
    """Sums over buckets: a phase, a window, a whole run."""

    nodes: int
    length_ns: int = 0
    optimum_ns: float = 0.0
    domains: dict[str, DomainTally] = field(default_factory=dict)
    node_busy_ns: list[int] = field(default_factory=list)
    fair_optimum_ns: float = 0.0

    def __post_init__(self) -> None:
        if not self.node_busy_ns:
            self.node_busy_ns = [0] * self.nodes

    def add(self, sums: BucketSums) -> None:
        self.length_ns += sums.length_ns
        self.optimum_ns += sums.optimum_ns
        self.fair_optimum_ns += sums.fair_optimum_ns
        for node, busy in enumerate(sums.node_busy_ns):
            self.node_busy_ns[node] += busy
        for name, b in sums.domains.items():
            d = self.domains.get(name)
            if d is None:
                d = self.domains[name] = DomainTally()
            d.add(b)

    @property
    def run_ns(self) -> int:
        return sum(d.run_ns for d in self.domains.values())

    @property
    def useful_ns(self) -> float:
        return sum(d.useful_ns for d in self.domains.values())

    @property
    def host_locality(self) -> float | None:
        run = self.run_ns
        return sum(d.home_ns for d in self.domains.values()) / run if run else None

    @property
    def efficiency(self) -> float:
        return efficiency(self.useful_ns, self.optimum_ns)

    @property
    def fair_useful_ns(self) -> float:
        return sum(d.fair_useful_ns for d in self.domains.values())

    @property
    def fair_efficiency(self) -> float:
        return fair_efficiency(self.domains.values(), self.fair_optimum_ns)

    @property
    def jain(self) -> float:
        """Jain's index over each domain's CPU time / fair share (1: all got the same part)."""
        return jain(r for d in self.domains.values() if (r := d.fair_ratio) is not None)

    @property
    def migrations(self) -> int:
        return sum(d.migrations for d in self.domains.values())

    @property
    def node_moves(self) -> int:
        return sum(d.node_moves for d in self.domains.values())

    def utilisation(self, shape: Shape) -> list[float]:
        """Busy share of each node's pCPUs."""
        if not self.length_ns:
            return [0.0] * self.nodes
        return [busy / (len(cpus) * self.length_ns)
                for busy, cpus in zip(self.node_busy_ns, shape.node_cpus, strict=True)]


# -- recovery -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Score:
    """One bucket's useful work against its optimum."""

    start_ns: int
    end_ns: int
    useful_ns: float
    optimum_ns: float
    fair_optimum_ns: float = 0.0
    # by domain: (useful ns, run ns, fair share ns), for fair efficiency
    domains: Mapping[str, tuple[float, float, float]] = field(default_factory=dict)


def sliding_fair_efficiency(
    scores: Sequence[Score], since_ns: int, window_ns: int
) -> list[tuple[int, float]]:
    """As ``sliding_efficiency``, for fair efficiency (shares compared over the window)."""
    inside = [s for s in scores if s.start_ns >= since_ns]
    result: list[tuple[int, float]] = []
    first = 0
    optimum = 0.0
    sums: dict[str, list[float]] = {}

    def take(s: Score, sign: float) -> None:
        for name, values in s.domains.items():
            acc = sums.setdefault(name, [0.0, 0.0, 0.0])
            for i, x in enumerate(values):
                acc[i] += sign * x

    for last, s in enumerate(inside):
        optimum += s.fair_optimum_ns
        take(s, 1.0)
        while first < last and inside[first].start_ns < s.end_ns - window_ns:
            optimum -= inside[first].fair_optimum_ns
            take(inside[first], -1.0)
            first += 1
        tallies = [DomainTally(run_ns=round(max(r, 0.0)), useful_ns=max(u, 0.0),
                               fair_ns=max(f, 0.0)) for u, r, f in sums.values()]
        result.append((s.end_ns, fair_efficiency(tallies, max(optimum, 0.0))))
    return result


def sliding_efficiency(
    scores: Sequence[Score], since_ns: int, window_ns: int
) -> list[tuple[int, float]]:
    """(window end, efficiency over the window) at each bucket end after ``since_ns``.

    A window covers the buckets that start at or after ``max(since_ns, end - window_ns)``:
    it never reaches back before ``since_ns`` (the event being recovered from).
    """
    inside = [s for s in scores if s.start_ns >= since_ns]
    result: list[tuple[int, float]] = []
    first = 0
    useful = optimum = 0.0
    for last, s in enumerate(inside):
        useful += s.useful_ns
        optimum += s.optimum_ns
        while first < last and inside[first].start_ns < s.end_ns - window_ns:
            useful -= inside[first].useful_ns
            optimum -= inside[first].optimum_ns
            first += 1
        result.append((s.end_ns, efficiency(max(useful, 0.0), max(optimum, 0.0))))
    return result


def recovery_ns(
    scores: Sequence[Score], event_ns: int, end_ns: int, *, window_ns: int = 250_000_000,
    threshold: float = 0.99, fair: bool = False,
) -> int | None:
    """Time from ``event_ns`` until the sliding-window efficiency (``fair``: fair
    efficiency) reaches ``threshold`` and stays there up to ``end_ns`` (the end of the
    phase); None if it never does."""
    slide = sliding_fair_efficiency if fair else sliding_efficiency
    series = [(t, e) for t, e in slide(scores, event_ns, window_ns) if t <= end_ns]
    recovered_at: int | None = None
    for t, e in series:
        if e >= threshold:
            if recovered_at is None:
                recovered_at = t
        else:
            recovered_at = None
    return None if recovered_at is None else recovered_at - event_ns


def node_shares(usages: Iterable[VcpuUsage], nodes: int) -> dict[str, list[float]]:
    """For each domain, the share of its run time on each node (what ``--plot`` draws)."""
    per_domain: dict[str, list[int]] = {}
    for v in usages:
        acc = per_domain.setdefault(v.domain, [0] * nodes)
        for node, ns in enumerate(v.run_ns):
            acc[node] += ns
    result: dict[str, list[float]] = {}
    for name, acc in per_domain.items():
        total = sum(acc)
        result[name] = [ns / total if total else 0.0 for ns in acc]
    return result
