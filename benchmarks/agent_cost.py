"""What the agent costs at scale: 1,000 domains x 4 vCPUs on 8 nodes, in one run.

    .venv/bin/python -m benchmarks.agent_cost [--requests N] [--write]

This process builds the simulated host (8 nodes x 64 pCPUs, dom0 with 2 vCPUs
pinned per node, 1,000 guests of 4 vCPUs, 10 % busy each, soft affinity and
memory on their node), lets it run for a simulated second, then holds it
still and serves it on two unix sockets: its xenstore (the embedded xenstored,
filled as libxl fills it) and its Hypervisor (``benchmarks/remote_hv.py``, pCPU
masks as text, parsed by the agent as the xl backend parses ``xl vcpu-list``).
The production agent runs in a child process, alone: ``open_agent`` with the
shipped rules, an audit log, placement and backend pinning, the defaults of
``xnuma run`` (1 s poll and tick). Measured in that one run:

- CPU time (the agent's thread) of each scan's observation (Observer.observe,
  build_state, diff) and of its decision (every decide() of the scan), through
  wrappers put around those functions in the child only;
- the child's peak RSS (VmHWM from /proc), and its RSS once everything is
  imported but before the agent starts (the interpreter and libraries);
- event-to-action latency, as the agent sees it: new guests created one at a
  time (each with a busy vCPU away from its soft node, which the shipped
  affinity-fixup rule sends home at once), from the moment the agent's
  xenstore client hands it the ``@introduceDomain`` watch event (the wake-up
  it posts) to the moment it issues the hypervisor call of the action
  (``set_vcpu_affinity`` on that guest); against a bare xenstore READ round
  trip on a connection to the same socket, measured between the events;
- end to end, for comparison: a placement request written to xenstore until
  the agent's answer is read back by the requester (the requester's WRITE,
  the watch to the agent, its READs of the request, its answer's WRITEs, the
  watch back and the READ of the answer: several round trips by protocol).

The agent process imports what ``xnuma run`` imports (``agent.cli``), so its
RSS is the one a dom0 administrator would see, the simulator's memory apart.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

NODES, CPUS_PER_NODE, DOMAINS, VCPUS = 8, 64, 1000, 4
NEW_DOMAINS = 30  # created one at a time for the event-to-action latency
GUEST_MIB = 2048
PLACEMENT_BASE = "/local/domain/0/xnuma/placement"
RUN_AT_LEAST_S = 33.0  # the agent runs this long at least (backends: full rescan every 30 s)
snapshots: list[Any] = []  # tracing: the heap after the second scan
TRACE_ENV = "XNUMA_BENCH_TRACEMALLOC"  # =1: the child reports its top allocation sites
LOG_ENV = "XNUMA_BENCH_LOG"  # a path: the agent's log is copied there
GOALS = {"decide_over_observe": 0.10, "peak_rss_mib": 40.0, "latency_over_read": 3.0}


def vm_kib(field: str, pid: int | str = "self") -> int:
    """A VmXXX line of /proc/<pid>/status, in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


# -- the child: the agent, instrumented -----------------------------------------------------


def _instrument(scans: list[dict[str, Any]], passes: list[dict[str, Any]],
                posts: list[float]) -> Callable[[Any], Any]:
    """Time observation and decision inside the agent's own scans and quick passes (this
    process only), and note when each ``DOMAINS`` wake-up is posted (the watch event
    read). Returns a wrapper for the agent's hooks factory that times each extension's
    part of the observation (``augment``) too."""
    from agent.daemon import loop, sources

    post = sources.Signals.post

    def noted_post(self: Any, kind: str) -> None:
        if kind == sources.DOMAINS:
            posts.append(time.monotonic())
        post(self, kind)

    setattr(sources.Signals, "post", noted_post)  # noqa: B010

    current: dict[str, Any] = {}
    snapshots.clear()

    def timed(fn: Any, key: str) -> Any:
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                current[key] = current.get(key, 0.0) + time.thread_time() - t
        return wrapper

    for name in ("Observer", "build_state", "diff", "decide"):
        if not hasattr(loop, name):
            raise RuntimeError(f"agent.daemon.loop has no {name} any more: update _instrument")
    observer_cls: Any = getattr(loop, "Observer")  # noqa: B009

    class TimedObserver(observer_cls):  # type: ignore[misc]
        async def observe(self, *args: Any, **kwargs: Any) -> Any:
            t = time.thread_time()
            try:
                return await super().observe(*args, **kwargs)
            finally:
                current["observe"] = current.get("observe", 0.0) + time.thread_time() - t

    scan = loop.Agent._scan

    async def timed_scan(self: Any, kinds: frozenset[str], *args: Any) -> None:
        current.clear()
        if tracemalloc.is_tracing():
            tracemalloc.reset_peak()
        start, cpu = time.monotonic(), time.thread_time()
        await scan(self, kinds, *args)
        scans.append({"start": start, "end": time.monotonic(), "kinds": sorted(kinds),
                      "cpu": time.thread_time() - cpu, "rss_kib": vm_kib("VmRSS"), **current})
        if tracemalloc.is_tracing():  # Python's own heap: after the scan, and its peak
            now, peak = tracemalloc.get_traced_memory()
            scans[-1]["traced_kib"] = [now // 1024, peak // 1024]
            if len(scans) == 2:
                snapshots.append(tracemalloc.take_snapshot())

    quick = loop.Agent._quick

    async def timed_quick(self: Any, kinds: frozenset[str], *args: Any) -> bool:
        current.clear()
        start, cpu = time.monotonic(), time.thread_time()
        done: bool = await quick(self, kinds, *args)
        passes.append({"start": start, "end": time.monotonic(), "kinds": sorted(kinds),
                       "cpu": time.thread_time() - cpu, "done": done, **current})
        return done

    setattr(loop.Agent, "_quick", timed_quick)  # noqa: B010
    setattr(loop, "Observer", TimedObserver)  # noqa: B010 (the names the loop calls)
    for name in ("build_state", "diff", "decide"):
        setattr(loop, name, timed(getattr(loop, name), name))
    setattr(loop.Agent, "_scan", timed_scan)  # noqa: B010

    def timed_hooks(factory: Any) -> Any:
        def make(recorder: Any) -> list[Any]:
            hooks = list(factory(recorder))
            for h in hooks:
                key, augment = f"augment {type(h).__name__}", h.augment

                async def timed_augment(obs: Any, key: str = key, augment: Any = augment) -> Any:
                    t = time.thread_time()
                    try:
                        return await augment(obs)
                    finally:
                        current[key] = current.get(key, 0.0) + time.thread_time() - t

                h.augment = timed_augment
            return hooks
        return make

    return timed_hooks


def child(xs_path: str, hv_path: str, out: str) -> int:
    import agent.cli.run_cmd  # noqa: F401  (what `xnuma run` imports, for the RSS)
    from agent.backends.procs import LinuxProcesses
    from agent.daemon.build import open_agent, shipped_rules_dir, standard_hooks
    from agent.daemon.config import AgentConfig
    from agent.xenstore.transport import unix_socket
    from benchmarks.remote_hv import RemoteHypervisor

    scans: list[dict[str, Any]] = []
    passes: list[dict[str, Any]] = []
    posts: list[float] = []
    calls: list[tuple[float, int]] = []  # (when, domid) of each set_vcpu_affinity
    timed_hooks = _instrument(scans, passes, posts)
    trace = bool(os.environ.get(TRACE_ENV))
    if trace:  # where the memory goes (slows the agent down: not for the figures)
        tracemalloc.start(4)
    rss_imported = vm_kib("VmRSS")
    with tempfile.TemporaryDirectory(prefix="xnuma-cost-") as tmp:
        config = AgentConfig(backend="sim", scenario="(the benchmark's host)",
                             rules_dir=str(shipped_rules_dir()),
                             audit_log=str(Path(tmp) / "audit.log"),
                             journal=str(Path(tmp) / "pins.journal"),
                             placement_socket=None).check("agent_cost")

        class NotedHypervisor(RemoteHypervisor):
            async def set_vcpu_affinity(self, domid: int, vcpu: int, hard: Any, soft: Any
                                        ) -> None:
                calls.append((time.monotonic(), domid))
                await super().set_vcpu_affinity(domid, vcpu, hard, soft)

        async def main() -> None:
            hv = NotedHypervisor(hv_path)
            with open_agent(config, xenstore=unix_socket(xs_path), watch_rule_files=False,
                            hooks=timed_hooks(standard_hooks(config, LinuxProcesses()))
                            ) as agent:
                async with trio.open_nursery() as nursery:
                    async def stop_on_sigterm() -> None:
                        with trio.open_signal_receiver(signal.SIGTERM) as signals:
                            async for _ in signals:
                                agent.stop("SIGTERM")
                                return

                    async def say_ready() -> None:
                        while agent.stats.scans < 1:
                            await trio.sleep(0.05)
                        print("ready", flush=True)

                    nursery.start_soon(stop_on_sigterm)
                    nursery.start_soon(say_ready)
                    await agent.run(hv)
                    nursery.cancel_scope.cancel()
                await hv.aclose()
                stats = agent.stats

            result = {"scans": scans, "quick": passes, "domain_posts": posts,
                      "affinity_calls": calls, "rss_imported_kib": rss_imported,
                      "peak_rss_kib": vm_kib("VmHWM"), "rss_end_kib": vm_kib("VmRSS"),
                      "agent_scans": stats.scans, "agent_quick": stats.quick,
                      "agent_events": stats.events,
                      "agent_decisions": stats.decisions, "hv_requests": hv.requests,
                      "actions": agent.report().actions}
            if trace:
                current, peak = tracemalloc.get_traced_memory()
                result["traced_kib"] = {"current": current // 1024, "peak": peak // 1024}
                result["top_allocations"] = [
                    f"{stat.size // 1024} KiB in {stat.count}: "
                    + " <- ".join(f"{Path(f.filename).name}:{f.lineno}"
                                  for f in reversed(stat.traceback))
                    for stat in tracemalloc.take_snapshot().statistics("traceback")[:12]]
                if snapshots:  # what grew since the second scan
                    result["grown_since_scan_2"] = [
                        f"+{stat.size_diff // 1024} KiB in +{stat.count_diff}: "
                        + " <- ".join(f"{Path(f.filename).name}:{f.lineno}"
                                      for f in reversed(stat.traceback))
                        for stat in tracemalloc.take_snapshot().compare_to(
                            snapshots[0], "lineno")[:14]]
            Path(out).write_text(json.dumps(result))

        trio.run(main)
    return 0


# -- the parent: the host, the sockets, the requester -----------------------------------------


def build_host() -> tuple[Any, Any]:
    """The simulated host and its toolstack (xenstore filled as libxl fills it)."""
    from agent.sim.engine import SimHost
    from agent.sim.spec import Bursty, DomainSpec, HostSpec, IoLike, NodeSpec
    from agent.sim.toolstack import SimToolstack

    spec = HostSpec(nodes=tuple(NodeSpec(CPUS_PER_NODE, 512 * 1024) for _ in range(NODES)),
                    seed=1)
    host = SimHost(spec)
    toolstack = SimToolstack.for_host(spec)
    dom0 = DomainSpec("Domain-0", 2 * NODES, 8192, is_dom0=True, memory_nodes=(0,),
                      pins=tuple(n * CPUS_PER_NODE + i for n in range(NODES) for i in (0, 1)),
                      workload=IoLike(100, 1900))
    toolstack.domain_created(host, host.create_domain(dom0))
    for d in range(DOMAINS):
        node = d % NODES
        soft = frozenset(range(node * CPUS_PER_NODE, (node + 1) * CPUS_PER_NODE))
        spec_d = DomainSpec(f"vm{d + 1:04d}", VCPUS, GUEST_MIB, workload=Bursty(5, 45),
                            soft=soft, memory_nodes=(node,))
        toolstack.domain_created(host, host.create_domain(spec_d))
    host.advance(1_000_000_000)  # a simulated second of load, then it holds still
    return host, toolstack


def percentile(xs: Sequence[float], p: float) -> float:
    s = sorted(xs)
    if not s:
        return float("nan")
    k = min(len(s) - 1, max(0, round(p / 100 * (len(s) - 1))))
    return s[k]


async def requester(xs_path: str, requests: int, reads_between: int, seed: int
                    ) -> tuple[list[float], list[float], list[tuple[float, float, str]]]:
    """Placement requests through xenstore, each timed until its answer is read; bare
    READs of the same connection timed between them."""
    from agent.xenstore.client import open_client
    from agent.xenstore.transport import unix_socket

    rng = random.Random(seed)
    reads: list[float] = []
    latencies: list[float] = []
    stamps: list[tuple[float, float, str]] = []
    async with open_client(unix_socket(xs_path)) as xs:
        for _ in range(50):  # warm up
            await xs.read("/local/domain/0/name")
        for i in range(requests):
            for _ in range(reads_between):
                t = time.monotonic()
                await xs.read("/local/domain/0/name")
                reads.append(time.monotonic() - t)
            where = f"{PLACEMENT_BASE}/bench{i}"
            async with xs.watch(f"{where}/result") as events:
                await events.receive()  # the registration event
                t0 = time.monotonic()
                await xs.write(f"{where}/request", f"vcpus={VCPUS} memory_mib={GUEST_MIB} "
                               f"name=new{i}".encode())
                while True:
                    await events.receive()
                    result = await xs.read(f"{where}/result")
                    if result is not None:
                        break
                t1 = time.monotonic()
            latencies.append(t1 - t0)
            stamps.append((t0, t1, result.decode()))
            await xs.rm(where)
            # Requests land at random points of the agent's 1 s poll cycle.
            await trio.sleep(rng.uniform(0.3, 1.3))
    return reads, latencies, stamps


async def creator(xs_path: str, host: Any, toolstack: Any, rows: Any, count: int,
                  reads_between: int, seed: int
                  ) -> tuple[list[float], list[tuple[float, int]]]:
    """New guests, one at a time, each with a busy vCPU on the next node while its
    soft affinity and memory are on its own node: the shipped affinity-fixup acts on
    it at once. Returns bare READ round trips timed between them, and when each was
    introduced (just before the toolstack's ``@introduceDomain``) with its domid."""
    from agent.hypervisor.model import VcpuState
    from agent.sim.spec import CpuBound, DomainSpec
    from agent.xenstore.client import open_client
    from agent.xenstore.transport import unix_socket

    rng = random.Random(seed)
    reads: list[float] = []
    created: list[tuple[float, int]] = []

    def cpus(node: int) -> frozenset[int]:
        return frozenset(range(node * CPUS_PER_NODE, (node + 1) * CPUS_PER_NODE))

    async with open_client(unix_socket(xs_path)) as xs:
        for i in range(count):
            for _ in range(reads_between):
                t = time.monotonic()
                await xs.read("/local/domain/0/name")
                reads.append(time.monotonic() - t)
            node = i % NODES
            # Its hard affinity: the next node, and its own node's pCPUs that are busy
            # now, so that it starts on the next node (credit1 picks an idle pCPU) and
            # the fixup may bring it home.
            busy = frozenset(v.cpu for v in host.vcpu_info()
                             if v.cpu is not None and v.cpu in cpus(node)
                             and v.state is VcpuState.RUNNING)
            domid = host.create_domain(DomainSpec(
                f"new{i:03d}", 1, GUEST_MIB, workload=CpuBound(), soft=cpus(node),
                hard=cpus((node + 1) % NODES) | busy, memory_nodes=(node,)))
            rows.refresh(domid)  # the host holds still: only the new guest's rows
            created.append((time.monotonic(), domid))
            toolstack.domain_created(host, domid)
            await trio.sleep(rng.uniform(0.3, 1.3))  # at random points of the poll cycle
    return reads, created


def run_parent(requests: int, reads_between: int, new_domains: int) -> dict[str, Any]:
    from agent.xenstore.server import serve_unix
    from benchmarks.remote_hv import HostRows, serve_hypervisor

    t_build = time.perf_counter()
    host, toolstack = build_host()
    rows = HostRows(host)
    build_s = time.perf_counter() - t_build
    with tempfile.TemporaryDirectory(prefix="xnuma-cost-") as tmp:
        xs_path, hv_path, out = (str(Path(tmp) / n) for n in ("xs.sock", "hv.sock", "out.json"))
        log_path = Path(tmp) / "agent.log"

        async def main() -> tuple[tuple[list[float], list[float], list[tuple[float, float, str]]],
                                  tuple[list[float], list[tuple[float, int]]]]:
            async with trio.open_nursery() as nursery:
                await nursery.start(serve_unix, toolstack.hub, xs_path)
                await nursery.start(serve_hypervisor, rows, hv_path)
                root = str(Path(__file__).resolve().parents[1])
                env = {**os.environ, "PYTHONPATH": root}
                with log_path.open("wb") as log:  # its warnings: no dom0 backend is local
                    proc = await trio.lowlevel.open_process(
                        [sys.executable, "-m", "benchmarks.agent_cost", "--child", xs_path,
                         hv_path, out], stdout=subprocess.PIPE, stderr=log, cwd=root, env=env)
                assert proc.stdout is not None
                line = b""
                while not line.endswith(b"\n"):
                    chunk = await proc.stdout.receive_some(64)
                    if not chunk:
                        tail = log_path.read_text(errors="replace").splitlines()[-20:]
                        raise RuntimeError("the agent exited before its first scan:\n"
                                           + "\n".join(tail))
                    line += chunk
                ready = trio.current_time()
                result = await requester(xs_path, requests, reads_between, seed=1)
                made = await creator(xs_path, host, toolstack, rows, new_domains,
                                     reads_between, seed=2)
                # Past the backend extension's periodic full rescan (every 30 s), and a
                # few more polls and ticks with nothing asked.
                await trio.sleep_until(max(ready + RUN_AT_LEAST_S, trio.current_time() + 3.0))
                proc.send_signal(signal.SIGTERM)
                with trio.fail_after(120):
                    code = await proc.wait()
                if code != 0:
                    tail = log_path.read_text(errors="replace").splitlines()[-20:]
                    raise RuntimeError(f"the agent exited with {code}:\n" + "\n".join(tail))
                nursery.cancel_scope.cancel()
            return result, made

        (reads, latencies, stamps), (create_reads, created) = trio.run(main)
        child_stats = json.loads(Path(out).read_text())
        child_stats["log_lines"] = len(log_path.read_text(errors="replace").splitlines())
        if os.environ.get(LOG_ENV):
            Path(os.environ[LOG_ENV]).write_bytes(log_path.read_bytes())
    return {"build_s": build_s, "reads": reads, "latencies": latencies, "stamps": stamps,
            "create_reads": create_reads, "created": created, **child_stats}


# -- the figures --------------------------------------------------------------------------------


def _augment(s: dict[str, Any]) -> float:
    return float(sum(v for k, v in s.items() if k.startswith("augment ")))


def _observe(s: dict[str, Any]) -> float:
    """The observation pass: the hypervisor's answers, the extensions' part, the snapshot
    and its diff against the last one."""
    return float(s.get("observe", 0.0) + s.get("build_state", 0.0) + s.get("diff", 0.0)
                 + _augment(s))


def domain_latencies(raw: dict[str, Any]) -> tuple[list[float], list[float], int]:
    """Per new guest: its watch event read (the agent's ``DOMAINS`` wake-up posted)
    to the hypervisor call of its action issued; the toolstack's introduce to that
    watch event (xenstored's part); and how many of the actions a quick pass issued."""
    posts = sorted(raw["domain_posts"])
    calls = sorted((t, d) for t, d in raw["affinity_calls"])
    quick = [p for p in raw["quick"] if p["done"]]
    out, delivery, by_quick = [], [], 0
    for t_made, domid in raw["created"]:
        event = next((p for p in posts if p >= t_made), None)
        if event is None:
            continue
        act = next((t for t, d in calls if d == domid and t >= event), None)
        if act is None:
            continue
        out.append(act - event)
        delivery.append(event - t_made)
        by_quick += any(p["start"] <= act <= p["end"] for p in quick)
    return out, delivery, by_quick


def event_waits(raw: dict[str, Any]) -> list[float]:
    """Per new guest: its watch event read to the start of the next pass (quick or
    full), the time the loop was busy with another one."""
    starts = sorted(p["start"] for p in raw["scans"] + raw["quick"])
    posts = sorted(raw["domain_posts"])
    out = []
    for t_made, _ in raw["created"]:
        event = next((p for p in posts if p >= t_made), None)
        start = next((t for t in starts if event is not None and t >= event), None)
        if event is not None and start is not None:
            out.append(start - event)
    return out


def figures(raw: dict[str, Any]) -> dict[str, Any]:
    scans = raw["scans"][1:]  # the first scan meets 1,000 domains at once: reported apart
    first = raw["scans"][0]
    ticked = [s for s in scans if "tick" in s["kinds"]]
    plain = [s for s in scans if "tick" not in s["kinds"]]
    obs_all = sum(_observe(s) for s in scans)
    dec_all = sum(s.get("decide", 0.0) for s in scans)
    ratios_tick = [s.get("decide", 0.0) / _observe(s) for s in ticked if _observe(s) > 0]
    # Where each request's time went: waiting for the pass that answered it, and that pass.
    waits, scan_s = [], []
    passes = sorted(raw["scans"] + [p for p in raw["quick"] if p["done"]],
                    key=lambda p: p["start"])
    for t0, t1, _ in raw["stamps"]:
        answering = [s for s in passes if s["start"] >= t0 and s["end"] <= t1]
        if answering:
            waits.append(answering[0]["start"] - t0)
            scan_s.append(answering[0]["end"] - answering[0]["start"])
    read_p50, read_p99 = percentile(raw["reads"], 50), percentile(raw["reads"], 99)
    lat_p50, lat_p99 = percentile(raw["latencies"], 50), percentile(raw["latencies"], 99)
    dom_lat, delivery, by_quick = domain_latencies(raw)
    dreads = raw["create_reads"]
    dread_p50, dread_p99 = percentile(dreads, 50), percentile(dreads, 99)
    ev_p50, ev_p99 = percentile(dom_lat, 50), percentile(dom_lat, 99)
    quick_done = [p for p in raw["quick"] if p["done"]]
    med = statistics.median
    return {
        "scans": len(scans), "ticked": len(ticked),
        "observe_ms_median": med(_observe(s) for s in scans) * 1e3,
        "observe_ms_max": max(_observe(s) for s in scans) * 1e3,
        "hv_observe_ms_median": med(s.get("observe", 0.0) for s in scans) * 1e3,
        "build_state_ms_median": med(s.get("build_state", 0.0) for s in scans) * 1e3,
        "augment_ms_median": med(_augment(s) for s in scans) * 1e3,
        "augment_ms_max": max(_augment(s) for s in scans) * 1e3,
        "augment_worst_part": max(((k, v) for s in scans for k, v in s.items()
                                   if k.startswith("augment ")), key=lambda kv: kv[1],
                                  default=("-", 0.0))[0].removeprefix("augment "),
        "decide_ms_tick_median": med(s.get("decide", 0.0) for s in ticked) * 1e3,
        "decide_ms_plain_median": (med(s.get("decide", 0.0) for s in plain) * 1e3
                                   if plain else float("nan")),
        "scan_cpu_ms_median": med(s["cpu"] for s in scans) * 1e3,
        "scan_cpu_ms_max": max(s["cpu"] for s in scans) * 1e3,
        "ratio_tick_median": med(ratios_tick) if ratios_tick else float("nan"),
        "ratio_tick_max": max(ratios_tick) if ratios_tick else float("nan"),
        "ratio_whole_run": dec_all / obs_all if obs_all else float("nan"),
        "first_scan_observe_ms": _observe(first) * 1e3,
        "first_scan_decide_ms": first.get("decide", 0.0) * 1e3,
        "first_scan_cpu_ms": first["cpu"] * 1e3,
        "rss_imported_mib": raw["rss_imported_kib"] / 1024,
        "peak_rss_mib": raw["peak_rss_kib"] / 1024,
        "rss_end_mib": raw["rss_end_kib"] / 1024,
        "rss_first_scan_mib": first["rss_kib"] / 1024,
        "read_p50_ms": read_p50 * 1e3, "read_p99_ms": read_p99 * 1e3,
        "latency_p50_ms": lat_p50 * 1e3, "latency_p99_ms": lat_p99 * 1e3,
        "latency_over_read_p50": lat_p50 / read_p50, "latency_over_read_p99": lat_p99 / read_p99,
        "event_p50_ms": ev_p50 * 1e3, "event_p99_ms": ev_p99 * 1e3,
        "event_read_p50_ms": dread_p50 * 1e3, "event_read_p99_ms": dread_p99 * 1e3,
        "event_over_read_p50": ev_p50 / dread_p50, "event_over_read_p99": ev_p99 / dread_p99,
        "event_delivery_ms_median": med(delivery) * 1e3 if delivery else float("nan"),
        "event_wait_ms_median": med(event_waits(raw)) * 1e3 if raw["created"] else float("nan"),
        "new_domains": len(raw["created"]), "new_domains_acted": len(dom_lat),
        "acted_in_quick_pass": by_quick,
        "quick_passes": len(quick_done),
        "quick_fallbacks": len(raw["quick"]) - len(quick_done),
        "quick_cpu_ms_median": med(p["cpu"] for p in quick_done) * 1e3 if quick_done
        else float("nan"),
        "quick_wall_ms_median": med(p["end"] - p["start"] for p in quick_done) * 1e3
        if quick_done else float("nan"),
        "wait_ms_median": med(waits) * 1e3 if waits else float("nan"),
        "wait_ms_max": max(waits) * 1e3 if waits else float("nan"),
        "answering_scan_ms_median": med(scan_s) * 1e3 if scan_s else float("nan"),
        "requests": len(raw["latencies"]), "reads": len(raw["reads"]),
        "event_reads": len(dreads),
        "answers": sorted({r for _, _, r in raw["stamps"]}),
        "actions": raw["actions"], "build_s": raw["build_s"],
        "agent_log_lines": raw.get("log_lines", 0),
        **{k: raw[k] for k in ("traced_kib", "top_allocations", "grown_since_scan_2")
           if k in raw},
    }


def _goal(value: float, goal: float) -> str:
    return "met" if value <= goal else "**not met**"


def table(f: dict[str, Any], command: str, machine: str) -> str:
    g = GOALS
    rows = [
        ("Observation pass, CPU ms (median scan; worst)",
         f"{f['observe_ms_median']:.1f} ({f['observe_ms_max']:.0f})",
         f"medians: hypervisor answers parsed {f['hv_observe_ms_median']:.1f}, build_state "
         f"{f['build_state_ms_median']:.1f}, extensions {f['augment_ms_median']:.1f} (worst "
         f"{f['augment_ms_max']:.0f}: {f['augment_worst_part']})", ""),
        ("Decision pass, CPU ms (median scan with a tick; without)",
         f"{f['decide_ms_tick_median']:.1f} ({f['decide_ms_plain_median']:.2f})", "", ""),
        ("Decision / observation, scans with a tick (median; worst)",
         f"{f['ratio_tick_median']:.2f} ({f['ratio_tick_max']:.2f})",
         f"<= {g['decide_over_observe']}", _goal(f["ratio_tick_median"], g["decide_over_observe"])),
        ("Decision / observation, whole run", f"{f['ratio_whole_run']:.2f}",
         f"<= {g['decide_over_observe']}", _goal(f["ratio_whole_run"], g["decide_over_observe"])),
        ("Whole scan, CPU ms (median; worst)",
         f"{f['scan_cpu_ms_median']:.0f} ({f['scan_cpu_ms_max']:.0f})",
         "with recording, actions and the fixups' review", ""),
        ("First scan (1,000 domains appear): observe / decide / whole scan, CPU ms",
         f"{f['first_scan_observe_ms']:.0f} / {f['first_scan_decide_ms']:.0f} / "
         f"{f['first_scan_cpu_ms']:.0f}", "", ""),
        ("Peak RSS of the agent process, MiB", f"{f['peak_rss_mib']:.1f}",
         f"<= {g['peak_rss_mib']:.0f}", _goal(f["peak_rss_mib"], g["peak_rss_mib"])),
        ("RSS once imported, before the agent starts; after its first scan, MiB",
         f"{f['rss_imported_mib']:.1f}; {f['rss_first_scan_mib']:.1f}",
         "imports: `xnuma run`'s (agent.cli)", ""),
        ("Bare xenstore READ round trip, ms (p50 / p99)",
         f"{f['event_read_p50_ms']:.3f} / {f['event_read_p99_ms']:.3f}",
         "the requester's own connection, between the new guests", ""),
        ("Event-to-action: `@introduceDomain` watch event read by the agent -> its "
         "`set_vcpu_affinity` call issued, ms (p50 / p99)",
         f"{f['event_p50_ms']:.2f} / {f['event_p99_ms']:.2f}",
         f"{f['new_domains_acted']} of {f['new_domains']} new guests; waiting for the pass "
         f"in progress: median {f['event_wait_ms_median']:.1f}; "
         f"{f['acted_in_quick_pass']} in a quick pass (median {f['quick_wall_ms_median']:.1f} "
         f"ms wall, {f['quick_cpu_ms_median']:.1f} ms CPU; {f['quick_passes']} quick passes, "
         f"{f['quick_fallbacks']} handed to a full scan)", ""),
        ("Event-to-action / READ round trip (p50; p99)",
         f"{f['event_over_read_p50']:.0f} ({f['event_over_read_p99']:.0f})",
         f"<= {g['latency_over_read']:.0f}",
         _goal(f["event_over_read_p50"], g["latency_over_read"])),
        ("End to end: placement request written -> answer read by the requester, ms "
         "(p50 / p99)", f"{f['latency_p50_ms']:.1f} / {f['latency_p99_ms']:.1f}",
         f"READ p50 {f['read_p50_ms']:.3f}: x{f['latency_over_read_p50']:.0f}; waiting for "
         f"the pass that answered: median {f['wait_ms_median']:.1f}, longest "
         f"{f['wait_ms_max']:.0f}; that pass: median {f['answering_scan_ms_median']:.1f}", ""),
    ]
    out = [f"Made by `{command}` on {machine}; {f['scans']} scans ({f['ticked']} with a tick) "
           f"after the first, {f['quick_passes']} quick passes, {f['new_domains']} new guests, "
           f"{f['requests']} placement requests (answers: {', '.join(f['answers'])}), "
           f"{f['reads'] + f['event_reads']} READs.", "",
           "| measure | value | goal | |", "|---|---|---|---|"]
    out += [f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows]
    return "\n".join(out) + "\n"


COMMAND = "make bench (benchmarks/run_all.py: python -m benchmarks.agent_cost --write)"


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--child"]:
        return child(*argv[1:4])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--reads-between", type=int, default=20)
    parser.add_argument("--new-domains", type=int, default=NEW_DOMAINS)
    parser.add_argument("--write", action="store_true",
                        help="write the table into BENCHMARKS.md (bench:cost markers)")
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args(argv)
    from benchmarks.policies import ROOT
    from benchmarks.report import machine, replace_between

    start = time.perf_counter()
    f = figures(run_parent(args.requests, args.reads_between, args.new_domains))
    f["wall_s"] = time.perf_counter() - start
    text = table(f, COMMAND, machine())
    print(text)
    if args.json:
        print(json.dumps(f, indent=2))
    if args.write:
        replace_between(ROOT / "BENCHMARKS.md", "cost", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
