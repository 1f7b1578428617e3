"""The `xl` backend of the Hypervisor interface: real Xen through its toolstack CLI.

Every query runs `xl` as a child process (argv list, never a shell) under a
timeout, retried a bounded number of times with exponential back-off on trio's
clock; what `xl` prints is parsed by ``xl_parse`` (pure). Errors that retrying
cannot fix (no such domain or vCPU, a mask xl rejects) are raised at once.

The per-node memory of domains comes from Xen's debug key ``u``, which walks
every page of every domain under its page lock: it is rate-limited here, and
callers inside the interval get the last dump's figures.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TypeVar

import tenacity
import trio

from agent.hypervisor import xl_parse
from agent.hypervisor.interface import HypervisorError, NoSuchDomain, Rejected, transient
from agent.hypervisor.model import (
    CpuSet,
    DomainInfo,
    DomainState,
    Topology,
    VcpuInfo,
    format_cpuset,
)

T = TypeVar("T")


class XlError(HypervisorError):
    """`xl` failed: exit status, or a timeout. Carries what it printed."""

    def __init__(self, argv: Sequence[str], reason: str, stderr: str = "") -> None:
        self.argv = list(argv)
        self.reason = reason
        self.stderr = stderr
        detail = f": {stderr.strip()}" if stderr.strip() else ""
        super().__init__(f"`{' '.join(self.argv)}` {reason}{detail}")


class XlTimeout(XlError):
    """`xl` did not finish within the timeout (it was killed)."""


class XlRejected(XlError, Rejected):
    """xl refused the request itself (a bad mask or argument): retrying cannot help."""


# stderr of `xl` (4.17) when a domain or vCPU is not there (captured in tests/fixtures/xl/).
# A bad vCPU number gives EINVAL, as does a mask outside the domain's cpupool: both are
# "rejected", not "no such domain".
_NO_DOMAIN = re.compile(
    r"does not exist|Could not get domain info|Domain \d+:.*No such file or directory"
)
_REJECTED = re.compile(r"affinity map is empty|Invalid argument|Usage:|usage:")


def classify_failure(argv: Sequence[str], rc: int, stderr: str) -> XlError | NoSuchDomain:
    """The error for a failed `xl` run (pure: tested on captured output)."""
    if _NO_DOMAIN.search(stderr):
        return NoSuchDomain(f"`{' '.join(argv)}`: {stderr.strip()}")
    if _REJECTED.search(stderr):
        return XlRejected(argv, f"was rejected (exit {rc})", stderr)
    return XlError(argv, f"failed (exit {rc})", stderr)


@dataclass(frozen=True, slots=True)
class XlPolicy:
    """How hard to try. Defaults suit a real host; TCG testbeds want longer timeouts."""

    timeout_s: float = 30.0
    attempts: int = 3
    backoff_first_s: float = 0.5
    backoff_max_s: float = 5.0
    # Debug key `u` walks every page of every domain holding its lock: at most one dump per
    # interval; callers inside it get the previous dump's figures.
    memory_dump_interval_s: float = 30.0
    # Weights and caps normally come with `xl list -l` (no extra process). A domain it
    # leaves out (xl skips those whose configuration it cannot retrieve) is looked up in
    # `xl sched-credit` + `xl sched-credit2`, at most once per interval, at once for a
    # domid not seen there before.
    sched_interval_s: float = 30.0


class XlHypervisor:
    """Hypervisor over `xl`. ``xl`` is the argv prefix: ``("xl",)`` in dom0, or a wrapper
    that forwards to dom0 (the testbed's ``testbed.py run -- xl``)."""

    def __init__(
        self,
        xl: Sequence[str] = ("xl",),
        policy: XlPolicy | None = None,
        env: Mapping[str, str] | None = None,
    ) -> None:
        if not xl:
            raise ValueError("xl argv prefix is empty")
        self._xl = list(xl)
        self._policy = policy or XlPolicy()
        self._env = dict(env) if env is not None else None
        self._all_cpus: CpuSet | None = None
        self._dump_lock = trio.Lock()
        self._dump: dict[int, tuple[int, ...]] | None = None
        self._dump_at = -math.inf
        self._sched: dict[int, xl_parse.SchedParams] = {}
        self._sched_at = -math.inf
        self._sched_asked: set[int] = set()  # domids the last read covered (listed or not)

    # --- running xl ------------------------------------------------------------------------------
    async def _once(self, args: Sequence[str]) -> str:
        argv = [*self._xl, *args]
        with trio.move_on_after(self._policy.timeout_s) as scope:
            proc = await trio.run_process(
                argv, capture_stdout=True, capture_stderr=True, check=False, env=self._env
            )
        if scope.cancelled_caught:
            raise XlTimeout(argv, f"timed out after {self._policy.timeout_s} s")
        stderr = proc.stderr.decode("utf-8", "replace")
        if proc.returncode != 0:
            raise classify_failure(argv, proc.returncode, stderr)
        return str(proc.stdout.decode("utf-8", "replace"))

    async def run(self, *args: str) -> str:
        """stdout of `xl ARGS`, retried on failures that may pass (timeouts, exit status)."""
        return await self._parsed(str, *args)

    async def _parsed(self, parse: Callable[[str], T], *args: str) -> T:
        """Run and parse, one bounded retry loop for both: output cut short by a race
        (a domain going away mid-listing) is worth another try, like a failed run."""
        p = self._policy
        retrying = tenacity.AsyncRetrying(
            sleep=trio.sleep,
            stop=tenacity.stop_after_attempt(p.attempts),
            wait=tenacity.wait_exponential(multiplier=p.backoff_first_s, max=p.backoff_max_s),
            retry=tenacity.retry_if_exception(transient),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                return parse(await self._once(args))
        raise AssertionError("unreachable: tenacity reraises")

    # --- the Hypervisor interface ----------------------------------------------------------------
    async def topology(self) -> Topology:
        topo = await self._parsed(xl_parse.parse_topology, "info", "-n")
        self._all_cpus = topo.all_cpus
        return topo

    async def _cpus(self) -> CpuSet:
        if self._all_cpus is None:
            await self.topology()
        assert self._all_cpus is not None
        return self._all_cpus

    async def _list_rows(self) -> list[xl_parse.XlListRow]:
        return await self._parsed(xl_parse.parse_xl_list, "list", "-v", "-c")

    async def domains(self) -> list[DomainInfo]:
        rows = await self._list_rows()
        configs = await self._parsed(xl_parse.parse_xl_list_long, "list", "-l")
        missing = {
            r.domid for r in rows
            if (c := configs.get(r.domid)) is None or c.name != r.name or c.weight is None
        }
        if missing:
            await self._read_sched(missing)
        return xl_parse.domains_from(rows, configs, self._sched)

    async def _read_sched(self, domids: set[int]) -> None:
        """Refresh ``_sched`` from `xl sched-credit` and `xl sched-credit2` when due, or
        when a domain in ``domids`` has not been seen there yet."""
        now = trio.current_time()
        if now - self._sched_at < self._policy.sched_interval_s and domids <= self._sched_asked:
            return
        credit = await self._parsed(
            lambda t: xl_parse.parse_sched_credit(t, "xl sched-credit"), "sched-credit"
        )
        credit2 = await self._parsed(
            lambda t: xl_parse.parse_sched_credit(t, "xl sched-credit2"), "sched-credit2"
        )
        self._sched = {**credit, **credit2}
        self._sched_at = now
        # A domain in a pool of another scheduler (RTDS, null) is in neither listing:
        # asked all the same, so that it does not force a read every pass.
        self._sched_asked = domids | set(self._sched)

    async def vcpus(self, domid: int | None = None) -> list[VcpuInfo]:
        all_cpus = await self._cpus()
        args = ["vcpu-list"] if domid is None else ["vcpu-list", str(domid)]
        vcpus = await self._parsed(lambda t: xl_parse.parse_vcpu_list(t, all_cpus), *args)
        if domid is not None and not vcpus:
            raise NoSuchDomain(f"domain {domid} has no vCPUs listed by `xl vcpu-list`")
        # vcpu-list cannot tell a paused domain: take that from `xl list`.
        paused = frozenset(
            r.domid for r in await self._list_rows() if r.state is DomainState.PAUSED
        )
        return xl_parse.with_paused_domains(vcpus, paused)

    async def memory_per_node(self, domid: int) -> tuple[int, ...]:
        async with self._dump_lock:
            now = trio.current_time()
            if self._dump is None or now - self._dump_at >= self._policy.memory_dump_interval_s:
                await self.run("dmesg", "-c")  # so the next dmesg holds our dump only
                await self.run("debug-keys", "u")
                self._dump = await self._parsed(xl_parse.parse_numa_dump, "dmesg")
                self._dump_at = now
            dump = self._dump
        try:
            return dump[domid]
        except KeyError:
            raise NoSuchDomain(f"domain {domid} is not in Xen's memory dump") from None

    async def set_vcpu_affinity(
        self, domid: int, vcpu: int, hard: CpuSet | None, soft: CpuSet | None
    ) -> None:
        if hard is None and soft is None:
            return
        for name, mask in (("hard", hard), ("soft", soft)):
            if mask is not None and not mask:
                raise XlRejected(
                    ["vcpu-pin"], f"refused: empty {name} affinity for d{domid}v{vcpu}"
                )
        # Once: actions are retried by their caller (agent/daemon/retry.py), so that one
        # policy bounds them; retrying here too would multiply the attempts (and timeouts).
        await self._once((
            "vcpu-pin",
            str(domid),
            str(vcpu),
            "-" if hard is None else format_cpuset(hard),
            "-" if soft is None else format_cpuset(soft),
        ))
