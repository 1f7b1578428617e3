"""``domain.set_hard`` in the rule language: declared, checked at load, decided.

Bad arguments are refused when the rule loads, each error naming the file,
the rule, the key and its line and column; the decision carries a typed
``SetHardAffinity``; it claims the whole domain (a fixup of one of its vCPUs
in the same evaluation loses) and spends the budget like any host change.
"""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from agent.cli.rules_cmd import cmd_check, cmd_fields
from agent.rules import Outcome, Reason, decide, make_event
from agent.rules.actions import ACTIONS, SetHardAffinity, action_record
from agent.rules.decide import Memory
from agent.rules.loader import check_paths, check_sources
from agent.rules.testing import HostModel

RULE = """\
[[rule]]
name = "pin-home"
on = ["tick"]
for_each = "domain"
when = "not domain.is_dom0"
[rule.action]
type = "domain.set_hard"
domid = "domain.domid"
{params}
"""


def errors_for(params: str, tmp_path: Path) -> list[str]:
    path = tmp_path / "r.toml"
    path.write_text(RULE.format(params=params))
    ruleset, errors = check_paths([path])
    assert ruleset is None
    return [str(e) for e in errors]


@pytest.mark.parametrize(("params", "line", "col", "message"), [
    ('nodes = [0]\nduration_s = -2', 10, 14,
     "action.duration_s: parameter 'duration_s' of domain.set_hard must be >= 0; got -2"),
    ("nodes = []", 9, 9, "action.nodes: parameter 'nodes' of domain.set_hard names no node"),
    ("nodes = [0, -1]", 9, 9,
     "action.nodes: parameter 'nodes' of domain.set_hard node id -1 is negative"),
    ('nodes = "home"', 9, 9,
     "action.nodes: 'home' is not a name; node sets are expressions, e.g. "
     'nodes = "[domain.home_node]" or nodes = [0, 1]'),
    ('nodes = [0]\nduration_s = "2s"', 10, 15, "action.duration_s:"),
    ('nodes = "domain.name"', 9, 10, "action.nodes:"),
    ('nodes = [0]\nduraton_s = 2', 10, 1,
     "unknown parameter 'duraton_s' of domain.set_hard; did you mean 'duration_s'?"),
    ("duration_s = 2", 6, 1, "action domain.set_hard needs parameter 'nodes'"),
])
def test_bad_arguments_name_file_rule_key_line_and_column(
    tmp_path: Path, params: str, line: int, col: int, message: str
) -> None:
    errors = errors_for(params, tmp_path)
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"{tmp_path / 'r.toml'}:{line}:{col}: rule 'pin-home': ")
    assert message in errors[0]


def test_every_bad_argument_in_one_check(tmp_path: Path) -> None:
    path = tmp_path / "r.toml"
    path.write_text(RULE.format(params="nodes = []\nduration_s = -1"))
    out = io.StringIO()
    assert cmd_check(argparse.Namespace(paths=[str(path)]), out) == 1
    assert "names no node" in out.getvalue() and "must be >= 0" in out.getvalue()


def test_good_arguments_load_as_literals_and_expressions() -> None:
    for params in ("nodes = [1]", 'nodes = "domain.soft_nodes"\nduration_s = 2.5',
                   'nodes = "[domain.home_node]"\nduration_s = "domain.age_s"'):
        ruleset, errors = check_sources([("r.toml", RULE.format(params=params))])
        assert errors == [] and ruleset is not None, (params, errors)


def test_the_reference_lists_it() -> None:
    spec = ACTIONS["domain.set_hard"]
    assert spec.changes_host
    assert [p.name for p in spec.params.values()] == ["domid", "nodes", "duration_s"]
    assert spec.params["duration_s"].default == 0.0
    out = io.StringIO()
    cmd_fields(argparse.Namespace(json=False), out)
    text = out.getvalue()
    assert "domain.set_hard" in text and "0: for good, until the agent stops" in text


def host() -> HostModel:
    return HostModel({"nodes": 2, "cpus": 4}, [
        {"domid": 0, "name": "Domain-0", "vcpus": 1, "soft": [0]},
        {"domid": 1, "name": "A", "vcpus": 2, "soft": [0], "run": [0, 1]},
        {"domid": 2, "name": "B", "vcpus": 2, "soft": [1]},
    ])


def test_decisions_carry_the_typed_action() -> None:
    text = RULE.format(params='nodes = "[domain.home_node]"\nduration_s = 3')
    ruleset, errors = check_sources([("r.toml", text)])
    assert ruleset is not None, errors
    decisions, _ = decide(host().observe(1.0), make_event("tick"), 1.0, ruleset, Memory())
    assert [(d.outcome, d.action) for d in decisions] == [
        (Outcome.ACT, SetHardAffinity(1, frozenset({0}), 3.0)),
        (Outcome.ACT, SetHardAffinity(2, frozenset({1}), 3.0)),
    ]
    assert action_record(decisions[0].action) == {
        "type": "domain.set_hard", "domid": 1, "nodes": [0], "duration_s": 3.0}


def test_it_claims_the_domain_so_a_fixup_of_its_vcpu_loses() -> None:
    text = RULE.format(params="nodes = [0]").replace("when =", "priority = 5\nwhen =") + """
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
"""
    ruleset, errors = check_sources([("r.toml", text)])
    assert ruleset is not None, errors
    decisions, _ = decide(host().observe(1.0), make_event("tick"), 1.0, ruleset, Memory())
    by = {(d.rule, d.subject): d for d in decisions}
    assert by[("pin-home", ("domain", 1))].outcome is Outcome.ACT
    lost = by[("fix", ("vcpu", 1, 1))]
    assert lost.outcome is Outcome.SUPPRESSED and lost.reason is Reason.CONFLICT


def test_a_dry_run_rule_decides_but_does_not_act() -> None:
    text = RULE.format(params="nodes = [0]").replace('when =', 'dry_run = true\nwhen =')
    ruleset, errors = check_sources([("r.toml", text)])
    assert ruleset is not None, errors
    decisions, _ = decide(host().observe(1.0), make_event("tick"), 1.0, ruleset, Memory())
    assert {d.outcome for d in decisions} == {Outcome.DRY_RUN}
    assert not any(d.acts for d in decisions)
