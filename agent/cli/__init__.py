"""The ``xnuma`` command line: one subcommand per part of the agent."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from agent.cli import (
    audit_cmd,
    demo_cmd,
    place_cmd,
    rules_cmd,
    run_cmd,
    sim_cmd,
    status_cmd,
    xenstored_cmd,
)

# Each subcommand module offers ``register(subparsers)``; the parser it adds
# carries a ``func(args) -> int`` default that runs it.
_SUBCOMMANDS: tuple[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None], ...] = (
    run_cmd.register,
    demo_cmd.register,
    status_cmd.register,
    sim_cmd.register,
    rules_cmd.register,
    audit_cmd.register,
    place_cmd.register,
    xenstored_cmd.register,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="xnuma", description="Event-driven NUMA balancing agent for Xen hosts."
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for register in _SUBCOMMANDS:
        register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
