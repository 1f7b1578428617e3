"""``xnuma run``: options over the config file, and a real process stopped by SIGTERM.

The process runs the simulator in real time (``--backend sim``) with the agent,
under a notify socket the test holds: READY=1 says it is watching; it answers a
placement request on its socket and pins the guests' backends; SIGTERM then
restores every pin it holds and it exits 0, as its audit log shows.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

from agent.audit.reader import read_entries
from agent.cli import run_cmd
from agent.daemon.config import AgentConfig, ConfigError
from agent.journal import PinJournal
from agent.placement import client

ROOT = Path(run_cmd.__file__).resolve().parents[2]
MAIN = """
import argparse, sys
from agent.cli import run_cmd
parser = argparse.ArgumentParser(prog="xnuma")
run_cmd.register(parser.add_subparsers(dest="command"))
args = parser.parse_args(["run", *sys.argv[1:]])
sys.exit(args.func(args))
"""


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xnuma")
    run_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["run", *argv])


def test_options_override_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "xnuma.toml"
    conf.write_text('poll_interval_s = 2\nrules_dir = "/srv/rules"\ndry_run = false\n')
    config = run_cmd.config_from(parse(["--config", str(conf), "--poll-interval", "0.5",
                                        "--dry-run"]))
    assert config.poll_interval_s == 0.5 and config.dry_run
    assert config.rules_dir == "/srv/rules"
    unset = run_cmd.config_from(parse(["--config", str(conf)]))
    assert unset.poll_interval_s == 2.0 and not unset.dry_run
    assert unset.placement_socket == "/run/xnuma/placement.sock"
    conf.write_text('placement_socket = "/srv/p.sock"\n')
    assert run_cmd.config_from(parse(["--config", str(conf)])).placement_socket == "/srv/p.sock"
    none = run_cmd.config_from(parse(["--config", str(conf), "--placement-socket", ""]))
    assert none.placement_socket is None


def test_a_socket_or_rules_it_cannot_use_stop_it_at_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    common = ["--backend", "sim", "--scenario", "seed-abc", "--journal",
              str(tmp_path / "pins.journal")]
    assert run_cmd.run(parse([*common, "--placement-socket", f"{blocker}/p.sock"])) == 2
    err = capsys.readouterr().err
    assert f"error: placement socket {blocker}/p.sock: cannot listen" in err
    assert run_cmd.run(parse([*common, "--rules-dir", str(tmp_path / "none")])) == 2
    assert f"error: {tmp_path / 'none'}: no such file" in capsys.readouterr().err


def test_a_bad_config_is_a_usage_error(tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    conf = tmp_path / "xnuma.toml"
    conf.write_text("pol_interval_s = 2\n")
    assert run_cmd.run(parse(["--config", str(conf)])) == 2
    err = capsys.readouterr().err
    assert str(conf) in err and "'pol_interval_s'" in err
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    with pytest.raises(ConfigError, match="needs a scenario"):
        run_cmd.config_from(parse(["--config", str(empty), "--backend", "sim"]))


def test_the_simulator_needs_no_setup(tmp_path: Path) -> None:
    config = run_cmd.for_sim(AgentConfig(backend="sim", scenario="seed-abc"), tmp_path)
    assert config.journal == str(tmp_path / "pins.journal")
    assert config.audit_log is None
    assert Path(config.rules_dir, "affinity_fixup.toml").exists()
    named = run_cmd.for_sim(AgentConfig(backend="sim", scenario="x", audit_log="/a.log",
                                        journal="/j"), tmp_path)
    assert (named.audit_log, named.journal) == ("/a.log", "/j")
    assert config.placement_socket == str(tmp_path / "placement.sock")
    assert run_cmd.for_sim(AgentConfig(backend="sim", scenario="x", placement_socket=None),
                           tmp_path).placement_socket is None


def _receive(sock: socket.socket, want: str, deadline: float) -> list[str]:
    got: list[str] = []
    while time.monotonic() < deadline:
        try:
            got.append(sock.recv(4096).decode())
        except TimeoutError:
            continue
        if any(want in g for g in got):
            return got
    raise AssertionError(f"no {want!r} from the agent; got {got}")


def test_sigterm_restores_every_pin_and_exits_0(tmp_path: Path) -> None:
    notify = tmp_path / "notify"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(notify))
    sock.settimeout(0.5)
    audit, journal = tmp_path / "audit.log", tmp_path / "pins.journal"
    metrics = tmp_path / "xnuma.prom"
    placement = tmp_path / "placement.sock"
    env = {**os.environ, "NOTIFY_SOCKET": str(notify), "WATCHDOG_USEC": "400000",
           "PYTHONPATH": str(ROOT)}
    env.pop("WATCHDOG_PID", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", MAIN, "--backend", "sim", "--scenario", "seed-abc",
         "--audit-log", str(audit), "--journal", str(journal), "--poll-interval", "0.1",
         "--metrics-textfile", str(metrics), "--placement-socket", str(placement)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=tmp_path,
    )
    try:
        got = _receive(sock, "READY=1", time.monotonic() + 60)
        got += _receive(sock, "WATCHDOG=1", time.monotonic() + 30)
        reply = trio.run(lambda: client.place(str(placement), {
            "vcpus": 2, "memory_mib": 1024, "name": "web", "preferred": [1]}))
        assert reply.ok and reply.nodes == (1,), reply
        # Let it pin: in the first phase C's vCPUs run on A's node at a cost.
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if any(e.kind == "action" and e.get("type") == "set_hard"
                   for e in read_entries(audit)):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGHUP)  # reload the rules
        got += _receive(sock, "RELOADING=1", time.monotonic() + 30)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, proc.stderr.read() if proc.stderr else ""
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        sock.close()
    assert got[0].startswith("READY=1")
    entries = list(read_entries(audit))
    assert entries[0].kind == "agent_start" and entries[-1].kind == "agent_stop"
    assert entries[-1].get("reason") == "SIGTERM" and entries[-1].get("exit_code") == 0
    made = [e for e in entries if e.kind == "action" and e.get("type") in
            ("set_hard", "narrow_hard") and e.get("outcome") == "ok"]
    assert made
    stop_restores = [e for e in entries if e.kind == "action" and e.get("type") == "restore_hard"
                     and str(e.get("params", {}).get("why", "")).startswith("agent stopping")]
    assert stop_restores and all(e.get("outcome") == "ok" for e in stop_restores)
    with PinJournal(journal) as j:
        assert j.outstanding() == []
    assert not placement.exists()
    (place,) = [e for e in entries if e.kind == "action" and e.get("type") == "domain.place"]
    assert place.get("outcome") == "ok" and place.get("source") == "socket"
    pins = [e for e in entries if e.kind == "action" and e.get("type") == "backend.pin"]
    assert len(pins) == 9 and all(e.get("outcome") == "ok" for e in pins)
    (reload,) = [e for e in entries if e.kind == "rule_reload"]
    assert reload.get("ok") is True and reload.get("cause") == "sighup"
    assert any(f["path"].endswith("affinity_fixup.toml") for f in reload.get("files"))
    text = metrics.read_text()
    assert 'xnuma_decisions_total{rule="affinity-fixup",outcome="act"}' in text
    assert "xnuma_temporary_pins_outstanding 0" in text
