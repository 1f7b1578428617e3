"""Decisions the rules took -> what the agent does, one action at a time.

Actions run in the order the decisions came, each to completion (or to its
time bound) before the next: two changes to the host at one instant then land
in a fixed order, so a run against the simulator is reproducible, and no two
actions ever race on one vCPU. Each action is bounded in time; running out is
recorded as a failure and the agent goes on.

``vcpu.fixup`` and ``vcpu.swap`` go to ``fixup``, ``domain.set_soft``
(soft-follows-memory, rebalance) to ``soft``, ``domain.set_hard`` to ``hard``
(whose pins held for a time are restored at the start of the first scan after
their time is up). A ``note`` is its decision
record and nothing more. Other types (placement, backend pinning) are served
by handlers registered for their type; without one the action is recorded as
skipped, saying so.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass

import trio

from agent.daemon.fixup import Fixer
from agent.daemon.hard import HardSetter
from agent.daemon.recorder import Recorder, subject_of
from agent.daemon.soft import SoftSetter
from agent.rules import Action, Decision, Note, SetSoftAffinity, VcpuFixup, VcpuSwap
from agent.rules.actions import SetHardAffinity, action_record
from agent.state import HostView

Handler = Callable[[Action, int | None, HostView], Awaitable[str]]

# Seconds an action may take beyond its own timeout: a few hypervisor calls, retried.
CALL_MARGIN_S = 30.0
PER_VCPU_S = 5.0  # more for an action that changes every vCPU of a domain


@dataclass(frozen=True, slots=True)
class Pending:
    decision: Decision
    seq: int | None


class Actions:
    def __init__(
        self,
        fixer: Fixer,
        soft: SoftSetter,
        recorder: Recorder,
        *,
        handlers: Mapping[str, Handler] | None = None,
        clock: Callable[[], float] = trio.current_time,
        hard: HardSetter | None = None,
    ) -> None:
        """``hard``: by default one on the fixer's pin keeper (so the keeper knows
        every pin the agent holds, and ``stop`` restores them all)."""
        self.fixer = fixer
        self.soft = soft
        if hard is None and fixer is not None:
            hard = HardSetter(fixer.keeper, recorder, retry=fixer.retry,
                              pool_cpus=fixer.pool_cpus, spread=fixer.spread_cpu, clock=clock)
        self.hard = hard
        self.recorder = recorder
        self.handlers = dict(handlers or {})
        self.clock = clock
        self.done = 0

    def bound_s(self, action: Action, view: HostView | None = None) -> float:
        if isinstance(action, VcpuFixup | VcpuSwap):
            return action.timeout_s + CALL_MARGIN_S
        if isinstance(action, SetHardAffinity) and view is not None:
            # One or two calls per vCPU (xl vcpu-pin took up to 2.3 s each on the testbed).
            dom = view.domain_by_id.get(action.domid)
            return CALL_MARGIN_S * 2 + PER_VCPU_S * (dom.vcpu_count if dom is not None else 0)
        return CALL_MARGIN_S * 2

    async def run(self, batch: list[Pending], view: HostView) -> None:
        """In order. Decisions taken on different events of one scan may touch the same
        vCPU (a swap decided for each of its two vCPUs): the first one acts, the
        others are recorded as skipped."""
        if self.hard is not None:
            await self.hard.expire(view)
        touched: set[tuple[object, ...]] = set()
        for item in batch:
            # What the action touches; not its subject, which for a host-wide rule
            # (placement) is the host: two requests in one scan are not in conflict.
            targets = set(item.decision.action.targets())
            if not isinstance(item.decision.action, Note) and targets & touched:
                self.recorder.action(
                    item.decision.action.TYPE, action_record(item.decision.action),
                    subject_of(item.decision.subject, view), "skipped",
                    error="an earlier action of this scan acted on it", decision_seq=item.seq)
                continue
            touched |= targets
            await self.run_one(item.decision, item.seq, view)

    async def run_one(self, decision: Decision, seq: int | None, view: HostView) -> None:
        action = decision.action
        if isinstance(action, Note):
            return  # the decision record says it all
        start = self.clock()
        bound = self.bound_s(action, view)
        with trio.move_on_after(bound) as scope:
            await self._dispatch(action, seq, view)
        if scope.cancelled_caught and not isinstance(action, VcpuFixup | VcpuSwap):
            # (fixups and swaps record their own outcome, cut off or not)
            self.recorder.action(action.TYPE, action_record(action),
                                 subject_of(decision.subject, view), "failed",
                                 error=f"did not finish within {bound:g} s",
                                 duration=self.clock() - start, decision_seq=seq)
        self.done += 1

    async def _dispatch(self, action: Action, seq: int | None, view: HostView) -> None:
        if isinstance(action, VcpuFixup):
            await self.fixer.fixup(action, seq, view)
        elif isinstance(action, VcpuSwap):
            await self.fixer.swap(action, seq, view)
        elif isinstance(action, SetSoftAffinity):
            await self.soft.set_soft(action, seq, view)
        elif isinstance(action, SetHardAffinity) and self.hard is not None:
            await self.hard.set_hard(action, seq, view)
        elif action.TYPE in self.handlers:
            await self.handlers[action.TYPE](action, seq, view)
        else:
            self.recorder.action(action.TYPE, action_record(action),
                                 subject_of(("host",), view), "skipped",
                                 error=f"this agent has no handler for {action.TYPE}",
                                 decision_seq=seq)
