"""``xnuma sim``: arguments, errors and exit codes, output formats, determinism."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from agent.cli import sim_cmd

# A small host and a short run keep these tests quick; the seed scenario itself is
# exercised in test_sim_seed.py.
SMALL = """
name = "small"
duration_s = 0.6
seed = 3
first_phase = "warm"
[host]
[[host.nodes]]
cpus = 2
memory_mib = 2048
[[host.nodes]]
cpus = 2
memory_mib = 2048
[dom0]
vcpus = 1
memory_mib = 256
workload = { kind = "io-like", run_us = 100, block_us = 900 }
[domains.A]
vcpus = 2
memory_mib = 512
soft = "node:0"
memory_nodes = [0]
[domains.B]
vcpus = 2
memory_mib = 512
soft = "node:1"
memory_nodes = [1]
workload = { kind = "bursty", on_ms = 3, off_ms = 2 }
[[timeline]]
at_s = 0.2
action = "pause"
domain = "A"
[[timeline]]
at_s = 0.4
action = "unpause"
domain = "A"
"""


def xnuma(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="xnuma")
    sub = parser.add_subparsers(dest="command", required=True)
    sim_cmd.register(sub)
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code


@pytest.fixture
def small(tmp_path: Path) -> Path:
    path = tmp_path / "small.toml"
    path.write_text(SMALL)
    return path


def test_json_has_the_promised_shape(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert xnuma(["sim", str(small), "--json"]) == 0
    out = capsys.readouterr().out
    doc = json.loads(out)  # exactly one object: json.loads rejects trailing text
    assert doc["scenario"] == "small" and doc["scheduler"] == "credit1"
    assert doc["agent"] is False and doc["actions"] == {}
    assert doc["temporary_pins_outstanding"] == 0
    # The toolstack built A and B with a disk and a NIC each: three dom0 threads
    # apiece, free to run on dom0's one unpinned vCPU anywhere: none on a home node.
    assert doc["backends"] == {"on_home": 0, "total": 6}
    assert isinstance(doc["migrations"], int)
    assert [(p["name"], p["start_s"], p["end_s"]) for p in doc["phases"]] == [
        ("warm", 0.0, 0.2), ("pause A", 0.2, 0.4), ("unpause A", 0.4, 0.6)]
    for phase in doc["phases"]:
        assert 0.0 <= phase["host_locality"] <= 1.0
        assert 0.0 < phase["efficiency"] <= 1.0
        for d in phase["domains"].values():
            assert d["locality"] is None or 0.0 <= d["locality"] <= 1.0
    assert "A" not in doc["phases"][1]["domains"]  # paused: it did not run
    assert [(e["at_s"], e["what"]) for e in doc["events"]] == [
        (0.2, "pause A"), (0.4, "unpause A")]
    for event in doc["events"]:
        assert event["recovery_s"] is None or 0 < event["recovery_s"] <= 0.2


def test_same_seed_same_bytes_other_seed_other_bytes(
    small: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    outs = []
    for seed in ("5", "5", "6"):
        assert xnuma(["sim", str(small), "--json", "--seed", seed]) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    # B's bursts are seeded: another seed gives another run.
    assert outs[0] != outs[2]
    assert json.loads(outs[0])["seed"] == 5


def test_table_and_overrides(small: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert xnuma(["sim", str(small), "--duration", "0.3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("small: credit1, seed 3, 0.3 s simulated, no agent")
    assert "phase 'warm': 0.000-0.200 s" in out
    assert "phase 'pause A': 0.200-0.300 s" in out
    assert "unpause A" not in out  # at 0.4 s: after the end
    assert "  A " in out and "efficiency" in out


def test_plot_writes_an_image(small: Path, tmp_path: Path,
                              capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("matplotlib")
    target = tmp_path / "run.png"
    assert xnuma(["sim", str(small), "--plot", str(target), "--json"]) == 0
    captured = capsys.readouterr()
    json.loads(captured.out)
    assert f"plot written to {target}" in captured.err
    assert target.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_missing_file_is_a_usage_error(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    assert xnuma(["sim", str(tmp_path / "nope.toml")]) == 2
    err = capsys.readouterr().err
    assert "xnuma sim: error:" in err and "nope.toml: no such file" in err
    assert "seed-abc" in err  # lists what ships


def test_invalid_file_reports_every_error(tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text(SMALL.replace("vcpus = 2\nmemory_mib = 512\nsoft",
                                 "vcpus = -2\nmemory_mib = 512\nsoft").replace(
        "seed = 3", "seed = 3\ncolour = 'red'"))
    assert xnuma(["sim", str(bad), "--json"]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 3
    assert any(f"{bad}: top level key 'colour': unknown key" in line for line in lines)
    for name in "AB":
        assert any(f"{bad}: [domains.{name}] key 'vcpus': expected an integer between 1" in line
                   for line in lines)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--seed", "x"], "argument --seed: expected a whole number >= 0, got 'x'"),
        (["--seed", "-1"], "argument --seed: expected a whole number >= 0"),
        (["--duration", "0"], "argument --duration: expected seconds > 0, got '0'"),
        (["--duration", "nan"], "argument --duration: expected seconds > 0"),
        (["--scheduler", "rtds"], "argument --scheduler: invalid choice: 'rtds'"),
    ],
)
def test_bad_arguments_exit_2(small: Path, argv: list[str], message: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        xnuma(["sim", str(small), *argv])
    assert info.value.code == 2
    assert message in capsys.readouterr().err


def test_scenario_the_host_refuses_is_a_usage_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Valid as a file, but B cannot get its memory: the host says so.
    big = tmp_path / "big.toml"
    big.write_text(SMALL.replace("memory_mib = 512\nsoft = \"node:1\"",
                                 "memory_mib = 9999\nsoft = \"node:1\""))
    assert xnuma(["sim", str(big)]) == 2
    err = capsys.readouterr().err
    assert f"xnuma sim: error: {big}:" in err and "B" in err


def test_plot_without_matplotlib_is_a_clear_usage_error(
    small: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import matplotlib -> ImportError
    assert xnuma(["sim", str(small), "--plot", str(tmp_path / "x.png")]) == 2
    err = capsys.readouterr().err
    assert "plotting needs matplotlib, an optional extra: pip install 'xnuma[plot]'" in err
    assert not (tmp_path / "x.png").exists()


def test_help_lists_the_shipped_scenarios(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        xnuma(["sim", "--help"])
    assert info.value.code == 0
    assert "seed-abc, seed-abc-4node" in " ".join(capsys.readouterr().out.split())


def test_missing_scipy_is_a_clear_usage_error(
    small: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "scipy.optimize", None)
    assert xnuma(["sim", str(small)]) == 2
    assert "need scipy, an optional extra: pip install 'xnuma[sim]'" in capsys.readouterr().err


@pytest.mark.parametrize("extra", [[], ["--scheduler", "credit2"], ["--agent"]])
def test_both_cores_print_the_same_bytes(
    extra: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    """--core python runs the model as written, --core native its C port: same output."""
    outs = []
    for core in ("python", "native"):
        argv = ["sim", "seed-abc", "--json", "--duration", "12", "--core", core, *extra]
        assert xnuma(argv) == 0
        outs.append(capsys.readouterr().out)
    assert outs[0] == outs[1]
    assert json.loads(outs[0])["duration_s"] == 12.0
