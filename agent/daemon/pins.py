"""Hard-affinity narrowings the agent makes, and its promise to undo them.

Every narrowing is journalled (``agent.journal``, fsynced) *before* the
hypervisor is asked, and forgotten only after the original is back; a kill at
any moment leaves the journal naming what to restore on the next start
(``restore_journal``). ``SIGTERM`` restores everything held (``restore_all``).

A pin is held ``temporary`` (a fixup: until the vCPU runs at home) or
``sustained`` (kept while it pays; the fixup module decides). The keeper knows
the pins, not why they are there.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import trio

from agent.audit.records import Subject
from agent.daemon.recorder import Recorder, vcpu_subject
from agent.daemon.retry import RetryPolicy, Tries, call
from agent.hypervisor.interface import Hypervisor, HypervisorError, NoSuchDomain
from agent.hypervisor.model import CpuSet, format_cpuset
from agent.journal import DomainKey, PinJournal
from agent.state import HostView, VcpuKey

log = logging.getLogger("xnuma.pins")

TEMPORARY = "temporary"
SUSTAINED = "sustained"
RESTORE_RETRY_S = 1.0  # a failed restore is tried again after this, doubling
RESTORE_RETRY_MAX_S = 60.0


@dataclass(slots=True)
class Held:
    domain: DomainKey
    vcpu: int
    original: CpuSet
    narrowed: CpuSet
    node: int
    mode: str
    since: float  # agent clock
    review_s: float = 0.0  # sustained: when to try without it
    decision: int | None = None
    restore_failed: bool = False
    retry_at: float = 0.0  # a failed restore is tried again from then on
    retry_delay_s: float = 0.0

    @property
    def key(self) -> VcpuKey:
        return (self.domain.domid, self.vcpu)

    def subject(self) -> Subject:
        return Subject(domain=self.domain.name, domid=self.domain.domid, uuid=self.domain.uuid,
                       vcpu=self.vcpu, node=self.node if self.node >= 0 else None)


class PinKeeper:
    def __init__(
        self,
        hypervisor: Hypervisor,
        journal: PinJournal,
        recorder: Recorder,
        *,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = trio.current_time,
    ) -> None:
        self.hv = hypervisor
        self.journal = journal
        self.recorder = recorder
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.held: dict[VcpuKey, Held] = {}
        self.made = 0  # narrowings made (ok)

    def pinned(self) -> frozenset[VcpuKey]:
        return frozenset(self.held)

    def count(self, mode: str | None = None) -> int:
        return sum(1 for h in self.held.values() if mode is None or h.mode == mode)

    async def narrow(
        self, domain: DomainKey, vcpu: int, original: CpuSet, to: CpuSet, node: int, mode: str,
        *, view: HostView | None, decision: int | None, reason: str, review_s: float = 0.0,
        via: int | None = None,
    ) -> Held | None:
        """Journal ``original``, then narrow the vCPU's hard affinity to ``to``.

        ``via``: a pCPU of ``to`` to put it on first. Narrowing straight to a busy
        node lets the scheduler queue every vCPU so moved on one pCPU (credit1's
        pick takes the next pCPU of the mask when none is idle), where they starve;
        going through a chosen pCPU spreads them. Returns the held pin, or None if
        it could not be made (recorded).
        """
        key = (domain.domid, vcpu)
        domid = domain.domid
        pin = self.journal.record_pin(domain, vcpu, original, to, reason=reason)
        held = Held(domain, vcpu, pin.original_hard, frozenset(to), node, mode, self.clock(),
                    review_s, decision)
        self.held[key] = held  # before the call: a cancelled call may still have happened
        tries = Tries()
        start = self.clock()
        subject = vcpu_subject(view, domid, vcpu, node)
        kind = "narrow_hard" if mode == TEMPORARY else "set_hard"
        params = {"cpus": sorted(to), "original": sorted(pin.original_hard), "node": node,
                  "mode": mode}
        if via is not None:
            params["via"] = via
        try:
            if via is not None and to != {via}:
                await call(self.retry, tries, partial(self.hv.set_vcpu_affinity, domid, vcpu,
                                                      frozenset({via}), None))
            await call(self.retry, tries, partial(self.hv.set_vcpu_affinity, domid, vcpu,
                                                  frozenset(to), None))
        except trio.Cancelled:
            # It may have happened: the pin stays held (and journalled) to be restored.
            self.recorder.action(kind, params, subject, "failed",
                                 error="cut off before its result was known",
                                 attempts=tries.count, duration=self.clock() - start,
                                 decision_seq=decision)
            raise
        except NoSuchDomain as exc:
            self._forget(held, "domain-gone")
            self.recorder.action(kind, params, subject, "skipped", error=f"domain gone: {exc}",
                                 attempts=tries.count, duration=self.clock() - start,
                                 decision_seq=decision)
            raise
        except HypervisorError as exc:
            # It may or may not have happened: put the original back (or leave it to
            # the journal) rather than guess.
            self.recorder.action(kind, params, subject, "failed", error=str(exc),
                                 attempts=tries.count, duration=self.clock() - start,
                                 decision_seq=decision)
            await self.restore(held, view=view, why="narrowing failed")
            return None
        self.recorder.action(kind, params, subject, "ok", attempts=tries.count,
                             duration=self.clock() - start, decision_seq=decision)
        self.made += 1
        return held

    async def restore(
        self, held: Held, *, view: HostView | None, why: str, decision: int | None = None
    ) -> bool:
        """Put the original hard affinity back; True once it is (or the domain is gone)."""
        tries = Tries()
        start = self.clock()
        subject = held.subject()
        params = {"cpus": sorted(held.original), "why": why, "mode": held.mode}
        seq = decision if decision is not None else held.decision
        try:
            await call(self.retry, tries, lambda: self.hv.set_vcpu_affinity(
                held.domain.domid, held.vcpu, held.original, None))
        except NoSuchDomain as exc:
            self._forget(held, "domain-gone")
            self.recorder.action("restore_hard", params, subject, "skipped",
                                 error=f"domain gone: {exc}", attempts=tries.count,
                                 duration=self.clock() - start, decision_seq=seq)
            return True
        except HypervisorError as exc:
            held.restore_failed = True
            held.retry_delay_s = min(max(held.retry_delay_s * 2, RESTORE_RETRY_S),
                                     RESTORE_RETRY_MAX_S)
            held.retry_at = self.clock() + held.retry_delay_s
            self.recorder.action("restore_hard", params, subject, "failed", error=str(exc),
                                 attempts=tries.count, duration=self.clock() - start,
                                 decision_seq=seq)
            log.warning("cannot restore the hard affinity of d%dv%d to %s: %s",
                        held.domain.domid, held.vcpu, format_cpuset(held.original), exc)
            return False
        self._forget(held, "restored")
        self.recorder.action("restore_hard", params, subject, "ok", attempts=tries.count,
                             duration=self.clock() - start, decision_seq=seq)
        return True

    def drop(self, held: Held, *, view: HostView | None, why: str) -> None:
        """The domain is gone (or its domid now names another one): nothing to restore."""
        self._forget(held, "domain-gone")
        self.recorder.action("restore_hard", {"cpus": sorted(held.original), "why": why,
                                              "mode": held.mode},
                             held.subject(), "skipped", error="domain gone",
                             decision_seq=held.decision)

    def _forget(self, held: Held, outcome: str) -> None:
        self.journal.record_restore(held.domain, held.vcpu, outcome=outcome)
        if self.held.get(held.key) is held:
            del self.held[held.key]

    async def restore_all(self, why: str) -> int:
        """Restore every pin held (SIGTERM); returns how many could not be."""
        failed = 0
        for held in sorted(self.held.values(), key=lambda h: h.key):
            if not await self.restore(held, view=None, why=why):
                failed += 1
        return failed

    async def restore_leftovers(self, view: HostView | None) -> None:
        """Between actions, no temporary pin should be left: restore those an action
        could not (a failed restore, backing off; an action cut off by its time bound)."""
        now = self.clock()
        for held in [h for h in self.held.values()
                     if (h.restore_failed and now >= h.retry_at)
                     or (h.mode == TEMPORARY and not h.restore_failed)]:
            why = "retrying a failed restore" if held.restore_failed else "left by its action"
            await self.restore(held, view=view, why=why)

    async def restore_journal(self) -> int:
        """On start: put back every original the journal holds (a previous agent was
        killed with pins in place). Returns how many are still outstanding."""
        pins = self.journal.outstanding()
        if not pins:
            return 0
        domains = await call(self.retry, Tries(), self.hv.domains)
        left = 0
        for pin in pins:
            info = pin.domain.find(domains)
            subject = Subject(domain=pin.domain.name, domid=pin.domain.domid,
                              uuid=pin.domain.uuid, vcpu=pin.vcpu)
            params = {"cpus": sorted(pin.original_hard), "why": "journal on start",
                      "pinned_at": pin.pinned_at, "age_s": max(time.time() - pin.pinned_at, 0.0)}
            if info is None:
                self.journal.record_restore(pin.domain, pin.vcpu, outcome="domain-gone")
                self.recorder.action("restore_hard", params, subject, "skipped",
                                     error="domain gone")
                continue
            tries = Tries()
            put_back = partial(self.hv.set_vcpu_affinity, info.domid, pin.vcpu,
                               pin.original_hard, None)
            try:
                await call(self.retry, tries, put_back)
            except NoSuchDomain:
                self.journal.record_restore(pin.domain, pin.vcpu, outcome="domain-gone")
                self.recorder.action("restore_hard", params, subject, "skipped",
                                     error="domain gone", attempts=tries.count)
                continue
            except HypervisorError as exc:
                left += 1
                self.recorder.action("restore_hard", params, subject, "failed", error=str(exc),
                                     attempts=tries.count)
                # Held again, so the agent keeps trying and SIGTERM tries once more.
                self.held[(info.domid, pin.vcpu)] = Held(
                    DomainKey.of(info), pin.vcpu, pin.original_hard, pin.narrowed_to, -1,
                    TEMPORARY, self.clock(), restore_failed=True)
                continue
            self.journal.record_restore(pin.domain, pin.vcpu, outcome="restored")
            self.recorder.action("restore_hard", params, subject, "ok", attempts=tries.count)
        return left
