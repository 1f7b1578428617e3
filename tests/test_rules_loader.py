"""Rule files: every error reported with file, rule, line and column."""

from __future__ import annotations

import argparse
import io
from pathlib import Path

import pytest

from agent.cli.rules_cmd import cmd_check
from agent.rules.errors import RuleError, RuleLoadError
from agent.rules.loader import check_paths, check_sources, load_paths, parse_duration

FIVE_ERRORS = '''\
# A rule with five mistakes in it.
[[rule]]
name = "broken"
on = ["tick", "domain.craete"]
for_each = "vcpu"
when = """
    vcpu.run_rat > 0.5
    and domain.name == 3
    and __import__("os") == 1
"""
colour = "red"

[rule.action]
type = "vcpu.fixup"
domid = "vcpu.domid"
vcpu = "vcpu.id"
node = "vcpu.home_node"
'''


def test_five_errors_in_one_check_each_with_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "broken.toml"
    path.write_text(FIVE_ERRORS)
    ruleset, errors = check_paths([path])
    assert ruleset is None
    got = [(e.line, e.col, e.rule) for e in errors]
    assert got == [
        (4, 15, "broken"),  # "domain.craete"
        (7, 10, "broken"),  # run_rat
        (8, 9, "broken"),  # domain.name == 3
        (9, 9, "broken"),  # __import__
        (11, 1, "broken"),  # colour
    ]
    messages = [e.message for e in errors]
    assert messages[0] == (
        "unknown event type 'domain.craete'; did you mean 'domain.create'? (types: "
        "domain.create, domain.destroy, domain.pause, domain.unpause, load.change, "
        "vcpu.off_node, backend.appear, placement.request, tick)"
    )
    assert messages[1] == "when: unknown field 'run_rat' of vcpu; did you mean 'run_rate'?"
    assert messages[2] == (
        "when: type mismatch: 'domain.name' is str but '3' is int; '==' compares two "
        "numbers, two strings, two bools or two sets"
    )
    assert messages[3].startswith(
        "when: call of '__import__' is forbidden: conditions cannot import, run code or "
        "reach Python objects"
    )
    assert messages[4].startswith("unknown key 'colour' (keys: name, description, on,")
    # The positions point at the offending text itself.
    lines = FIVE_ERRORS.splitlines()
    for e, token in zip(errors, ('"domain.craete"', "run_rat", "domain.name", "__import__",
                                 "colour"), strict=True):
        assert lines[e.line - 1][e.col - 1:].startswith(token)

    out = io.StringIO()
    assert cmd_check(argparse.Namespace(paths=[str(path)]), out) == 1
    printed = out.getvalue().splitlines()
    assert printed[:5] == [str(e) for e in errors]
    assert printed[0].startswith(f"{path}:4:15: rule 'broken': unknown event type")
    assert printed[5] == "5 errors in 1 file"


def rule_text(when: str, extra: str = "") -> str:
    return f'''[[rule]]
name = "r"
on = ["tick"]
for_each = "vcpu"
when = {when}
{extra}
[rule.action]
type = "vcpu.fixup"
domid = "vcpu.domid"
vcpu = "vcpu.id"
node = "vcpu.home_node"
'''


def errors_in(text: str) -> list[RuleError]:
    ruleset, errors = check_sources([("f.toml", text)])
    assert ruleset is None
    return errors


@pytest.mark.parametrize(
    ("when", "line", "col"),
    [
        ('"vcpu.bad == 1"', 5, 14),
        ("'vcpu.bad == 1'", 5, 14),
        # escapes shift the column: \" is two characters in the file, one in the string
        ('"domain.name == \\"x\\" and vcpu.bad == 1"', 5, 39),
        ('"domain.name == \\u0022x\\u0022 and vcpu.bad == 1"', 5, 47),
        ('"""vcpu.node == 1 and\n    vcpu.bad == 1"""', 6, 10),
        ('"""\nvcpu.node == 1 and vcpu.bad == 1"""', 6, 25),
        ("'''\n  vcpu.node == 1\n  and vcpu.bad == 1'''", 7, 12),
        # a line-ending backslash joins lines in a basic multi-line string
        ('"""vcpu.node == 1 \\\n      and vcpu.bad == 1"""', 6, 16),
    ],
)
def test_expression_positions_map_through_toml_strings(when: str, line: int, col: int) -> None:
    (e,) = errors_in(rule_text(when))
    assert "unknown field 'bad' of vcpu" in e.message
    assert (e.line, e.col) == (line, col)
    assert rule_text(when).splitlines()[line - 1][col - 1:].startswith("bad")


def test_syntax_error_position_in_file() -> None:
    text = rule_text('"vcpu.node == 1 and and vcpu.on_soft"')
    (e,) = errors_in(text)
    assert e.message.startswith("when: syntax error")
    assert (e.line, e.col) == (5, 28)
    assert text.splitlines()[4][27:] == 'and vcpu.on_soft"'  # the second 'and'


def test_toml_syntax_error_has_its_position() -> None:
    (e,) = errors_in('[[rule]]\nname = "x\n')
    assert e.message.startswith("TOML syntax:") and e.line == 2


def test_action_parameter_errors_point_into_the_parameter() -> None:
    text = rule_text('"vcpu.run_rate > 0.5"').replace(
        'node = "vcpu.home_node"', 'node = "vcpu.home"\ntimeout_s = "\'soon\'"\nbogus = 1'
    )
    errors = errors_in(text)
    assert [(e.line, e.col) for e in errors] == [(11, 14), (12, 14), (13, 1)]
    assert errors[0].message == ("action.node: unknown field 'home' of vcpu; did you mean "
                                 "'home_node'?")
    assert errors[1].message == "action.timeout_s: expected float, but this is str"
    assert errors[2].message.startswith("unknown parameter 'bogus' of vcpu.fixup")
    assert text.splitlines()[10][13:].startswith("home")


def test_inline_action_table_positions() -> None:
    text = '''[[rule]]
name = "r"
on = ["tick"]
for_each = "domain"
action = { type = "domain.set_soft", domid = "domain.domid", nodes = "{domain.home}" }
'''
    (e,) = errors_in(text)
    assert (e.line, e.col) == (5, 79)
    assert text.splitlines()[4][78:].startswith("home}")
    assert "unknown field 'home' of domain; did you mean 'home_node'?" in e.message


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ("hold = \"2 parsecs\"", "hold must be seconds"),
        ("cooldown = -1", "cooldown must be seconds"),
        ("priority = 1.5", "priority must be an integer"),
        ("dry_run = \"yes\"", "dry_run must be true or false"),
        ("start = \"vcpu.on_soft\"",
         "a dead band needs both 'start' and 'stop'; 'stop' is missing"),
        ("description = 3", "description must be a string"),
        ("[rule.with]\npartner = \"vcpu.node\"", "a [rule.with] entry is first("),
        ("[rule.with]\nhost = \"first(v for v in domain.vcpus)\"", "must be a new identifier"),
    ],
)
def test_rule_key_errors(extra: str, fragment: str) -> None:
    if extra.startswith("[rule.with]"):  # a sub-table after [rule.action]: same rule
        text = rule_text('"vcpu.on_soft"') + extra + "\n"
    else:
        text = rule_text('"vcpu.on_soft"', extra)
    errors = errors_in(text)
    assert any(fragment in e.message for e in errors), errors


def test_rule_shape_errors_are_all_reported() -> None:
    text = '''[[rule]]
on = "tick"
for_each = "vcpus"

[[rule]]
name = "Bad Name"
on = ["tick"]
for_each = "host"
[rule.action]
type = "vcpu.fixx"

[[rule]]
name = "ok-but-incomplete"
on = ["tick"]
for_each = "vcpu"
[rule.action]
type = "vcpu.fixup"
domid = [1, 2]
'''
    errors = errors_in(text)
    messages = [f"{e.line}:{e.col} {e.rule} {e.message}" for e in errors]
    expected = [
        "1:1 #1 missing 'name': a rule needs a unique name of lower-case letters, digits, "
        "'-', '_' and '.'",
        "1:1 #1 missing [rule.action] table; type = one of vcpu.fixup, vcpu.swap, "
        "domain.set_soft, domain.set_hard, backend.pin, domain.place, note",
        "2:6 #1 on must be a non-empty list of event types, e.g. on = [\"tick\"]; types: ",
        "3:12 #1 for_each is 'vcpus', not one of vcpu, domain, node, backend, host; did you "
        "mean 'vcpu'?",
        "6:8 Bad Name bad name 'Bad Name': a rule needs",
        "10:8 Bad Name action type 'vcpu.fixx' is not one of vcpu.fixup, vcpu.swap, "
        "domain.set_soft, domain.set_hard, backend.pin, domain.place, note; did you mean "
        "'vcpu.fixup'?",
        "16:1 ok-but-incomplete action vcpu.fixup needs parameter 'node' (int: node id)",
        "16:1 ok-but-incomplete action vcpu.fixup needs parameter 'vcpu' (int: vCPU id)",
        "18:9 ok-but-incomplete parameter 'domid' of vcpu.fixup is int; got [1, 2]",
    ]
    assert len(messages) == len(expected), messages
    for got, want in zip(messages, expected, strict=True):
        assert got.startswith(want), (got, want)


def test_with_bindings_are_not_visible_in_when() -> None:
    binding = '[rule.with]\npartner = "first(v for v in domain.vcpus)"\n'
    text = rule_text('"partner.on_soft"') + binding
    (e,) = errors_in(text)
    assert e.message.startswith("when: 'partner' is bound in [rule.with]")


def test_event_fields_checked_against_every_listed_event() -> None:
    text = rule_text('"event.off_s > 3"').replace('on = ["tick"]', 'on = ["vcpu.off_node", "tick"]')
    (e,) = errors_in(text)
    assert e.message == ("when: event field 'off_s' is not carried by every event this rule "
                         "is on (tick lacks it)")


def test_file_level_errors() -> None:
    errors = errors_in('rules = 1\n[engine]\nbudget_per_minute = -3\nburst = 2\n')
    assert [(e.line, e.col) for e in errors] == [(1, 1), (3, 21), (4, 1)]
    assert "unknown key 'rules'; did you mean 'rule'?" in errors[0].message
    assert "budget_per_minute must be an integer >= 0" in errors[1].message
    assert "unknown key 'burst' in [engine]" in errors[2].message


def test_names_and_engine_are_checked_across_files(tmp_path: Path) -> None:
    good = rule_text('"vcpu.on_soft"')
    (tmp_path / "a.toml").write_text(good + "[engine]\nbudget_per_minute = 10\n")
    (tmp_path / "b.toml").write_text(good + "[engine]\nbudget_per_minute = 20\n")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "ignored.toml").write_text("this is not toml")
    ruleset, errors = check_paths([tmp_path])
    assert ruleset is None
    assert [(Path(e.file).name, e.line, e.message.split(" at ")[0]) for e in errors] == [
        ("b.toml", 2, "rule name already used"),
        ("b.toml", 12, "[engine] is already set in " + str(tmp_path / "a.toml") + "; the "
         "budget is host-wide, set it once"),
    ]


def test_duplicate_names_within_a_file() -> None:
    text = rule_text('"vcpu.on_soft"')
    errors = errors_in(text + "\n" + text)
    assert [str(e) for e in errors] == [
        "f.toml:14:8: rule 'r': rule name already used at f.toml:2"
    ]


def test_missing_path_and_load_error(tmp_path: Path) -> None:
    with pytest.raises(RuleLoadError) as info:
        load_paths([tmp_path / "nope"])
    assert str(info.value) == f"{tmp_path / 'nope'}: no such file or directory"


def test_a_good_set_loads(tmp_path: Path) -> None:
    (tmp_path / "a.toml").write_text(
        rule_text('"not vcpu.on_soft"', 'hold = "1m30s"\ncooldown = 5\npriority = 3\n'
                                        'dry_run = true')
    )
    ruleset = load_paths([tmp_path])
    (rule,) = ruleset.rules
    assert (rule.hold_s, rule.cooldown_s, rule.priority, rule.dry_run) == (90.0, 5.0, 3, True)
    assert ruleset.by_event == {"tick": (rule,)}
    assert len(ruleset.digest) == 64 and ruleset.budget_per_minute == 60


@pytest.mark.parametrize(
    ("value", "seconds"),
    [(3, 3.0), (2.5, 2.5), ("30s", 30.0), ("500ms", 0.5), ("2m", 120.0), ("1h", 3600.0),
     ("1m30s", 90.0), ("1 m 30 s", 90.0), ("0", None), ("", None), ("s", None), (-1, None),
     (True, None), ("1d", None), ("30s10", None)],
)
def test_parse_duration(value: object, seconds: float | None) -> None:
    assert parse_duration(value) == seconds
