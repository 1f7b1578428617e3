"""The engine's accounting feed: what happened between two ``take_accounting`` calls."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import NamedTuple


class VcpuAccounting(NamedTuple):
    """One vCPU over one accounting window."""

    run_ns: tuple[int, ...]  # time running on each node (index = node id)
    demand_ns: int  # time it wanted a pCPU: running or runnable (not blocked/paused)
    migrations: int  # times it started running on a pCPU other than the one it last ran on
    cross_node_migrations: int  # those where the two pCPUs are on different nodes


@dataclass(frozen=True, slots=True)
class Accounting:
    """Everything the metrics need for the window [start_ns, end_ns).

    ``vcpus`` holds only the vCPUs that ran, wanted to run or moved in the
    window, keyed by (domid, vcpu) in sorted order; a missing key means all
    zeros. A vCPU of a domain destroyed during the window appears with what it
    did before it went.
    """

    start_ns: int
    end_ns: int
    vcpus: Mapping[tuple[int, int], VcpuAccounting]
    node_busy_ns: tuple[int, ...]  # per node: pCPU time spent running vCPUs
