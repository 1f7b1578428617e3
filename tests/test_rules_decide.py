"""The decision function: holds, cooldowns, conflicts, budget, dry-run, dead bands."""

from __future__ import annotations

from typing import Any

import msgpack
import pytest

from agent.rules.actions import Note, SetSoftAffinity, VcpuFixup
from agent.rules.decide import Decision, Memory, Outcome, Reason, decide
from agent.rules.events import make_event
from agent.rules.loader import check_sources
from agent.rules.ruleset import RuleSet
from agent.rules.subjects import format_key, key_of, subjects_for
from agent.rules.testing import HostModel
from agent.state import HostView

FIXUP_ACTION = '''
[rule.action]
type = "vcpu.fixup"
domid = "vcpu.domid"
vcpu = "vcpu.id"
node = "vcpu.home_node"
'''


def rules(*texts: str, budget: int | None = None) -> RuleSet:
    sources = [(f"r{i}.toml", t) for i, t in enumerate(texts)]
    if budget is not None:
        sources.append(("engine.toml", f"[engine]\nbudget_per_minute = {budget}\n"))
    ruleset, errors = check_sources(sources)
    assert ruleset is not None, [str(e) for e in errors]
    return ruleset


def vcpu_rule(name: str, when: str = "not vcpu.on_soft", extra: str = "",
              on: str = '["tick", "vcpu.off_node"]') -> str:
    return (f'[[rule]]\nname = "{name}"\non = {on}\nfor_each = "vcpu"\n'
            f'when = "{when}"\n{extra}\n{FIXUP_ACTION}')


def model() -> HostModel:
    return HostModel(
        {"nodes": 2, "cpus": 4},
        [
            {"domid": 1, "name": "A", "vcpus": 2, "soft": [0], "run": [1, 1]},
            {"domid": 2, "name": "B", "vcpus": 2, "soft": [1], "run": [0, 1]},
        ],
    )


HOST = model().observe(0.0)
TICK = make_event("tick")


def summary(decisions: list[Decision]) -> list[tuple[str, str, str, str | None]]:
    return [(d.rule, format_key(d.subject), d.outcome.value,
             d.reason.value if d.reason else None) for d in decisions]


def test_one_decision_per_matching_subject_in_a_fixed_order() -> None:
    rs = rules(vcpu_rule("b-low", extra="priority = 1"), vcpu_rule("a-high", extra="priority = 5"))
    decisions, _ = decide(HOST, TICK, 0.0, rs, Memory())
    assert summary(decisions) == [
        ("a-high", "vcpu 1.0", "act", None),
        ("a-high", "vcpu 1.1", "act", None),
        ("a-high", "vcpu 2.0", "act", None),
        ("b-low", "vcpu 1.0", "suppressed", "conflict"),
        ("b-low", "vcpu 1.1", "suppressed", "conflict"),
        ("b-low", "vcpu 2.0", "suppressed", "conflict"),
    ]
    assert decisions[3].detail == "lost to rule 'a-high' (higher priority 5) acting on vcpu 1.0"
    assert decisions[0].action == VcpuFixup(domid=1, vcpu=0, node=0)
    assert decisions[0].acts and not decisions[3].acts


def test_equal_priority_is_settled_by_rule_name() -> None:
    rs = rules(vcpu_rule("zeta"), vcpu_rule("alpha"))
    decisions, _ = decide(HOST, make_event("vcpu.off_node", domid=1, vcpu=0), 0.0, rs, Memory())
    assert summary(decisions) == [("alpha", "vcpu 1.0", "act", None),
                                  ("zeta", "vcpu 1.0", "suppressed", "conflict")]
    assert "same priority 0" in decisions[1].detail


def test_decide_is_pure_and_deterministic() -> None:
    rs = rules(vcpu_rule("fix", extra='hold = "1s"\ncooldown = "5s"'))
    memory = Memory()
    first, m1 = decide(HOST, TICK, 0.0, rs, memory)
    again, m1b = decide(HOST, TICK, 0.0, rs, memory)
    assert memory == Memory()  # the input memory is untouched
    assert first == again and m1 == m1b
    later, m2 = decide(HOST, TICK, 1.0, rs, m1)
    assert m1.pending == {("fix", ("vcpu", 1, 0)): 0.0, ("fix", ("vcpu", 1, 1)): 0.0,
                          ("fix", ("vcpu", 2, 0)): 0.0}
    assert all(d.outcome is Outcome.ACT for d in later)
    assert m2.last_act == {key: 1.0 for key in m1.pending}


def test_hold_starts_over_when_the_condition_breaks() -> None:
    rs = rules(vcpu_rule("fix", extra='hold = "2s"'))
    m = model()
    s = m.observe(0.0)
    d, mem = decide(s, make_event("vcpu.off_node", domid=1, vcpu=0), 0.0, rs, Memory())
    assert summary(d) == [("fix", "vcpu 1.0", "suppressed", "hold")]
    assert d[0].detail == "true for 0 s of 2 s"
    m.apply({"domain": 1, "vcpu": 0, "run": 0})
    s = m.observe(1.0, s)
    d, mem = decide(s, make_event("vcpu.off_node", domid=1, vcpu=0), 1.0, rs, mem)
    assert d == [] and ("fix", ("vcpu", 1, 0)) not in mem.pending
    m.apply({"domain": 1, "vcpu": 0, "run": 1})
    s = m.observe(2.0, s)
    for t, outcome in ((2.0, "suppressed"), (3.0, "suppressed"), (4.0, "act")):
        d, mem = decide(s, make_event("vcpu.off_node", domid=1, vcpu=0), t, rs, mem)
        assert summary(d)[0][2] == outcome, t


def test_cooldown_is_per_rule_and_subject() -> None:
    rs = rules(vcpu_rule("fix", extra='cooldown = "10s"'))
    d, mem = decide(HOST, make_event("vcpu.off_node", domid=1, vcpu=0), 0.0, rs, Memory())
    assert summary(d) == [("fix", "vcpu 1.0", "act", None)]
    d, mem = decide(HOST, TICK, 5.0, rs, mem)
    assert summary(d) == [("fix", "vcpu 1.0", "suppressed", "cooldown"),
                          ("fix", "vcpu 1.1", "act", None), ("fix", "vcpu 2.0", "act", None)]
    assert d[0].detail == "acted 5 s ago; cooldown 10 s"
    d, mem = decide(HOST, TICK, 10.0, rs, mem)
    assert summary(d)[0] == ("fix", "vcpu 1.0", "act", None)


def test_budget_caps_actions_per_minute_host_wide() -> None:
    rs = rules(vcpu_rule("fix", extra='cooldown = "1s"'), budget=4)
    d, mem = decide(HOST, TICK, 0.0, rs, Memory())
    assert [x.outcome.value for x in d] == ["act", "act", "act"]
    d, mem = decide(HOST, TICK, 30.0, rs, mem)
    assert summary(d)[1:] == [("fix", "vcpu 1.1", "suppressed", "budget"),
                              ("fix", "vcpu 2.0", "suppressed", "budget")]
    assert d[1].detail == "4 actions in the last 60 s; budget 4"
    d, mem = decide(HOST, TICK, 60.0, rs, mem)  # the first three have left the window
    assert [x.outcome.value for x in d] == ["act", "act", "act"]
    assert mem.recent == (30.0, 60.0, 60.0, 60.0)


def test_dry_run_neither_claims_nor_spends() -> None:
    rs = rules(vcpu_rule("trial", extra="priority = 99\ndry_run = true"),
               vcpu_rule("real", extra="priority = 1"), budget=3)
    d, mem = decide(HOST, TICK, 0.0, rs, Memory())
    assert summary(d) == [
        ("real", "vcpu 1.0", "act", None), ("real", "vcpu 1.1", "act", None),
        ("real", "vcpu 2.0", "act", None),
        ("trial", "vcpu 1.0", "suppressed", "conflict"),
        ("trial", "vcpu 1.1", "suppressed", "conflict"),
        ("trial", "vcpu 2.0", "suppressed", "conflict"),
    ]
    assert len(mem.recent) == 3
    rs = rules(vcpu_rule("trial", extra="dry_run = true"))
    d, mem = decide(HOST, TICK, 0.0, rs, Memory())
    assert {x.outcome for x in d} == {Outcome.DRY_RUN} and mem.recent == ()


def test_acting_on_a_domain_claims_its_vcpus_and_notes_claim_nothing() -> None:
    domain_rule = '''[[rule]]
name = "move"
on = ["tick"]
for_each = "domain"
when = "domain.off_node_vcpus > 0"
priority = 5
[rule.action]
type = "domain.set_soft"
domid = "domain.domid"
nodes = "{1 - domain.home_node}"
'''
    note_rule = '''[[rule]]
name = "say"
on = ["tick"]
for_each = "vcpu"
when = "not vcpu.on_soft"
priority = 9
[rule.action]
type = "note"
message = "f'{vcpu.domid}.{vcpu.id} is off'"
'''
    d, _ = decide(HOST, TICK, 0.0, rules(domain_rule, note_rule, vcpu_rule("fix")), Memory())
    assert summary(d) == [
        ("say", "vcpu 1.0", "act", None), ("say", "vcpu 1.1", "act", None),
        ("say", "vcpu 2.0", "act", None),
        ("move", "domain 1", "act", None), ("move", "domain 2", "act", None),
        ("fix", "vcpu 1.0", "suppressed", "conflict"),
        ("fix", "vcpu 1.1", "suppressed", "conflict"),
        ("fix", "vcpu 2.0", "suppressed", "conflict"),
    ]
    assert d[0].action == Note("1.0 is off")
    assert d[3].action == SetSoftAffinity(domid=1, nodes=frozenset({1}))
    assert d[5].detail == "lost to rule 'move' (higher priority 5) acting on domain 1"


def test_dead_band_switches_on_at_start_and_off_at_stop() -> None:
    band = '''[[rule]]
name = "band"
on = ["tick"]
for_each = "node"
start = "node.load >= 0.75"
stop = "node.load <= 0.25"
[rule.action]
type = "note"
message = "f'node {node.id} busy'"
'''
    rs = rules(band)
    m = HostModel({"nodes": 1, "cpus": 4}, [{"domid": 1, "vcpus": 4, "rate": 0.5}])
    loads = [0.5, 0.8, 0.5, 0.3, 0.2, 0.5, 0.75]
    active = []
    state: HostView | None = None
    mem = Memory()
    for t, load in enumerate(loads):
        m.apply({"domain": 1, "rate": load})
        state = m.observe(float(t), state)
        d, mem = decide(state, TICK, float(t), rs, mem)
        active.append(bool(d))
    assert active == [False, True, True, True, False, False, True]
    d, _ = decide(state, TICK, 7.0, rs, mem)
    assert [str(s) for s in d[0].trace] == [
        "node.load <= 0.25  [0.75, 0.25] -> False",
        "dead band  [] -> 'on; stop not met'",
    ]


def test_a_with_finder_that_finds_nothing_means_no_match() -> None:
    swap = '''[[rule]]
name = "swap"
on = ["tick"]
for_each = "vcpu"
when = "not vcpu.on_soft"
[rule.with]
partner = "first(v for v in node_at(vcpu.home_node).vcpus if v.home_node == vcpu.node)"
[rule.action]
type = "vcpu.swap"
domid = "vcpu.domid"
vcpu = "vcpu.id"
with_domid = "partner.domid"
with_vcpu = "partner.id"
'''
    d, _ = decide(HOST, TICK, 0.0, rules(swap), Memory())
    # A's vCPUs sit on node 1, B's 2.0 on node 0: 1.0 pairs with 2.0; 2.0 with 1.0 (conflict);
    # 1.1 finds 2.0 too but 2.0 is taken.
    assert summary(d) == [("swap", "vcpu 1.0", "act", None),
                          ("swap", "vcpu 1.1", "suppressed", "conflict"),
                          ("swap", "vcpu 2.0", "suppressed", "conflict")]
    assert [str(s) for s in d[0].trace][-1] == (
        "first(v for v in node_at(vcpu.home_node).vcpus if v.home_node == vcpu.node)"
        "  [] -> 'vcpu 2.0'"
    )
    m = model()
    m.apply({"domain": 2, "vcpu": 0, "run": 1})
    d, _ = decide(m.observe(0.0), TICK, 0.0, rules(swap), Memory())
    assert d == []


@pytest.mark.parametrize(
    ("event", "for_each", "subjects"),
    [
        (make_event("tick"), "vcpu", ["vcpu 1.0", "vcpu 1.1", "vcpu 2.0", "vcpu 2.1"]),
        (make_event("tick"), "node", ["node 0", "node 1"]),
        (make_event("tick"), "host", ["host"]),
        (make_event("domain.create", domid=2), "vcpu", ["vcpu 2.0", "vcpu 2.1"]),
        (make_event("domain.create", domid=2), "domain", ["domain 2"]),
        (make_event("domain.create", domid=2), "node", ["node 0", "node 1"]),
        (make_event("domain.create", domid=9), "domain", []),
        (make_event("vcpu.off_node", domid=2, vcpu=0), "vcpu", ["vcpu 2.0"]),
        (make_event("vcpu.off_node", domid=2, vcpu=0), "domain", ["domain 2"]),
        (make_event("load.change", node=0), "vcpu", ["vcpu 2.0"]),
        (make_event("load.change", node=0), "domain", ["domain 1", "domain 2"]),
        (make_event("load.change", node=1), "node", ["node 1"]),
        (make_event("load.change", domid=1, vcpu=1), "vcpu", ["vcpu 1.1"]),
        (make_event("placement.request", request="r"), "domain",
         ["domain 1", "domain 2"]),
    ],
)
def test_subjects_of_an_event(event: Any, for_each: str, subjects: list[str]) -> None:
    assert [format_key(key_of(s)) for s in subjects_for(HOST, event, for_each)] == subjects


def test_memory_of_gone_subjects_and_rules_is_dropped() -> None:
    rs = rules(vcpu_rule("fix", extra='hold = "5s"\ncooldown = "1m"'))
    m = model()
    s = m.observe(0.0)
    _, mem = decide(s, TICK, 0.0, rs, Memory())
    assert len(mem.pending) == 3
    m.apply({"destroy": 2})
    s = m.observe(1.0, s)
    _, mem2 = decide(s, make_event("domain.destroy", domid=2), 1.0, rs, mem)
    assert set(mem2.pending) == {("fix", ("vcpu", 1, 0)), ("fix", ("vcpu", 1, 1))}
    _, mem3 = decide(s, TICK, 2.0, rules(vcpu_rule("other", when="False")), mem2)
    assert mem3.pending == {} and mem3.last_act == {}


def test_records_are_plain_and_msgpack_ready() -> None:
    rs = rules(vcpu_rule("fix", when="not vcpu.on_soft and vcpu.home_node in domain.soft_nodes"))
    d, _ = decide(HOST, make_event("vcpu.off_node", domid=1, vcpu=0), 0.0, rs, Memory())
    record = d[0].to_record()
    assert record == {
        "rule": "fix", "subject": "vcpu 1.0", "outcome": "act", "reason": None, "detail": "",
        "priority": 0,
        "action": {"type": "vcpu.fixup", "domid": 1, "vcpu": 0, "node": 0, "timeout_s": 2.0,
                   "settle_s": 10.0},
        "trace": [
            {"text": "vcpu.on_soft", "values": [], "result": False},
            {"text": "vcpu.home_node in domain.soft_nodes", "values": [0, [0]], "result": True},
        ],
    }
    assert msgpack.unpackb(msgpack.packb(record)) == record
    assert str(d[0]) == ("act fix on vcpu 1.0: vcpu.fixup domid=1 vcpu=0 node=0 timeout_s=2 "
                         "settle_s=10")
    assert Reason.HOLD.value == "hold"
