"""The ``xnuma`` command line: one subcommand per part of the agent."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable, Sequence

# Each subcommand module offers ``register(subparsers)``; the parser it adds
# carries a ``func(args) -> int`` default that runs it. Modules are imported
# only when needed: `xnuma run` in dom0 must not load the simulator, the
# embedded xenstored or multiprocessing (resident memory).
_SUBCOMMANDS: dict[str, str] = {
    "run": "agent.cli.run_cmd",
    "demo": "agent.cli.demo_cmd",
    "status": "agent.cli.status_cmd",
    "sim": "agent.cli.sim_cmd",
    "rules": "agent.cli.rules_cmd",
    "audit": "agent.cli.audit_cmd",
    "place": "agent.cli.place_cmd",
    "xenstored": "agent.cli.xenstored_cmd",
}

Register = Callable[["argparse._SubParsersAction[argparse.ArgumentParser]"], None]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser with every subcommand, or only the one named ``only``."""
    parser = argparse.ArgumentParser(
        prog="xnuma", description="Event-driven NUMA balancing agent for Xen hosts."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in _SUBCOMMANDS.items():
        if only is None or name == only:
            register: Register = importlib.import_module(module).register
            register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_in = list(sys.argv[1:] if argv is None else argv)
    only = args_in[0] if args_in and args_in[0] in _SUBCOMMANDS else None
    args = build_parser(only).parse_args(args_in)
    func: Callable[[argparse.Namespace], int] = args.func
    try:
        return func(args)
    except BrokenPipeError:
        # `xnuma audit | head`: the reader went away. Quiet, as coreutils are;
        # stdout goes to /dev/null so the interpreter's final flush cannot fail.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


if __name__ == "__main__":
    sys.exit(main())
