"""The simulator computes exactly what it computed before: checked-in digests.

Every optimisation of the engine and the scheduler models must leave what they
compute unchanged, bit for bit. Each case runs a host and hashes everything
the models produce: every accounting window (run time per node, demand,
migrations, per-node busy time) and, at the end, every vCPU's pCPU, state,
run time and masks. Only integers and strings go into the hash, so the
digests do not depend on the Python version. A digest changes only when what
the models compute changes: then say why in the commit, and update it.

The same digests must come out of the native core (agent/sim/native/, the C
port of the models): that is the check that the port is exact.

To print the current digests: ``.venv/bin/python tests/test_sim_golden.py``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from collections.abc import Callable

import pytest

from agent.sim.accounting import Accounting
from agent.sim.engine import SimHost
from agent.sim.run import Runner
from agent.sim.scenario import load_scenario
from agent.sim.spec import (
    Bursty,
    CpuBound,
    DomainSpec,
    HostSpec,
    Idle,
    IoLike,
    NodeSpec,
    Workload,
)

MS = 1_000_000
BUCKET_NS = 50 * MS


class Digest:
    def __init__(self) -> None:
        self._h = hashlib.sha256()

    def accounting(self, acc: Accounting) -> None:
        rows = [(k, tuple(a.run_ns), a.demand_ns, a.migrations, a.cross_node_migrations)
                for k, a in acc.vcpus.items()]
        self._h.update(repr((acc.start_ns, acc.end_ns, rows, tuple(acc.node_busy_ns))).encode())

    def final(self, host: SimHost) -> str:
        rows = [(v.domid, v.vcpu, v.cpu, v.state.value, v.time_ns, sorted(v.hard), sorted(v.soft))
                for v in host.vcpu_info()]
        self._h.update(repr((host.now_ns, rows)).encode())
        return self._h.hexdigest()[:20]


def seed_digest(name: str, scheduler: str, core: str) -> str:
    """A shipped seed scenario with its timeline squeezed into 3 s (same events, same order)."""
    scenario = load_scenario(name).with_overrides(scheduler=scheduler)  # type: ignore[arg-type]
    scale = 10  # events at 10, 20, 21 s -> 1, 2, 2.1 s
    timeline = tuple(dataclasses.replace(e, at_ns=e.at_ns // scale) for e in scenario.timeline)
    scenario = dataclasses.replace(scenario, timeline=timeline,
                                   duration_ns=scenario.duration_ns // scale)
    digest = Digest()

    class Recording(SimHost):
        def take_accounting(self) -> Accounting:
            acc = super().take_accounting()
            digest.accounting(acc)
            return acc

    runner = Runner(scenario, lambda spec: Recording(spec, core=core))
    runner.run()
    assert isinstance(runner.host, SimHost)
    return digest.final(runner.host)


def _mixed_guests(rng: random.Random, count: int) -> list[DomainSpec]:
    out = []
    for i in range(count):
        vcpus = rng.choice((1, 2, 2, 4, 4, 8))
        u = rng.random()
        w: Workload
        if u < 0.3:
            w = CpuBound()
        elif u < 0.6:
            w = Bursty(on_ms=rng.uniform(20, 300), off_ms=rng.uniform(20, 500))
        elif u < 0.9:
            w = IoLike(run_us=rng.choice((200, 1000)), block_us=rng.choice((1800, 9000)))
        else:
            w = Idle()
        out.append(DomainSpec(f"g{i:02d}", vcpus, 512 * vcpus, workload=w))
    return out


def mixed_digest(scheduler: str, core: str, *, nodes: int, cpus: int, guests: int,
                 seconds: float) -> str:
    """A sim_speed-like host (SMT, libxl placement, every workload kind) with actions."""
    spec = HostSpec(
        nodes=tuple(NodeSpec(cpus=cpus, memory_mib=64 * 1024) for _ in range(nodes)),
        threads_per_core=2,
        scheduler=scheduler,  # type: ignore[arg-type]
        seed=11,
    )
    host = SimHost(spec, core=core)
    host.create_domain(DomainSpec("Domain-0", 4, 4096, workload=IoLike(200, 4800),
                                  is_dom0=True, memory_nodes=(0,)))
    specs = _mixed_guests(random.Random(f"golden:{nodes}:{guests}"), guests + 1)
    for d in specs[:-1]:
        host.create_domain(d)
    ncpus = nodes * cpus
    digest = Digest()
    end = round(seconds * 1e9)
    third = end // 3 // BUCKET_NS * BUCKET_NS
    t = 0
    while t < end:
        t += BUCKET_NS
        host.advance(t)
        digest.accounting(host.take_accounting())
        if t == third:  # load changes, pins and a pause
            host.pause(3)
            host.set_workload(4, None, CpuBound())
            host.set_workload(5, 0, Idle())
            host.set_workload(6, None, IoLike(run_us=500, block_us=500))
            host.set_affinity(7, 0, frozenset({ncpus - 1}), None)
            host.set_affinity(8, None, None, frozenset(range(cpus)))
        elif t == 2 * third:  # and back, a guest goes, another comes
            host.unpause(3)
            host.set_affinity(7, 0, frozenset(range(ncpus)), None)
            host.destroy(9)
            host.shutdown(10)
            host.create_domain(specs[-1])
    return digest.final(host)


Case = Callable[[str], str]  # core ("python" or "native") -> digest
CASES: dict[str, Case] = {
    **{f"{name} {sched}": (lambda core, name=name, sched=sched: seed_digest(name, sched, core))
       for name in ("seed-abc", "seed-abc-4node") for sched in ("credit1", "credit2")},
    **{f"mixed 4x16 {sched}": (lambda core, sched=sched: mixed_digest(
        sched, core, nodes=4, cpus=16, guests=30, seconds=3.0))
       for sched in ("credit1", "credit2")},
    **{f"mixed 8x56 {sched}": (lambda core, sched=sched: mixed_digest(
        sched, core, nodes=8, cpus=56, guests=200, seconds=0.6))
       for sched in ("credit1", "credit2")},
}

DIGESTS = {
    'mixed 4x16 credit1': 'ab46ac938d303f5fafe9',
    'mixed 4x16 credit2': '888cf9357c9b536a78ee',
    'mixed 8x56 credit1': 'b2214c1882bea5c7240d',
    'mixed 8x56 credit2': '86e7d4758fb6a64f5076',
    'seed-abc credit1': 'd3c4c70efa0a910c9817',
    'seed-abc credit2': 'b36e010e780104eb094a',
    'seed-abc-4node credit1': '7e61d8b331aa95b65650',
    'seed-abc-4node credit2': '55c097241643d7905372',
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_models_compute_what_they_computed(case: str) -> None:
    assert CASES[case]("python") == DIGESTS[case]


@pytest.mark.parametrize("case", sorted(CASES))
def test_native_core_computes_the_same(case: str) -> None:
    """The C port (agent/sim/native/) gives the Python model's digests, bit for bit."""
    assert CASES[case]("native") == DIGESTS[case]


if __name__ == "__main__":
    import time

    for name in sorted(CASES):
        t0 = time.process_time()
        digest = CASES[name]("python")
        print(f"    {name!r}: {digest!r},  # {time.process_time() - t0:.1f} s")
