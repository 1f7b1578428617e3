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

from agent.hypervisor.model import Topology, VcpuInfo, format_cpuset


@dataclass(frozen=True, slots=True)
class Dom0Cpus:
    by_node: Mapping[int, frozenset[int]]  # node -> dom0 vCPUs (Linux CPUs) bound there
    unbound: tuple[int, ...]  # dom0 vCPUs that may run on more than one node
    nodes: tuple[int, ...]  # every node of the host
    vcpus: int  # dom0's vCPU count
    advice: str  # how to give every node dom0 vCPUs ("" when it has)

    @classmethod
    def of(cls, topology: Topology, dom0_vcpus: Sequence[VcpuInfo]) -> Dom0Cpus:
        by_node: dict[int, set[int]] = {}
        unbound: list[int] = []
        for v in sorted(dom0_vcpus, key=lambda v: v.vcpu):
            nodes = {n.id for n in topology.nodes if v.hard and v.hard <= n.cpus}
            if len(nodes) == 1:
                by_node.setdefault(nodes.pop(), set()).add(v.vcpu)
            else:
                unbound.append(v.vcpu)
        node_ids = tuple(sorted(n.id for n in topology.nodes))
        frozen = {n: frozenset(c) for n, c in sorted(by_node.items())}
        advice = _advice(topology, len(dom0_vcpus), frozen, node_ids)
        return cls(frozen, tuple(unbound), node_ids, len(dom0_vcpus), advice)

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


def _advice(topology: Topology, vcpus: int, by_node: Mapping[int, frozenset[int]],
            nodes: tuple[int, ...]) -> str:
    if nodes and all(by_node.get(n) for n in nodes):
        return ""
    if vcpus < len(nodes):
        return (f"dom0 has {vcpus} vCPUs for {len(nodes)} nodes: boot Xen with "
                f"dom0_max_vcpus={len(nodes)} or more, then pin one or more to each node")
    pins = suggest_pins(topology, vcpus)
    cmds = "; ".join(f"xl vcpu-pin Domain-0 {v} {c}" for v, c in pins)
    return ("Pin dom0's vCPUs so that every node has some: " + cmds + " (Xen's "
            "dom0_vcpus_pin pins vCPU i to pCPU i, which spreads them over every node only "
            "when dom0_max_vcpus covers them all)")


def suggest_pins(topology: Topology, vcpus: int) -> list[tuple[int, int]]:
    """(vCPU, pCPU) pins giving each node a share of dom0's vCPUs, round-robin."""
    per_node = [sorted(n.cpus) for n in sorted(topology.nodes, key=lambda n: n.id) if n.cpus]
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
