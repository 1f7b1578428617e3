"""``xnuma sim SCENARIO --agent [--audit-log FILE]``: any scenario with the agent."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.audit.reader import read_entries
from agent.audit.verify import verify
from agent.cli import sim_cmd


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xnuma")
    sim_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["sim", *argv])


def test_sim_with_the_agent_writes_its_audit_log(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    log = tmp_path / "audit.log"
    args = parse(["seed-abc", "--agent", "--audit-log", str(log), "--duration", "1", "--json"])
    assert sim_cmd.run(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["agent"] is True and doc["actions"]["vcpu.fixup"] > 0
    assert doc["actions"]["backend.pin"] == 9
    assert doc["backends"] == {"on_home": 9, "total": 9}
    entries = list(read_entries(log))
    kinds = {e.kind for e in entries}
    assert {"agent_start", "event", "decision", "action", "agent_stop"} <= kinds
    assert entries[0].mono is not None and entries[0].mono < 0.2  # simulated seconds
    assert verify(log).ok


def test_an_audit_log_without_the_agent_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert sim_cmd.run(parse(["seed-abc", "--audit-log", str(tmp_path / "a.log")])) == 2
    assert "--audit-log needs --agent" in capsys.readouterr().err
