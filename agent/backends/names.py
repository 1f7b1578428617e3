"""What dom0's backend processes and kernel threads are called.

Linux keeps 15 characters of a thread's name (TASK_COMM_LEN 16), so names are
often cut short; a number that runs to the 15th character may itself be cut,
and such a name is not trusted to say which guest it serves.

- blkback (drivers/block/xen-blkback/xenbus.c): ``blkback.<domid>.<dev>``, and
  ``-<queue>`` after it with several rings (``xen_update_blkif_status``);
- netback (drivers/net/xen-netback/interface.c): the vif is ``vif<domid>.<devid>``,
  its queue ``<vif>-q<n>``, the threads ``<queue>-guest-rx`` and
  ``<queue>-dealloc``; single-queue kernels before 3.16 named it ``<vif>``;
- tapdisk (blktap2/3, XenServer) and tapback are user processes;
- qemu (device model, or libxl's qdisk backend) is a user process whose
  command line carries ``-xen-domid <domid>``; its comm varies
  (``qemu-system-i38``, ``qemu-dm-<domid>``...).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from agent.backends.procs import ProcessInfo

COMM_MAX = 15
_BLKBACK = re.compile(r"blkback\.(\d+)\.(.*)")
_NETBACK = re.compile(r"vif(\d+)\.(\d+)(?:-q(\d+)(?:-.*)?)?")
TAP_NAMES = ("tapdisk", "tapdisk2", "tapback")


@dataclass(frozen=True, slots=True)
class ThreadName:
    kind: str  # "vbd" (blkback) or "vif" (netback)
    domid: int
    devid: int  # -1 when the name does not carry it (blkback names the disk)


def backend_thread(comm: str) -> ThreadName | None:
    """The guest a blkback or netback kernel thread serves, from its name."""
    m = _BLKBACK.fullmatch(comm)
    if m is not None:
        if m.end(1) >= COMM_MAX or not m.group(2):
            return None  # the domid (or all of the device) was cut off
        return ThreadName("vbd", int(m.group(1)), -1)
    m = _NETBACK.fullmatch(comm)
    if m is not None:
        # The devid must be followed by something, or end before the cut.
        if m.end(2) >= COMM_MAX:
            return None
        return ThreadName("vif", int(m.group(1)), int(m.group(2)))
    return None


def is_tap(info: ProcessInfo) -> bool:
    return not info.kthread and info.comm in TAP_NAMES


def is_qemu_for(info: ProcessInfo, domid: int) -> bool:
    """A qemu process whose command line says it serves ``domid``."""
    if info.kthread or not info.comm.startswith("qemu"):
        return False
    args = info.cmdline
    return any(a == "-xen-domid" and i + 1 < len(args) and args[i + 1] == str(domid)
               for i, a in enumerate(args))


def is_backend_kthread_for(info: ProcessInfo, domid: int) -> bool:
    """A kernel thread named as a backend of ``domid``."""
    if not info.kthread:
        return False
    name = backend_thread(info.comm)
    return name is not None and name.domid == domid
