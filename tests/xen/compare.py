"""The seed scenario on real Xen vs the simulator, without and with the agent, side by side.

    .venv/bin/python tests/xen/compare.py              # the table of the last `make xen-test`
    .venv/bin/python tests/xen/compare.py --run        # boot the testbed and run it all (~10 min)
    .venv/bin/python tests/xen/compare.py --sim-only   # the simulator's columns only (seconds)

`make xen-test` (tests/test_xen_seed.py) prints the same table and keeps it in
``CACHE/run/pytest-seed/results.json``; see tests/xen/seed.py for the setups and what
each figure means. With ``--json`` the summaries are printed as JSON instead.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import seed
from testbed import DEFAULT_CACHE, Config, Testbed, TestbedError


def run_all(cache: Path, sim_only: bool
            ) -> tuple[dict[str, dict[str, seed.Summary]], dict[str, float]]:
    summaries: dict[str, dict[str, seed.Summary]] = {s.name: {} for s in seed.SETUPS}
    timings: dict[str, float] = {}
    started = time.monotonic()
    if not sim_only:
        workdir = cache / "run" / "compare"
        workdir.mkdir(parents=True, exist_ok=True)
        with Testbed(cache, workdir, Config(layout="2node", sched="credit")) as tb:
            timings["boot_s"] = round(tb.start(), 1)
            bench = seed.SeedBench(tb)
            bench.prepare()
            for name in seed.RUN_ORDER:
                print(f"compare: {name}", file=sys.stderr)
                for key, (out, audit) in bench.run_setup(seed.SETUP[name]).items():
                    summaries[name][key] = seed.summarise_real(out, audit)
            timings.update(bench.timings)
            for crash in bench.crashes:
                print(f"compare: Xen crashed, setup run again: {crash}", file=sys.stderr)
    for setup in seed.SETUPS:
        for agent in (False, True):
            summaries[setup.name]["sim_agent" if agent else "sim"] = seed.run_sim(setup, agent)
    timings["total_s"] = round(time.monotonic() - started, 1)
    return summaries, timings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    p.add_argument("--results", type=Path, default=None,
                   help="results file (default CACHE/run/pytest-seed/results.json)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--run", action="store_true", help="boot the testbed and run everything")
    mode.add_argument("--sim-only", action="store_true", help="run the simulator side only")
    p.add_argument("--json", action="store_true", help="print the summaries as JSON")
    a = p.parse_args()
    titles = {s.name: s.title for s in seed.SETUPS}
    if a.run or a.sim_only:
        if a.run and not (a.cache / ".ready").exists():
            print(f"compare: no testbed in {a.cache}: make xen-testbed", file=sys.stderr)
            return 2
        try:
            summaries, timings = run_all(a.cache, a.sim_only)
        except TestbedError as e:
            print(f"compare: the testbed failed: {e}", file=sys.stderr)
            return 1
    else:
        path = a.results or a.cache / "run" / "pytest-seed" / "results.json"
        try:
            data = json.loads(path.read_text())
        except OSError as e:
            print(f"compare: no results at {path} ({e.strerror}): run make xen-test, "
                  "or this script with --run", file=sys.stderr)
            return 2
        summaries = seed.summaries_from_json(data["summaries"])
        timings, titles = data.get("timings", {}), data.get("titles", titles)
    if a.json:
        print(json.dumps({"summaries": seed.summaries_to_json(summaries), "timings": timings},
                         indent=1))
    else:
        print(seed.table(summaries, titles))
        if timings:
            print("timings (s): " + ", ".join(f"{k} {v}" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
