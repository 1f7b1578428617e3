"""``xnuma sim``: run a scenario on the simulated host and report what it was worth."""

from __future__ import annotations

import argparse
import math
import sys

from agent.sim.scenario import SCHEDULERS, ScenarioError, load_scenario, shipped_scenarios

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2


def _seed(text: str) -> int:
    try:
        value = int(text, 10)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a whole number >= 0, got {text!r}")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected seconds > 0, got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "sim",
        help="run a scenario on the simulated Xen host",
        description="Run a scenario on the simulated Xen host (with --agent, the xnuma agent "
        "beside it) and print, per "
        "phase, NUMA locality, efficiency and migrations, then each event's recovery time. "
        f"Shipped scenarios: {', '.join(shipped_scenarios())}.",
    )
    parser.add_argument("scenario", metavar="SCENARIO",
                        help="a scenario file, or the name of a shipped one (e.g. seed-abc)")
    parser.add_argument("--json", action="store_true",
                        help="print one JSON object instead of the tables")
    parser.add_argument("--plot", metavar="FILE.png",
                        help="also draw where each domain's vCPUs ran over time (matplotlib)")
    parser.add_argument("--seed", type=_seed, metavar="N", help="override the scenario's seed")
    parser.add_argument("--duration", type=_seconds, metavar="S",
                        help="override the run's length in simulated seconds")
    parser.add_argument("--scheduler", choices=SCHEDULERS,
                        help="run every cpupool under this scheduler")
    parser.add_argument("--agent", action="store_true",
                        help="run the xnuma agent beside the host (in simulated time)")
    parser.add_argument("--core", choices=("auto", "python", "native"), default="auto",
                        help="the simulator core: the Python model, its C port (same results, "
                        "faster), or auto (native when built; the default)")
    parser.add_argument("--audit-log", metavar="FILE",
                        help="with --agent: write the agent's audit log to FILE")
    parser.set_defaults(func=run)


def _error(message: str) -> None:
    print(f"xnuma sim: error: {message}", file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    from agent.sim.engine import SimError

    try:
        import scipy.optimize  # noqa: F401  (the efficiency LP)
    except ImportError:
        _error("the simulator's metrics need scipy, an optional extra: pip install 'xnuma[sim]'")
        return EXIT_USAGE

    try:
        scenario = load_scenario(args.scenario)
    except ScenarioError as exc:
        for line in str(exc).splitlines():
            _error(line)
        return EXIT_USAGE
    scenario = scenario.with_overrides(seed=args.seed, duration_s=args.duration,
                                       scheduler=args.scheduler)
    if args.audit_log and not args.agent:
        _error("--audit-log needs --agent (only the agent writes an audit log)")
        return EXIT_USAGE
    if args.plot:
        from agent.sim.plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            _error(str(exc))
            return EXIT_USAGE
    try:
        if args.agent:
            from agent.daemon.simhost import AgentSetupError, run_virtual

            try:
                result = run_virtual(scenario, audit_log=args.audit_log, core=args.core).result
            except AgentSetupError as exc:
                _error(str(exc))
                return EXIT_USAGE
        else:
            from agent.daemon.simhost import run_without_agent

            result = run_without_agent(scenario, core=args.core)
    except SimError as exc:  # the host refuses the scenario (e.g. not enough memory)
        _error(f"{scenario.source}: {exc}")
        return EXIT_USAGE
    if args.plot:
        from agent.sim.plot import plot_run

        try:
            plot_run(result, args.plot)
        except OSError as exc:
            _error(f"cannot write {args.plot}: {exc.strerror or exc}")
            return EXIT_FAILED
        print(f"plot written to {args.plot}", file=sys.stderr)
    print(result.to_json() if args.json else result.table())
    return EXIT_OK
