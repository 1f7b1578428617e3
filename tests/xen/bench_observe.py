"""Cost of one observation pass on the testbed, by libxenctrl and by `xl`, side by side.

    python3 tests/xen/bench_observe.py [--passes 5] [--layout 2node] [--sched credit]

Boots the testbed, creates guests A (2 vCPUs, busy), B (2, busy), C (1, idle), then runs
tests/xen/xenctrl_probe.py `bench` inside dom0: each pass reads the topology, every
domain and every vCPU with its affinity, once through libxenctrl and once through the
four `xl` commands XlHypervisor runs for the same facts. Times are measured in dom0.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from testbed import DEFAULT_CACHE, Config, Testbed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--passes", type=int, default=5)
    p.add_argument("--layout", default="2node")
    p.add_argument("--sched", default="credit")
    p.add_argument("--cache", type=Path, default=DEFAULT_CACHE)
    a = p.parse_args()
    workdir = a.cache / "run" / "bench-observe"
    workdir.mkdir(parents=True, exist_ok=True)
    with Testbed(a.cache, workdir, Config(layout=a.layout, sched=a.sched)) as tb:
        boot = tb.start()
        for name, vcpus, mode in (("A", 2, "busy"), ("B", 2, "busy"), ("C", 1, "idle")):
            tb.create_guest(name, vcpus=vcpus, mode=mode)
        argv = ["python3", "/xnuma-src/tests/xen/xenctrl_probe.py", "bench", str(a.passes)]
        res = json.loads(tb.run(argv, timeout=1800, check=True).stdout)
    xc, xl = res["xenctrl_s"], res["xl_s"]
    print(f"testbed {a.layout} sched={a.sched}, boot {boot:.1f} s, 3 guests, {a.passes} passes")
    print(f"{'path':<12}{'median s':>10}{'min s':>10}{'max s':>10}")
    for name, xs in (("libxenctrl", xc), ("xl", xl)):
        print(f"{name:<12}{statistics.median(xs):>10.3f}{min(xs):>10.3f}{max(xs):>10.3f}")
    print(f"xl / libxenctrl (median): {statistics.median(xl) / statistics.median(xc):.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
