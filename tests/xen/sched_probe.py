"""Run inside the testbed's dom0: every domain's weight and cap as both backends see
them there, as JSON (for tests/test_xen_backend.py).

    python3 /xnuma-src/tests/xen/sched_probe.py

``xenctrl``: XenctrlHypervisor.domains() (xc_cpupool_getinfo for the pool's scheduler,
then xc_sched_credit[2]_domain_get); ``xl``: XlHypervisor.domains() (`xl list -l`'s
sched_params) and the parsed `xl sched-credit` + `xl sched-credit2` listings.
"""

from __future__ import annotations

import json
import os
import sys

sys.path.insert(0, os.environ.get("XNUMA_LIB", "/opt/xnuma/lib"))  # trio, in dom0
sys.path.insert(0, os.environ.get("XNUMA_SRC", "/xnuma-src"))

import trio

from agent.hypervisor import xl_parse
from agent.hypervisor.model import DomainInfo
from agent.hypervisor.xenctrl import Xenctrl, XenctrlHypervisor
from agent.hypervisor.xl import XlHypervisor


def table(doms: list[DomainInfo]) -> dict[str, list[object]]:
    return {str(d.domid): [d.name, d.pool, d.weight, d.cap] for d in doms}


async def main() -> dict[str, object]:
    xc = Xenctrl()
    try:
        by_xc = table(await XenctrlHypervisor(xc).domains())
    finally:
        xc.close()
    xl = XlHypervisor()
    by_xl = table(await xl.domains())
    listed = {
        **xl_parse.parse_sched_credit(await xl.run("sched-credit")),
        **xl_parse.parse_sched_credit(await xl.run("sched-credit2"), "xl sched-credit2"),
    }
    by_listing = {str(k): [p.name, p.pool, p.weight, p.cap] for k, p in listed.items()}
    return {"xenctrl": by_xc, "xl": by_xl, "sched_listing": by_listing}


if __name__ == "__main__":
    print(json.dumps(trio.run(main)))
