"""Simulated seconds per wall second of the simulated Xen host.

    .venv/bin/python benchmarks/sim_speed.py [--seconds 60] [--mix all]

A host of 8 NUMA nodes x 28 cores x 2 threads (448 pCPUs) runs dom0 and 200
guests for ``--seconds`` of virtual time, with the accounting feed read every
50 ms as the scenario runner does; the figure printed is virtual seconds per
wall second (the goal is >= 10), and per second of this process's CPU time,
which is the steadier figure on a shared machine (wall time counts the other
processes' turns too). Guests are drawn from a fixed seed: 1 to 8
vCPUs (about 3 on average), memory placed by libxl's automatic placement, and
one workload each, by mix:

- ``batch``: 45% cpu-bound, 45% bursty (on 0.1-1 s of work, off 0.1-2 s), 10% idle;
- ``server``: 35% cpu-bound, 35% bursty, 20% io-like (1 ms runs, 9 ms blocks:
  100 wakeups a second each), 10% idle.

Each mix runs under credit1 and credit2 in the same process, one after the
other, so the figures compare side by side.
"""

from __future__ import annotations

import argparse
import random
import time

from agent.sim.engine import SimHost
from agent.sim.spec import Bursty, CpuBound, DomainSpec, HostSpec, Idle, IoLike, NodeSpec, Workload

NS = 1_000_000_000
BUCKET_NS = 50_000_000


def guests(mix: str, rng: random.Random) -> list[DomainSpec]:
    out = []
    for i in range(200):
        vcpus = rng.choice((1, 1, 2, 2, 2, 2, 4, 4, 4, 8))
        u = rng.random()
        w: Workload
        if mix == "batch":
            w = CpuBound() if u < 0.45 else Idle() if u > 0.9 else _bursty(rng)
        elif u < 0.35:
            w = CpuBound()
        elif u < 0.70:
            w = _bursty(rng)
        elif u < 0.90:
            w = IoLike(run_us=1000, block_us=9000)
        else:
            w = Idle()
        out.append(DomainSpec(f"vm{i:03d}", vcpus, 1024 * vcpus, workload=w))
    return out


def _bursty(rng: random.Random) -> Bursty:
    return Bursty(on_ms=rng.uniform(100, 1000), off_ms=rng.uniform(100, 2000))


def build(scheduler: str, mix: str) -> SimHost:
    spec = HostSpec(
        nodes=tuple(NodeSpec(cpus=56, memory_mib=512 * 1024) for _ in range(8)),
        threads_per_core=2,
        scheduler=scheduler,  # type: ignore[arg-type]
        seed=7,
    )
    host = SimHost(spec)
    host.create_domain(
        DomainSpec("Domain-0", 8, 8192, workload=IoLike(200, 4800), is_dom0=True,
                   memory_nodes=(0,))
    )
    for d in guests(mix, random.Random(f"bench:{mix}")):
        host.create_domain(d)
    return host


def run(scheduler: str, mix: str, seconds: float) -> tuple[float, float, int, float]:
    t0 = time.perf_counter()
    host = build(scheduler, mix)
    built = time.perf_counter() - t0
    end = round(seconds * NS)
    t0 = time.perf_counter()
    c0 = time.process_time()
    t = 0
    while t < end:
        t = min(end, t + BUCKET_NS)
        host.advance(t)
        host.take_accounting()
    wall = time.perf_counter() - t0
    cpu = time.process_time() - c0
    return seconds / wall, seconds / cpu, host.events_run, built


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mix", choices=("batch", "server", "all"), default="all")
    ap.add_argument("--scheduler", choices=("credit1", "credit2", "all"), default="all")
    args = ap.parse_args()
    mixes = ("batch", "server") if args.mix == "all" else (args.mix,)
    scheds = ("credit1", "credit2") if args.scheduler == "all" else (args.scheduler,)
    print(f"{args.seconds:g} simulated seconds, 448 pCPUs, 200 guests + dom0")
    print(f"{'mix':8} {'scheduler':9} {'sim s/wall s':>13} {'sim s/cpu s':>12} {'events':>10} "
          f"{'build s':>8}")
    for mix in mixes:
        for sched in scheds:
            per_wall, per_cpu, events, built = run(sched, mix, args.seconds)
            print(f"{mix:8} {sched:9} {per_wall:13.1f} {per_cpu:12.1f} {events:10d} {built:8.2f}",
                  flush=True)


if __name__ == "__main__":
    main()
