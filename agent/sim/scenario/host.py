"""The [host] table: NUMA nodes, distances, remote speeds and cpupools."""

from __future__ import annotations

from typing import Any, cast

from agent.hypervisor.model import CpuSet, format_cpuset
from agent.sim.scenario.masks import MaskReader
from agent.sim.scenario.model import POOL0_NAME
from agent.sim.scenario.reader import MISSING, subtable, type_name
from agent.sim.spec import HostSpec, NodeSpec, PoolSpec, SchedulerName

HOST_KEYS = ("nodes", "distances", "threads_per_core", "pools", "remote_speed",
             "remote_speed_by_distance")
NODE_KEYS = ("cpus", "memory_mib", "memory_gib")
POOL_KEYS = ("name", "cpus", "scheduler")


class HostReader(MaskReader):
    def __init__(self, source: str) -> None:
        super().__init__(source)
        self.bad_pools: set[str] = set()  # declared but invalid: reported once, not per domain

    def host(
        self, table: dict[str, Any], scheduler: SchedulerName, seed: int
    ) -> tuple[HostSpec | None, dict[str, CpuSet]]:
        """The host, or None after an error; and the pCPUs of each pool that is valid."""
        self.check_keys("host", table, HOST_KEYS)
        threads = self.optional("host", table, "threads_per_core",
                                lambda t, k, v: self.integer(t, k, v, low=1, high=8), 1)
        raw_nodes = table.get("nodes", MISSING)
        if raw_nodes is MISSING:
            self.err("host", "nodes", "missing (expected [[host.nodes]] tables with cpus and "
                     "memory_mib)")
            return None, {}
        if not isinstance(raw_nodes, list) or not raw_nodes or not all(
            isinstance(n, dict) for n in raw_nodes
        ):
            self.err("host", "nodes", "expected one or more [[host.nodes]] tables, "
                     f"got {type_name(raw_nodes)}")
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
        pools, pool_cpus = self.pools(table.get("pools", MISSING), scheduler)
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
            self.err(table, key, f"expected {expect}, got {type_name(value)}"
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
                self.err(subtable(table, key), dist, "expected a NUMA distance 11-254 as key, "
                         "e.g. 21 = 0.75")
                continue
            s = self.number(f"{table}.{key}", dist, speed, low=0.0, high=1.0)
            if s is not None and s <= 0:
                self.err(subtable(table, key), dist, "expected a speed > 0 and <= 1")
            elif s is not None:
                result.append((int(dist), s))
        return tuple(sorted(result))

    def pools(
        self, raw: object, scheduler: SchedulerName
    ) -> tuple[tuple[PoolSpec, ...] | None, dict[str, CpuSet]]:
        pool_cpus: dict[str, CpuSet] = {}
        if raw is MISSING:
            return (), {POOL0_NAME: self.all_cpus}
        if not isinstance(raw, list) or not all(isinstance(p, dict) for p in raw):
            self.err("host", "pools", f"expected [[host.pools]] tables, got {type_name(raw)}")
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
