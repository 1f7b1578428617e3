"""What a simulated host and its domains are made of: the simulator's inputs.

Scenario files (``agent/sim/scenario/``) are parsed into these values; the
engine (``agent/sim/engine.py``) builds a host from them. Plain immutable data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

SchedulerName = Literal["credit1", "credit2"]


# -- workloads: what one vCPU asks of the scheduler ---------------------------


@dataclass(frozen=True, slots=True)
class CpuBound:
    """Always runnable."""


@dataclass(frozen=True, slots=True)
class Bursty:
    """Runnable for ``on_ms``, then blocked for ``off_ms``, repeating."""

    on_ms: float
    off_ms: float


@dataclass(frozen=True, slots=True)
class IoLike:
    """Short runs then a block, as a vCPU waiting on I/O completions does."""

    run_us: float = 200.0
    block_us: float = 800.0


@dataclass(frozen=True, slots=True)
class Idle:
    """Never runnable."""


Workload = CpuBound | Bursty | IoLike | Idle


# -- host ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class NodeSpec:
    cpus: int  # pCPUs on this node; ids are assigned node by node from 0
    memory_mib: int


@dataclass(frozen=True, slots=True)
class PoolSpec:
    """A cpupool: a set of pCPUs with its own scheduler."""

    name: str
    cpus: frozenset[int]
    scheduler: SchedulerName


@dataclass(frozen=True, slots=True)
class HostSpec:
    nodes: tuple[NodeSpec, ...]
    # distances[i][j], ACPI SLIT style (10 = local); None means 10 local, 20 remote.
    distances: tuple[tuple[int, ...], ...] | None = None
    threads_per_core: int = 1  # 2 = SMT siblings (consecutive pCPU ids)
    scheduler: SchedulerName = "credit1"  # of Pool-0, which holds every pCPU not in pools
    pools: tuple[PoolSpec, ...] = ()
    # Speed of a vCPU whose memory is at distance d, for distances != 10;
    # any distance not listed uses remote_speed_default.
    remote_speed: tuple[tuple[int, float], ...] = ()
    remote_speed_default: float = 0.7
    seed: int = 0


# -- domains -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class DomainSpec:
    name: str
    vcpus: int
    memory_mib: int
    workload: Workload | tuple[Workload, ...] = CpuBound()  # one for all, or one per vCPU
    hard: frozenset[int] | None = None  # pCPUs; None = all pCPUs of its pool
    # One pCPU per vCPU: vCPU i hard-pinned to pins[i] (xl vcpu-pin, dom0_vcpus_pin);
    # instead of ``hard``.
    pins: tuple[int, ...] | None = None
    soft: frozenset[int] | None = None  # pCPUs; None = from placement
    memory_nodes: tuple[int, ...] | None = None  # None = libxl automatic placement
    pool: str = "Pool-0"
    weight: int = 256
    cap: int = 0  # percent of one pCPU, 0 = no cap
    is_dom0: bool = False
    uuid: str | None = None  # None = derived deterministically from name
    extra: dict[str, str] = field(default_factory=dict)
