"""The catalogue: every object a rule can read, each field with type and unit.

The type checker reads it; ``xnuma rules fields`` prints it. Field names are
the attribute names of the views in ``agent.state`` (a test keeps them in step).
"""

from __future__ import annotations

from collections.abc import Mapping

from agent.rules.events import EVENT_FIELDS, EVENT_TYPES
from agent.rules.types import BOOL, FLOAT, INT, NODESET, STR, FieldSpec, Type, list_of


def _fields(*specs: tuple[str, Type, str, str]) -> Mapping[str, FieldSpec]:
    return {name: FieldSpec(name, t, unit, doc) for name, t, unit, doc in specs}


HOST = _fields(
    ("now", FLOAT, "s", "the agent's clock when the state was observed"),
    ("node_count", INT, "nodes", "NUMA nodes"),
    ("cpus", INT, "pCPUs", "pCPUs on the host"),
    ("busy_cpus", FLOAT, "pCPUs", "sum of every vCPU's run rate"),
    ("idle_cpus", FLOAT, "pCPUs", "cpus - busy_cpus"),
    ("load", FLOAT, "fraction", "busy_cpus / cpus"),
    ("min_load", FLOAT, "fraction", "load of the least loaded node"),
    ("max_load", FLOAT, "fraction", "load of the most loaded node"),
    ("dom0_node_bound", BOOL, "", "every dom0 vCPU's hard affinity lies within one node"),
    ("nodes", list_of("node"), "", "all nodes, by id"),
    ("domains", list_of("domain"), "", "all domains, dom0 included, by domid"),
    ("vcpus", list_of("vcpu"), "", "all vCPUs, by (domid, id)"),
    ("backends", list_of("backend"), "", "all dom0 backends of live guests, by pid"),
)

NODE = _fields(
    ("id", INT, "node id", "the node's id"),
    ("cpus", INT, "pCPUs", "pCPUs on the node"),
    ("memory_mib", INT, "MiB", "memory on the node"),
    ("free_memory_mib", INT, "MiB", "free memory on the node"),
    ("reserved_mib", INT, "MiB", "memory promised to pending placements"),
    ("available_mib", INT, "MiB", "free_memory_mib - reserved_mib, at least 0"),
    ("busy_cpus", FLOAT, "pCPUs", "sum of the run rates of the vCPUs running here"),
    ("idle_cpus", FLOAT, "pCPUs", "cpus - busy_cpus"),
    ("load", FLOAT, "fraction", "busy_cpus / cpus"),
    ("running_vcpus", INT, "vCPUs", "vCPUs here that are running or runnable"),
    ("home_demand", FLOAT, "pCPUs", "sum of the demands of the vCPUs whose home is here"),
    ("pressure", FLOAT, "ratio", "home_demand / cpus: above 1 its own vCPUs do not fit"),
    ("vcpus", list_of("vcpu"), "", "vCPUs running (or last run) on this node"),
    ("domains", list_of("domain"), "", "domains whose home node this is"),
)

DOMAIN = _fields(
    ("domid", INT, "domid", "domain id"),
    ("name", STR, "", "domain name"),
    ("uuid", STR, "", "domain uuid"),
    ("state", STR, "", "running, blocked, paused, shutdown, crashed or dying"),
    ("is_dom0", BOOL, "", "this is dom0"),
    ("pool", STR, "", "cpupool name"),
    ("vcpu_count", INT, "vCPUs", "number of vCPUs"),
    ("memory_mib", INT, "MiB", "memory size"),
    ("weight", INT, "", "scheduler weight 1-65535 (xl sched-credit[2] -w; 256 by default)"),
    ("cap", INT, "% of a pCPU", "scheduler cap (xl sched-credit[2] -c; 0: none)"),
    ("home_node", INT, "node id", "its soft affinity's node, else where most memory is; -1"),
    ("soft_nodes", NODESET, "node ids", "nodes its vCPUs' soft affinity covers"),
    ("hard_nodes", NODESET, "node ids", "nodes its vCPUs' hard affinity covers"),
    ("soft_changed", BOOL, "", "soft affinity has changed since the agent first saw it"),
    ("memory_known", BOOL, "", "per-node memory has been measured"),
    ("memory_node", INT, "node id", "node holding most of its memory (-1: unknown)"),
    ("memory_node_share", FLOAT, "fraction", "share of its memory on memory_node"),
    ("home_memory_share", FLOAT, "fraction", "share of its memory on home_node"),
    ("soft_memory_share", FLOAT, "fraction", "share of its memory on its soft nodes"),
    ("demand", FLOAT, "pCPUs", "sum of its vCPUs' demands"),
    ("locality", FLOAT, "fraction", "share of its run time spent inside soft affinity (1 if idle)"),
    ("off_node_vcpus", INT, "vCPUs", "vCPUs now outside their soft affinity"),
    ("age_s", FLOAT, "s", "time since the agent first saw it"),
    ("vcpus", list_of("vcpu"), "", "its vCPUs, by id"),
    ("backends", list_of("backend"), "", "dom0 backends serving it, by pid"),
)

VCPU = _fields(
    ("domid", INT, "domid", "its domain"),
    ("id", INT, "vCPU id", "its number within the domain"),
    ("cpu", INT, "pCPU", "pCPU it runs or last ran on (-1: offline)"),
    ("node", INT, "node id", "node of that pCPU (-1: offline)"),
    ("state", STR, "", "running, runnable, blocked, paused or offline"),
    ("hard_nodes", NODESET, "node ids", "nodes its hard affinity covers"),
    ("soft_nodes", NODESET, "node ids", "nodes its soft affinity covers"),
    ("on_soft", BOOL, "", "its pCPU is inside its soft affinity"),
    ("home_node", INT, "node id", "its soft affinity's node, else its domain's home (-1)"),
    ("on_home", BOOL, "", "node == home_node"),
    ("off_node_s", FLOAT, "s", "how long it has been seen outside its soft affinity (0 if not)"),
    ("run_rate", FLOAT, "fraction", "share of one pCPU it used since the last observation"),
    ("demand", FLOAT, "fraction",
     "share of one pCPU it wants, running or queued (the agent's estimate; at least run_rate)"),
    ("misplaced", BOOL, "",
     "it runs off its home node where that costs work: its home has room for it, or the "
     "pCPUs it takes are wanted by their own node's vCPUs (per cpupool; see agent.state)"),
    ("pinned", BOOL, "", "its hard affinity is narrower than all pCPUs"),
    ("agent_pinned", BOOL, "", "the agent holds a temporary hard pin on it now"),
    ("domain", "domain", "", "its domain"),
)

BACKEND = _fields(
    ("pid", INT, "pid", "dom0 process or kernel thread id"),
    ("kind", STR, "", "vbd, vif, qdisk, qemu, tapdisk, ..."),
    ("domid", INT, "domid", "the guest it serves"),
    ("devid", INT, "", "device id (-1: whole guest, e.g. qemu)"),
    ("kthread", BOOL, "", "a kernel thread (may refuse affinity changes)"),
    ("node", INT, "node id", "node its dom0 CPUs lie on (-1: several or unknown)"),
    ("home_node", INT, "node id", "its guest's home node"),
    ("on_home", BOOL, "", "node == home_node"),
    ("placeable", BOOL, "", "some dom0 vCPU is hard-bound to home_node's pCPUs"),
    ("domain", "domain", "", "the guest it serves"),
)

OBJECT_FIELDS: Mapping[str, Mapping[str, FieldSpec]] = {
    "host": HOST,
    "node": NODE,
    "domain": DOMAIN,
    "vcpu": VCPU,
    "backend": BACKEND,
    "event": EVENT_FIELDS,
}

# What a rule iterates over and the names its conditions can use for it.
FOR_EACH: Mapping[str, tuple[str, ...]] = {
    "vcpu": ("vcpu", "domain"),
    "domain": ("domain",),
    "node": ("node",),
    "backend": ("backend", "domain"),
    "host": (),
}
COMMON_NAMES: tuple[str, ...] = ("host", "event")


def event_fields_for(types: tuple[str, ...]) -> frozenset[str]:
    """Fields of ``event`` that every one of ``types`` carries (plus ``type``)."""
    common: set[str] | None = None
    for t in types:
        spec = EVENT_TYPES.get(t)
        have = set(spec.fields) if spec is not None else set()
        common = have if common is None else common & have
    return frozenset((common or set()) | {"type"})
