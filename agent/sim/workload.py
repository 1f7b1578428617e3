"""What each vCPU asks of the scheduler over time, as durations.

A workload alternates *on* phases (an amount of CPU work: the vCPU stays
runnable until it has run that long, however long it waits for a pCPU) and
*off* phases (wall time blocked, as waiting for I/O or a timer):

- ``CpuBound``: one endless on phase.
- ``Idle``: one endless off phase.
- ``Bursty(on_ms, off_ms)``: fixed phases; each vCPU starts at a random point
  of its cycle so that vCPUs are not in lock-step.
- ``IoLike(run_us, block_us)``: exponentially distributed runs and blocks with
  those means, as a stream of independent I/O requests behaves.

Every draw comes from the vCPU's own ``random.Random``, seeded from the host
seed and the vCPU's identity: runs are reproducible, and one vCPU's draws do
not depend on what the others do.
"""

from __future__ import annotations

import random

from agent.sim.spec import Bursty, CpuBound, Idle, IoLike, Workload

NEVER = -1
_MIN_NS = 1_000  # no phase shorter than 1 us: keeps I/O-like streams finite


def vcpu_rng(seed: int, domid: int, vcpu: int, generation: int = 0) -> random.Random:
    return random.Random(f"{seed}:{domid}:{vcpu}:{generation}")


def validate(w: Workload) -> None:
    if isinstance(w, Bursty):
        if not (w.on_ms > 0 and w.off_ms > 0):
            raise ValueError(f"Bursty needs on_ms > 0 and off_ms > 0, got {w}")
    elif isinstance(w, IoLike):
        if not (w.run_us > 0 and w.block_us > 0):
            raise ValueError(f"IoLike needs run_us > 0 and block_us > 0, got {w}")
    elif not isinstance(w, CpuBound | Idle):
        raise TypeError(f"not a workload: {w!r}")


def _exp(mean_ns: float, rng: random.Random) -> int:
    return max(_MIN_NS, round(rng.expovariate(1.0 / mean_ns)))


def on_ns(w: Workload, rng: random.Random) -> int:
    """CPU work of a new on phase; NEVER = runs forever, 0 = never runnable."""
    if isinstance(w, CpuBound):
        return NEVER
    if isinstance(w, Bursty):
        return max(_MIN_NS, round(w.on_ms * 1e6))
    if isinstance(w, IoLike):
        return _exp(w.run_us * 1e3, rng)
    return 0


def off_ns(w: Workload, rng: random.Random) -> int:
    """Blocked time of a new off phase; NEVER = stays blocked."""
    if isinstance(w, Bursty):
        return max(_MIN_NS, round(w.off_ms * 1e6))
    if isinstance(w, IoLike):
        return _exp(w.block_us * 1e3, rng)
    if isinstance(w, Idle):
        return NEVER
    return 0


def start(w: Workload, rng: random.Random) -> tuple[bool, int]:
    """Where a vCPU starts: (runnable, work left) or (blocked, ns until it wakes)."""
    if isinstance(w, CpuBound):
        return True, NEVER
    if isinstance(w, Idle):
        return False, NEVER
    if isinstance(w, Bursty):
        on, off = w.on_ms * 1e6, w.off_ms * 1e6
        u = rng.random() * (on + off)
        if u < on:
            return True, max(_MIN_NS, round(on - u))
        return False, max(_MIN_NS, round(on + off - u))
    assert isinstance(w, IoLike)
    if rng.random() * (w.run_us + w.block_us) < w.run_us:
        return True, on_ns(w, rng)
    return False, off_ns(w, rng)
