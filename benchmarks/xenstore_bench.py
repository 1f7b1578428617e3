#!/usr/bin/env python3
"""XenStore client benchmark: READ round trips per second and watch-event
latency, side by side in one run, for

- xnuma's trio client against the embedded xenstored (``xnuma xenstored``),
- xnuma's trio client against Debian's real C xenstored 4.17 (tests/realxs),
- pyxs 0.4.1 against the embedded xenstored (and, for context, the real one).

Both daemons run as separate processes on unix sockets, so every row pays
the same kernel round trip. Phases of the rows are interleaved round by round
(this machine is shared and noisy) and the figures pool all rounds.

    XNUMA_XEN_CACHE=.cache/xen .venv/bin/python benchmarks/xenstore_bench.py

Phases, each ``--seconds`` long per round:
  READ seq    one READ at a time (latency bound), round trips per second;
  READ xN     N tasks reading concurrently on one connection (xnuma only:
              pyxs serialises callers through its router thread);
  watch       a second connection writes under a watched path; time from
              the write call to the event in the watcher, p50 and p99.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

from realxs.harness import (  # noqa: E402
    RealXenstored,
    real_xenstored_available,
    unavailable_reason,
)

from agent.xenstore.client import open_client  # noqa: E402
from agent.xenstore.transport import unix_socket  # noqa: E402

KEY = b"/bench/key"
VALUE = b"v" * 64
WATCHED = b"/bench/w"


@dataclass
class Tally:
    seq_ops: int = 0
    seq_time: float = 0.0
    conc_ops: int = 0
    conc_time: float = 0.0
    latencies: list[float] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        self.seq_ops += other.seq_ops
        self.seq_time += other.seq_time
        self.conc_ops += other.conc_ops
        self.conc_time += other.conc_time
        self.latencies += other.latencies

    @property
    def seq_rate(self) -> float | None:
        return self.seq_ops / self.seq_time if self.seq_time else None

    @property
    def conc_rate(self) -> float | None:
        return self.conc_ops / self.conc_time if self.conc_time else None

    def percentile(self, q: float) -> float | None:
        if len(self.latencies) < 2:
            return None
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[int(q) - 1]


# -- xnuma's client ----------------------------------------------------------------


async def _xnuma_round(path: str, seconds: float, concurrency: int) -> Tally:
    tally = Tally()
    async with open_client(unix_socket(path)) as xs, open_client(unix_socket(path)) as writer:
        await xs.write(KEY, VALUE)

        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            await xs.read(KEY)
            tally.seq_ops += 1
        tally.seq_time = time.perf_counter() - start

        async def reader() -> None:
            while time.perf_counter() < deadline:
                await xs.read(KEY)
                tally.conc_ops += 1

        start = time.perf_counter()
        deadline = start + seconds
        async with trio.open_nursery() as nursery:
            for _ in range(concurrency):
                nursery.start_soon(reader)
        tally.conc_time = time.perf_counter() - start

        async with xs.watch(WATCHED) as events:
            await events.receive()  # the registration event
            deadline = time.perf_counter() + seconds
            n = 0
            while time.perf_counter() < deadline:
                n += 1
                t0 = time.perf_counter()
                await writer.write(WATCHED + b"/x", b"%d" % n)
                await events.receive()
                tally.latencies.append(time.perf_counter() - t0)
    return tally


def xnuma_round(path: str, seconds: float, concurrency: int) -> Tally:
    return trio.run(_xnuma_round, path, seconds, concurrency)


# -- pyxs ------------------------------------------------------------------------------


def pyxs_round(path: str, seconds: float, concurrency: int) -> Tally:
    from pyxs import Client

    tally = Tally()
    with Client(unix_socket_path=path) as xs, Client(unix_socket_path=path) as writer:
        xs.write(KEY, VALUE)
        start = time.perf_counter()
        deadline = start + seconds
        while time.perf_counter() < deadline:
            xs.read(KEY)
            tally.seq_ops += 1
        tally.seq_time = time.perf_counter() - start

        monitor = xs.monitor()
        monitor.watch(WATCHED, b"bench")
        events = monitor.wait()
        next(events)  # the registration event
        deadline = time.perf_counter() + seconds
        n = 0
        while time.perf_counter() < deadline:
            n += 1
            t0 = time.perf_counter()
            writer.write(WATCHED + b"/x", b"%d" % n)
            next(events)
            tally.latencies.append(time.perf_counter() - t0)
        monitor.unwatch(WATCHED, b"bench")
    return tally


# -- the daemons --------------------------------------------------------------------------


def _wait_for_socket(path: str, proc: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"embedded xenstored exited with status {proc.returncode}")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            try:
                s.connect(path)
                return
            except OSError:
                time.sleep(0.02)
    raise RuntimeError(f"embedded xenstored did not listen on {path} within {timeout}s")


def start_embedded(rundir: str) -> tuple[subprocess.Popen[bytes], str]:
    path = os.path.join(rundir, "embedded.sock")
    # What the `xnuma xenstored` console script runs, without relying on PATH.
    code = "import sys; from agent.cli import main; sys.exit(main(sys.argv[1:]))"
    argv = [sys.executable, "-c", code, "xenstored", "--socket", path]
    proc = subprocess.Popen(argv, cwd=REPO, stdin=subprocess.DEVNULL)
    _wait_for_socket(path, proc)
    return proc, path


# -- report ------------------------------------------------------------------------------


def _fmt_rate(rate: float | None) -> str:
    return f"{rate:,.0f}" if rate is not None else "-"


def _fmt_ms(seconds: float | None) -> str:
    return f"{seconds * 1e3:.3f} ms" if seconds is not None else "-"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def report(rows: dict[str, Tally], args: argparse.Namespace, skipped: list[str]) -> None:
    print()
    print(
        f"XenStore client benchmark: {args.rounds} interleaved rounds x {args.seconds:g} s "
        f"per phase; READ of {len(VALUE)} bytes; x{args.concurrency} = concurrent tasks"
    )
    header = (
        "client / daemon",
        "READ/s seq",
        f"READ/s x{args.concurrency}",
        "watch p50",
        "watch p99",
        "events",
    )
    print(
        f"{header[0]:<24}{header[1]:>12}{header[2]:>13}{header[3]:>13}{header[4]:>13}{header[5]:>8}"
    )
    for name, t in rows.items():
        print(
            f"{name:<24}{_fmt_rate(t.seq_rate):>12}{_fmt_rate(t.conc_rate):>13}"
            f"{_fmt_ms(t.percentile(50)):>13}{_fmt_ms(t.percentile(99)):>13}"
            f"{len(t.latencies):>8}"
        )
    for name in skipped:
        print(f"{name:<24}  skipped: {unavailable_reason()}")

    def pair(label: str, a: str, b: str) -> None:
        if a not in rows or b not in rows:
            return
        ta, tb = rows[a], rows[b]
        conc = ""
        if ta.conc_rate and tb.conc_rate:
            conc = f", READ x{args.concurrency} {_ratio(ta.conc_rate, tb.conc_rate)}"
        print(
            f"  {label:<42} READ seq {_ratio(ta.seq_rate, tb.seq_rate)}{conc}, "
            f"watch p50 {_ratio(tb.percentile(50), ta.percentile(50))}"
        )

    print("ratios (speed of the first over the second; >1: the first is faster):")
    pair("xnuma client: embedded / real C daemon", "xnuma / embedded", "xnuma / real C")
    pair("embedded daemon: xnuma / pyxs client", "xnuma / embedded", "pyxs / embedded")
    pair("real C daemon: xnuma / pyxs client", "xnuma / real C", "pyxs / real C")
    x = rows["xnuma / embedded"]
    label = f"xnuma on embedded: READ x{args.concurrency} / READ seq"
    print(f"  {label:<42} {_ratio(x.conc_rate, x.seq_rate)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=0.4, help="length of each phase")
    parser.add_argument("--rounds", type=int, default=5, help="interleaved rounds")
    parser.add_argument("--concurrency", type=int, default=16, help="tasks in READ xN")
    args = parser.parse_args(argv)
    if args.seconds <= 0 or args.rounds < 1 or args.concurrency < 1:
        parser.error("--seconds must be > 0, --rounds and --concurrency >= 1")

    rundir = tempfile.mkdtemp(prefix="xnuma-bench-", dir="/tmp")
    embedded_proc: subprocess.Popen[bytes] | None = None
    real: RealXenstored | None = None
    began = time.perf_counter()
    try:
        embedded_proc, embedded_path = start_embedded(rundir)
        rows: dict[str, tuple[Callable[[str, float, int], Tally], str]] = {
            "xnuma / embedded": (xnuma_round, embedded_path),
        }
        skipped: list[str] = []
        if real_xenstored_available():
            real = RealXenstored(Path(rundir) / "real")
            real.start()
            rows["xnuma / real C"] = (xnuma_round, str(real.socket_path))
        else:
            skipped.append("xnuma / real C")
        rows["pyxs / embedded"] = (pyxs_round, embedded_path)
        if real is not None:
            rows["pyxs / real C"] = (pyxs_round, str(real.socket_path))

        totals = {name: Tally() for name in rows}
        for round_no in range(args.rounds):
            for name, (bench, path) in rows.items():
                print(f"round {round_no + 1}/{args.rounds}: {name}", file=sys.stderr)
                totals[name].add(bench(path, args.seconds, args.concurrency))
        report(totals, args, skipped)
    finally:
        if real is not None:
            real.close()
        if embedded_proc is not None:
            embedded_proc.terminate()
            embedded_proc.wait(timeout=10)
        shutil.rmtree(rundir, ignore_errors=True)
    print(f"(total run time {time.perf_counter() - began:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
