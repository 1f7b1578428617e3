"""The [dom0] and [domains.NAME] tables: one ``DomainSpec`` each."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.hypervisor.model import CpuSet, format_cpuset
from agent.sim.scenario.host import HostReader
from agent.sim.scenario.model import POOL0_NAME
from agent.sim.scenario.reader import UUID_RE, type_name
from agent.sim.scenario.workloads import WorkloadReader
from agent.sim.spec import CpuBound, DomainSpec, Workload

DOMAIN_KEYS = ("vcpus", "memory_mib", "memory_gib", "workload", "workloads", "soft", "hard",
               "pins", "memory_nodes", "pool", "weight", "cap", "uuid", "paused")
DOM0_KEYS = tuple(k for k in DOMAIN_KEYS if k != "paused")


class DomainReader(HostReader, WorkloadReader):
    def domain(
        self, table: str, name: str, value: dict[str, Any], pool_cpus: Mapping[str, CpuSet],
        *, is_dom0: bool,
    ) -> DomainSpec | None:
        ok = len(self.errors)
        self.check_keys(table, value, DOM0_KEYS if is_dom0 else DOMAIN_KEYS)
        vcpus = self.required(table, value, "vcpus",
                              lambda t, k, v: self.integer(t, k, v, low=1, high=512),
                              "the number of vCPUs")
        memory = self.memory(table, value)
        pool = self.optional(table, value, "pool", self.any_string, POOL0_NAME)
        if pool is not None and pool not in pool_cpus:
            if pool not in self.bad_pools:
                self.err(table, "pool",
                         f"no cpupool named {pool!r} (pools: {', '.join(pool_cpus)})")
            pool = None
        if is_dom0 and pool is not None and pool != POOL0_NAME:
            self.err(table, "pool", f"dom0 always runs in {POOL0_NAME} (Xen cannot move it); "
                     "isolate dom0 by moving the guests' pCPUs to another pool instead")
            pool = None
        hard = self.optional(table, value, "hard", self.cpus, None)
        soft = self.optional(table, value, "soft", self.cpus, None)
        if hard is not None and pool is not None and not hard & pool_cpus[pool]:
            self.err(table, "hard", f"no pCPU of {format_cpuset(hard)} is in pool {pool!r} "
                     f"({format_cpuset(pool_cpus[pool])}): Xen refuses such a mask")
        pins = None
        if "pins" in value and vcpus is not None:
            pins = self.pin_list(table, value["pins"], vcpus,
                                 pool_cpus[pool] if pool is not None else None)
            if hard is not None:
                self.err(table, "pins", "give hard (one mask for every vCPU) or pins (one "
                         "pCPU per vCPU), not both")
        memory_nodes = self.optional(table, value, "memory_nodes", self.node_list, None)
        weight = self.optional(table, value, "weight",
                               lambda t, k, v: self.integer(t, k, v, low=1, high=65535), 256)
        cap = self.optional(table, value, "cap",
                            lambda t, k, v: self.integer(t, k, v, low=0, high=100 * 512), 0)
        uuid = self.optional(
            table, value, "uuid",
            lambda t, k, v: self.string(t, k, v, pattern=UUID_RE, what="a lower-case UUID"), None)
        if "paused" in value:
            self.optional(table, value, "paused", self.boolean, False)
        workload: Workload | tuple[Workload, ...] | None = CpuBound()
        if "workload" in value and "workloads" in value:
            self.err(table, "workloads", "give workload (all vCPUs) or workloads (one per vCPU), "
                     "not both")
        elif "workload" in value:
            workload = self.workload(table, "workload", value["workload"])
        elif "workloads" in value:
            workload = self.per_vcpu_workloads(table, value["workloads"], vcpus)
        # A domain in a pool already reported bad (bad_pools) adds no error of its own
        # but cannot be built either.
        if len(self.errors) != ok or pool is None:
            return None
        assert vcpus is not None and memory is not None
        assert weight is not None and cap is not None and workload is not None
        return DomainSpec(
            name=name,
            vcpus=vcpus,
            memory_mib=memory,
            workload=workload,
            hard=hard,
            pins=pins,
            soft=soft,
            memory_nodes=memory_nodes,
            pool=pool,
            weight=weight,
            cap=cap,
            is_dom0=is_dom0,
            uuid=uuid,
        )

    def pin_list(
        self, table: str, value: object, vcpus: int, pool: CpuSet | None
    ) -> tuple[int, ...] | None:
        """One pCPU per vCPU (``xl vcpu-pin`` each), all in the domain's pool."""
        if not isinstance(value, list) or len(value) != vcpus:
            self.err(table, "pins", f"expected an array of {vcpus} pCPU numbers (one per "
                     f"vCPU), got {type_name(value)}"
                     + (f" of {len(value)}" if isinstance(value, list) else ""))
            return None
        pins: list[int] = []
        for item in value:
            cpu = self.integer(table, "pins", item, low=0, high=max(len(self.all_cpus) - 1, 0))
            if cpu is None:
                return None
            pins.append(cpu)
        if pool is not None and not set(pins) <= pool:
            outside = sorted(set(pins) - pool)
            self.err(table, "pins", f"pCPUs {outside} are not in the domain's pool "
                     f"({format_cpuset(pool)})")
            return None
        return tuple(pins)
