"""``xnuma audit``: print, filter, verify and explain the audit log."""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path
from typing import TextIO

from agent.audit import query, render, segments, verify, why
from agent.audit.reader import Bad, read_entries, scan_log
from agent.audit.records import ACTION_OUTCOMES, DECISION_OUTCOMES, KINDS

EXIT_OK, EXIT_BAD_LOG, EXIT_USAGE = 0, 1, 2


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = subparsers.add_parser(
        "audit",
        help="print, filter, verify or explain the audit log",
        description="Print the audit log (a table, or --json lines), check its hash chain "
        "(--verify), or explain what was decided about a domain (audit why).",
    )
    _log_options(p, None)
    p.add_argument("--domain", help="domain name, domid or uuid")
    p.add_argument("--vcpu", type=int, help="vCPU number")
    p.add_argument("--rule", help="decisions by this rule, and the actions they caused")
    p.add_argument(
        "--outcome",
        choices=sorted({*DECISION_OUTCOMES, *ACTION_OUTCOMES}),
        help="decision or action outcome",
    )
    p.add_argument(
        "--kind", action="append", choices=sorted(KINDS), help="record kind (repeatable)"
    )
    p.add_argument("--json", action="store_true", help="one JSON object per line")
    p.add_argument(
        "--verify",
        action="store_true",
        help="check the hash chain across all files; exit 1 naming the first bad record "
        "(filters do not apply)",
    )
    sub = p.add_subparsers(dest="audit_command", metavar="why")
    w = sub.add_parser("why", help="explain in sentences what was decided about a domain")
    w.add_argument("domain", metavar="DOMAIN", help="domain name, domid or uuid")
    w.add_argument("vcpu", metavar="VCPU", type=int, nargs="?", help="one vCPU only")
    _log_options(w, argparse.SUPPRESS)
    p.set_defaults(func=run, audit_command=None)


def _log_options(p: argparse.ArgumentParser, default: str | None) -> None:
    # Let ``--since -10m`` through: argparse would take ``-10m`` for an option.
    p._negative_number_matcher = re.compile(r"^-\d+$|^-\d*\.\d+$|^-\d+(\.\d+)?[smhdw]$")
    # On the ``why`` subparser the defaults are suppressed so that options
    # given before ``why`` are not reset by it.
    p.add_argument(
        "--log",
        type=Path,
        default=default if default is not None else segments.DEFAULT_AUDIT_LOG,
        help=f"the active log file (default {segments.DEFAULT_AUDIT_LOG}); "
        "rotated files PATH.<seq> beside it are read too",
    )
    p.add_argument(
        "--key-file",
        type=Path,
        default=default,
        help="file holding the chain key in hex, if the log was written with one",
    )
    p.add_argument("--since", default=default, help="ISO 8601 time, or relative like -10m")
    p.add_argument("--until", default=default, help="ISO 8601 time, or relative like -10m")


def _key(path: Path | None) -> bytes | None:
    if path is None:
        return None
    text = path.read_text().strip()
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f"{path}: the key must be hex digits") from None
    if not 1 <= len(key) <= 64:
        raise ValueError(f"{path}: the key must be 1 to 64 bytes, not {len(key)}")
    return key


def run(args: argparse.Namespace, out: TextIO | None = None, err: TextIO | None = None) -> int:
    out = out or sys.stdout
    err = err or sys.stderr
    log: Path = args.log
    try:
        key = _key(getattr(args, "key_file", None))
        since = query.parse_time(args.since) if getattr(args, "since", None) else None
        until = query.parse_time(args.until) if getattr(args, "until", None) else None
    except (OSError, ValueError) as exc:
        print(f"xnuma audit: {exc}", file=err)
        return EXIT_USAGE
    if not segments.all_files(log):
        print(f"xnuma audit: no audit log at {log}", file=err)
        return EXIT_USAGE
    try:
        if args.audit_command == "why":
            return _why(args, log, key, since, until, out)
        if args.verify:
            return _verify(log, key, out)
        flt = query.Filter(
            since=since,
            until=until,
            domain=args.domain,
            vcpu=args.vcpu,
            rule=args.rule,
            outcome=args.outcome,
            kinds=frozenset(args.kind or ()),
        )
        return _print(log, key, flt, args.json, out, err)
    except BrokenPipeError:
        # Reader went away (| head): not an error. Keep Python's exit flush quiet.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK


def _print(
    log: Path, key: bytes | None, flt: query.Filter, as_json: bool, out: TextIO, err: TextIO
) -> int:
    if not as_json:
        print(render.HEADER, file=out)
    for item in scan_log(log, key):
        if isinstance(item, Bad):
            tail = "torn record at the end" if item.torn_tail else "damaged bytes"
            print(
                f"xnuma audit: skipped {tail} of {item.file} at offset {item.offset} "
                f"({item.size} bytes: {item.why})",
                file=err,
            )
        elif flt.matches(item):
            print(render.json_line(item) if as_json else render.table_row(item), file=out)
    return EXIT_OK


def _verify(log: Path, key: bytes | None, out: TextIO) -> int:
    report = verify.verify(log, key)
    if report.torn_tail is not None:
        t = report.torn_tail
        print(
            f"note: torn last record in {t.file} at offset {t.offset} ({t.size} bytes), "
            "as a crash mid-write leaves; the writer cuts it on its next start",
            file=out,
        )
    if report.problem is not None:
        print(f"FAIL: {report.problem}", file=out)
        return EXIT_BAD_LOG
    span = f"seq {report.first_seq}..{report.last_seq}" if report.records else "no records"
    head = report.head.hex() if report.head else "-"
    print(f"OK: {report.records} records in {report.files} files, {span}; head {head}", file=out)
    return EXIT_OK


def _why(
    args: argparse.Namespace,
    log: Path,
    key: bytes | None,
    since: float | None,
    until: float | None,
    out: TextIO,
) -> int:
    flt = query.Filter(since=since, until=until)
    selected = (e for e in read_entries(log, key) if flt.matches(e))
    lines = why.explain(selected, args.domain, args.vcpu)
    if not lines:
        who = args.domain + (f" vCPU {args.vcpu}" if args.vcpu is not None else "")
        print(f"No decision about {who} is recorded in {log}.", file=out)
    for line in lines:
        print(line, file=out)
    return EXIT_OK
