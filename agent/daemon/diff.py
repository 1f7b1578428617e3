"""Two snapshots of the host -> the events between them. Pure.

- ``domain.create`` / ``domain.destroy``: a domain (domid and uuid) appeared or
  went; on the first snapshot every domain is new (a resync after a restart or
  a lost xenstore connection starts from a full scan, so nothing is missed);
- ``domain.pause`` / ``domain.unpause``: pausing fires no xenstore watch, so
  polling is the only way to see it;
- ``load.change``: a node's load crossed one of ``NODE_BANDS`` (going down it
  must fall ``HYSTERESIS`` below the threshold, so a load hovering at one does
  not flap), or a vCPU became busy (demand >= ``BUSY_UP``) or idle (< ``BUSY_DOWN``);
  its demand, not its run rate: a vCPU queued behind others runs little but is
  busy, and a run rate over a short interval jumps about;
- ``vcpu.off_node``: a vCPU runs outside its soft affinity, with for how long:
  when first seen off, then at doubling intervals (a poll interval, two, four,
  up to ``OFF_STEP_MAX_S``), and again at once when it becomes ``misplaced``
  (costing work), so a rule re-checks it when it matters without a record per
  poll for every vCPU that is away on purpose.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field

from agent.rules.events import Event, make_event
from agent.state import DomainView, HostView, VcpuKey, VcpuView

NODE_BANDS = (0.25, 0.5, 0.75, 0.9)
HYSTERESIS = 0.05
BUSY_UP = 0.25
BUSY_DOWN = 0.15
OFF_STEP_MAX_S = 60.0

DOMAIN_EVENTS = frozenset({"domain.create", "domain.destroy", "domain.pause", "domain.unpause"})


@dataclass(frozen=True, slots=True)
class OffMark:
    next_s: float  # emit again once off_node_s reaches this
    step_s: float  # the interval after that
    misplaced: bool  # as last emitted


@dataclass(frozen=True, slots=True)
class DiffMemory:
    node_band: Mapping[int, int] = field(default_factory=dict)
    busy: frozenset[VcpuKey] = frozenset()
    rates: Mapping[VcpuKey, float] = field(default_factory=dict)
    off: Mapping[VcpuKey, OffMark] = field(default_factory=dict)


def band_of(load: float, old: int | None) -> int:
    """The load band (0 = below the first threshold); hysteresis on the way down."""
    band = 0 if old is None else old
    while band < len(NODE_BANDS) and load >= NODE_BANDS[band]:
        band += 1
    if old is not None:
        while band > 0 and load < NODE_BANDS[band - 1] - HYSTERESIS:
            band -= 1
    return band


def diff(
    prev: HostView | None, new: HostView, memory: DiffMemory, poll_s: float
) -> tuple[list[Event], DiffMemory]:
    """The events from ``prev`` to ``new`` and the memory for the next call."""
    events: list[Event] = []
    events += _domains(prev, new)
    node_band, node_events = _nodes(new, memory.node_band)
    events += node_events
    busy, rates, vcpu_events = _vcpu_loads(new.vcpus, memory)
    events += vcpu_events
    off, off_events = _off_node(new.vcpus, memory.off, poll_s)
    events += off_events
    return events, DiffMemory(node_band, busy, rates, off)


def diff_domains(
    prev: HostView, new: HostView, memory: DiffMemory, domids: Collection[int], poll_s: float
) -> tuple[list[Event], DiffMemory]:
    """``diff`` for a snapshot patched at the guests ``domids`` only
    (``agent.state.patch_domains``): their domain events, and the vCPU events of
    their vCPUs; the memory of every other vCPU, and of the nodes, is kept for
    the next full ``diff``."""
    touched = frozenset(domids)
    events = _domains(prev, new, touched)
    mine = [v for d in touched for v in new.domain_at(d).vcpus]
    # their vCPUs' keys, before and after: the rest of the memory is copied as it is
    keys = {(v.domid, v.id) for d in touched for view in (prev, new)
            for v in view.domain_at(d).vcpus}
    part = DiffMemory(memory.node_band, memory.busy & keys,
                      {k: memory.rates[k] for k in keys if k in memory.rates},
                      {k: memory.off[k] for k in keys if k in memory.off})
    busy, rates, vcpu_events = _vcpu_loads(mine, part)
    off, off_events = _off_node(mine, part.off, poll_s)
    keep_rates, keep_off = dict(memory.rates), dict(memory.off)
    for k in keys:
        keep_rates.pop(k, None)
        keep_off.pop(k, None)
    keep_rates.update(rates)
    keep_off.update(off)
    return events + vcpu_events + off_events, DiffMemory(
        memory.node_band, (memory.busy - keys) | busy, keep_rates, keep_off)


def _domains(
    prev: HostView | None, new: HostView, only: frozenset[int] | None = None
) -> list[Event]:
    def keyed(view: HostView) -> dict[tuple[int, str], DomainView]:
        if only is None:
            return {(d.domid, d.uuid): d for d in view.domains}
        found = (view.domain_by_id.get(i) for i in only)
        return {(d.domid, d.uuid): d for d in found if d is not None}

    before = keyed(prev) if prev is not None else {}
    after = keyed(new)
    out: list[Event] = []
    for key in sorted(before.keys() - after.keys()):
        d = before[key]
        out.append(make_event("domain.destroy", domid=d.domid, name=d.name))
    for key in sorted(after.keys() - before.keys()):
        d = after[key]
        out.append(make_event("domain.create", domid=d.domid, name=d.name))
    for key in sorted(after.keys() & before.keys()):
        was, now = before[key].state, after[key].state
        if was != "paused" and now == "paused":
            out.append(make_event("domain.pause", domid=key[0], name=after[key].name))
        elif was == "paused" and now != "paused":
            out.append(make_event("domain.unpause", domid=key[0], name=after[key].name))
    return out


def _nodes(new: HostView, old: Mapping[int, int]) -> tuple[dict[int, int], list[Event]]:
    bands: dict[int, int] = {}
    out: list[Event] = []
    for n in new.nodes:
        was = old.get(n.id)
        bands[n.id] = band_of(n.load, was)
        if was is not None and bands[n.id] != was:
            # previous: the threshold it crossed, as the band last reported stood
            crossed = NODE_BANDS[min(was, bands[n.id])]
            out.append(make_event("load.change", node=n.id, load=n.load, previous=crossed))
    return bands, out


def _vcpu_loads(
    vcpus: Iterable[VcpuView], memory: DiffMemory
) -> tuple[frozenset[VcpuKey], dict[VcpuKey, float], list[Event]]:
    busy: set[VcpuKey] = set()
    rates: dict[VcpuKey, float] = {}
    out: list[Event] = []
    for v in vcpus:
        key = (v.domid, v.id)
        rates[key] = v.demand
        was = key in memory.busy
        is_busy = v.demand >= BUSY_DOWN if was else v.demand >= BUSY_UP
        if is_busy:
            busy.add(key)
        if is_busy != was and key in memory.rates:
            out.append(make_event("load.change", domid=v.domid, vcpu=v.id, node=v.node,
                                  load=v.demand, previous=memory.rates[key]))
    return frozenset(busy), rates, out


def _off_node(
    vcpus: Iterable[VcpuView], old: Mapping[VcpuKey, OffMark], poll_s: float
) -> tuple[dict[VcpuKey, OffMark], list[Event]]:
    marks: dict[VcpuKey, OffMark] = {}
    out: list[Event] = []
    for v in vcpus:
        if v.off_since is None:
            continue
        key = (v.domid, v.id)
        mark = old.get(key)
        off_s = v.off_node_s
        due = (mark is None or off_s >= mark.next_s
               or (v.misplaced and not mark.misplaced))
        if not due:
            assert mark is not None
            marks[key] = OffMark(mark.next_s, mark.step_s, mark.misplaced and v.misplaced)
            continue
        step = poll_s if mark is None or (v.misplaced and not mark.misplaced) else mark.step_s
        marks[key] = OffMark(off_s + step, min(step * 2, OFF_STEP_MAX_S), v.misplaced)
        out.append(make_event("vcpu.off_node", domid=v.domid, vcpu=v.id, node=v.node,
                              off_s=off_s))
    return marks, out
