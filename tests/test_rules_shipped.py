"""The shipped rules pass `xnuma rules check` and their tests pass `xnuma rules test`."""

from __future__ import annotations

import argparse
import io
import subprocess
import sys
import tomllib
from pathlib import Path

from agent.cli.rules_cmd import cmd_check, cmd_test
from agent.rules.loader import load_paths

ROOT = Path(__file__).resolve().parent.parent
RULES = ROOT / "rules"
TESTS = RULES / "tests"


def test_shipped_rules_pass_check() -> None:
    out = io.StringIO()
    assert cmd_check(argparse.Namespace(paths=[str(RULES)]), out) == 0, out.getvalue()
    assert out.getvalue() == "ok: 7 rules in 7 files, budget 600 actions/min\n"


def test_shipped_rule_tests_pass() -> None:
    out = io.StringIO()
    assert cmd_test(argparse.Namespace(paths=[str(TESTS)], verbose=False), out) == 0, \
        out.getvalue()
    assert out.getvalue().endswith("6 passed, 0 failed\n")


def test_every_shipped_rule_file_has_a_test_that_sees_each_rule_act() -> None:
    ruleset = load_paths([RULES])
    acted: set[str] = set()
    for path in TESTS.glob("*_test.toml"):
        doc = tomllib.loads(path.read_text())
        for step in doc.get("step", []):
            acted |= {e["rule"] for e in step.get("expect", []) if e["outcome"] == "act"}
    assert acted == {r.name for r in ruleset.rules}
    for rule_file in RULES.glob("*.toml"):
        if rule_file.name != "engine.toml":
            assert (TESTS / f"{rule_file.stem}_test.toml").is_file(), rule_file


def test_pytest_collects_the_rule_test_files() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(TESTS)],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "6 passed" in proc.stdout


BASELINES = RULES / "baselines"


def test_baseline_rules_pass_check_and_their_tests() -> None:
    out = io.StringIO()
    assert cmd_check(argparse.Namespace(paths=[str(BASELINES)]), out) == 0, out.getvalue()
    assert out.getvalue() == "ok: 2 rules in 2 files, budget 60 actions/min\n"
    out = io.StringIO()
    assert cmd_test(argparse.Namespace(paths=[str(BASELINES / "tests")], verbose=False),
                    out) == 0, out.getvalue()
    assert out.getvalue().endswith("2 passed, 0 failed\n")


def test_each_baseline_names_its_source_and_has_a_test_that_sees_it_act() -> None:
    sources = {"static_pinning": "xl vcpu-pin", "seed_workaround": "seed-numa-balancing-in-xen"}
    for rule_file in sorted(BASELINES.glob("*.toml")):
        header = rule_file.read_text().split("[[rule]]")[0]
        assert "Source of the behaviour" in header and sources[rule_file.stem] in header
        ruleset = load_paths([rule_file])
        doc = tomllib.loads((BASELINES / "tests" / f"{rule_file.stem}_test.toml").read_text())
        acted = {e["rule"] for step in doc["step"] for e in step.get("expect", [])
                 if e["outcome"] == "act"}
        assert acted == {r.name for r in ruleset.rules}


def test_pytest_collects_the_baseline_rule_test_files() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
         str(BASELINES / "tests")],
        cwd=ROOT, capture_output=True, text=True, timeout=300, check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "2 passed" in proc.stdout
