"""Rule engine throughput: the shipped rules on 1,000 domains x 4 vCPUs on 8 nodes.

    .venv/bin/python benchmarks/rules_bench.py [--repeat N]

Prints, side by side, for one event and for one tick: decide() calls per second,
rule evaluations (rule x subject) per call and per second, decisions per call
and per second; then the cost of one compiled condition against the same logic
written by hand in Python. Times are the best of --repeat runs (a shared
machine is noisy); the host is generated from a fixed seed.
"""

from __future__ import annotations

import argparse
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from agent.hypervisor.model import DomainInfo, DomainState, Node, Topology, VcpuInfo, VcpuState
from agent.rules.decide import Decision, Memory, decide
from agent.rules.events import Event, make_event
from agent.rules.expr import EVENT, FIRST_FREE_SLOT, HOST
from agent.rules.loader import load_paths
from agent.rules.ruleset import RuleSet
from agent.rules.subjects import subjects_for
from agent.state import BackendInfo, HostView, Observation, build_state

ROOT = Path(__file__).resolve().parent.parent
NODES, CPUS_PER_NODE, DOMAINS, VCPUS = 8, 64, 1000, 4
NODE_MIB = 256 * 1024


def observation(seed: int = 1) -> Observation:
    """A busy host: each domain homed on one node, a few vCPUs strayed to another,
    a few domains whose memory landed elsewhere, one backend per domain."""
    rng = random.Random(seed)
    cpus = [frozenset(range(n * CPUS_PER_NODE, (n + 1) * CPUS_PER_NODE)) for n in range(NODES)]
    all_cpus = frozenset().union(*cpus)
    topo = Topology(
        tuple(Node(n, cpus[n], NODE_MIB << 10, (NODE_MIB // 4) << 10) for n in range(NODES)),
        tuple(tuple(10 if i == j else 20 for j in range(NODES)) for i in range(NODES)),
    )
    domains = [DomainInfo(0, "Domain-0", "uuid-0", DomainState.RUNNING, 16, 4 << 20)]
    vcpus = [VcpuInfo(0, v, min(cpus[v // 2]), VcpuState.RUNNING, 0,
                      cpus[v // 2], all_cpus) for v in range(16)]  # dom0: 2 vCPUs per node
    memory: dict[int, tuple[int, ...]] = {0: tuple([512 << 10] * NODES)}
    rates: dict[tuple[int, int], float] = {(0, v): 0.05 for v in range(16)}
    backends = []
    for d in range(1, DOMAINS + 1):
        home = d % NODES
        domains.append(DomainInfo(d, f"vm{d}", f"uuid-{d}", DomainState.RUNNING, VCPUS, 4 << 20))
        mem = [0] * NODES
        mem[(home + 1) % NODES if rng.random() < 0.02 else home] = 4 << 20
        memory[d] = tuple(mem)
        for v in range(VCPUS):
            node = (home + rng.randrange(1, NODES)) % NODES if rng.random() < 0.05 else home
            cpu = node * CPUS_PER_NODE + rng.randrange(CPUS_PER_NODE)
            vcpus.append(VcpuInfo(d, v, cpu, VcpuState.RUNNING, 0, all_cpus, cpus[home]))
            rates[(d, v)] = rng.choice((0.02, 0.05, 0.1, 0.25))  # ~0.8 of each node
        backends.append(BackendInfo(10_000 + d, "vbd", d, 51712, True))
    return Observation(0.0, topo, tuple(domains), tuple(vcpus), memory, tuple(backends),
                       run_rates=rates)


def best_of(repeat: int, fn: Callable[[], Any]) -> tuple[float, Any]:
    best, result = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - start)
    return best, result


def evaluations(state: HostView, event: Event, rules: RuleSet) -> int:
    return sum(len(subjects_for(state, event, r.for_each)) for r in rules.by_event.get(event.type,
                                                                                          ()))


def row(label: str, seconds: float, evals: int, decisions: list[Decision]) -> str:
    acts = sum(1 for d in decisions if d.acts)
    return (f"{label:<28} {1 / seconds:>10,.0f} {seconds * 1e3:>9.3f} {evals:>12,} "
            f"{evals / seconds:>14,.0f} {len(decisions):>10,} {acts:>6,} "
            f"{len(decisions) / seconds:>13,.0f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()

    rules = load_paths([ROOT / "rules"])
    obs = observation()
    build_s, first = best_of(args.repeat, lambda: build_state(obs))
    state = build_state(Observation(5.0, obs.topology, obs.domains, obs.vcpus, obs.memory_kib,
                                    obs.backends, run_rates=obs.run_rates), first)
    # Holds under way from a tick 5 s earlier, so this tick acts; the budget is
    # fresh (as if that tick's actions were a minute old), so it acts up to it.
    _, earlier = decide(first, make_event("tick"), 0.0, rules, Memory())
    warm = Memory(earlier.pending, earlier.latched, {}, ())
    stray = next(v for v in state.vcpus if not v.on_soft and v.domid > 0)

    print(f"host: {NODES} nodes x {CPUS_PER_NODE} pCPUs, {DOMAINS} domains x {VCPUS} vCPUs "
          f"({len(state.vcpus):,} vCPUs with dom0), {len(state.backends):,} backends; "
          f"{len(rules.rules)} shipped rules, budget {rules.budget_per_minute}/min")
    print(f"build_state (observation -> snapshot): {build_s * 1e3:.1f} ms")
    print(f"strays: {sum(not v.on_soft for v in state.vcpus)} vCPUs off their soft node, "
          f"{sum(d.soft_memory_share < 0.5 for d in state.domains if d.memory_known)} "
          "domains with memory elsewhere")
    print()
    print(f"{'':<28} {'calls/s':>10} {'ms/call':>9} {'evals/call':>12} {'evals/s':>14} "
          f"{'decisions':>10} {'acts':>6} {'decisions/s':>13}")
    cases = [
        ("event vcpu.off_node", make_event("vcpu.off_node", domid=stray.domid, vcpu=stray.id,
                                           node=stray.node, off_s=3.0), warm),
        ("event domain.create", make_event("domain.create", domid=7, name="vm7"), warm),
        ("event load.change (node)", make_event("load.change", node=3, load=0.9), warm),
        ("event placement.request", make_event("placement.request", request="r1", name="new",
                                               vcpus=4, memory_mib=4096), warm),
        ("tick, holds start", make_event("tick"), Memory()),
        ("tick, holds met", make_event("tick"), warm),
    ]
    for label, event, memory in cases:
        now = 0.0 if memory is not warm else 5.0
        seconds, (decisions, _) = best_of(
            args.repeat, lambda e=event, m=memory, t=now: decide(state, e, t, rules, m))
        print(row(label, seconds, evaluations(state, event, rules), decisions))

    # One condition, compiled vs. the same logic by hand, over every vCPU.
    fixup = rules.rule("affinity-fixup")
    assert fixup is not None and fixup.when is not None
    cond = fixup.when.fast
    env: list[Any] = [None] * fixup.env_size
    env[HOST], env[EVENT] = state, make_event("tick")

    def compiled() -> int:
        n = 0
        for v in state.vcpus:
            env[FIRST_FREE_SLOT], env[FIRST_FREE_SLOT + 1] = v, v.domain
            n += bool(cond(env))
        return n

    def by_hand() -> int:
        n = 0
        for v in state.vcpus:
            d = v.domain
            n += bool(not d.is_dom0 and d.state == "running" and not v.on_soft
                      and v.home_node >= 0 and v.demand >= 0.2 and not v.agent_pinned
                      and v.misplaced
                      and not (d.memory_known and d.soft_memory_share < 0.5
                               and not d.soft_changed))
        return n

    c_s, c_n = best_of(args.repeat, compiled)
    h_s, h_n = best_of(args.repeat, by_hand)
    assert c_n == h_n, (c_n, h_n)
    per = len(state.vcpus)
    print()
    print(f"affinity-fixup `when` over {per:,} vCPUs ({c_n} true): compiled "
          f"{c_s / per * 1e9:,.0f} ns, hand-written Python {h_s / per * 1e9:,.0f} ns "
          f"per evaluation (ratio {c_s / h_s:.2f})")


if __name__ == "__main__":
    main()
