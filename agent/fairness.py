"""Weight-fair CPU shares: what Xen's schedulers promise through domain weights.

credit1 and credit2 share a cpupool's pCPUs among its domains in proportion to
their weights (credit1's ``csched_acct`` hands out credit by weight, and its
load balancer steals UNDER vCPUs onto pCPUs running OVER ones, across nodes);
a domain that wants less than its part leaves the rest to the others. That is
max-min fair water-filling by weight, capped by each domain's demand. The agent
must not buy locality by breaking it: the efficiency model (``agent.state``)
lets a node's overflow spill onto a node whose own domains would otherwise
take more than their fair share, and the simulator's metrics
(``agent.sim.metrics``) score runs against a placement that keeps every
domain's fair share.

Pure functions, no state.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypeVar

K = TypeVar("K")

DEFAULT_WEIGHT = 256.0  # xl's default domain weight, credit1 and credit2 alike
_EPS = 1e-9


def fair_shares(
    capacity: float, demands: Mapping[K, float], weights: Mapping[K, float] | None = None
) -> dict[K, float]:
    """Weighted max-min fair allocation of ``capacity`` (water-filling).

    Every domain gets min(demand, weight x level), the level being as high as
    the capacity allows; what a domain does not want goes to the others in
    proportion to their weights. ``weights`` None: all equal. Raises
    ``ValueError`` for a weight <= 0, a negative demand or capacity.
    """
    if capacity < 0:
        raise ValueError(f"capacity must be >= 0, got {capacity}")
    weight = dict.fromkeys(demands, DEFAULT_WEIGHT) if weights is None else weights
    for name, d in demands.items():
        if d < 0:
            raise ValueError(f"demand of {name} must be >= 0, got {d}")
        if weight[name] <= 0:
            raise ValueError(f"weight of {name} must be > 0, got {weight[name]}")
    share = dict.fromkeys(demands, 0.0)
    # Domains in order of demand per unit of weight: the least hungry saturate first.
    waiting = sorted((n for n, d in demands.items() if d > 0),
                     key=lambda n: (demands[n] / weight[n], str(n)))
    left = float(capacity)
    weight_left = sum(weight[n] for n in waiting)
    for i, name in enumerate(waiting):
        level = left / weight_left if weight_left > 0 else 0.0
        if demands[name] <= weight[name] * level + _EPS:
            share[name] = float(demands[name])
            left -= demands[name]
            weight_left -= weight[name]
            continue
        for other in waiting[i:]:  # nobody else saturates: all share the rest by weight
            share[other] = weight[other] * level
        break
    return share


def jain(values: Iterable[float]) -> float:
    """Jain's fairness index (sum x)^2 / (n sum x^2); 1.0 for no values or all zero."""
    xs = list(values)
    squares = sum(x * x for x in xs)
    if not xs or squares <= 0:
        return 1.0
    return sum(xs) ** 2 / (len(xs) * squares)
