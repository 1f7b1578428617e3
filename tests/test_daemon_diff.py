"""Snapshots -> events: the pure diff behind the poller."""

from __future__ import annotations

from agent.daemon.diff import DiffMemory, band_of, diff
from agent.rules.events import Event
from agent.rules.testing import HostModel
from agent.state import HostView

POLL = 0.1


def model() -> HostModel:
    return HostModel({"nodes": 2, "cpus": 4}, [
        {"domid": 1, "name": "A", "vcpus": 2, "soft": [0]},
        {"domid": 2, "name": "B", "vcpus": 2, "soft": [1]},
    ])


class Differ:
    def __init__(self, m: HostModel) -> None:
        self.m = m
        self.view: HostView | None = None
        self.memory = DiffMemory()

    def at(self, t: float) -> list[Event]:
        new = self.m.observe(t, self.view)
        events, self.memory = diff(self.view, new, self.memory, POLL)
        self.view = new
        return events


def kinds(events: list[Event]) -> list[tuple[str, int, int]]:
    return [(e.type, e.domid, e.vcpu) for e in events]


def test_first_look_creates_every_domain_then_nothing_changes() -> None:
    d = Differ(model())
    assert kinds(d.at(0.0)) == [("domain.create", 1, -1), ("domain.create", 2, -1)]
    assert d.at(0.1) == []
    assert d.at(0.2) == []


def test_create_destroy_and_a_reused_domid() -> None:
    m = model()
    d = Differ(m)
    d.at(0.0)
    m.apply({"create": {"domid": 3, "name": "C", "vcpus": 1, "soft": [0]}})
    assert [k for k in kinds(d.at(0.1)) if k[0].startswith("domain.")] == [
        ("domain.create", 3, -1)]
    m.apply({"destroy": 3})
    assert [(e.type, e.name) for e in d.at(0.2) if e.type.startswith("domain.")] == [
        ("domain.destroy", "C")]
    # A domain with another uuid under an old domid is a destroy and a create.
    assert d.view is not None
    prev = d.view
    new = m.observe(0.3, prev)
    new.domain_by_id[2].uuid = "another"  # the views are plain objects: fake the reuse
    events, _ = diff(prev, new, d.memory, POLL)
    assert [e.type for e in events if e.domid == 2] == ["domain.destroy", "domain.create"]


def test_pause_and_unpause_are_seen_by_polling() -> None:
    m = model()
    d = Differ(m)
    d.at(0.0)
    m.apply({"domain": 1, "state": "paused"})
    assert kinds(d.at(0.1))[0] == ("domain.pause", 1, -1)
    assert not [e for e in d.at(0.2) if e.type.startswith("domain.")]
    m.apply({"domain": 1, "state": "running"})
    assert kinds(d.at(0.3))[0] == ("domain.unpause", 1, -1)


def test_load_bands_have_hysteresis_on_the_way_down() -> None:
    assert band_of(0.3, None) == 1
    assert band_of(0.49, 1) == 1
    assert band_of(0.5, 1) == 2
    assert band_of(0.47, 2) == 2  # within the hysteresis under 0.5
    assert band_of(0.44, 2) == 1
    assert band_of(0.95, 0) == 4
    assert band_of(0.0, 4) == 0


def test_node_load_change_fires_once_per_band_crossed() -> None:
    m = model()
    d = Differ(m)
    d.at(0.0)  # node 0: A's 2 vCPUs busy on 4 pCPUs: load 0.5
    m.apply({"domain": 1, "vcpu": 0, "rate": 0.0})  # 0.25
    events = [e for e in d.at(0.1) if e.type == "load.change" and e.vcpu == -1]
    assert [(e.node, e.load) for e in events] == [(0, 0.25)]
    m.apply({"domain": 1, "vcpu": 0, "rate": 0.1})  # 0.275: no band change back up
    assert not [e for e in d.at(0.2) if e.type == "load.change" and e.vcpu == -1]


def test_a_vcpu_becoming_idle_or_busy_is_a_load_change() -> None:
    m = model()
    d = Differ(m)
    d.at(0.0)
    m.apply({"domain": 2, "vcpu": 1, "rate": 0.0})
    changes = [e for e in d.at(0.1) if e.type == "load.change" and e.vcpu >= 0]
    assert [(e.domid, e.vcpu, e.load, e.previous) for e in changes] == [(2, 1, 0.0, 1.0)]
    m.apply({"domain": 2, "vcpu": 1, "rate": 0.2})  # between the two thresholds: idle still
    assert not [e for e in d.at(0.2) if e.type == "load.change" and e.vcpu >= 0]
    m.apply({"domain": 2, "vcpu": 1, "rate": 0.3})
    changes = [e for e in d.at(0.3) if e.type == "load.change" and e.vcpu >= 0]
    assert [(e.domid, e.vcpu) for e in changes] == [(2, 1)]


def test_off_node_is_reported_at_doubling_intervals() -> None:
    m = model()
    d = Differ(m)
    d.at(0.0)
    m.apply({"domain": 1, "vcpu": 1, "run": 1})
    seen = []
    for step in range(1, 20):
        t = round(step * POLL, 3)
        for e in d.at(t):
            if e.type == "vcpu.off_node":
                seen.append((t, round(e.off_s, 3), e.node))
    # first sight, then after 1, 2, 4, 8 poll intervals
    assert seen == [(0.1, 0.0, 1), (0.2, 0.1, 1), (0.4, 0.3, 1), (0.8, 0.7, 1), (1.6, 1.5, 1)]


def test_off_node_is_reported_again_at_once_when_it_becomes_misplaced() -> None:
    # B's two vCPUs spill onto node 0 while node 1 is overloaded by C: justified.
    m = HostModel({"nodes": 2, "cpus": 2}, [
        {"domid": 1, "name": "A", "vcpus": 2, "soft": [0], "state": "paused"},
        {"domid": 2, "name": "B", "vcpus": 2, "soft": [1], "run": [0, 0]},
        {"domid": 3, "name": "C", "vcpus": 2, "soft": [1]},
    ])
    d = Differ(m)
    d.at(0.0)
    first = d.at(0.1)
    assert [(e.domid, e.vcpu) for e in first if e.type == "vcpu.off_node"] == [(2, 0), (2, 1)]
    assert d.view is not None and not d.view.vcpu_by_key[(2, 1)].misplaced
    assert not [e for e in d.at(0.15) if e.type == "vcpu.off_node"]
    # A wants its node back: each domain is due 4/3 pCPUs of the 4, so B and C may keep
    # 2/3 of node 0 (one B vCPU at its fair part); the other one now costs work.
    m.apply({"domain": 1, "state": "running"})
    again = d.at(0.2)
    assert not d.view.vcpu_by_key[(2, 0)].misplaced
    assert d.view.vcpu_by_key[(2, 1)].misplaced
    assert [(e.domid, e.vcpu) for e in again if e.type == "vcpu.off_node"] == [(2, 1)]


def test_diff_is_pure() -> None:
    m = model()
    v0 = m.observe(0.0)
    m.apply({"domain": 1, "vcpu": 1, "run": 1})
    v1 = m.observe(0.1, v0)
    memory = DiffMemory()
    a = diff(v0, v1, memory, POLL)
    b = diff(v0, v1, memory, POLL)
    assert a == b
    assert memory == DiffMemory()
