"""``xnuma status``: the host's NUMA picture at a glance.

Topology, then one line per domain: where its vCPUs run now (per node), its
soft affinity, its memory per node and its locality (share of its vCPUs' run
time on its home node) over the last minute.

- ``--backend xl`` (a Xen host): asks ``xl``; locality is measured by watching
  for ``--sample`` seconds (each vCPU's run time over each half second counted
  on the node it ran on), since one look cannot tell how long anything ran where.
- ``--backend sim --scenario NAME --at S``: runs the scenario to S simulated
  seconds (``--agent``: with the agent) and shows the host then; locality over
  the minute before S, from the simulator's accounting.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import trio

from agent.hypervisor.interface import Hypervisor, HypervisorError
from agent.hypervisor.model import DomainInfo, Topology, VcpuInfo, format_cpuset

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
WINDOW_S = 60.0
KIB_PER_MIB = 1024


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"expected seconds >= 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "status",
        help="the host's NUMA picture: where each domain's vCPUs and memory are",
        description="Topology, then per domain: vCPUs on each node now, soft affinity, "
        "memory per node and locality over the last minute.",
    )
    parser.add_argument("--backend", choices=("xl", "sim"), default="xl",
                        help="xl (this Xen host, default) or sim")
    parser.add_argument("--scenario", metavar="NAME", default="seed-abc",
                        help="with --backend sim: the scenario (default seed-abc)")
    parser.add_argument("--at", type=_seconds, metavar="S",
                        help="with --backend sim: simulated seconds to run first "
                        "(default: the whole scenario)")
    parser.add_argument("--agent", action="store_true",
                        help="with --backend sim: run the agent beside the host")
    parser.add_argument("--sample", type=_seconds, default=5.0, metavar="S",
                        help="with --backend xl: seconds to watch for locality (default 5)")
    parser.add_argument("--json", action="store_true", help="one JSON object")
    parser.set_defaults(func=run)


@dataclass(frozen=True, slots=True)
class DomainRow:
    name: str
    domid: int
    state: str
    vcpus: int
    on_node: tuple[int, ...]  # vCPUs running (or last run) on each node now
    offline: int
    soft: str  # "node 0", "nodes 0,1", "all", or a pCPU list
    memory_mib: tuple[int, ...] | None  # per node; None when it could not be measured
    locality: float | None


@dataclass(frozen=True, slots=True)
class Status:
    nodes: tuple[tuple[int, str, int, int], ...]  # (id, pCPUs, memory MiB, free MiB)
    domains: tuple[DomainRow, ...]
    window: str  # what the locality covers

    def to_dict(self) -> dict[str, Any]:
        return {
            "nodes": [{"id": n, "cpus": c, "memory_mib": m, "free_mib": f}
                      for n, c, m, f in self.nodes],
            "locality_window": self.window,
            "domains": [asdict(d) for d in self.domains],
        }


def soft_text(soft: frozenset[int], topo: Topology) -> str:
    if soft >= topo.all_cpus or not soft:
        return "all"
    nodes = sorted(n.id for n in topo.nodes if n.cpus <= soft)
    if nodes and soft == frozenset().union(*(topo.nodes[i].cpus for i in nodes)):
        return ("node " if len(nodes) == 1 else "nodes ") + ",".join(map(str, nodes))
    return format_cpuset(soft)


def build_status(
    topo: Topology, domains: Sequence[DomainInfo], vcpus: Sequence[VcpuInfo],
    memory: dict[int, tuple[int, ...]], locality: dict[int, float | None], window: str,
) -> Status:
    node_of = {c: n.id for n in topo.nodes for c in n.cpus}
    count = len(topo.nodes)
    rows = []
    for d in sorted(domains, key=lambda d: d.domid):
        mine = [v for v in vcpus if v.domid == d.domid]
        on = [0] * count
        offline = 0
        for v in mine:
            if v.cpu is None or v.cpu not in node_of:
                offline += 1
            else:
                on[node_of[v.cpu]] += 1
        soft = frozenset().union(*(v.soft for v in mine)) if mine else frozenset()
        mem = memory.get(d.domid)
        rows.append(DomainRow(
            d.name, d.domid, d.state.value, d.vcpus, tuple(on), offline, soft_text(soft, topo),
            tuple(k // KIB_PER_MIB for k in mem) if mem is not None else None,
            locality.get(d.domid),
        ))
    nodes = tuple((n.id, format_cpuset(n.cpus), n.memory_total_kib // KIB_PER_MIB,
                   n.memory_free_kib // KIB_PER_MIB) for n in topo.nodes)
    return Status(nodes, tuple(rows), window)


def render(status: Status) -> str:
    n = len(status.nodes)
    total_cpus = sum(len(_expand(c)) for _, c, _, _ in status.nodes)
    lines = [f"host: {n} NUMA node{'s' if n != 1 else ''}, {total_cpus} pCPUs"]
    for node, cpus, mem, free in status.nodes:
        lines.append(f"  node {node}: pCPUs {cpus:<12} memory {mem} MiB ({free} MiB free)")
    on_hdr = " ".join(f"{'n' + str(i):>4}" for i in range(n))
    mem_hdr = "/".join(f"n{i}" for i in range(n))
    lines += ["", f"{'Name':<18}{'ID':>4}  {'State':<9}{'vCPUs':>6}  on {on_hdr}  "
                  f"{'Soft':<11}{'Memory MiB ' + mem_hdr:<24}Locality ({status.window})"]
    for d in status.domains:
        on = " ".join(f"{c:>4}" for c in d.on_node)
        if d.offline:
            on += f" (+{d.offline} off)"
        mib = "/".join(str(m) for m in d.memory_mib) if d.memory_mib is not None else "?"
        loc = "-" if d.locality is None else f"{d.locality:.2f}"
        lines.append(f"{d.name[:18]:<18}{d.domid:>4}  {d.state:<9}{d.vcpus:>6}     {on}  "
                     f"{d.soft:<11}{mib:<24}{loc}")
    return "\n".join(lines)


def _expand(cpus: str) -> frozenset[int]:
    from agent.hypervisor.model import parse_cpuset

    return parse_cpuset(cpus)


def _error(message: str) -> None:
    print(f"xnuma status: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    if args.backend == "sim":
        try:
            status = sim_status(args.scenario, args.at, args.agent)
        except ValueError as exc:
            _error(str(exc))
            return EXIT_USAGE
    else:
        from agent.hypervisor.xl import XlHypervisor

        try:
            status = trio.run(xl_status, XlHypervisor(), args.sample)
        except (HypervisorError, OSError) as exc:
            _error(f"cannot read the host through xl: {exc}")
            return EXIT_FAILED
    print(json.dumps(status.to_dict(), indent=2) if args.json else render(status))
    return EXIT_OK


# -- a Xen host -------------------------------------------------------------------------------


async def xl_status(hv: Hypervisor, sample_s: float, step_s: float = 0.5) -> Status:
    """Look, then watch ``sample_s`` seconds for locality (run time counted per node)."""
    topo = await hv.topology()
    home_ns: dict[int, int] = {}
    run_ns: dict[int, int] = {}
    before = {(v.domid, v.vcpu): v for v in await hv.vcpus()}
    steps = int(sample_s / step_s) if sample_s > 0 else 0
    for _ in range(steps):
        await trio.sleep(step_s)
        now = await hv.vcpus()
        for v in now:
            old = before.get((v.domid, v.vcpu))
            if old is None or v.cpu is None or v.time_ns < old.time_ns:
                continue
            delta = v.time_ns - old.time_ns
            run_ns[v.domid] = run_ns.get(v.domid, 0) + delta
            if v.cpu in v.soft or not v.soft or v.soft >= topo.all_cpus:
                home_ns[v.domid] = home_ns.get(v.domid, 0) + delta
        before = {(v.domid, v.vcpu): v for v in now}
    domains = await hv.domains()
    vcpus = list(before.values())
    memory: dict[int, tuple[int, ...]] = {}
    for d in domains:
        try:
            memory[d.domid] = await hv.memory_per_node(d.domid)
        except HypervisorError:
            continue
    locality = {d: home_ns.get(d, 0) / ns for d, ns in run_ns.items() if ns > 0}
    window = f"last {sample_s:g} s" if steps else "not measured"
    return build_status(topo, domains, vcpus, memory, dict(locality), window)


# -- the simulator ----------------------------------------------------------------------------


def sim_status(scenario_name: str, at_s: float | None, with_agent: bool) -> Status:
    from agent.sim.engine import SimHost
    from agent.sim.run import Runner
    from agent.sim.scenario import ScenarioError, load_scenario

    try:
        scenario = load_scenario(scenario_name)
    except ScenarioError as exc:
        raise ValueError(str(exc)) from None
    if at_s is not None:
        if at_s <= 0:
            raise ValueError("--at must be > 0 simulated seconds")
        scenario = scenario.with_overrides(seed=None, duration_s=at_s, scheduler=None)
    if with_agent:
        from agent.daemon.simhost import run_virtual

        run = run_virtual(scenario)
        runner = run.runner
        result = run.result
    else:
        runner = Runner(scenario)
        result = runner.run()
    host = runner.host
    assert isinstance(host, SimHost)
    end = scenario.duration_ns
    start = max(0, end - int(WINDOW_S * 1e9))
    nodes = len(scenario.host.nodes)
    per_domain: dict[str, list[int]] = {}
    for sample in result.samples:
        if sample.start_ns < start:
            continue
        for name, ns in sample.run_ns.items():
            acc = per_domain.setdefault(name, [0] * nodes)
            for i, x in enumerate(ns):
                acc[i] += x
    domains = host.domain_info()
    locality: dict[int, float | None] = {}
    for d in domains:
        ran = per_domain.get(d.name)
        if ran and sum(ran):
            locality[d.domid] = ran[host.home_node(d.domid)] / sum(ran)
    memory = {d.domid: host.memory_per_node(d.domid) for d in domains}
    window = f"{start / 1e9:g}-{end / 1e9:g} s"
    return build_status(host.topology(), domains, host.vcpu_info(), memory, locality, window)
