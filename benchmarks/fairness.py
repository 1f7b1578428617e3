"""Fairness: each domain's CPU time against its weight-fair share, and Jain's index.

Locality bought by starving a domain is no win, so every run is also scored on
how the CPU was shared. Per accounting bucket and per cpupool, the weight-fair
share is the weighted max-min fair split of the pool's pCPU time among its
domains, each capped at its demand (time its vCPUs were running or runnable):
what credit1 and credit2 promise through domain weights. A domain's *share
ratio* over a stretch of time is its CPU time / its fair share summed over the
buckets; Jain's index over those ratios is 1 when every domain got the same
fraction of its due, and 1/n when one domain got everything.

Pure functions; the benchmark harness feeds them what the simulator accounted.
``fair_shares`` and ``jain`` are ``agent.fairness``'s.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

# The concept lives in the agent (its efficiency model keeps fair shares too):
# one definition for both.
from agent.fairness import fair_shares, jain

__all__ = ["DomainUse", "FairTally", "fair_shares", "jain"]


@dataclass(frozen=True, slots=True)
class DomainUse:
    """One domain over one bucket: CPU time used and wanted, ns."""

    run_ns: int
    demand_ns: int


@dataclass(slots=True)
class FairTally:
    """CPU time and fair share per domain, summed over buckets."""

    run_ns: dict[str, float] = field(default_factory=dict)
    fair_ns: dict[str, float] = field(default_factory=dict)

    def add_bucket(
        self, length_ns: int, pool_cpus: Mapping[str, int], pool_of: Mapping[str, str],
        weights: Mapping[str, float], use: Mapping[str, DomainUse],
    ) -> None:
        """One bucket: ``use`` by domain name; each pool's capacity is its pCPUs x length."""
        by_pool: dict[str, dict[str, float]] = {}
        for name, u in use.items():
            by_pool.setdefault(pool_of[name], {})[name] = float(u.demand_ns)
            self.run_ns[name] = self.run_ns.get(name, 0.0) + u.run_ns
        for pool, demands in by_pool.items():
            shares = fair_shares(pool_cpus[pool] * length_ns, demands,
                                 {n: weights[n] for n in demands})
            for name, s in shares.items():
                self.fair_ns[name] = self.fair_ns.get(name, 0.0) + s

    def ratios(self) -> dict[str, float]:
        """CPU time / fair share for each domain that was due some (fair share > 0)."""
        return {n: self.run_ns.get(n, 0.0) / f for n, f in sorted(self.fair_ns.items())
                if f > 0}

    def jain(self) -> float:
        return jain(self.ratios().values())

    def worst(self) -> tuple[str, float] | None:
        """The domain that got the smallest part of its fair share, and that part."""
        ratios = self.ratios()
        if not ratios:
            return None
        name = min(ratios, key=lambda n: (ratios[n], n))
        return name, ratios[name]
