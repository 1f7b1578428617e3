"""``xnuma xenstored --socket PATH``: the embedded xenstored on a unix socket."""

from __future__ import annotations

import argparse
import logging
import signal
import sys

import trio

from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.server import serve_unix

log = logging.getLogger(__name__)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "xenstored",
        help="run the embedded xenstored on a unix socket",
        description=(
            "Serve an in-memory xenstore (the protocol and behaviour of Xen 4.17's C "
            "xenstored) on a unix socket. Every client is a privileged dom0 tool; point "
            "xenstore-utils at it with XENSTORED_PATH. Stops on SIGTERM or SIGINT."
        ),
    )
    parser.add_argument("--socket", required=True, metavar="PATH", help="unix socket to create")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at debug level")
    parser.set_defaults(func=run)


async def _serve(path: str) -> None:
    daemon = XenstoreDaemon()
    with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(serve_unix, daemon, path)
            log.info("xenstored: serving on %s", path)
            async for signum in signals:
                log.info("xenstored: %s, stopping", signal.Signals(signum).name)
                nursery.cancel_scope.cancel()
                break


def _leaves(exc: BaseException) -> list[OSError]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for sub in exc.exceptions for leaf in _leaves(sub)]
    return [exc] if isinstance(exc, OSError) else []


def run(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
        stream=sys.stderr,
    )
    failures: list[OSError] = []
    try:
        trio.run(_serve, args.socket)
    except* OSError as group:
        failures += _leaves(group)
    for exc in failures:
        print(f"xnuma xenstored: cannot serve on {args.socket}: {exc}", file=sys.stderr)
    return 1 if failures else 0
