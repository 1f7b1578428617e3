"""Bringing vCPUs home: fixups, swaps, settle windows and sustained narrowing.

One fix-and-forget pin is not enough (seen on a real Xen 4.17: under slight
overcommit credit1 undoes a temporary pin within a fraction of a second;
under credit2 restoring hard affinity can start a fresh cross-node swap). So:

- A **fixup** narrows the vCPU's hard affinity to its home node (within its
  soft and original hard affinity), waits until it runs there (bounded by the
  action's ``timeout_s``), restores the original, and then watches it for the
  action's ``settle_s``.
- Temporary or **sustained** is chosen by what it is worth. If the vCPU's home
  node cannot hold its own vCPUs (the pool's overflow there), the scheduler
  will keep pulling vCPUs off it, and a temporary pin is undone at once: the
  narrowing is kept (sustained) from the start. Likewise when a vCPU wanders
  off again within its settle window while that costs work (``misplaced``).
- A sustained narrowing is **relaxed** as soon as it costs work itself: its
  home node overflows while another node has spare pCPUs its overflow is not
  using (the seed's worry: a node left idle during a burst elsewhere). It is
  also tried without after ``review_s`` once its home has room again; that
  period doubles each time the vCPU wanders back off (back-off per vCPU). A
  domain that starts, stops, pauses or unpauses changes what every node needs:
  the back-offs start over, and narrowings made before it are tried without
  ``review_first_s`` after it. A paused domain's narrowings are undone at once:
  its vCPUs do not run.
- Weight-fair shares bound all of it: the model (``agent.state``) lets a node's
  overflow spill onto a node whose own domains would otherwise take more than
  their fair share, so a narrowing that keeps a domain below its share while the
  other node's domains run above theirs finds room there and is relaxed.
- A **swap** pins two vCPUs, each on the other's home node, to their homes at
  once, then restores both and watches both.

Everything is recorded: the narrowing and restore steps by ``pins``, and one
``vcpu.fixup`` / ``vcpu.swap`` record per action with its outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import trio

from agent.daemon.pins import SUSTAINED, TEMPORARY, Held, PinKeeper
from agent.daemon.recorder import Recorder, vcpu_subject
from agent.daemon.retry import RetryPolicy, Tries, call
from agent.hypervisor.interface import Hypervisor, HypervisorError, NoSuchDomain
from agent.hypervisor.model import CpuSet, VcpuInfo
from agent.journal import DomainKey
from agent.rules import VcpuFixup, VcpuSwap
from agent.state import HostView, VcpuKey, VcpuView, fair_demand

log = logging.getLogger("xnuma.fixup")

CUT_OFF = "cut off (the agent is stopping, or the action ran out of time)"

# Whole vCPUs: a node whose own demand exceeds its pCPUs by less than this fits.
_OVERFLOW_VCPU = 0.5


@dataclass(frozen=True, slots=True)
class FixupPolicy:
    wait_step_s: float = 0.02  # how often to look while waiting for the vCPU to get home
    review_first_s: float = 1.0  # a sustained narrowing is first tried without after this
    review_max_s: float = 300.0
    settle_s: float = 10.0  # watch after relaxing or trying without a sustained narrowing
    # A temporary pin (fixup, swap) to one chosen pCPU of the home node, or to its whole
    # soft mask there (default: a temporary pin is undone moments later, so the
    # scheduler's own pick is as good; measured on the seed runs it makes no
    # difference under credit1 and helps credit2, whose runqueues span many pCPUs).
    # A sustained narrowing always goes through a chosen pCPU (see pins.narrow).
    spread_temporary: bool = False


@dataclass(slots=True)
class Watch:
    """A settle window: the vCPU was put home and left free; does it stay?"""

    domain: DomainKey
    vcpu: int
    node: int
    until: float
    review_s: float  # sustained narrowing period if it wanders off
    decision: int | None


@dataclass(slots=True)
class Outcome:
    status: str = "ok"  # ok | failed | skipped
    error: str | None = None
    tries: Tries = field(default_factory=Tries)
    mode: str = TEMPORARY
    home: bool = False


def home_mask(v: VcpuInfo, node_cpus: CpuSet) -> CpuSet:
    """Where to narrow to: the node within soft and hard affinity, else within hard."""
    target = node_cpus & v.soft & v.hard
    return target or (node_cpus & v.hard)


def overflows(view: HostView, pool: str, node: int) -> bool:
    b = view.balance.get((pool, node))
    return b is not None and b.overflow > _OVERFLOW_VCPU


def spill_room(view: HostView) -> dict[tuple[str, int, int], float]:
    """Per (pool, home, other node): spill the model allows there that no vCPU uses yet."""
    used: dict[tuple[str, int, int], float] = {}
    for v in view.vcpus:
        away = v.home_node >= 0 and v.node >= 0 and v.node != v.home_node
        if away and not v.misplaced:
            key = (v.domain.pool, v.home_node, v.node)
            used[key] = used.get(key, 0.0) + fair_demand(v)
    return {key: flow - used.get(key, 0.0) for key, flow in view.flows.items()}


def spill_nodes(view: HostView, pool: str, home: int) -> list[int]:
    """Other nodes where the home's overflow may still go (room for a whole vCPU)."""
    room = spill_room(view)
    return sorted(m for (p, h, m), r in room.items()
                  if p == pool and h == home and r >= _OVERFLOW_VCPU)


class Fixer:
    def __init__(
        self,
        hypervisor: Hypervisor,
        keeper: PinKeeper,
        recorder: Recorder,
        *,
        policy: FixupPolicy | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = trio.current_time,
        pool_cpus: Callable[[str], CpuSet | None] = lambda pool: None,
    ) -> None:
        self.pool_cpus = pool_cpus
        # (the view, pCPU -> vCPUs): the view itself, not its id(): a new view can get
        # the id of a collected one, and a stale count made runs irreproducible.
        self._placed: tuple[HostView | None, dict[int, int]] = (None, {})
        self.hv = hypervisor
        self.keeper = keeper
        self.recorder = recorder
        self.policy = policy or FixupPolicy()
        self.retry = retry or RetryPolicy()
        self.clock = clock
        self.watches: dict[VcpuKey, Watch] = {}
        self._review: dict[tuple[str, int], float] = {}  # (uuid, vcpu) -> next review period
        self._domains: frozenset[tuple[int, str]] = frozenset()  # (domid, state) last seen
        self._changed_at = float("-inf")  # when that set last changed

    # -- actions -------------------------------------------------------------------

    async def fixup(self, action: VcpuFixup, decision: int | None, view: HostView) -> Outcome:
        start = self.clock()
        out = Outcome()
        try:
            await self._fixup(action, decision, view, out)
        except trio.Cancelled:
            out.status, out.error = "failed", CUT_OFF
            raise
        except NoSuchDomain as exc:
            out.status, out.error = "skipped", f"domain gone: {exc}"
        except HypervisorError as exc:
            out.status, out.error = "failed", str(exc)
        finally:
            self._record_fixup(action, decision, view, out, start)
        return out

    def _record_fixup(
        self, action: VcpuFixup, decision: int | None, view: HostView, out: Outcome,
        start: float,
    ) -> None:
        params = {"domid": action.domid, "vcpu": action.vcpu, "node": action.node,
                  "mode": out.mode, "home": out.home}
        self.recorder.action(VcpuFixup.TYPE, params,
                             vcpu_subject(view, action.domid, action.vcpu, action.node),
                             out.status, error=out.error, attempts=out.tries.count,
                             duration=self.clock() - start, decision_seq=decision)

    async def _fixup(
        self, action: VcpuFixup, decision: int | None, view: HostView, out: Outcome
    ) -> None:
        dom = view.domain_by_id.get(action.domid)
        node = view.node_by_id.get(action.node)
        if dom is None or node is None:
            out.status, out.error = "skipped", "no such domain or node any more"
            return
        v = await self._vcpu(action.domid, action.vcpu, out.tries)
        if v is None:
            out.status, out.error = "skipped", "no such vCPU any more"
            return
        target = home_mask(v, node.cpu_set)
        if not target:
            out.status, out.error = "skipped", f"its hard affinity excludes node {node.id}"
            return
        if v.cpu is not None and v.cpu in target:
            out.status, out.error, out.home = "skipped", "already home", True
            return
        key = DomainKey(dom.domid, dom.name, dom.uuid or None)
        if overflows(view, dom.pool, node.id):
            # Home and the nodes its overflow may use: off the node where it costs work.
            out.mode = SUSTAINED
            via = self.spread_cpu(view, target, dom.pool)
            for m in spill_nodes(view, dom.pool, node.id):
                target |= view.node_at(m).cpu_set & v.hard
            held = await self.keeper.narrow(
                key, action.vcpu, v.hard, target, node.id, SUSTAINED, view=view,
                decision=decision, review_s=self._review_period(dom.uuid, action.vcpu),
                via=via,
                reason=f"node {node.id} overflows: a temporary pin would be undone at once")
            out.home = held is not None
            if held is None:
                out.status, out.error = "failed", "narrowing failed"
            return
        cpu = self.spread_cpu(view, target, dom.pool) if self.policy.spread_temporary else None
        if cpu is not None:
            target = frozenset({cpu})
        held = await self.keeper.narrow(key, action.vcpu, v.hard, target, node.id, TEMPORARY,
                                        view=view, decision=decision, reason="fixup")
        if held is None:
            out.status, out.error = "failed", "narrowing failed"
            return
        out.home = await self._wait_home([held], action.timeout_s, out.tries)
        restored = await self.keeper.restore(held, view=view, why="fixup done")
        if not restored:
            out.status, out.error = "failed", "restore failed (kept for a retry)"
            return
        if key.domid in view.domain_by_id:
            self.watch(held, action.settle_s, decision)

    async def swap(self, action: VcpuSwap, decision: int | None, view: HostView) -> Outcome:
        start = self.clock()
        out = Outcome()
        try:
            await self._swap(action, decision, view, out)
        except trio.Cancelled:
            out.status, out.error = "failed", CUT_OFF
            raise
        except NoSuchDomain as exc:
            out.status, out.error = "skipped", f"domain gone: {exc}"
        except HypervisorError as exc:
            out.status, out.error = "failed", str(exc)
        finally:
            params = {"domid": action.domid, "vcpu": action.vcpu,
                      "with_domid": action.with_domid, "with_vcpu": action.with_vcpu,
                      "home": out.home}
            self.recorder.action(VcpuSwap.TYPE, params,
                                 vcpu_subject(view, action.domid, action.vcpu), out.status,
                                 error=out.error, attempts=out.tries.count,
                                 duration=self.clock() - start, decision_seq=decision,
                                 peer=vcpu_subject(view, action.with_domid, action.with_vcpu))
        return out

    async def _swap(
        self, action: VcpuSwap, decision: int | None, view: HostView, out: Outcome
    ) -> None:
        pairs = ((action.domid, action.vcpu), (action.with_domid, action.with_vcpu))
        plan: list[tuple[DomainKey, VcpuInfo, CpuSet, int]] = []
        for domid, vcpu in pairs:
            dom = view.domain_by_id.get(domid)
            here = view.vcpu_by_key.get((domid, vcpu))
            if dom is None or here is None or here.home_node < 0:
                out.status, out.error = "skipped", f"d{domid}v{vcpu} has no home any more"
                return
            v = await self._vcpu(domid, vcpu, out.tries)
            if v is None:
                out.status, out.error = "skipped", f"d{domid}v{vcpu} is gone"
                return
            target = home_mask(v, view.node_at(here.home_node).cpu_set)
            if not target:
                out.status, out.error = "skipped", f"d{domid}v{vcpu}: hard affinity excludes home"
                return
            cpu = self.spread_cpu(view, target, dom.pool) if self.policy.spread_temporary else None
            target = frozenset({cpu}) if cpu is not None else target
            plan.append((DomainKey(domid, dom.name, dom.uuid or None), v, target,
                         here.home_node))
        home_now = [v.cpu is not None and v.cpu in view.node_at(node).cpu_set
                    for _, v, _, node in plan]
        if all(home_now):
            out.status, out.error, out.home = "skipped", "both already home", True
            return
        held: list[Held] = []
        try:
            for key, v, target, node in plan:
                h = await self.keeper.narrow(key, v.vcpu, v.hard, target, node, TEMPORARY,
                                             view=view, decision=decision, reason="swap")
                if h is None:
                    out.status, out.error = "failed", f"narrowing d{key.domid}v{v.vcpu} failed"
                    return
                held.append(h)
            out.home = await self._wait_home(held, action.timeout_s, out.tries)
        finally:
            for h in held:
                if not await self.keeper.restore(h, view=view, why="swap done"):
                    out.status, out.error = "failed", "restore failed (kept for a retry)"
                elif h.domain.domid in view.domain_by_id:
                    self.watch(h, self.policy.settle_s, decision)

    # -- where exactly -----------------------------------------------------------------

    def spread_cpu(self, view: HostView, mask: CpuSet, pool: str) -> int | None:
        """The pCPU of ``mask`` (within the pool) with the fewest vCPUs that stay there:
        busy vCPUs at home count, misplaced ones (about to leave) do not."""
        known = self.pool_cpus(pool)
        candidates = sorted(mask & known if known else mask)
        if not candidates:
            return None
        if self._placed[0] is not view:
            load: dict[int, int] = {}
            for v in view.vcpus:
                if v.cpu >= 0 and not v.misplaced and v.state in ("running", "runnable"):
                    load[v.cpu] = load.get(v.cpu, 0) + 1
            self._placed = (view, load)
        load = self._placed[1]
        best = min(candidates, key=lambda c: (load.get(c, 0), c))
        load[best] = load.get(best, 0) + 1
        return best

    # -- waiting and looking ---------------------------------------------------------

    async def _vcpu(self, domid: int, vcpu: int, tries: Tries) -> VcpuInfo | None:
        for v in await call(self.retry, tries, partial(self.hv.vcpus, domid)):
            if v.vcpu == vcpu:
                return v
        return None

    async def _wait_home(self, held: list[Held], timeout_s: float, tries: Tries) -> bool:
        """Until each vCPU runs inside its narrowed mask, at most ``timeout_s``."""
        with trio.move_on_after(timeout_s):
            while True:
                home = True
                for h in held:
                    v = await self._vcpu(h.domain.domid, h.vcpu, tries)
                    if v is None:
                        raise NoSuchDomain(f"d{h.domain.domid}v{h.vcpu} went away")
                    home = home and v.cpu is not None and v.cpu in h.narrowed
                if home:
                    return True
                await trio.sleep(self.policy.wait_step_s)
        return False

    # -- after the action: settle windows, sustained narrowings ------------------------

    def watch(self, held: Held, settle_s: float, decision: int | None) -> None:
        self.watches[held.key] = Watch(held.domain, held.vcpu, held.node,
                                       self.clock() + settle_s,
                                       self._review_period(held.domain.uuid or "", held.vcpu),
                                       decision)

    def _review_period(self, uuid: str, vcpu: int) -> float:
        return self._review.get((uuid, vcpu), self.policy.review_first_s)

    def _backoff(self, uuid: str, vcpu: int) -> float:
        """The vCPU wandered off again: the next sustained narrowing lasts twice as long."""
        period = self._review_period(uuid, vcpu)
        self._review[(uuid, vcpu)] = min(period * 2, self.policy.review_max_s)
        return period

    async def review(self, view: HostView) -> None:
        """After each scan: settle windows, sustained narrowings, failed restores."""
        await self.keeper.restore_leftovers(view)
        domains = frozenset((d.domid, d.state) for d in view.domains)
        if domains != self._domains:
            if self._domains:
                self._changed_at = self.clock()
                self._review.clear()
            self._domains = domains
        await self._settle(view)
        await self._sustained(view)

    async def _settle(self, view: HostView) -> None:
        now = self.clock()
        for key, w in sorted(self.watches.items()):
            v = view.vcpu_by_key.get(key)
            dom = view.domain_by_id.get(key[0])
            if v is None or dom is None or dom.uuid != (w.domain.uuid or dom.uuid):
                del self.watches[key]
                continue
            if v.misplaced and not v.agent_pinned and dom.state == "running":
                del self.watches[key]
                if not await self._sustain(v, dom.pool, w, view):
                    self.watches[key] = w  # home again by now: keep watching
            elif now >= w.until:
                del self.watches[key]
                uuid = w.domain.uuid or ""
                if (uuid, w.vcpu) in self._review:  # it stayed: halve the back-off
                    period = self._review[(uuid, w.vcpu)] / 2
                    if period <= self.policy.review_first_s:
                        del self._review[(uuid, w.vcpu)]
                    else:
                        self._review[(uuid, w.vcpu)] = period

    async def _sustain(self, v: VcpuView, pool: str, w: Watch, view: HostView) -> bool:
        """It wandered off where that costs work: keep it home for a while. False when
        a fresh look finds it home already (the settle window goes on)."""
        try:
            return await self._sustain_now(v, pool, w, view)
        except (NoSuchDomain, HypervisorError):
            return True  # gone, or recorded as failed by the keeper

    async def _sustain_now(self, v: VcpuView, pool: str, w: Watch, view: HostView) -> bool:
        tries = Tries()
        info = await self._vcpu(v.domid, v.id, tries)
        if info is None:
            return True
        target = home_mask(info, view.node_at(v.home_node).cpu_set)
        if not target:
            return True
        via = self.spread_cpu(view, target, pool)
        if overflows(view, pool, v.home_node):
            for m in spill_nodes(view, pool, v.home_node):
                target |= view.node_at(m).cpu_set & info.hard
        if info.cpu is not None and info.cpu in target:
            return False
        period = self._backoff(w.domain.uuid or "", w.vcpu)
        await self.keeper.narrow(
            w.domain, w.vcpu, info.hard, target, v.home_node, SUSTAINED, view=view,
            decision=w.decision, review_s=period, via=via,
            reason=f"wandered off node {v.home_node} again within its settle window")
        return True

    async def _renarrow(self, h: Held, v: VcpuView, pool: str, view: HostView) -> None:
        node_cpus = view.node_at(h.node).cpu_set
        target = node_cpus & h.original & (v.soft or node_cpus) or node_cpus & h.original
        if overflows(view, pool, h.node):
            for m in spill_nodes(view, pool, h.node):
                target |= view.node_at(m).cpu_set & h.original
        if not target or target == h.narrowed:
            return
        try:
            await self.keeper.narrow(
                h.domain, h.vcpu, h.original, target, h.node, SUSTAINED, view=view,
                decision=h.decision, review_s=h.review_s,
                via=self.spread_cpu(view, target & node_cpus, pool),
                reason="its spill node is wanted by its own vCPUs again")
        except (NoSuchDomain, HypervisorError):
            return

    async def _sustained(self, view: HostView) -> None:
        now = self.clock()
        sustained = sorted((h for h in self.keeper.held.values()
                            if h.mode == SUSTAINED and not h.restore_failed),
                           key=lambda h: (h.since, h.key))
        room = spill_room(view)
        for h in sustained:
            dom = view.domain_by_id.get(h.domain.domid)
            if dom is None or (h.domain.uuid and dom.uuid != h.domain.uuid):
                self.keeper.drop(h, view=view, why="domain gone")
                continue
            if dom.state in ("paused", "shutdown", "crashed", "dying"):
                # Its vCPUs do not run: the pin buys nothing; when it runs again the
                # agent looks afresh.
                await self.keeper.restore(h, view=view, why=f"domain {dom.state}")
                continue
            v = view.vcpu_by_key.get(h.key)
            if v is not None and v.misplaced:
                # Pinned to its home and a spill node that its home's overflow may no
                # longer use: narrow it to where it costs no work now.
                await self._renarrow(h, v, dom.pool, view)
                continue
            inside = view_nodes(view, h.narrowed)
            free = [(p, hn, m) for (p, hn, m), r in sorted(room.items())
                    if p == dom.pool and hn == h.node and m not in inside
                    and r >= _OVERFLOW_VCPU]
            if free:
                room[free[0]] -= 1.0
                why = (f"relax: node {h.node} cannot hold its own vCPUs and node "
                       f"{free[0][2]} has spare pCPUs for them")
                if await self.keeper.restore(h, view=view, why=why):
                    self.watches[h.key] = Watch(h.domain, h.vcpu, h.node,
                                                now + self.policy.settle_s, h.review_s,
                                                h.decision)
                continue
            changed = (self._changed_at > h.since
                       and now - self._changed_at >= self.policy.review_first_s)
            due = not overflows(view, dom.pool, h.node) and (
                now - h.since >= h.review_s or changed)
            if due and await self.keeper.restore(h, view=view, why="trial: its home has room"):
                self.watches[h.key] = Watch(h.domain, h.vcpu, h.node,
                                            now + self.policy.settle_s,
                                            self._review_period(h.domain.uuid or "", h.vcpu),
                                            h.decision)



def view_nodes(view: HostView, cpus: CpuSet) -> frozenset[int]:
    return frozenset(n.id for n in view.nodes if not n.cpu_set.isdisjoint(cpus))
