"""Soft affinity changes: follow the memory, rebalance. Idempotent, retried, recorded.

Setting every vCPU's soft affinity to the pCPUs of the chosen nodes also moves
the domain's home as the rules see it (``home_node``) and, through Xen, where
the scheduler prefers to run it. A vCPU whose soft affinity already is that
mask is left alone, so doing it twice changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

import trio

from agent.daemon.recorder import Recorder, vcpu_subject
from agent.daemon.retry import RetryPolicy, Tries, call
from agent.hypervisor.interface import Hypervisor, HypervisorError, NoSuchDomain
from agent.rules import SetSoftAffinity
from agent.state import HostView


class SoftSetter:
    def __init__(
        self,
        hypervisor: Hypervisor,
        recorder: Recorder,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.hv = hypervisor
        self.recorder = recorder
        self.retry = retry or RetryPolicy()
        self.clock = clock

    async def set_soft(
        self, action: SetSoftAffinity, decision: int | None, view: HostView
    ) -> str:
        start = self.clock()
        tries = Tries()
        nodes = sorted(action.nodes)
        cpus = frozenset().union(*(view.node_at(n).cpu_set for n in nodes))
        subject = vcpu_subject(view, action.domid)
        dom = view.domain_by_id.get(action.domid)
        previous = sorted(dom.soft_nodes) if dom is not None else []
        params = {"cpus": sorted(cpus), "previous": previous, "nodes": nodes}
        if not cpus:
            self.recorder.action("set_soft", params, subject, "skipped",
                                 error=f"nodes {nodes} have no pCPU", decision_seq=decision)
            return "skipped"
        changed = 0
        try:
            vcpus = await call(self.retry, tries, partial(self.hv.vcpus, action.domid))
            for v in vcpus:
                if v.soft == cpus:
                    continue
                await call(self.retry, tries, partial(self.hv.set_vcpu_affinity, action.domid,
                                                      v.vcpu, None, cpus))
                changed += 1
        except NoSuchDomain as exc:
            self.recorder.action("set_soft", params, subject, "skipped",
                                 error=f"domain gone: {exc}", attempts=tries.count,
                                 duration=self.clock() - start, decision_seq=decision)
            return "skipped"
        except HypervisorError as exc:
            self.recorder.action("set_soft", params, subject, "failed", error=str(exc),
                                 attempts=tries.count, duration=self.clock() - start,
                                 decision_seq=decision, vcpus_changed=changed)
            return "failed"
        outcome = "ok" if changed else "skipped"
        self.recorder.action("set_soft", params, subject, outcome,
                             error=None if changed else "already so", attempts=tries.count,
                             duration=self.clock() - start, decision_seq=decision,
                             vcpus_changed=changed)
        return outcome
