"""The native core against the Python one on random hosts and random event sequences.

test_sim_golden.py checks the C port on the golden cases; this drives both
cores through the same random lives (cpupools with either scheduler, SMT,
weights, pins, soft affinity, every workload kind; pause, unpause, load
changes, affinity changes, shutdown, destroy, create, at random times) and
compares everything the engine exposes: every accounting window, every
vCPU's view at every step, and the number of events run. Seeds are fixed.
"""

from __future__ import annotations

import contextlib
import random

import pytest
from test_sim_golden import Digest

from agent.sim.credit2 import Credit2
from agent.sim.engine import SimError, SimHost
from agent.sim.spec import (
    Bursty,
    CpuBound,
    DomainSpec,
    HostSpec,
    Idle,
    IoLike,
    NodeSpec,
    PoolSpec,
    Workload,
)

MS = 1_000_000


def _workload(rng: random.Random) -> Workload:
    u = rng.random()
    if u < 0.3:
        return CpuBound()
    if u < 0.55:
        return Bursty(on_ms=rng.uniform(1, 80), off_ms=rng.uniform(1, 120))
    if u < 0.85:
        return IoLike(run_us=rng.choice((50, 300, 1000)), block_us=rng.choice((200, 2000, 9000)))
    return Idle()


def _host_spec(rng: random.Random, big: bool = False) -> HostSpec:
    nnodes = rng.choice((1, 2, 2, 3, 4))
    tpc = rng.choice((1, 2))
    # Big: sockets of up to 40 pCPUs, which credit2 splits into several runqueues.
    per_node = tpc * rng.choice((9, 12, 17, 20) if big else (1, 2, 3, 4))
    ncpus = nnodes * per_node
    pools: tuple[PoolSpec, ...] = ()
    if ncpus >= 4 and rng.random() < 0.4:  # a second cpupool: the last node, or some pCPUs
        cpus = frozenset(range(ncpus - per_node, ncpus)) if nnodes > 1 else frozenset({ncpus - 1})
        pools = (PoolSpec("pool-b", cpus, rng.choice(("credit1", "credit2"))),)
    return HostSpec(
        nodes=tuple(NodeSpec(per_node, 4096) for _ in range(nnodes)),
        threads_per_core=tpc,
        scheduler=rng.choice(("credit1", "credit2")),
        pools=pools,
        seed=rng.randrange(1000),
    )


def _domain(rng: random.Random, name: str, spec: HostSpec, big: bool = False) -> DomainSpec:
    ncpus = sum(n.cpus for n in spec.nodes)
    pool = "Pool-0"
    cpus = list(range(ncpus))
    if spec.pools and rng.random() < 0.3:
        pool = spec.pools[0].name
        cpus = sorted(spec.pools[0].cpus)
    elif spec.pools:
        cpus = [c for c in cpus if c not in spec.pools[0].cpus]
    vcpus = rng.choice((1, 2, 4, 8, 16) if big else (1, 1, 2, 3, 4))
    kw: dict[str, object] = {}
    u = rng.random()
    if u < 0.15:
        kw["pins"] = tuple(rng.choice(cpus) for _ in range(vcpus))
    elif u < 0.3:
        kw["hard"] = frozenset(rng.sample(cpus, rng.randint(1, len(cpus))))
    if rng.random() < 0.3:
        kw["soft"] = frozenset(rng.sample(range(ncpus), rng.randint(1, ncpus)))
    if rng.random() < 0.2:
        kw["memory_nodes"] = (rng.randrange(len(spec.nodes)),)
    loads = tuple(_workload(rng) for _ in range(vcpus)) if rng.random() < 0.5 else _workload(rng)
    return DomainSpec(name, vcpus, rng.choice((128, 512, 1024)), workload=loads, pool=pool,
                      weight=rng.choice((64, 256, 256, 512, 1000)), **kw)  # type: ignore[arg-type]


def _life(core: str, seed: int, big: bool = False) -> tuple[str, int]:
    """One random host's life on ``core``: (digest of everything seen, events run)."""
    rng = random.Random(f"native-diff:{seed}:{'big' if big else ''}")
    spec = _host_spec(rng, big)
    host = SimHost(spec, core=core)
    ncpus = sum(n.cpus for n in spec.nodes)
    digest = Digest()
    names = 0
    for _ in range(rng.randint(2, 14) if big else rng.randint(1, 6)):
        names += 1
        # (refused for memory or a pin outside the pool: the same refusal on both cores)
        with contextlib.suppress(SimError):
            host.create_domain(_domain(rng, f"d{names}", spec, big), paused=rng.random() < 0.1)
    t = 0
    for _ in range(rng.randint(5, 25)):
        t += rng.choice((1, 3, 10, 40, 100, 400) if big else (1, 3, 10, 40, 100)) * MS
        t += rng.randrange(MS)
        host.advance(t)
        digest.accounting(host.take_accounting())
        domids = [d for d in sorted(host.domains) if not host.domains[d].shutdown]
        op = rng.random()
        if not domids or op < 0.12:
            names += 1
            with contextlib.suppress(SimError):
                host.create_domain(_domain(rng, f"d{names}", spec, big))
            continue
        domid = rng.choice(domids)
        nv = len(host.domains[domid].vcpus)
        vcpu = rng.choice((None, rng.randrange(nv)))
        if op < 0.3:
            host.pause(domid)
        elif op < 0.45:
            host.unpause(domid)
        elif op < 0.6:
            host.set_workload(domid, vcpu, _workload(rng))
        elif op < 0.8:
            pool = spec.pools[0] if host.pool_of_domain(domid) != "Pool-0" else None
            cpus = sorted(pool.cpus) if pool else [c for c in range(ncpus)
                                                   if not spec.pools or c not in spec.pools[0].cpus]
            hard = frozenset(rng.sample(cpus, rng.randint(1, len(cpus))))
            soft = frozenset(rng.sample(range(ncpus), rng.randint(1, ncpus)))
            which = rng.random()
            host.set_affinity(domid, vcpu, hard if which < 0.6 else None,
                              soft if which > 0.3 else None)
        elif op < 0.9:
            host.shutdown(domid)
        else:
            host.destroy(domid)
        digest.accounting(host.take_accounting())  # what the action itself did
    return digest.final(host), host.events_run


@pytest.mark.parametrize("seed", range(60))
def test_native_core_matches_the_python_core(seed: int) -> None:
    assert _life("native", seed) == _life("python", seed)


@pytest.mark.parametrize("seed", range(12))
def test_native_core_matches_on_big_sockets(seed: int) -> None:
    """Sockets credit2 splits into several runqueues, balanced by balance_load."""
    assert _life("native", seed, big=True) == _life("python", seed, big=True)


def test_the_lives_are_varied() -> None:
    """The random lives reach both schedulers, cpupools, SMT and every operation."""
    kinds = set()
    for seed in range(60):
        spec = _host_spec(random.Random(f"native-diff:{seed}:"))
        kinds.add(spec.scheduler)
        kinds.update(f"pool {p.scheduler}" for p in spec.pools)
        kinds.add(f"tpc {spec.threads_per_core}")
    assert kinds >= {"credit1", "credit2", "pool credit1", "pool credit2", "tpc 1", "tpc 2"}
    split = 0  # big lives whose credit2 splits a socket into several runqueues
    for seed in range(12):
        spec = _host_spec(random.Random(f"native-diff:{seed}:big"), big=True)
        sched = SimHost(spec, core="python").scheduler_of()
        if isinstance(sched, Credit2) and len(sched.runqueues()) > len(spec.nodes):
            split += 1
    assert split >= 3


def _dom0_twice(core: str) -> tuple[str, int]:
    """dom0 destroyed and made again inside one accounting window: one row, the new one's."""
    host = SimHost(HostSpec(nodes=(NodeSpec(2, 4096), NodeSpec(2, 4096)), seed=3), core=core)
    digest = Digest()
    dom0 = DomainSpec("Domain-0", 2, 512, is_dom0=True, memory_nodes=(0,))
    host.create_domain(dom0)
    host.create_domain(DomainSpec("g", 2, 512, workload=IoLike(300, 700)))
    host.advance(10 * MS)
    host.destroy(0)
    host.create_domain(dom0)
    host.advance(11 * MS)
    digest.accounting(host.take_accounting())
    host.advance(60 * MS)
    digest.accounting(host.take_accounting())
    return digest.final(host), host.events_run


def test_native_core_matches_when_a_domid_comes_back_within_a_window() -> None:
    assert _dom0_twice("native") == _dom0_twice("python")
