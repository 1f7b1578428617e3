"""Workload values: ``"cpu-bound"``, ``"idle"``, or a table such as ``{ kind = "bursty" }``."""

from __future__ import annotations

from typing import Any, cast

from agent.sim.scenario.reader import MISSING, Reader, subtable, type_name
from agent.sim.spec import Bursty, CpuBound, Idle, IoLike, Workload

WORKLOAD_KEYS: dict[str, tuple[str, ...]] = {
    "cpu-bound": (),
    "idle": (),
    "bursty": ("on_ms", "off_ms"),
    "io-like": ("run_us", "block_us"),
}


class WorkloadReader(Reader):
    def workload(self, table: str, key: str, value: object) -> Workload | None:
        kind: object
        if isinstance(value, str):
            kind, params = value, {}
        elif isinstance(value, dict):
            params = dict(cast(dict[str, Any], value))
            kind = params.pop("kind", MISSING)
            if kind is MISSING:
                self.err(table, key,
                         f"missing 'kind' (expected one of: {', '.join(WORKLOAD_KEYS)})")
                return None
        else:
            self.err(table, key, "expected a workload: \"cpu-bound\", \"idle\", or a table such as "
                     f"{{ kind = \"bursty\", on_ms = 5, off_ms = 5 }}, got {type_name(value)}")
            return None
        if not isinstance(kind, str) or kind not in WORKLOAD_KEYS:
            self.err(table, key, f"unknown workload kind {kind!r} "
                     f"(expected one of: {', '.join(WORKLOAD_KEYS)})")
            return None
        where = subtable(table, key)
        ok = len(self.errors)
        self.check_keys(where, params, ("kind", *WORKLOAD_KEYS[kind]))
        if kind == "cpu-bound":
            result: Workload = CpuBound()
        elif kind == "idle":
            result = Idle()
        elif kind == "bursty":
            on = self.required(where, params, "on_ms", self.positive, "a number of ms > 0")
            off = self.required(where, params, "off_ms", self.positive, "a number of ms > 0")
            if on is None or off is None:
                return None
            result = Bursty(on_ms=on, off_ms=off)
        else:
            default = IoLike()
            run = self.optional(where, params, "run_us", self.positive, default.run_us)
            block = self.optional(where, params, "block_us", self.positive, default.block_us)
            if run is None or block is None:
                return None
            result = IoLike(run_us=run, block_us=block)
        return result if len(self.errors) == ok else None

    def per_vcpu_workloads(
        self, table: str, value: object, vcpus: int | None
    ) -> tuple[Workload, ...] | None:
        if not isinstance(value, list):
            self.err(table, "workloads", f"expected an array with one workload per vCPU, "
                     f"got {type_name(value)}")
            return None
        if vcpus is not None and len(value) != vcpus:
            self.err(table, "workloads", f"expected {vcpus} workloads (one per vCPU), "
                     f"got {len(value)}")
            return None
        result = [self.workload(table, f"workloads[{i}]", w) for i, w in enumerate(value)]
        if any(w is None for w in result):
            return None
        return tuple(cast(list[Workload], result))
