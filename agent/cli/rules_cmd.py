"""``xnuma rules check|test|fields``: the rule author's tools."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from agent.rules.actions import ACTIONS
from agent.rules.catalogue import COMMON_NAMES, FOR_EACH, OBJECT_FIELDS
from agent.rules.events import EVENT_FIELDS, EVENT_TYPES
from agent.rules.expr import FUNCTIONS
from agent.rules.loader import check_paths
from agent.rules.testing import run_paths
from agent.rules.trace import plain

DEFAULT_RULES_DIR = "rules"
DEFAULT_TESTS_DIR = "rules/tests"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = sub.add_parser("rules", help="check, test and look up rule files")
    rules_sub = parser.add_subparsers(dest="rules_command", required=True, metavar="SUBCOMMAND")

    check = rules_sub.add_parser(
        "check", help="check rule files; print every error; exit 1 if there is one"
    )
    check.add_argument(
        "paths", nargs="*", metavar="PATH",
        help=f"rule files or directories (default: {DEFAULT_RULES_DIR})",
    )
    check.set_defaults(func=cmd_check)

    test = rules_sub.add_parser("test", help="run rule test files (*_test.toml)")
    test.add_argument("paths", nargs="*", metavar="FILE",
                      help=f"test files or directories (default: {DEFAULT_TESTS_DIR})")
    test.add_argument("-v", "--verbose", action="store_true",
                      help="show every step's decisions and traces, passing or not")
    test.set_defaults(func=cmd_test)

    fields = rules_sub.add_parser(
        "fields", help="print the events, fields, functions and actions rules can use"
    )
    fields.add_argument("--json", action="store_true", help="as JSON")
    fields.set_defaults(func=cmd_fields)


def cmd_check(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    paths = args.paths or [DEFAULT_RULES_DIR]
    ruleset, errors = check_paths(paths)
    for e in errors:
        print(e, file=out)
    if ruleset is None:
        files = len({e.file for e in errors})
        print(f"{len(errors)} error{'s' * (len(errors) != 1)} in {files} "
              f"file{'s' * (files != 1)}", file=out)
        return 1
    print(f"ok: {len(ruleset.rules)} rules in {len(ruleset.files)} files, "
          f"budget {ruleset.budget_per_minute} actions/min", file=out)
    return 0


def cmd_test(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    results = run_paths(args.paths or [DEFAULT_TESTS_DIR])
    if not results:
        print("no test files found", file=out)
        return 1
    for r in results:
        print(r.report(verbose=args.verbose), file=out)
    failed = sum(1 for r in results if not r.ok)
    print(f"{len(results) - failed} passed, {failed} failed", file=out)
    return 1 if failed else 0


def catalogue_data() -> dict[str, Any]:
    """The catalogue as plain data (what ``fields --json`` prints)."""

    def field_list(specs: Any) -> list[dict[str, str]]:
        return [{"name": f.name, "type": f.type, "unit": f.unit, "doc": f.doc}
                for f in specs.values()]

    return {
        "events": [
            {"type": e.name, "doc": e.doc, "fields": ["type", *e.fields]}
            for e in EVENT_TYPES.values()
        ],
        "for_each": {k: [*v, *COMMON_NAMES] for k, v in FOR_EACH.items()},
        "objects": {
            name: field_list(specs)
            for name, specs in OBJECT_FIELDS.items()
            if name != "event"
        },
        "event_fields": field_list(EVENT_FIELDS),
        "functions": dict(FUNCTIONS),
        "actions": [
            {
                "type": a.type,
                "doc": a.doc,
                "params": [
                    {"name": p.name, "type": p.type, "required": p.required,
                     "default": plain(p.default), "doc": p.doc}
                    for p in a.params.values()
                ],
            }
            for a in ACTIONS.values()
        ],
    }


def cmd_fields(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    data = catalogue_data()
    if args.json:
        json.dump(data, out, indent=2)
        print(file=out)
        return 0
    w = out.write
    w("EVENTS (rule key `on`)\n")
    for e in data["events"]:
        w(f"  {e['type']:<18} {e['doc']}\n")
        w(f"  {'':<18} fields: {', '.join('event.' + f for f in e['fields'])}\n")
    w("\nFOR_EACH (rule key `for_each`) and the names its expressions can use\n")
    for k, names in data["for_each"].items():
        w(f"  {k:<8} {', '.join(names)}\n")
    objects = {**data["objects"], "event": data["event_fields"]}
    width = max(len(f"{n}.{f['name']}") for n, fs in objects.items() for f in fs)
    for name, fields in objects.items():
        w(f"\n{name.upper()}\n")
        for f in fields:
            unit = f" [{f['unit']}]" if f["unit"] else ""
            w(f"  {name + '.' + f['name']:<{width}}  {f['type']:<14} {f['doc']}{unit}\n")
    w("\nFUNCTIONS\n")
    for name, doc in data["functions"].items():
        w(f"  {name:<10} {doc}\n")
    w("\nACTIONS ([rule.action] type = ...)\n")
    for a in data["actions"]:
        w(f"  {a['type']:<16} {a['doc']}\n")
        for p in a["params"]:
            req = "required" if p["required"] else f"default {p['default']!r}"
            w(f"  {'':<16}   {p['name']:<11} {p['type']:<8} {p['doc']} ({req})\n")
    return 0
