"""Rule test files: running them, reporting failures as a diff, bad files."""

from __future__ import annotations

import argparse
import io
import json
from pathlib import Path

import pytest

from agent.cli.rules_cmd import cmd_fields, cmd_test
from agent.rules.catalogue import OBJECT_FIELDS
from agent.rules.events import EVENT_TYPES
from agent.rules.testing import run_file

RULE = '''[[rule]]
name = "fix"
on = ["tick"]
for_each = "vcpu"
when = "not vcpu.on_soft"
hold = "1s"
[rule.action]
type = "vcpu.fixup"
domid = "vcpu.domid"
vcpu = "vcpu.id"
node = "vcpu.home_node"
'''

HEAD = '''rules = ["fix.toml"]
[host]
nodes = 2
cpus = 2
[[domain]]
domid = 4
vcpus = 2
soft = [0]
run = [0, 1]
'''


def write(tmp_path: Path, steps: str, head: str = HEAD) -> Path:
    (tmp_path / "fix.toml").write_text(RULE)
    path = tmp_path / "fix_test.toml"
    path.write_text(head + steps)
    return path


def test_passing_file(tmp_path: Path) -> None:
    path = write(tmp_path, '''
[[step]]
at = 0
event = "tick"
expect = [{ rule = "fix", subject = "vcpu 4.1", outcome = "suppressed", reason = "hold" }]
[[step]]
at = 1
event = "tick"
[[step.expect]]
rule = "fix"
subject = "vcpu 4.1"
outcome = "act"
action = { type = "vcpu.fixup", node = 0 }
''')
    result = run_file(path)
    assert result.ok, result.report()
    assert [len(s.decisions) for s in result.steps] == [1, 1]


def test_failure_is_reported_as_a_difference(tmp_path: Path) -> None:
    path = write(tmp_path, '''
[[step]]
at = 0
event = "tick"
expect = [{ rule = "fix", subject = "vcpu 4.0", outcome = "act" }]
[[step]]
at = 1
event = "tick"
expect = []
''')
    result = run_file(path)
    assert not result.ok
    report = result.report()
    assert report.splitlines() == [
        f"{path}: FAILED (2 of 2 steps)",
        "  step 1 at 0 s, event tick:",
        "  - act fix on vcpu 4.0",
        "    decisions at this step:",
        "      suppressed fix on vcpu 4.1: vcpu.fixup domid=4 vcpu=1 node=0 timeout_s=2 "
        "settle_s=10 (hold: true for 0 s of 1 s)",
        "          vcpu.on_soft  [] -> False",
        "  step 2 at 1 s, event tick:",
        "  + act fix on vcpu 4.1: vcpu.fixup domid=4 vcpu=1 node=0 timeout_s=2 settle_s=10",
        "    decisions at this step:",
        "      act fix on vcpu 4.1: vcpu.fixup domid=4 vcpu=1 node=0 timeout_s=2 settle_s=10",
        "          vcpu.on_soft  [] -> False",
    ]
    out = io.StringIO()
    assert cmd_test(argparse.Namespace(paths=[str(tmp_path)], verbose=False), out) == 1
    assert out.getvalue().endswith("0 passed, 1 failed\n")


def test_wrong_action_parameter_fails(tmp_path: Path) -> None:
    path = write(tmp_path, '''
[[step]]
at = 5
event = "tick"
[[step]]
at = 6
event = "tick"
expect = [{ rule = "fix", subject = "vcpu 4.1", outcome = "act", action = { node = 1 } }]
''')
    result = run_file(path)
    assert not result.ok
    assert "  - act fix on vcpu 4.1 node=1" in result.report().splitlines()


@pytest.mark.parametrize(
    ("steps", "message"),
    [
        ("[[step]]\nat = 0\nevent = 'tick'\nexpect = [{ rule = 'fx', subject = 'host', "
         "outcome = 'act' }]\n", "[[step]] #1 expect #1: no rule named 'fx'; did you mean 'fix'?"),
        ("[[step]]\nat = 0\nevent = 'tick'\nexpect = [{ rule = 'fix', subject = 'cpu 3', "
         "outcome = 'act' }]\n", "bad subject 'cpu 3'"),
        ("[[step]]\nat = 0\nevent = 'tick'\nexpect = [{ rule = 'fix', subject = 'host', "
         "outcome = 'done' }]\n", "outcome 'done' is not one of act, dry-run, suppressed"),
        ("[[step]]\nat = 0\nevent = 'tick'\nexpect = [{ rule = 'fix', subject = 'host', "
         "outcome = 'act', reason = 'hold' }]\n", "only a suppressed decision has a reason"),
        ("[[step]]\nat = 1\nevent = 'tick'\n[[step]]\nat = 0\nevent = 'tick'\n",
         "[[step]] #2: at = 0 is before the previous step"),
        ("[[step]]\nat = 0\nevent = 'tock'\n", "unknown event type 'tock'"),
        ("[[step]]\nat = 0\nevent = { type = 'tick', domid = 3 }\n",
         "event tick has no field 'domid'"),
        ("[[step]]\nat = 0\nwhen = 1\n", "[[step]] #1: unknown key 'when'"),
        ("[[step]]\nat = 0\nset = [{ domain = 9, state = 'paused' }]\n",
         "no domain with domid 9"),
        ("[[step]]\nat = 0\nset = [{ domain = 4, vcpu = 2, run = 0 }]\n",
         "domain 4 has no vCPU 2"),
        ("[[step]]\nat = 0\nset = [{ domain = 4, run = [0, 5] }]\n", "node 5 does not exist"),
        ("", "no [[step]] tables"),
    ],
)
def test_bad_test_files_are_errors_not_crashes(tmp_path: Path, steps: str, message: str) -> None:
    result = run_file(write(tmp_path, steps))
    assert not result.ok
    assert any(message in e for e in result.errors), result.errors


def test_rules_under_test_must_load(tmp_path: Path) -> None:
    (tmp_path / "fix.toml").write_text(RULE.replace("vcpu.on_soft", "vcpu.on_sof"))
    path = tmp_path / "t_test.toml"
    path.write_text(HEAD + "[[step]]\nat = 0\nevent = 'tick'\n")
    (error,) = run_file(path).errors
    assert error.startswith("the rules under test do not load:")
    assert "fix.toml:5:18: rule 'fix': when: unknown field 'on_sof' of vcpu" in error


def test_fields_lists_the_whole_catalogue() -> None:
    out = io.StringIO()
    assert cmd_fields(argparse.Namespace(json=False), out) == 0
    text = out.getvalue()
    for event in EVENT_TYPES:
        assert f"\n  {event} " in text
    for obj, specs in OBJECT_FIELDS.items():
        for name, spec in specs.items():
            assert f"{obj}.{name} " in text and spec.doc in text
    assert "vcpu.run_rate" in text and "[fraction]" in text and "vcpu.fixup" in text
    out = io.StringIO()
    assert cmd_fields(argparse.Namespace(json=True), out) == 0
    data = json.loads(out.getvalue())
    assert [e["type"] for e in data["events"]] == list(EVENT_TYPES)
    assert {f["name"] for f in data["objects"]["vcpu"]} == set(OBJECT_FIELDS["vcpu"])
    assert {"name": "run_rate", "type": "float", "unit": "fraction",
            "doc": OBJECT_FIELDS["vcpu"]["run_rate"].doc} in data["objects"]["vcpu"]


WEIGHT_RULE = '''[[rule]]
name = "heavy"
on = ["tick"]
for_each = "domain"
when = "domain.weight >= 512 and domain.cap == 50"
[rule.action]
type = "note"
message = "'heavy'"
'''


def test_domain_weight_and_cap_reach_the_rules(tmp_path: Path) -> None:
    (tmp_path / "heavy.toml").write_text(WEIGHT_RULE)
    path = tmp_path / "heavy_test.toml"
    path.write_text('''rules = ["heavy.toml"]
[host]
nodes = 2
cpus = 2
[[domain]]
domid = 4
vcpus = 1
soft = [0]
weight = 512
cap = 50
[[domain]]
domid = 5
vcpus = 1
soft = [1]
[[step]]
at = 0
event = "tick"
expect = [{ rule = "heavy", subject = "domain 4", outcome = "act" }]
''')
    result = run_file(path)
    assert result.ok, result.report()


@pytest.mark.parametrize("value", ["0", "70000", "1.5", "true"])
def test_bad_weight_in_a_test_file_is_named(tmp_path: Path, value: str) -> None:
    (tmp_path / "fix.toml").write_text(RULE)
    path = tmp_path / "fix_test.toml"
    path.write_text(HEAD + f"weight = {value}\n")
    result = run_file(path)
    assert not result.ok
    assert [e for e in result.errors if e.startswith("[[domain]] #1 weight: ")], result.errors
