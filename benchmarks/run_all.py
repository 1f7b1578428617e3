"""``make bench``: every benchmark, one after the other, and BENCHMARKS.md rewritten.

    XNUMA_XEN_CACHE=.cache/xen .venv/bin/python benchmarks/run_all.py [--no-write]

Each benchmark's output goes into BENCHMARKS.md between its markers
(``<!-- bench:NAME:begin -->`` ... ``end``) with the command that made it, the
machine and the date, so a fresh clone regenerates every table literally:

- ``xenstore``, ``rules``, ``audit``, ``sim-speed``: the micro-benchmarks, as
  they print (xenstore_bench.py needs ``XNUMA_XEN_CACHE``, Debian's xenstored);
- ``compare``: the policy comparison (benchmarks/compare.py), and its plots
  under docs/;
- ``cost``: the agent at 1,000 domains (benchmarks/agent_cost.py);
- ``total``: how long all of it took.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import agent_cost, compare
from benchmarks.report import machine, replace_between

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS_MD = ROOT / "BENCHMARKS.md"

# (marker, script, arguments): the micro-benchmarks, printed as they are.
MICRO: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("xenstore", "benchmarks/xenstore_bench.py", ()),
    ("rules", "benchmarks/rules_bench.py", ()),
    ("audit", "benchmarks/audit_bench.py", ()),
    # A rate: 20 simulated seconds give the figure its default 60 do, in a third of the time.
    ("sim-speed", "benchmarks/sim_speed.py", ("--seconds", "20")),
)


def micro(marker: str, script: str, args: Sequence[str], write: bool) -> float:
    start = time.perf_counter()
    argv = [sys.executable, script, *args]
    print(f"== {' '.join([script, *args])}", flush=True)
    done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False)
    sys.stdout.write(done.stdout)
    if done.returncode != 0:
        sys.stderr.write(done.stderr)
        raise SystemExit(f"{script} failed with exit status {done.returncode}")
    seconds = time.perf_counter() - start
    command = " ".join([".venv/bin/python", script, *args])
    if script.endswith("xenstore_bench.py"):
        command = "XNUMA_XEN_CACHE=.cache/xen " + command
    body = (f"Made by `{command}` (in `make bench`) on {machine()}; {seconds:.0f} s.\n\n"
            f"```\n{done.stdout.rstrip()}\n```\n")
    if write:
        replace_between(BENCHMARKS_MD, marker, body)
    return seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--no-write", action="store_true",
                        help="print only; leave BENCHMARKS.md and docs/ as they are")
    args = parser.parse_args(argv)
    write = not args.no_write
    if not os.environ.get("XNUMA_XEN_CACHE"):
        print("XNUMA_XEN_CACHE is not set: run through `make bench` (it fetches Debian's "
              "xenstored for xenstore_bench.py)", file=sys.stderr)
        return 2
    start = time.perf_counter()
    times: list[tuple[str, float]] = []
    for marker, script, extra in MICRO:
        times.append((marker, micro(marker, script, extra, write)))
    flags = ["--write"] if write else []
    for name, module in (("compare", compare), ("cost", agent_cost)):
        print(f"== benchmarks/{name}", flush=True)
        t = time.perf_counter()
        code: int = module.main(flags)
        if code != 0:
            return code
        times.append((name, time.perf_counter() - t))
    total = time.perf_counter() - start
    parts = ", ".join(f"{name} {s:.0f} s" for name, s in times)
    summary = (f"`make bench` took {total:.0f} s ({total / 60:.1f} min) on {machine()}: "
               f"{parts}.\n")
    print(summary)
    if write:
        replace_between(BENCHMARKS_MD, "total", summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
