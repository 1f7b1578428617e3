"""``xnuma demo`` on a shortened seed scenario: the table, the JSON, the PNG."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.cli import demo_cmd
from agent.sim.run import Runner
from agent.sim.scenario import load_scenario, parse_scenario, shipped_scenarios

SCENARIOS = Path(demo_cmd.__file__).resolve().parents[1] / "sim" / "scenarios"


def short_seed(tmp_path: Path) -> Path:
    """seed-abc with its phases shortened: pause A at 1 s, unpause at 2, pause B at 2.5."""
    text = (SCENARIOS / "seed-abc.toml").read_text()
    text = text.replace("duration_s = 30.0", "duration_s = 4.0")
    text = text.replace('name = "seed-abc"', 'name = "seed-abc-short"')
    for old, new in (("at_s = 10.0", "at_s = 1.0"), ("at_s = 20.0", "at_s = 2.0"),
                     ("at_s = 21.0", "at_s = 2.5")):
        assert old in text
        text = text.replace(old, new)
    path = tmp_path / "seed-abc-short.toml"
    path.write_text(text)
    parse_scenario(text, source=str(path))  # still a valid scenario
    return path


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xnuma")
    demo_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["demo", *argv])


@pytest.fixture(scope="module")
def demo_json(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, object], Path]:
    tmp = tmp_path_factory.mktemp("demo")
    png = tmp / "demo.png"
    args = parse(["--json", "--scenario", str(short_seed(tmp)), "--plot", str(png)])
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert demo_cmd.run(args) == 0
    return json.loads(out.getvalue()), png


def test_json_has_the_required_keys_and_the_runs_as_xnuma_sim_prints_them(
    demo_json: tuple[dict[str, object], Path],
) -> None:
    doc, _ = demo_json
    assert list(doc)[:3] == ["scenario", "scheduler", "runs"]
    assert doc["scenario"] == "seed-abc-short" and doc["scheduler"] == "credit1"
    runs = doc["runs"]
    assert isinstance(runs, dict) and set(runs) == {"without_agent", "with_agent"}
    sim_keys = set(Runner(load_scenario("seed-abc").with_overrides(
        seed=None, duration_s=0.05, scheduler=None)).run().to_dict())
    for key, run in runs.items():
        assert set(run) == sim_keys, key
        assert run["agent"] is (key == "with_agent")
    assert runs["without_agent"]["actions"] == {}
    assert runs["with_agent"]["actions"]


def test_json_shows_the_seed_backends_placed_by_the_agent_only(
    demo_json: tuple[dict[str, object], Path],
) -> None:
    doc, _ = demo_json
    runs = doc["runs"]
    assert isinstance(runs, dict)
    # Three threads per guest (blkback, netback's two), floating over dom0's vCPUs of
    # both nodes without the agent; each bound to its guest's home node with it.
    assert runs["without_agent"]["backends"] == {"on_home": 0, "total": 9}
    assert runs["with_agent"]["backends"] == {"on_home": 9, "total": 9}
    assert runs["with_agent"]["actions"]["backend.pin"] == 9


def test_json_carries_the_credit2_variant_with_the_checks(
    demo_json: tuple[dict[str, object], Path],
) -> None:
    doc, _ = demo_json
    variants = doc["variants"]
    assert isinstance(variants, list)
    assert [(v["scenario"], v["scheduler"]) for v in variants] == [("seed-abc-short", "credit2")]
    for v in [doc, *variants]:
        checks = v["checks"]
        assert set(checks) >= {"recovered_within_2s", "recovery_s", "pins_made",
                               "misplaced_episodes", "temporary_pins_outstanding",
                               "fair_recovery_s", "efficiency_recovered_within_2s",
                               "fair_efficiency", "jain"}
        assert len(checks["recovery_s"]) == 3 and len(checks["fair_recovery_s"]) == 3
        for run in v["runs"].values():
            for phase in run["phases"]:
                assert 0.0 <= phase["fair_efficiency"] <= 1.0
                assert 0.0 < phase["jain"] <= 1.0


def test_the_short_seed_recovers_with_the_agent(
    demo_json: tuple[dict[str, object], Path],
) -> None:
    doc, _ = demo_json
    checks = doc["checks"]
    # The bar is fair efficiency: recovered within 2 s after every event.
    assert checks["recovered_within_2s"] is True
    assert all(r is not None and r <= 2.0 for r in checks["fair_recovery_s"])
    assert checks["temporary_pins_outstanding"] == 0
    assert checks["pins_within_misplaced_plus_10pct"] is True
    for key in ("efficiency", "fair_efficiency"):
        assert checks[key]["with_agent"] > checks[key]["without_agent"], key


def test_the_png_is_written(demo_json: tuple[dict[str, object], Path]) -> None:
    _, png = demo_json
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert png.stat().st_size > 10_000


def test_the_table_puts_both_runs_side_by_side(tmp_path: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    args = parse(["--scenario", str(short_seed(tmp_path)), "--plot", "", "--no-variants",
                  "--jobs", "1"])
    assert demo_cmd.run(args) == 0
    out = capsys.readouterr().out
    assert "without the agent | with the agent" in out
    for phase in ("all running", "A paused", "A back", "B paused"):
        assert phase in out
    assert "recovery after each event" in out and "unpause A" in out
    assert "fair efficiency" in out and "Jain" in out and "CPU / fair share (s)" in out
    assert "agent actions:" in out and "outstanding at the end: 0" in out
    assert "dom0 backend threads on their guest's home node at the end: 0 of 9 -> 9 of 9" in out
    assert "variant" not in out


def test_the_default_variants_of_the_seed_are_credit2_and_the_4_node_host() -> None:
    assert "seed-abc-4node" in shipped_scenarios()
    assert demo_cmd._variants("seed-abc", None) == [("seed-abc", "credit2"),
                                                    ("seed-abc-4node", None)]
    assert demo_cmd._variants("seed-abc", "credit2") == [("seed-abc", "credit1"),
                                                         ("seed-abc-4node", "credit2")]


def test_a_bad_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert demo_cmd.run(parse(["--scenario", "no-such-scenario", "--plot", ""])) == 2
    assert "no-such-scenario" in capsys.readouterr().err
