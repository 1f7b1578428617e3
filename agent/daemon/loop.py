"""The agent: one trio nursery from host events to fixes, everything recorded.

    signals (xenstore watches, poller, tick)      one bounded, coalescing channel
        -> scan: observe -> build_state -> diff -> events
        -> per event: decide (pure) -> decisions, recorded -> actions, in order
        -> review: settle windows, sustained narrowings, leftover pins

A wake-up about a few domains (``@introduceDomain``/``@releaseDomain``: the
domain list may have changed) or about an extension's events (a placement
request) takes a quick pass instead of a full scan: the domain list, then only
the domains that changed looked at (``Observer.observe_domains``), patched
into the last snapshot (``agent.state.patch_domains``) and diffed
(``diff_domains``), and the rules decide at once. More than
``QUICK_MAX_DOMAINS`` changed (a burst), dom0 changed, or no snapshot yet: a
full scan instead. Full scans stay for the poll, the tick and a resync, and
follow every burst interval while a burst lasts; on a big host no sooner than
``SCAN_SHARE`` times the last one's look (observation and decisions, its
actions apart) after it, a poll interval at most, so that the loop is rarely
mid-scan when an event comes.

Extensions (``hooks``, ``agent.daemon.hooks``) add to this: placement requests
(socket, xenstore) become events and ``domain.place`` actions; dom0's backends
join each observation and ``backend.pin`` actions bind them.

``Agent.run(hypervisor)`` is all of it; ``xnuma run`` (real host or the
simulator in real time), ``xnuma demo``/``xnuma sim --agent`` (the simulator in
virtual time) and the tests run this same code. On start every pin the journal
holds is restored first (a previous agent was killed with pins in place).
``stop(reason)`` (``xnuma run`` calls it on SIGTERM) restores every pin held and
returns; plain cancellation (the simulator's run ending, a kill) leaves the
journal to the next start, as a kill -9 would.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import trio

from agent.audit.writer import AuditWriter, flush_periodically
from agent.daemon import sources
from agent.daemon.actions import Actions, Pending
from agent.daemon.config import AgentConfig
from agent.daemon.diff import DOMAIN_EVENTS, DiffMemory, diff, diff_domains
from agent.daemon.fixup import Fixer, FixupPolicy
from agent.daemon.hooks import AgentHooks, handlers_of
from agent.daemon.observe import Observer
from agent.daemon.pins import SUSTAINED, TEMPORARY, PinKeeper
from agent.daemon.recorder import Recorder
from agent.daemon.retry import RetryPolicy
from agent.daemon.soft import SoftSetter
from agent.hypervisor.interface import Hypervisor
from agent.hypervisor.model import DomainInfo, DomainState
from agent.journal import PinJournal
from agent.rules import Memory, ReloadResult, RuleReloader, decide, make_event
from agent.rules.events import Event
from agent.sdnotify import Notifier, watchdog_pinger
from agent.state import HostView, Observation, build_state, patch_domains
from agent.telemetry.agent_metrics import AgentMetrics
from agent.telemetry.prometheus import write_textfile
from agent.xenstore.client import Client, ConnectionLost, WatchLost, open_client
from agent.xenstore.transport import Transport
from agent.xenstore.wire import XenstoreError

if TYPE_CHECKING:  # the simulator's module: a real host's agent does not import it
    from agent.sim.run import AgentReport

log = logging.getLogger("xnuma.agent")

METRICS_EVERY_S = 15.0  # textfile refresh; node_exporter reads it about as often
QUICK_MAX_DOMAINS = 8  # more changed at once than this: a burst, for a full scan
QUICK_SPACING_S = 0.025  # quick passes at most this often (a storm folds into fewer)
SCAN_SHARE = 3.0  # a full scan starts no sooner than this many times the last one's length


@dataclass(slots=True)
class LoopStats:
    scans: int = 0  # full scans
    quick: int = 0  # quick passes (a few domains, or an extension's events)
    events: int = 0
    decisions: int = 0
    max_batch: int = 0  # most actions decided in one scan
    max_pins: int = 0  # most pins held at once
    off_node_episodes: int = 0  # a vCPU seen leaving its soft affinity
    misplaced_episodes: int = 0  # a vCPU seen becoming misplaced (costing work)
    pins_made: int = 0  # hard-affinity narrowings, temporary or sustained


class Agent:
    """The daemon. ``run`` it in a nursery; ``report()`` any time."""

    def __init__(
        self,
        config: AgentConfig,
        *,
        rules: RuleReloader,
        journal: PinJournal,
        recorder: Recorder,
        xenstore: Transport | None = None,
        notifier: Notifier | None = None,
        metrics: AgentMetrics | None = None,
        handle_signals: bool = False,
        watch_rule_files: bool = True,
        retry: RetryPolicy | None = None,
        fixup_policy: FixupPolicy | None = None,
        hooks: Sequence[AgentHooks] = (),
    ) -> None:
        """``hooks``: extensions (``agent.daemon.hooks``: placement, backend pinning)
        that complete each scan's observation, add events of their own and carry out
        the action types the agent does not."""
        self.config = config
        self.hooks = tuple(hooks)
        self.handlers = handlers_of(self.hooks)
        self.rules = rules
        self.journal = journal
        self.recorder = recorder
        self.xenstore = xenstore
        self.notifier = notifier
        self.metrics = metrics
        self.handle_signals = handle_signals
        self.watch_rule_files = watch_rule_files
        self.retry = retry or RetryPolicy()
        self.fixup_policy = fixup_policy or FixupPolicy()
        self.stats = LoopStats()
        self.view: HostView | None = None
        self.signals: sources.Signals | None = None
        self.keeper: PinKeeper | None = None
        self.stopped_by: str | None = None
        self.exit_code: int | None = None  # once stopped: 0, or 1 if a pin stayed narrowed
        self._stop_reason: str | None = None
        self._stop: trio.Event | None = None
        self._memory = Memory()
        self._diff = DiffMemory()
        # The last observation without its vCPUs (the snapshot has them): the base of
        # the quick passes' observations.
        self._frame: Observation | None = None
        self._scan_took = 0.0  # the last full scan's look and decisions, wall time
        self._misplaced: frozenset[tuple[int, int]] = frozenset()
        chained = rules.on_reload

        def on_reload(result: ReloadResult) -> None:
            recorder.reload(result)
            if notifier is not None and result.cause == "sighup":
                notifier.reloading()  # done already: tell systemd it is over at once
                notifier.ready(f"rules reloaded ({'ok' if result.ok else 'rejected'})")
            if chained is not None:
                chained(result)

        rules.on_reload = on_reload

    # -- control --------------------------------------------------------------------

    def stop(self, reason: str) -> None:
        """Restore every pin held, then return from ``run`` (SIGTERM)."""
        self._stop_reason = reason
        if self._stop is not None:
            self._stop.set()

    def report(self) -> AgentReport:
        """Actions carried out by type, and pins (temporary or sustained) not restored."""
        from agent.sim.run import AgentReport

        held = len(self.keeper.held) if self.keeper is not None else len(
            self.journal.outstanding())
        return AgentReport(self.recorder.action_counts(), held)

    # -- running --------------------------------------------------------------------

    async def run(self, hypervisor: Hypervisor) -> None:
        cfg = self.config
        self._stop = trio.Event()
        if self._stop_reason is not None:
            self._stop.set()
        observer = Observer(hypervisor, memory_interval_s=cfg.memory_interval_s)
        keeper = self.keeper = PinKeeper(hypervisor, self.journal, self.recorder,
                                         retry=self.retry)
        fixer = Fixer(hypervisor, keeper, self.recorder, policy=self.fixup_policy,
                      retry=self.retry, pool_cpus=observer.pool_cpus)
        actions = Actions(fixer, SoftSetter(hypervisor, self.recorder, retry=self.retry),
                          self.recorder, handlers=self.handlers)
        signals = self.signals = sources.Signals()
        burst = sources.Burst()
        self.recorder.start(cfg.as_record(), cfg.backend, cfg.dry_run)
        try:
            left = await keeper.restore_journal()
            if left:
                log.error("%d pins from the journal could not be restored yet", left)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sources.poll, signals, burst, cfg.poll_interval_s,
                                   cfg.burst_interval_s)
                nursery.start_soon(sources.tick, signals, cfg.tick_interval_s)
                if self.xenstore is not None:
                    nursery.start_soon(self._watch_xenstore, self.xenstore, signals, burst)
                if self.hooks:
                    await nursery.start(self._run_hooks, signals)
                if self.handle_signals or self.watch_rule_files:
                    await nursery.start(self._reload_rules)
                self._background(nursery)
                if self.notifier is not None:
                    self.notifier.ready(f"watching {cfg.backend}")
                    nursery.start_soon(watchdog_pinger, self.notifier)
                signals.post(sources.SCAN)
                with trio.CancelScope() as loop_scope:
                    nursery.start_soon(self._wait_stop, loop_scope)
                    last = last_quick = -float("inf")
                    while True:
                        kinds = await signals.receive()
                        if kinds - sources.FULL:
                            # Events about a few domains first, at once; quick passes
                            # spaced too, so that in a storm they fold up as well.
                            await trio.sleep_until(last_quick + QUICK_SPACING_S)
                            kinds |= signals.drain()
                            last_quick = trio.current_time()
                            if await self._quick(kinds - sources.FULL, observer, actions,
                                                 keeper, burst):
                                kinds &= sources.FULL
                            if not kinds:
                                continue
                        # At most one scan per burst interval: wake-ups arriving
                        # meanwhile (a storm of watch events) fold into the next one.
                        # On a big host, full scans take at most 1/SCAN_SHARE of the
                        # time, so that an event rarely finds the loop mid-scan.
                        spacing = min(SCAN_SHARE * self._scan_took, cfg.poll_interval_s)
                        await trio.sleep_until(last + max(cfg.burst_interval_s, spacing))
                        kinds |= signals.drain()
                        last = trio.current_time()
                        await self._scan(kinds, observer, actions, fixer, keeper, burst)
                # Stopped (an action cut off mid-way included): every pin back, then out.
                failed = len(keeper.held)
                with trio.CancelScope(shield=True), trio.move_on_after(60):
                    failed = await keeper.restore_all(f"agent stopping: {self._stop_reason}")
                if self.metrics is not None:
                    self.metrics.set_pins_outstanding(len(keeper.held))
                self.stopped_by = self._stop_reason or "stopped"
                self.exit_code = 1 if failed else 0
                self.recorder.stop(self.stopped_by, self.exit_code)
                if self.notifier is not None:
                    self.notifier.stopping()
                nursery.cancel_scope.cancel()
        finally:
            if self.stopped_by is None:  # cancelled or crashed: the journal keeps the pins
                self.recorder.stop("cancelled with pins in the journal" if keeper.held
                                   else "cancelled", 0)
            self._write_metrics()

    async def _wait_stop(self, loop_scope: trio.CancelScope) -> None:
        assert self._stop is not None
        await self._stop.wait()
        loop_scope.cancel()

    async def _reload_rules(self, task_status: trio.TaskStatus[None]) -> None:
        await self.rules.run(sighup=self.handle_signals, task_status=task_status)

    async def _watch_xenstore(
        self, transport: Transport, signals: sources.Signals, burst: sources.Burst
    ) -> None:
        try:
            async with open_client(transport) as client:
                await sources.watch_xenstore(client, signals, burst, self.config.burst_s)
        except* (ConnectionLost, OSError) as group:
            log.warning("no xenstore (%s): watching the host by polling only",
                        sources.why(group))

    async def _run_hooks(
        self, signals: sources.Signals, *, task_status: trio.TaskStatus[None]
    ) -> None:
        """The extensions' own tasks, on a xenstore client of their own. Without
        xenstore, or once it is lost, they go on without it (the placement socket,
        backends found by name), as the agent goes on polling."""
        wake = partial(signals.post, sources.EVENTS)
        started = False

        async def start_all(xs: Client | None) -> None:
            nonlocal started
            async with trio.open_nursery() as nursery:
                for h in self.hooks:
                    await nursery.start(h.run, xs, wake)
                if not started:
                    started = True
                    task_status.started()

        if self.xenstore is not None:
            try:
                async with open_client(self.xenstore) as xs:
                    await start_all(xs)
            except* (ConnectionLost, WatchLost, XenstoreError, OSError) as group:
                log.warning("placement requests and backend discovery go on without "
                            "xenstore (%s)", sources.why(group))
        await start_all(None)

    def _background(self, nursery: trio.Nursery) -> None:
        writer = self.recorder.writer
        if isinstance(writer, AuditWriter):
            nursery.start_soon(flush_periodically, writer)
        if self.metrics is not None and self.config.metrics_textfile:
            nursery.start_soon(self._metrics_textfile)
        if self.metrics is not None and self.config.metrics_port:
            from agent.telemetry.http_server import serve_metrics

            nursery.start_soon(serve_metrics, self.metrics.render, self.config.metrics_port)

    async def _metrics_textfile(self) -> None:
        while True:
            self._write_metrics()
            await trio.sleep(METRICS_EVERY_S)

    def _write_metrics(self) -> None:
        if self.metrics is None or not self.config.metrics_textfile:
            return
        try:
            write_textfile(self.metrics.registry, Path(self.config.metrics_textfile))
        except OSError as exc:
            log.warning("cannot write metrics to %s: %s", self.config.metrics_textfile, exc)

    # -- one scan -------------------------------------------------------------------

    async def _scan(
        self, kinds: frozenset[str], observer: Observer, actions: Actions, fixer: Fixer,
        keeper: PinKeeper, burst: sources.Burst,
    ) -> None:
        start = trio.current_time()
        obs, extra = await self._augment(await observer.observe(keeper.pinned()))
        # A resync (xenstore watches lost and re-made) needs nothing more than a scan:
        # the poll's diff against the last snapshot catches whatever the watches missed.
        previous = self.view
        view = build_state(obs, previous)
        events, self._diff = diff(previous, view, self._diff, self.config.poll_interval_s)
        if any(e.type in DOMAIN_EVENTS for e in events) and previous is not None:
            burst.start(self.config.burst_s)
        events += extra
        if sources.TICK in kinds:
            events.append(make_event("tick"))
        batch = self._decide(events, view, view.now, start)
        self._count_episodes(view)
        self.stats.scans += 1
        self.view = view
        self._scan_took = trio.current_time() - start  # its actions wait on the host
        await actions.run(batch, view)
        await fixer.review(view)
        self._after_actions(keeper)
        self._update_metrics(view, keeper)

    async def _quick(
        self, kinds: frozenset[str], observer: Observer, actions: Actions, keeper: PinKeeper,
        burst: sources.Burst,
    ) -> bool:
        """A quick pass for ``kinds`` (``DOMAINS``, ``EVENTS``) against the last
        snapshot; False (nothing done) when it takes a full scan instead."""
        previous, frame = self.view, self._frame
        if previous is None or frame is None:
            return False
        start = trio.current_time()
        touched: frozenset[int] = frozenset()
        obs = replace(frame, time=observer.clock())
        if sources.DOMAINS in kinds:
            domains = await observer.domains()
            touched = changed_domains(previous, domains)
            if len(touched) > QUICK_MAX_DOMAINS or 0 in touched:
                return False
            if touched:
                obs = await observer.observe_domains(domains, touched, frame, keeper.pinned())
            else:
                obs = replace(obs, domains=tuple(domains))
        obs, extra = await self._augment(obs)
        view, events = previous, list[Event]()
        if touched:
            view = patch_domains(previous, obs, touched)
            events, self._diff = diff_domains(previous, view, self._diff, touched,
                                              self.config.poll_interval_s)
            if any(e.type in DOMAIN_EVENTS for e in events):
                burst.start(self.config.burst_s)  # full scans follow it up
            self.stats.off_node_episodes += sum(
                1 for d in touched for v in view.domain_at(d).vcpus if v.off_since == obs.time)
        batch = self._decide(events + extra, view, obs.time, start)
        self.stats.quick += 1
        self.view = view
        await actions.run(batch, view)
        self._after_actions(keeper)
        return True

    async def _augment(self, obs: Observation) -> tuple[Observation, list[Event]]:
        """The extensions complete the observation and add their events; what is kept
        of it (without vCPUs: the snapshot has them) is the next quick pass's base."""
        extra: list[Event] = []
        for h in self.hooks:
            obs, more = await h.augment(obs)
            extra += more
        self._frame = replace(obs, vcpus=(), memory_kib={}, demand=None)
        return obs, extra

    def _after_actions(self, keeper: PinKeeper) -> None:
        for h in self.hooks:
            h.after_scan()
        self.stats.pins_made = keeper.made
        self.stats.max_pins = max(self.stats.max_pins, len(keeper.held))

    def _decide(self, events: list[Event], view: HostView, now: float, start: float
                ) -> list[Pending]:
        """Every event through the rules at ``now``, recorded; the decisions to act on."""
        ruleset = self.rules.current
        batch: list[Pending] = []
        for event in events:
            event_seq = self.recorder.event(event, view)
            decisions, self._memory = decide(view, event, now, ruleset, self._memory)
            for d in decisions:
                seq = self.recorder.decision(d, ruleset, view, event_seq,
                                             forced_dry_run=self.config.dry_run)
                if d.acts and not self.config.dry_run:
                    batch.append(Pending(d, seq))
            if self.metrics is not None:
                self.metrics.observe_event_lag(trio.current_time() - start)
        self.stats.events += len(events)
        self.stats.decisions += len(batch)
        self.stats.max_batch = max(self.stats.max_batch, len(batch))
        return batch

    def _count_episodes(self, view: HostView) -> None:
        misplaced = frozenset((v.domid, v.id) for v in view.vcpus if v.misplaced)
        self.stats.misplaced_episodes += len(misplaced - self._misplaced)
        self._misplaced = misplaced
        self.stats.off_node_episodes += sum(
            1 for v in view.vcpus if v.off_since is not None and v.off_since == view.now)

    def _update_metrics(self, view: HostView, keeper: PinKeeper) -> None:
        if self.metrics is None:
            return
        self.metrics.set_pins_outstanding(len(keeper.held))
        for d in view.domains:
            locality = d.locality if math.isfinite(d.locality) else 1.0
            self.metrics.set_domain(d.name, locality, d.off_node_vcpus)

    def pins_by_mode(self) -> dict[str, int]:
        if self.keeper is None:
            return {TEMPORARY: 0, SUSTAINED: 0}
        return {TEMPORARY: self.keeper.count(TEMPORARY), SUSTAINED: self.keeper.count(SUSTAINED)}


def changed_domains(view: HostView, domains: Sequence[DomainInfo]) -> frozenset[int]:
    """Domids of ``domains`` (the list now) that ``view`` does not hold as they are
    (new, reused, paused or unpaused), and of ``view``'s domains that are gone."""
    out: set[int] = set()
    for d in domains:
        seen = view.domain_by_id.get(d.domid)
        if seen is None or seen.uuid != d.uuid or (seen.state == "paused") != (
                d.state is DomainState.PAUSED):
            out.add(d.domid)
    listed = {d.domid for d in domains}
    out.update(k for k in view.domain_by_id if k not in listed)
    return frozenset(out)
