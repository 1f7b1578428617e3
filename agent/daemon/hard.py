"""``domain.set_hard``: narrow a domain's hard affinity to some nodes, for a while or for good.

Each vCPU's hard affinity becomes the named nodes' pCPUs within its present
hard affinity and its cpupool (what ``xl vcpu-pin <dom> all node:N -`` would
set), through the pin keeper (``agent.daemon.pins``): journalled before the
call, restored when ``duration_s`` is over (``duration_s = 0``: when the agent
stops; a killed agent's next start restores it from the journal). Its pins are
held in a mode of their own (``SET_HARD``), which the fixup engine's reviews
leave alone.

Idempotent: a vCPU already narrowed to that mask by this action keeps its pin
and gets the later of its two end times; one already confined to it by its own
configuration is left alone (nothing to restore). A vCPU that another action of
the agent holds (a fixup, a sustained narrowing) is skipped, not fought over.
One ``domain.set_hard`` audit record per action says what happened to each
vCPU; the narrowings and restores have their own records (``set_hard``,
``restore_hard``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from agent.daemon.pins import PinKeeper
from agent.daemon.recorder import Recorder, vcpu_subject
from agent.daemon.retry import RetryPolicy, Tries, call
from agent.hypervisor.interface import HypervisorError, NoSuchDomain
from agent.hypervisor.model import CpuSet
from agent.journal import DomainKey
from agent.rules.actions import ACTIONS, SetHardAffinity, param_problem
from agent.state import HostView, VcpuKey

SET_HARD = "set_hard"  # the pin keeper's mode for these pins
# A scan a hair before a pin's end still ends it (clock readings are floats).
_EARLY_S = 1e-6


@dataclass(slots=True)
class Tally:
    narrowed: list[int] = field(default_factory=list)
    kept: list[int] = field(default_factory=list)  # already narrowed by this action: renewed
    already: list[int] = field(default_factory=list)  # confined there by its own configuration
    skipped: dict[int, str] = field(default_factory=dict)  # vCPU -> why
    failed: list[int] = field(default_factory=list)


class HardSetter:
    def __init__(
        self,
        keeper: PinKeeper,
        recorder: Recorder,
        *,
        retry: RetryPolicy | None = None,
        pool_cpus: Callable[[str], CpuSet | None] = lambda pool: None,
        spread: Callable[[HostView, CpuSet, str], int | None] | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        """``spread(view, mask, pool)``: the pCPU of ``mask`` a vCPU moved there
        should go through first (``Fixer.spread_cpu``), or None to narrow straight."""
        self.keeper = keeper
        self.recorder = recorder
        self.retry = retry or RetryPolicy()
        self.pool_cpus = pool_cpus
        self.spread = spread
        self.clock = clock
        self.until: dict[VcpuKey, float] = {}  # when each of our pins ends (inf: never)

    async def set_hard(self, action: SetHardAffinity, decision: int | None,
                       view: HostView) -> str:
        start = self.clock()
        tries = Tries()
        out = Tally()
        nodes = sorted(action.nodes)
        params: dict[str, object] = {"domid": action.domid, "nodes": nodes,
                                     "duration_s": action.duration_s}
        subject = vcpu_subject(view, action.domid)

        def done(outcome: str, error: str | None = None) -> str:
            self.recorder.action(
                action.TYPE, params, subject, outcome, error=error, attempts=tries.count,
                duration=self.clock() - start, decision_seq=decision,
                narrowed=out.narrowed, renewed=out.kept, already=out.already,
                skipped={str(v): why for v, why in out.skipped.items()}, failed=out.failed)
            return outcome

        problem = self._problem(action, view)
        if problem is not None:
            return done("skipped", problem)
        dom = view.domain_by_id[action.domid]
        key = DomainKey(dom.domid, dom.name, dom.uuid or None)
        mask = frozenset().union(*(view.node_at(n).cpu_set for n in nodes))
        pool = self.pool_cpus(dom.pool)
        if pool:
            mask &= pool
        until = start + action.duration_s if action.duration_s > 0 else math.inf
        node = nodes[0] if len(nodes) == 1 else -1
        try:
            vcpus = await call(self.retry, tries, partial(self.keeper.hv.vcpus, action.domid))
            for v in vcpus:
                vkey = (action.domid, v.vcpu)
                held = self.keeper.held.get(vkey)
                if held is not None and held.mode != SET_HARD:
                    out.skipped[v.vcpu] = f"held by the agent's {held.mode} pin"
                    continue
                original = held.original if held is not None else v.hard
                target = mask & original
                if not target:
                    out.skipped[v.vcpu] = f"its hard affinity excludes nodes {nodes}"
                    continue
                if held is not None and held.narrowed == target:
                    self.until[vkey] = max(self.until.get(vkey, until), until)
                    out.kept.append(v.vcpu)
                    continue
                if held is None and target == v.hard:
                    out.already.append(v.vcpu)
                    continue
                # A vCPU moved for good goes through a chosen pCPU: narrowed straight
                # to a busy node, credit1 queues every vCPU so moved on the mask's
                # first pCPU when none is idle (PinKeeper.narrow), where they starve
                # for as long as the pin lasts. A timed narrowing goes straight, as
                # the fixups' temporary pins do: the scheduler spreads them again
                # once it ends (the seed run: 0.94 efficiency straight, 0.90 via).
                away = v.cpu is None or v.cpu not in target
                via = (self.spread(view, target, dom.pool)
                       if away and self.spread is not None and until == math.inf else None)
                # Before the call: a pin cut off mid-call is still held, and still ends.
                self.until[vkey] = until
                made = await self.keeper.narrow(
                    key, v.vcpu, original, target, node, SET_HARD, view=view,
                    decision=decision, via=via,
                    reason=f"domain.set_hard nodes {nodes} for "
                           + (f"{action.duration_s:g} s" if action.duration_s > 0 else "good"))
                if made is None:
                    out.failed.append(v.vcpu)  # (the keeper put the original back)
                    continue
                out.narrowed.append(v.vcpu)
        except NoSuchDomain as exc:
            return done("skipped", f"domain gone: {exc}")
        except HypervisorError as exc:
            return done("failed", str(exc))
        if out.failed:
            return done("failed", f"narrowing failed for vCPUs {out.failed}")
        if not out.narrowed and not out.kept:
            return done("skipped", "nothing to narrow")
        return done("ok")

    def _problem(self, action: SetHardAffinity, view: HostView) -> str | None:
        if action.domid not in view.domain_by_id:
            return "no such domain any more"
        spec = ACTIONS[action.TYPE].params
        for name, value in (("nodes", action.nodes), ("duration_s", action.duration_s)):
            why = param_problem(spec[name], value)
            if why is not None:
                return f"{name} {why}"
        missing = sorted(n for n in action.nodes if n not in view.node_by_id)
        if missing:
            return f"no node {missing[0]} on this host"
        return None

    async def expire(self, view: HostView) -> None:
        """Before each scan's actions: restore the pins whose time is up, forget those of
        domains gone (or whose domid now names another domain)."""
        now = self.clock()
        for vkey in sorted(self.until):
            held = self.keeper.held.get(vkey)
            if held is None or held.mode != SET_HARD:
                del self.until[vkey]  # restored already (stop, a retried restore)
                continue
            dom = view.domain_by_id.get(vkey[0])
            if dom is None or (held.domain.uuid and dom.uuid != held.domain.uuid):
                self.keeper.drop(held, view=view, why="domain gone")
                del self.until[vkey]
            elif (now + _EARLY_S >= self.until[vkey] and not held.restore_failed
                  and await self.keeper.restore(held, view=view, why="domain.set_hard: time up")):
                del self.until[vkey]
            # (a failed restore is retried by the keeper, with back-off: restore_leftovers)
