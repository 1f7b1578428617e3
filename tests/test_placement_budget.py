"""A placement reserves memory and changes nothing on the host: its decisions spend
none of the rules' action budget, so a boot storm's requests are all answered and
the fixups keep theirs."""

from __future__ import annotations

from pathlib import Path

from agent.rules.actions import ACTIONS, Note, PlaceDomain, VcpuFixup
from agent.rules.decide import Decision, Memory, decide
from agent.rules.events import Event, make_event
from agent.rules.loader import check_sources
from agent.rules.ruleset import RuleSet
from agent.rules.testing import HostModel

RULES = Path(__file__).resolve().parent.parent / "rules"

FIXUP = '''
[[rule]]
name = "fix"
on = ["tick"]
for_each = "vcpu"
when = "not vcpu.on_soft"
[rule.action]
type = "vcpu.fixup"
domid = "vcpu.domid"
vcpu = "vcpu.id"
node = "vcpu.home_node"
'''


def rules(budget: int) -> RuleSet:
    ruleset, errors = check_sources([
        ("placement.toml", (RULES / "placement.toml").read_text()),
        ("fix.toml", FIXUP),
        ("engine.toml", f"[engine]\nbudget_per_minute = {budget}\n"),
    ])
    assert ruleset is not None, [str(e) for e in errors]
    return ruleset


# Three vCPUs off their soft affinity (A's two on node 1, B's first on node 0).
HOST = HostModel({"nodes": 2, "cpus": 4}, [
    {"domid": 1, "name": "A", "vcpus": 2, "soft": [0], "run": [1, 1]},
    {"domid": 2, "name": "B", "vcpus": 2, "soft": [1], "run": [0, 1]},
]).observe(0.0)


def request(n: int) -> Event:
    return make_event("placement.request", request=f"r{n}", name=f"d{n}", vcpus=2,
                      memory_mib=1024, policy="best-effort", preferred=frozenset())


def outcomes(ds: list[Decision]) -> list[tuple[str, str, str | None]]:
    return [(d.rule, d.outcome.value, d.reason.value if d.reason else None) for d in ds]


def test_only_host_changing_actions_spend_the_budget() -> None:
    assert not ACTIONS[PlaceDomain.TYPE].changes_host
    assert not ACTIONS[Note.TYPE].changes_host
    assert ACTIONS[VcpuFixup.TYPE].changes_host


def test_a_burst_of_requests_is_answered_and_leaves_the_fixups_their_budget() -> None:
    rs, memory = rules(budget=2), Memory()
    # Ten requests at one instant, five times the budget: every one acted on.
    for n in range(10):
        ds, memory = decide(HOST, request(n), 0.0, rs, memory)
        assert outcomes(ds) == [("place-on-request", "act", None)]
    # The fixups still have their whole budget: two act, the third is over it.
    ds, memory = decide(HOST, make_event("tick"), 0.5, rs, memory)
    assert outcomes(ds) == [("fix", "act", None), ("fix", "act", None),
                            ("fix", "suppressed", "budget")]
    # And with the budget spent by fixups, a request is still answered.
    ds, memory = decide(HOST, request(10), 1.0, rs, memory)
    assert outcomes(ds) == [("place-on-request", "act", None)]
