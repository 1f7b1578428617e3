"""``xnuma run``: the agent, on a Xen host (``--backend xl``) or the simulator in real time.

Settings come from ``--config FILE`` (default ``/etc/xnuma/xnuma.toml`` when it
exists; see ``agent.daemon.config``), command-line options override them.
SIGTERM (and Ctrl-C) restore every pin the agent holds and exit 0; SIGHUP
reloads the rules. Under systemd (``Type=notify``) it sends READY=1 once it
watches the host, and WATCHDOG=1 pings when asked. It answers placement
requests (``xnuma place``) on ``placement_socket`` and through xenstore, and
pins dom0's backends to their guests' nodes (``agent.daemon.build.standard_hooks``).

With ``--backend sim --scenario NAME`` the simulated host runs in real time
beside the agent, for trying the agent out; when the scenario ends the run's
report is printed. Its files (and its placement socket) default to a scratch
directory and the shipped rules, so it needs no setup.
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import trio

from agent.audit.writer import AuditLogError
from agent.daemon.build import open_agent, shipped_rules_dir, standard_hooks
from agent.daemon.config import BACKENDS, AgentConfig, ConfigError, load
from agent.daemon.loop import Agent
from agent.journal import JournalError
from agent.placement.hooks import PlacementSocketError
from agent.rules import RuleLoadError
from agent.sdnotify import Notifier

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

# The agent cannot start with these; each names the file (or socket) and why.
SETUP_ERRORS = (RuleLoadError, JournalError, AuditLogError, ConfigError, PlacementSocketError)

log = logging.getLogger("xnuma.run")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the agent (a Xen host through xl, or the simulator in real time)",
        description="Run the xnuma agent: watch the host, decide by the rules, act, and "
        "record everything in the audit log. Options override the config file.",
    )
    parser.add_argument("--config", metavar="FILE",
                        help="TOML config (default /etc/xnuma/xnuma.toml if it exists)")
    parser.add_argument("--backend", choices=BACKENDS, help="xl (a Xen host) or sim")
    parser.add_argument("--scenario", metavar="NAME",
                        help="with --backend sim: the scenario to run (e.g. seed-abc)")
    parser.add_argument("--xenstore-socket", metavar="PATH",
                        help="xenstored's socket (default $XENSTORED_PATH, else libxenstore's)")
    parser.add_argument("--placement-socket", metavar="PATH",
                        help="where `xnuma place` asks (default /run/xnuma/placement.sock; "
                        "'' for none: requests through xenstore only)")
    parser.add_argument("--rules-dir", metavar="DIR", help="where the rule files are")
    parser.add_argument("--audit-log", metavar="FILE", help="the audit log ('' for none)")
    parser.add_argument("--journal", metavar="FILE", help="the temporary-pin journal")
    parser.add_argument("--dry-run", action="store_true", default=None,
                        help="decide and record, change nothing")
    parser.add_argument("--poll-interval", type=_seconds, metavar="S",
                        help="seconds between hypervisor polls (default 1)")
    parser.add_argument("--metrics-textfile", metavar="FILE",
                        help="write Prometheus metrics here (node_exporter textfile)")
    parser.add_argument("--metrics-port", type=int, metavar="PORT",
                        help="serve Prometheus metrics on 127.0.0.1:PORT")
    parser.add_argument("--log-level", metavar="LEVEL", help="debug, info, warning, error")
    parser.set_defaults(func=run)


def _error(message: str) -> None:
    print(f"xnuma run: error: {message}", file=sys.stderr)


def config_from(args: argparse.Namespace) -> AgentConfig:
    overrides = {
        "backend": args.backend, "scenario": args.scenario,
        "xenstore_socket": args.xenstore_socket, "rules_dir": args.rules_dir,
        "placement_socket": args.placement_socket,
        "audit_log": args.audit_log, "journal": args.journal, "dry_run": args.dry_run,
        "poll_interval_s": args.poll_interval, "metrics_textfile": args.metrics_textfile,
        "metrics_port": args.metrics_port, "log_level": args.log_level,
    }
    return load(args.config, overrides)


def for_sim(config: AgentConfig, scratch: Path) -> AgentConfig:
    """The simulator needs no setup: settings left at their host defaults point to
    the shipped rules and a scratch journal, with no audit log unless one is named."""
    default = AgentConfig()
    changes: dict[str, object] = {}
    if config.rules_dir == default.rules_dir and not Path(config.rules_dir).exists():
        changes["rules_dir"] = str(shipped_rules_dir())
    if config.journal == default.journal:
        changes["journal"] = str(scratch / "pins.journal")
    if config.audit_log == default.audit_log:
        changes["audit_log"] = None
    if config.placement_socket == default.placement_socket:
        changes["placement_socket"] = str(scratch / "placement.sock")
    return replace(config, **changes)  # type: ignore[arg-type]


def run(args: argparse.Namespace) -> int:
    try:
        config = config_from(args)
    except ConfigError as exc:
        _error(str(exc))
        return EXIT_USAGE
    from agent.logsetup import setup_logging

    setup_logging(config.log_level)
    try:
        with tempfile.TemporaryDirectory(prefix="xnuma-run-") as scratch:
            if config.backend == "sim":
                config = for_sim(config, Path(scratch))
            return trio.run(_main, config)
    except SETUP_ERRORS as exc:
        _error(str(exc))
        return EXIT_USAGE
    except BaseExceptionGroup as group:  # raised inside the agent's nurseries
        setup, rest = group.split(SETUP_ERRORS)
        if setup is None or rest is not None:
            raise
        for leaf in _leaves(setup):
            _error(str(leaf))
        return EXIT_USAGE


def _leaves(group: BaseExceptionGroup[BaseException]) -> list[BaseException]:
    out: list[BaseException] = []
    for exc in group.exceptions:
        out += _leaves(exc) if isinstance(exc, BaseExceptionGroup) else [exc]
    return out


async def _on_signals(get_agent: list[Agent]) -> None:
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async for signum in signals:
            name = signal.Signals(signum).name
            log.info("%s: restoring every pin, then stopping", name)
            for agent in get_agent:
                agent.stop(name)


async def _main(config: AgentConfig) -> int:
    notifier = Notifier()
    agents: list[Agent] = []
    async with trio.open_nursery() as nursery:
        nursery.start_soon(_on_signals, agents)
        if config.backend == "xl":
            await _run_xl(config, notifier, agents)
        else:
            await _run_sim(config, notifier, agents, nursery.cancel_scope)
        nursery.cancel_scope.cancel()
    notifier.close()
    # Stopped by a signal: 0 once every pin is back, 1 if one could not be restored.
    codes = [a.exit_code for a in agents if a.exit_code is not None]
    return max(codes) if codes else EXIT_OK


async def _run_xl(config: AgentConfig, notifier: Notifier, agents: list[Agent]) -> None:
    from agent.hypervisor.xenctrl import open_hypervisor
    from agent.xenstore.transport import default_transport, unix_socket

    transport = unix_socket(config.xenstore_socket) if config.xenstore_socket else (
        default_transport())
    # libxenctrl when it fits the running Xen (a scan costs hypercalls, not four `xl`
    # processes: seconds each under load), else `xl`.
    hypervisor, how = open_hypervisor()
    log.info("observing the host through %s", how)
    from agent.backends.procs import LinuxProcesses

    with open_agent(config, xenstore=transport, notifier=notifier, handle_signals=True,
                    hooks=standard_hooks(config, LinuxProcesses())) as agent:
        agents.append(agent)
        await agent.run(hypervisor)


async def _run_sim(
    config: AgentConfig, notifier: Notifier, agents: list[Agent], scope: trio.CancelScope
) -> None:
    from agent.daemon.simhost import run_with_agent
    from agent.sim.scenario import ScenarioError, load_scenario

    assert config.scenario is not None
    try:
        scenario = load_scenario(config.scenario)
    except ScenarioError as exc:
        raise ConfigError(str(exc)) from None
    print(f"running {scenario.name} in real time ({scenario.duration_s:g} s) with the agent; "
          "Ctrl-C stops", file=sys.stderr)
    if config.placement_socket:
        print(f"placement requests: xnuma place --socket {config.placement_socket} ...",
              file=sys.stderr)
    run = await run_with_agent(scenario, config, notifier=notifier, handle_signals=True,
                               start_delay_s=0.0, on_agent=agents.append,
                               on_stopped=lambda _agent: scope.cancel())
    print(run.result.table())
