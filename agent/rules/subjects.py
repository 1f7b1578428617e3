"""Subjects: the objects a rule is evaluated for, their keys and labels.

An event is about something: the whole host (tick, placement.request), a node
(load.change of a node), a domain (domain.*), a vCPU (vcpu.off_node, load.change
of a vCPU) or a backend (backend.appear). A rule's subjects for an event are
the objects of its ``for_each`` kind that the event is about:

===============  =====================  ==============  ===============  ==============
event about      vcpu rules             domain rules    node rules       backend rules
===============  =====================  ==============  ===============  ==============
the host         every vCPU             every domain    every node       every backend
node N           vCPUs on N             domains with a  N                backends on N
                                        vCPU on N or
                                        homed on N
domain D         D's vCPUs              D               every node       D's backends
vCPU D.V         D.V                    D               every node       D's backends
backend P of D   D's vCPUs              D               every node       P
===============  =====================  ==============  ===============  ==============

``host`` rules always have the one subject ``host``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from agent.rules.events import Event
from agent.state import BackendView, DomainView, HostView, NodeView, VcpuView

# ("vcpu", domid, id) | ("domain", domid) | ("node", id) | ("backend", pid) | ("host",)
SubjectKey = tuple[Any, ...]
Subject = VcpuView | DomainView | NodeView | BackendView | HostView


def key_of(obj: Subject) -> SubjectKey:
    if isinstance(obj, VcpuView):
        return ("vcpu", obj.domid, obj.id)
    if isinstance(obj, DomainView):
        return ("domain", obj.domid)
    if isinstance(obj, NodeView):
        return ("node", obj.id)
    if isinstance(obj, BackendView):
        return ("backend", obj.pid)
    return ("host",)


def format_key(key: SubjectKey) -> str:
    """ "vcpu 3.1", "domain 3", "node 0", "backend 812", "host"."""
    if key[0] == "vcpu":
        return f"vcpu {key[1]}.{key[2]}"
    if key[0] == "host":
        return "host"
    return f"{key[0]} {key[1]}"


def parse_key(text: str) -> SubjectKey:
    """Inverse of ``format_key``; raises ValueError with the accepted forms."""
    kind, _, rest = text.strip().partition(" ")
    try:
        if kind == "host" and not rest:
            return ("host",)
        if kind == "vcpu":
            domid, _, vcpu = rest.partition(".")
            return ("vcpu", int(domid), int(vcpu))
        if kind in ("domain", "node", "backend"):
            return (kind, int(rest))
    except ValueError:
        pass
    raise ValueError(
        f"bad subject {text!r}: write 'vcpu DOMID.VCPU', 'domain DOMID', 'node ID', "
        "'backend PID' or 'host'"
    )


def label(obj: Any) -> str:
    """How an object is named in traces."""
    if isinstance(obj, DomainView):
        return f"domain {obj.domid} ({obj.name})"
    if isinstance(obj, VcpuView | NodeView | BackendView | HostView):
        return format_key(key_of(obj))
    return str(obj)


def contains(outer: SubjectKey, inner: SubjectKey) -> bool:
    """Whether acting on ``outer`` touches ``inner``: equal, or a domain and its vCPU."""
    if outer == inner:
        return True
    return bool(outer[0] == "domain" and inner[0] == "vcpu" and outer[1] == inner[1])


def overlaps(a: SubjectKey, b: SubjectKey) -> bool:
    return contains(a, b) or contains(b, a)


def subjects_for(host: HostView, event: Event, for_each: str) -> Sequence[Subject]:
    """The objects a ``for_each`` rule is evaluated for on ``event`` (table above)."""
    if for_each == "host":
        return (host,)
    about = scope_of(event)
    if about == "host" or (for_each == "node" and about != "node"):
        return _all(host, for_each)
    if about == "node":
        return _on_node(host, event.node, for_each)
    domain = host.domain_by_id.get(event.domid)
    if domain is None:
        return ()
    if for_each == "domain":
        return (domain,)
    if for_each == "backend":
        if about == "backend":
            b = host.backend_by_pid.get(event.pid)
            return (b,) if b is not None else ()
        return tuple(domain.backends)
    if about == "vcpu":
        v = host.vcpu_by_key.get((event.domid, event.vcpu))
        return (v,) if v is not None else ()
    return tuple(domain.vcpus)


def scope_of(event: Event) -> str:
    """What the event is about: host, node, domain, vcpu or backend."""
    t = event.type
    if t.startswith("domain."):
        return "domain"
    if t == "vcpu.off_node":
        return "vcpu"
    if t == "backend.appear":
        return "backend"
    if t == "load.change":
        if event.vcpu >= 0 and event.domid >= 0:
            return "vcpu"
        return "node" if event.node >= 0 else "host"
    return "host"


def _all(host: HostView, for_each: str) -> Sequence[Subject]:
    if for_each == "vcpu":
        return host.vcpus
    if for_each == "domain":
        return host.domains
    if for_each == "node":
        return host.nodes
    return host.backends


def _on_node(host: HostView, node_id: int, for_each: str) -> Sequence[Subject]:
    node = host.node_by_id.get(node_id)
    if node is None:
        return ()
    if for_each == "node":
        return (node,)
    if for_each == "vcpu":
        return node.vcpus
    if for_each == "domain":
        ids = {v.domid for v in node.vcpus} | {d.domid for d in node.domains}
        return [d for d in host.domains if d.domid in ids]
    return [b for b in host.backends if b.node == node_id]
