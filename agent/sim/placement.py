"""Where a new domain's memory goes: libxl automatic NUMA placement and Xen's
page allocator's node order.

``numa_candidate`` follows ``libxl__get_numa_candidate`` (tools/libs/light/
libxl_numa.c, Xen 4.17) as ``numa_place_domain`` (libxl_dom.c) calls it:
candidates are sets of nodes, smallest first, that have enough free memory and
at least as many of the cpupool's pCPUs as the domain has vCPUs; among those of
the smallest size that has any, ``numa_cmpf`` prefers fewer vCPUs already able
to run there, then more free memory; the first best in lexicographic order
wins. ``allocate`` follows ``get_free_buddy`` (xen/common/page_alloc.c):
extents go round-robin over the domain's node affinity; a node that runs out
passes its share to the others, and only when all of them are full does memory
fall back to the remaining nodes, lowest id first.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import combinations


@dataclass(frozen=True, slots=True)
class PlacedDomain:
    """What ``nr_vcpus_on_nodes`` needs to know of an existing domain."""

    pool_cpus: int  # mask of its cpupool's pCPUs
    node_affinity: int  # mask of nodes
    hard: tuple[int, ...]  # each vCPU's hard affinity mask (libxl_list_vcpu's cpumap)


def nr_vcpus_on_nodes(
    node_mask: Sequence[int], suitable: int, domains: Sequence[PlacedDomain]
) -> list[int]:
    """``nr_vcpus_on_nodes``: per node, vCPUs of existing domains that may run there.

    A vCPU counts once per node where it has a pCPU that is suitable (in the new
    domain's pool), in its own pool, and on a node of its domain's node affinity.
    """
    nnodes = len(node_mask)
    counts = [0] * nnodes
    for dom in domains:
        usable = suitable & dom.pool_cpus
        for hard in dom.hard:
            m = hard & usable
            for node in range(nnodes):
                if dom.node_affinity >> node & 1 and m & node_mask[node]:
                    counts[node] += 1
    return counts


def numa_candidate(
    *,
    free_kib: Sequence[int],
    node_cpus: Sequence[int],
    suitable: int,
    host_cpus_per_node: Sequence[int],
    vcpus_on_node: Sequence[int],
    need_kib: int,
    vcpus: int,
) -> tuple[int, ...] | None:
    """The nodes libxl picks for a domain, or None when no candidate fits.

    ``node_cpus[n]`` is the mask of node n's pCPUs; ``suitable`` the mask of
    pCPUs placement may use (the domain's cpupool).
    """
    nnodes = len(free_kib)
    if nnodes <= 1 or nnodes > 16:  # libxl skips placement on such hosts
        return None
    suit_nodes = [n for n in range(nnodes) if node_cpus[n] & suitable]
    per_node = host_cpus_per_node[0]
    if any(c != per_node for c in host_cpus_per_node):
        min_nodes = 1  # count_cpus_per_node() gives up on uneven nodes
    else:
        min_nodes = (vcpus + per_node - 1) // per_node if per_node else 1
    max_nodes = len(suit_nodes)
    min_nodes = min(min_nodes, max_nodes)
    for size in range(min_nodes, max_nodes + 1):
        best: tuple[int, int, tuple[int, ...]] | None = None  # (nr_vcpus, -free, nodes)
        for combo in combinations(suit_nodes, size):
            # libxl sums free/1024 per node: KiB from bytes, here already KiB.
            free = sum(free_kib[n] for n in combo)
            if need_kib and free < need_kib:
                continue
            ncpus = sum((node_cpus[n] & suitable).bit_count() for n in combo)
            if vcpus and ncpus < vcpus:
                continue
            on = sum(vcpus_on_node[n] for n in combo)
            if best is None or (on, -free) < (best[0], best[1]):
                best = (on, -free, combo)
        if best is not None:
            return best[2]
    return None


class OutOfMemory(Exception):
    """The host has less free memory than the domain needs."""


def allocate(need_kib: int, affinity: Sequence[int], free_kib: Sequence[int]) -> list[int]:
    """KiB taken from each node for ``need_kib``, preferring ``affinity`` nodes."""
    nnodes = len(free_kib)
    if need_kib > sum(free_kib):
        raise OutOfMemory(f"need {need_kib} KiB, host has {sum(free_kib)} KiB free")
    take = [0] * nnodes
    left = need_kib
    # Round-robin extents over the affinity nodes = even shares, water-filled.
    group = [n for n in sorted(set(affinity)) if free_kib[n] > 0]
    while left > 0 and group:
        share, extra = divmod(left, len(group))
        full = [n for n in group if free_kib[n] - take[n] <= share]
        if not full:
            for i, n in enumerate(group):
                take[n] += share + (1 if i < extra else 0)
            left = 0
            break
        for n in full:
            got = free_kib[n] - take[n]
            take[n] += got
            left -= got
        group = [n for n in group if n not in full]
    # Then the other nodes, lowest id first, each until it is full.
    for n in range(nnodes):
        if left <= 0:
            break
        if n in affinity:
            continue
        got = min(left, free_kib[n] - take[n])
        take[n] += got
        left -= got
    return take
