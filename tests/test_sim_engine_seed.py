"""The seed's A/B/C scenario on the engine alone (no scenario file, no agent).

Host: 2 nodes x 28 pCPUs (node 0 = pCPUs 0-27, node 1 = 28-55). A is soft-affine
to node 0, B and C to node 1, each with its memory on its soft node and
cpu-bound vCPUs; then: pause A, later unpause A and pause B. Two dom0 layouts:

- "isolated": dom0 (4 light I/O vCPUs) alone in Pool-0 on pCPUs 0, 1, 28, 29; the
  guests in a cpupool of the other 52, 26 vCPUs each, so that A and C exactly fill
  it at the end (as on the real Xen 4.17 where the stuck state was seen);
- "shared": one pool; dom0's 4 vCPUs hard-pinned to pCPUs 0, 1, 28, 29 among the
  guests, 28 vCPUs each (the brief's layout): dom0 wakes over-commit those pCPUs.

Nothing below steers the schedulers: the outcomes come from the models.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.sim.engine import SimHost
from agent.sim.spec import CpuBound, DomainSpec, HostSpec, IoLike, NodeSpec, PoolSpec

S = 1_000_000_000
NODE0 = frozenset(range(28))
NODE1 = frozenset(range(28, 56))
DOM0_CPUS = frozenset({0, 1, 28, 29})


@dataclass
class Window:
    locality: dict[str, float]  # run time on the home node / run time
    off_home_at_end: dict[str, int]  # vCPUs running off their home node at its end
    cross_node_moves: dict[str, int]


def run_seed(sched: str, layout: str, gap_s: float, phase_s: float = 4.0,
             seed: int = 1) -> list[Window]:
    """Windows: all running; A paused; A back and B paused (gap_s after A's unpause)
    for one second; then the rest of the last phase, settled."""
    isolated = layout == "isolated"
    guests = frozenset(range(56)) - DOM0_CPUS
    spec = HostSpec(
        nodes=(NodeSpec(28, 256 * 1024), NodeSpec(28, 256 * 1024)),
        scheduler=sched,  # type: ignore[arg-type]
        pools=(PoolSpec("guests", guests, sched),) if isolated else (),  # type: ignore[arg-type]
        seed=seed,
    )
    h = SimHost(spec)
    h.create_domain(DomainSpec(
        "Domain-0", 4, 4096, workload=IoLike(run_us=100, block_us=1900), memory_nodes=(0,),
        is_dom0=True, hard=None if isolated else DOM0_CPUS,
    ))
    n = 26 if isolated else 28
    pool = "guests" if isolated else "Pool-0"
    ids = {
        name: h.create_domain(DomainSpec(name, n, 32 * 1024, workload=CpuBound(), pool=pool,
                                         soft=soft, memory_nodes=(node,)))
        for name, soft, node in (("A", NODE0, 0), ("B", NODE1, 1), ("C", NODE1, 1))
    }
    home = {name: h.home_node(d) for name, d in ids.items()}

    def window(until_s: float) -> Window:
        h.advance(round(until_s * S))
        acc = h.take_accounting()
        loc: dict[str, float] = {}
        moves: dict[str, int] = {}
        for name, d in ids.items():
            rows = [r for (dom, _), r in acc.vcpus.items() if dom == d]
            total = sum(sum(r.run_ns) for r in rows)
            if total:
                loc[name] = sum(r.run_ns[home[name]] for r in rows) / total
            moves[name] = sum(r.cross_node_migrations for r in rows)
        off = {
            name: sum(1 for v in h.vcpu_info(d)
                      if v.state.value == "running" and h.topo.node_of[v.cpu] != home[name])
            for name, d in ids.items()
        }
        return Window(loc, off, moves)

    out = [window(phase_s)]
    h.pause(ids["A"])
    out.append(window(2 * phase_s))
    h.unpause(ids["A"])
    h.advance(round((2 * phase_s + gap_s) * S))
    h.pause(ids["B"])
    out.append(window(2 * phase_s + gap_s + 1.0))
    out.append(window(3 * phase_s))
    return out


def test_credit1_isolated_dom0_last_phase_is_stuck_and_static() -> None:
    _, paused, _, last = run_seed("credit1", "isolated", gap_s=1.0)
    # While A is paused, its idle node took vCPUs of B or C.
    assert min(paused.locality.values()) < 1.0
    # A's and C's misplaced vCPUs stay misplaced to the end, and nothing moves:
    # every pCPU runs exactly one vCPU, so no pick finds an idle pCPU and no
    # steal finds a queued vCPU.
    assert last.off_home_at_end["A"] > 0 and last.off_home_at_end["C"] > 0
    assert last.locality["A"] < 1.0 and last.locality["C"] < 1.0
    assert last.cross_node_moves == {"A": 0, "B": 0, "C": 0}


def test_credit1_isolated_dom0_stays_stuck_over_a_long_last_phase() -> None:
    last = run_seed("credit1", "isolated", gap_s=1.0, phase_s=10.0)[3]
    assert last.off_home_at_end["A"] > 0 and last.off_home_at_end["C"] > 0
    assert last.cross_node_moves == {"A": 0, "B": 0, "C": 0}


def test_credit1_dom0_sharing_guest_pcpus_leaves_vcpus_stuck_off_home() -> None:
    for gap in (0.0, 1.0):
        last = run_seed("credit1", "shared", gap_s=gap)[3]
        assert last.off_home_at_end["A"] > 0 and last.off_home_at_end["C"] > 0, gap
        assert last.locality["A"] < 1.0 and last.locality["C"] < 1.0, gap


def test_credit2_misplaces_vcpus_in_every_phase() -> None:
    # As seen on a real Xen 4.17: balance_load moves vCPUs by load only.
    for w in run_seed("credit2", "isolated", gap_s=1.0, phase_s=3.0):
        assert min(w.locality.values()) < 0.9
