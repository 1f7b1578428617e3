"""Run inside the testbed's dom0 (stdlib + this checkout at /xnuma-src): exercise the
libxenctrl backend's blocking core and print JSON for the host-side tests.

    python3 /xnuma-src/tests/xen/xenctrl_probe.py observe
    python3 /xnuma-src/tests/xen/xenctrl_probe.py pin DOMID VCPU HARD|- SOFT|-
    python3 /xnuma-src/tests/xen/xenctrl_probe.py bench PASSES

`bench` times one observation pass (topology, domains, every vCPU with affinity) both
ways, side by side, in dom0: by libxenctrl, and by the `xl` commands XlHypervisor runs
for the same pass (`xl info -n`, `xl list -v -c`, `xl list -l`, `xl vcpu-list`).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.environ.get("XNUMA_SRC", "/xnuma-src"))

from agent.hypervisor.model import parse_cpuset
from agent.hypervisor.xenctrl import Xenctrl, state_from_dominf
from agent.hypervisor.xl_parse import parse_numa_dump

XL_PASS = (["info", "-n"], ["list", "-v", "-c"], ["list", "-l"], ["vcpu-list"])


def observe(xc: Xenctrl) -> dict[str, object]:
    topo = xc.topology()
    domains = []
    vcpus = []
    for d in xc.domains():
        domains.append(
            {
                "domid": d.domid,
                "name": xc.xs_read(f"/local/domain/{d.domid}/name"),
                "uuid": d.uuid,
                "state": state_from_dominf(d.flags).value,
                "vcpus": d.vcpus,
                "tot_pages": d.tot_pages,
                "cpupool": d.cpupool,
            }
        )
        for v in range(d.vcpus):
            online, running, blocked, time_ns, cpu = xc.vcpu(d.domid, v)
            hard, soft = xc.affinity(d.domid, v)
            vcpus.append(
                {
                    "domid": d.domid,
                    "vcpu": v,
                    "online": online,
                    "running": running,
                    "blocked": blocked,
                    "cpu": cpu,
                    "time_ns": time_ns,
                    "hard": sorted(hard),
                    "soft": sorted(soft),
                }
            )
    xc.console(clear=True)
    xc.debug_keys("u")
    dump = parse_numa_dump(xc.console(clear=False), command="xc_readconsolering")
    return {
        "version": list(xc.version),
        "nodes": [
            {"cpus": sorted(n.cpus), "total_kib": n.memory_total_kib, "free_kib": n.memory_free_kib}
            for n in topo.nodes
        ],
        "distances": [list(row) for row in topo.distances],
        "domains": domains,
        "vcpus": vcpus,
        "memory": {str(k): list(v) for k, v in dump.items()},
    }


def one_pass(xc: Xenctrl) -> int:
    xc.topology()
    n = 0
    for d in xc.domains():
        xc.xs_read(f"/local/domain/{d.domid}/name")
        for v in range(d.vcpus):
            xc.vcpu(d.domid, v)
            xc.affinity(d.domid, v)
            n += 1
    return n


def bench(xc: Xenctrl, passes: int) -> dict[str, object]:
    xc_s, xl_s = [], []
    for _ in range(passes):
        t0 = time.perf_counter()
        one_pass(xc)
        xc_s.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for args in XL_PASS:
            subprocess.run(["xl", *args], check=True, capture_output=True)
        xl_s.append(time.perf_counter() - t0)
    return {"passes": passes, "xenctrl_s": xc_s, "xl_s": xl_s}


def main() -> None:
    xc = Xenctrl()
    cmd = sys.argv[1]
    if cmd == "observe":
        out: dict[str, object] = observe(xc)
    elif cmd == "pin":
        domid, vcpu = int(sys.argv[2]), int(sys.argv[3])
        hard = None if sys.argv[4] == "-" else parse_cpuset(sys.argv[4])
        soft = None if sys.argv[5] == "-" else parse_cpuset(sys.argv[5])
        xc.set_affinity(domid, vcpu, hard, soft)
        h, s = xc.affinity(domid, vcpu)
        out = {"hard": sorted(h), "soft": sorted(s)}
    elif cmd == "bench":
        out = bench(xc, int(sys.argv[2]))
    else:
        raise SystemExit(f"unknown command {cmd!r}")
    xc.close()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
