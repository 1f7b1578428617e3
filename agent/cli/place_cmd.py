"""``xnuma place``: ask the agent where to build a new domain, and reserve it there."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import trio

from agent.hypervisor.model import format_cpuset
from agent.placement import client
from agent.placement.request import (
    MAX_NODES,
    MAX_VCPUS,
    PlacementReply,
    RequestError,
    parse_memory,
    parse_nodes,
)
from agent.placement.server import DEFAULT_SOCKET, SOCKET_ENV, socket_path

EXIT_OK = 0
EXIT_FAILED = 1  # refused, or the agent could not be asked
EXIT_USAGE = 2


def _vcpus(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= MAX_VCPUS:
        raise argparse.ArgumentTypeError(f"expected a whole number 1..{MAX_VCPUS}, got {text!r}")
    return int(text)


def _memory(text: str) -> int:
    try:
        return parse_memory(text)
    except RequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _nodes(text: str) -> frozenset[int]:
    try:
        return parse_nodes(text)
    except RequestError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _max_nodes(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= MAX_NODES:
        raise argparse.ArgumentTypeError(f"expected 0..{MAX_NODES}, got {text!r}")
    return int(text)


def _timeout(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 3600:
        raise argparse.ArgumentTypeError(f"expected seconds in (0, 3600], got {text!r}")
    return value


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "place",
        help="ask the agent where to build a new domain (and reserve its memory)",
        description="Ask the running agent which NUMA nodes a new domain should use. The "
        "memory is reserved there until the domain appears (matched by --uuid, else --name) "
        "or the reservation expires, so that domains built in parallel do not race for the "
        "same node. Prints the nodes and their pCPUs (for the domain's soft affinity, or "
        "xl's cpus_soft=). Exit status: 0 placed, 1 refused or agent unreachable, 2 usage.",
    )
    parser.add_argument("--vcpus", type=_vcpus, metavar="N", help="vCPUs of the new domain")
    parser.add_argument("--memory", type=_memory, metavar="SIZE",
                        help="its memory: 16G, 512M, or MiB")
    parser.add_argument("--strict", action="store_true",
                        help="fail if it does not fit on the preferred (or any fitting) nodes, "
                        "instead of falling back to the nearest nodes that fit")
    parser.add_argument("--preferred", type=_nodes, metavar="NODES",
                        help="nodes to try first, e.g. 0,1 or 0-3")
    parser.add_argument("--max-nodes", type=_max_nodes, default=0, metavar="K",
                        help="span at most K nodes (0: as many as it takes)")
    parser.add_argument("--name", default="", metavar="NAME", help="the new domain's name")
    parser.add_argument("--uuid", default="", metavar="UUID", help="the new domain's uuid")
    parser.add_argument("--id", metavar="ID", help="request id (default: one the agent picks)")
    parser.add_argument("--cancel", metavar="ID",
                        help="release the reservation of an earlier request (the id it printed)")
    parser.add_argument("--list", action="store_true", help="list the pending reservations")
    parser.add_argument("--socket", metavar="PATH",
                        help=f"the agent's placement socket (default ${SOCKET_ENV}, else "
                        f"{DEFAULT_SOCKET})")
    parser.add_argument("--timeout", type=_timeout, default=30.0, metavar="S",
                        help="seconds to wait for the answer (default 30)")
    parser.add_argument("--json", action="store_true", help="print the reply as JSON")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    path = args.socket or socket_path()
    modes = sum((args.cancel is not None, args.list,
                 args.vcpus is not None or args.memory is not None))
    if modes != 1:
        return _usage("give --vcpus and --memory to place, or --cancel ID, or --list")
    try:
        if args.list:
            found = trio.run(lambda: client.reservations(path, timeout_s=args.timeout))
            _print_list(found, args.json)
            return EXIT_OK
        if args.cancel is not None:
            done = trio.run(lambda: client.cancel(path, args.cancel, timeout_s=args.timeout))
            if args.json:
                print(json.dumps({"request": args.cancel, "cancelled": done}))
            else:
                print(f"{args.cancel}: " + ("reservation released" if done
                                            else "no such reservation pending"))
            return EXIT_OK if done else EXIT_FAILED
        if args.vcpus is None or args.memory is None:
            return _usage("placing needs both --vcpus and --memory")
        fields: dict[str, Any] = {
            "vcpus": args.vcpus,
            "memory_mib": args.memory,
            "policy": "strict" if args.strict else "best-effort",
            "preferred": sorted(args.preferred or ()),
            "max_nodes": args.max_nodes,
            "name": args.name,
            "uuid": args.uuid,
        }
        if args.id is not None:
            fields["id"] = args.id
        reply = trio.run(lambda: client.place(path, fields, timeout_s=args.timeout))
    except client.PlacementError as exc:
        print(f"xnuma place: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    if args.json:
        print(json.dumps(reply.to_wire(), indent=2))
    else:
        print(describe(reply))
    return EXIT_OK if reply.ok else EXIT_FAILED


def describe(reply: PlacementReply) -> str:
    if not reply.ok:
        return f"{reply.request}: not placed: {reply.reason}"
    nodes = format_cpuset(reply.nodes)
    plural = "s" if len(reply.nodes) > 1 else ""
    mem = ", ".join(f"{m} MiB on node {n}" for n, m in zip(reply.nodes, reply.memory_mib,
                                                               strict=True))
    held = (f"reserved for {reply.expires_s:g} s or until the domain appears"
            if reply.expires_s else "not reserved (the agent keeps no reservations)")
    return (f"{reply.request}: node{plural} {nodes} (pCPUs {format_cpuset(reply.cpus)})\n"
            f"  memory: {mem}, {held}\n"
            f"  why: {reply.reason}")


def _print_list(found: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        print(json.dumps(found, indent=2))
        return
    if not found:
        print("no reservations pending")
        return
    for r in found:
        who = r.get("name") or r.get("uuid") or "-"
        print(f"{r.get('request')}  {who}  nodes {format_cpuset(r.get('nodes', []))}  "
              f"{sum(r.get('memory_mib', []))} MiB  expires in {r.get('expires_in_s')} s")


def _usage(message: str) -> int:
    print(f"xnuma place: error: {message}", file=sys.stderr)
    return EXIT_USAGE
