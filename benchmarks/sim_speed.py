"""Simulated seconds per wall second of the simulated Xen host.

    .venv/bin/python benchmarks/sim_speed.py [--seconds 60] [--mix all] [--scheduler all]
                                              [--core both]

The issue's scenario: a host of 8 NUMA nodes x 28 cores x 2 threads (448
pCPUs) runs dom0 and 200 guests for ``--seconds`` of virtual time (60 by
default), with the accounting feed read every 50 ms as the scenario runner
does. Printed side by side, from one run: virtual seconds per wall second and
per second of this process's CPU time (the steadier figure on a shared
machine: wall time counts the other processes' turns too), events run per
simulated second, and whether the goal (>= 10 simulated seconds per CPU
second) is met; the load average before and after says how busy the machine
was. Guests are drawn from a fixed seed: 1 to 8 vCPUs (about 3 on average),
memory placed by libxl's automatic placement, and one workload each, by mix:

- ``batch`` (cpu-bound, no io): 45% cpu-bound, 45% bursty (on 0.1-1 s of work,
  off 0.1-2 s), 10% idle;
- ``server`` (io mix): 35% cpu-bound, 35% bursty, 20% io-like (1 ms runs, 9 ms
  blocks: 100 wakeups a second each), 10% idle.

Each scheduler runs each mix in this process, one after the other: credit1
then credit2, cpu-bound then io mix; each on the Python core (the model as
written) and then on the native core (its C port, agent/sim/native/, which
computes the same results: the two runs' event counts are printed side by
side and must agree), with the native core's speed-up over the Python one.
"""

from __future__ import annotations

import argparse
import os
import random
import time

from agent.sim.engine import SimHost
from agent.sim.spec import Bursty, CpuBound, DomainSpec, HostSpec, Idle, IoLike, NodeSpec, Workload

NS = 1_000_000_000
BUCKET_NS = 50_000_000
GOAL = 10.0  # simulated seconds per CPU second (issue 3)
MIX_LABEL = {"batch": "cpu-bound", "server": "io mix"}


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


def build(scheduler: str, mix: str, core: str) -> SimHost:
    spec = HostSpec(
        nodes=tuple(NodeSpec(cpus=56, memory_mib=512 * 1024) for _ in range(8)),
        threads_per_core=2,
        scheduler=scheduler,  # type: ignore[arg-type]
        seed=7,
    )
    host = SimHost(spec, core=core)
    host.create_domain(
        DomainSpec("Domain-0", 8, 8192, workload=IoLike(200, 4800), is_dom0=True,
                   memory_nodes=(0,))
    )
    for d in guests(mix, random.Random(f"bench:{mix}")):
        host.create_domain(d)
    return host


def run(scheduler: str, mix: str, core: str,
        seconds: float) -> tuple[float, float, int, float]:
    t0 = time.perf_counter()
    host = build(scheduler, mix, core)
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


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--mix", choices=("batch", "server", "all"), default="all")
    ap.add_argument("--scheduler", choices=("credit1", "credit2", "all"), default="all")
    ap.add_argument("--core", choices=("python", "native", "both"), default="both")
    args = ap.parse_args()
    cores = ("python", "native") if args.core == "both" else (args.core,)
    mixes = ("batch", "server") if args.mix == "all" else (args.mix,)
    scheds = ("credit1", "credit2") if args.scheduler == "all" else (args.scheduler,)
    print(f"{args.seconds:g} simulated seconds, 448 pCPUs, 200 guests + dom0; "
          f"goal: >= {GOAL:g} simulated s per CPU s")
    print(f"load average before: {_load()}")
    print(f"{'scheduler':9} {'mix':18} {'core':6} {'sim s/wall s':>12} {'sim s/cpu s':>11} "
          f"{'events':>9} {'events/sim s':>12} {'cpu us/event':>12} {'build s':>7} "
          f"{'x python':>8}  goal")
    for sched in scheds:
        for mix in mixes:
            python_cpu = 0.0
            for core in cores:
                per_wall, per_cpu, events, built = run(sched, mix, core, args.seconds)
                label = f"{mix} ({MIX_LABEL[mix]})"
                met = "met" if per_cpu >= GOAL else "not met"
                us_per_event = args.seconds / per_cpu / events * 1e6 if events else 0.0
                if core == "python":
                    python_cpu = per_cpu
                ratio = f"{per_cpu / python_cpu:8.1f}" if python_cpu else f"{'-':>8}"
                print(f"{sched:9} {label:18} {core:6} {per_wall:12.1f} {per_cpu:11.1f} "
                      f"{events:9d} {events / args.seconds:12.0f} {us_per_event:12.2f} "
                      f"{built:7.2f} {ratio}  {met}", flush=True)
    print(f"load average after: {_load()}")


if __name__ == "__main__":
    main()
