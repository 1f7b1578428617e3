"""Which of dom0's CPUs sit on which NUMA node, as far as Xen guarantees it.

dom0's Linux CPU n is dom0's vCPU n. A vCPU is on a node only if Xen keeps it
there: its hard affinity lies within that node's pCPUs (``dom0_vcpus_pin``
or ``xl vcpu-pin Domain-0 <vcpu> <pcpu>`` pin it to one pCPU). A vCPU free to
run anywhere is on no node, and a backend bound to it is not either; then
backend placement is impossible, and ``advice`` says how to make it possible
instead of pretending.

Xen's ``dom0_vcpus_pin`` pins vCPU i to the i-th pCPU of dom0's cpus
(``dom0_setup_vcpu`` cycles through them in order), so with fewer dom0 vCPUs
than the first node has pCPUs every pin lands on that node; ``advice``
suggests pins that give every node some.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from agent.hypervisor.model import CpuSet, Topology, VcpuInfo, format_cpuset
from agent.state import HostView


@dataclass(frozen=True, slots=True)
class Dom0Cpus:
    by_node: Mapping[int, frozenset[int]]  # node -> dom0 vCPUs (Linux CPUs) bound there
    unbound: tuple[int, ...]  # dom0 vCPUs that may run on more than one node
    nodes: tuple[int, ...]  # every node of the host
    vcpus: int  # dom0's vCPU count
    advice: str  # how to give every node dom0 vCPUs ("" when it has)

    @classmethod
    def of(cls, topology: Topology, dom0_vcpus: Sequence[VcpuInfo]) -> Dom0Cpus:
        """From the hypervisor's answers (``topology()``, ``vcpus(0)``)."""
        return cls.build({n.id: n.cpus for n in topology.nodes},
                         [(v.vcpu, v.hard) for v in dom0_vcpus])

    @classmethod
    def from_view(cls, view: HostView) -> Dom0Cpus:
        """From the agent's host snapshot."""
        dom0 = view.domain_by_id.get(0)
        vcpus = [(v.id, v.hard) for v in dom0.vcpus] if dom0 is not None else []
        return cls.build({n.id: n.cpu_set for n in view.nodes}, vcpus)

    @classmethod
    def build(cls, node_cpus: Mapping[int, CpuSet],
              dom0_hard: Sequence[tuple[int, CpuSet]]) -> Dom0Cpus:
        """``node_cpus``: node -> its pCPUs; ``dom0_hard``: (vCPU, hard affinity)."""
        by_node: dict[int, set[int]] = {}
        unbound: list[int] = []
        for vcpu, hard in sorted(dom0_hard):
            nodes = {n for n, cpus in node_cpus.items() if hard and hard <= cpus}
            if len(nodes) == 1:
                by_node.setdefault(nodes.pop(), set()).add(vcpu)
            else:
                unbound.append(vcpu)
        node_ids = tuple(sorted(node_cpus))
        frozen = {n: frozenset(c) for n, c in sorted(by_node.items())}
        advice = _advice(node_cpus, len(dom0_hard), frozen, node_ids)
        return cls(frozen, tuple(unbound), node_ids, len(dom0_hard), advice)

    @property
    def node_bound(self) -> bool:
        """Every node has dom0 vCPUs bound to it."""
        return all(self.by_node.get(n) for n in self.nodes)

    def cpus_for(self, node: int) -> frozenset[int]:
        """dom0's CPUs on ``node`` (empty: none; placement there is impossible)."""
        return self.by_node.get(node, frozenset())

    def node_of(self, cpus: frozenset[int]) -> int:
        """The node a backend bound to ``cpus`` runs on, or -1 if none or several."""
        nodes = {n for n, c in self.by_node.items() if cpus & c}
        if not cpus or len(nodes) != 1 or cpus & set(self.unbound):
            return -1
        return nodes.pop()

    def impossible(self, node: int) -> str:
        """Why a backend cannot be placed on ``node``, or "" if it can."""
        if self.cpus_for(node):
            return ""
        if not self.by_node:
            head = ("backend placement is impossible: no dom0 vCPU is bound to a NUMA node "
                    f"(dom0 vCPUs {format_cpuset(range(self.vcpus))} may each run on "
                    "several nodes)")
        else:
            bound = "; ".join(f"node {n}: {format_cpuset(c)}" for n, c in self.by_node.items())
            head = (f"backend placement on node {node} is impossible: no dom0 vCPU is bound "
                    f"to it (dom0 vCPUs by node: {bound})")
        return f"{head}. {self.advice}"


def _advice(node_cpus: Mapping[int, CpuSet], vcpus: int,
            by_node: Mapping[int, frozenset[int]], nodes: tuple[int, ...]) -> str:
    if nodes and all(by_node.get(n) for n in nodes):
        return ""
    if vcpus < len(nodes):
        return (f"dom0 has {vcpus} vCPUs for {len(nodes)} nodes: boot Xen with "
                f"dom0_max_vcpus={len(nodes)} or more, then pin one or more to each node")
    pins = suggest_pins(node_cpus, vcpus)
    cmds = "; ".join(f"xl vcpu-pin Domain-0 {v} {c}" for v, c in pins)
    return ("Pin dom0's vCPUs so that every node has some: " + cmds + " (Xen's "
            "dom0_vcpus_pin pins vCPU i to pCPU i, which spreads them over every node only "
            "when dom0_max_vcpus covers them all)")


def suggest_pins(node_cpus: Mapping[int, CpuSet] | Topology,
                 vcpus: int) -> list[tuple[int, int]]:
    """(vCPU, pCPU) pins giving each node a share of dom0's vCPUs, round-robin."""
    if isinstance(node_cpus, Topology):
        node_cpus = {n.id: n.cpus for n in node_cpus.nodes}
    per_node = [sorted(cpus) for _, cpus in sorted(node_cpus.items()) if cpus]
    if not per_node:
        return []
    taken = [0] * len(per_node)
    pins: list[tuple[int, int]] = []
    for v in range(vcpus):
        i = v % len(per_node)
        cpus = per_node[i]
        pins.append((v, cpus[taken[i] % len(cpus)]))
        taken[i] += 1
    return pins
