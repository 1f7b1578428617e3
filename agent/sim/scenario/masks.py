"""pCPU masks, node lists and vCPU lists, checked against the host's nodes."""

from __future__ import annotations

from typing import cast

from agent.hypervisor.model import CpuSet, format_cpuset
from agent.sim.scenario.reader import Reader, type_name


class MaskReader(Reader):
    """Reads masks once the host's nodes are known (``node_cpus``)."""

    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.node_cpus: list[CpuSet] = []  # filled by the host table, read by every mask

    @property
    def all_cpus(self) -> CpuSet:
        return frozenset().union(*self.node_cpus)

    def cpus(self, table: str, key: str, value: object) -> CpuSet | None:
        """A pCPU mask: ``"0-27"``, ``"node:1"``, ``"nodes:0-1,56"``, ``"all"`` or ``[0, 1]``."""
        if isinstance(value, list):
            ints: list[int] = []
            for item in value:
                if isinstance(item, bool) or not isinstance(item, int):
                    self.err(table, key, f"expected pCPU numbers, got {type_name(item)} in list")
                    return None
                ints.append(item)
            return self.known_cpus(table, key, frozenset(ints))
        if not isinstance(value, str):
            self.err(table, key, "expected a pCPU list such as \"0-27\", \"node:1\", \"all\" "
                     f"or an array of pCPU numbers, got {type_name(value)}")
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
                     f"got {type_name(value)}")
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
