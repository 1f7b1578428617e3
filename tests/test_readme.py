"""README.md stays true: its scenario and rule examples load as they are."""

from __future__ import annotations

from pathlib import Path

from agent.rules.loader import check_sources
from agent.sim.scenario import parse_scenario

README = (Path(__file__).parent.parent / "README.md").read_text()


def _toml_block_starting(marker: str) -> str:
    start = README.index(marker)
    return README[start : README.index("```", start)]


def test_scenario_example_loads() -> None:
    scenario = parse_scenario(_toml_block_starting('name = "example"'), source="README.md")
    assert [d.name for d in scenario.domains][-3:] == ["web", "batch", "late"]
    assert len(scenario.timeline) == 5


def test_rule_example_passes_the_checker() -> None:
    rules, errors = check_sources([("README.md", _toml_block_starting("[[rule]]\nname = "))])
    assert errors == []
    assert rules is not None
