"""The seed's A/B/C scenario on the Xen testbed and in the simulator, side by side.

2 nodes of 4 pCPUs (testbed layout ``2node``, booted with ``sched=credit``); guests A, B
and C with 3 busy vCPUs each, A soft-affine to node 0, B and C to node 1 (memory on the
same node: libxl places it by the soft affinity). dom0's 2 vCPUs are pinned to pCPUs 0
and 4. Three setups, one boot (the guests move between cpupools):

- ``pool``: dom0 alone in Pool-0 (0, 4); the guests in a credit1 pool of 1-3 and 5-7;
- ``shared``: Pool-0 has 0-2 and 4-6, dom0 shares it (a pCPU per node) with the guests;
  3 and 7 are left out so that A and C again fill six pCPUs in the last phase;
- ``credit2``: as ``pool``, the guests' pool running credit2.

Each setup runs the timeline ``PHASES`` twice, without the agent and with it (``xnuma
run --backend xl`` in dom0, polling every ``POLL_S``), while ``seed_dom0.py`` samples
where every vCPU runs once a second through libxenctrl. The same setups run in the
simulator (``scenarios/seed-testbed-*.toml``, same timeline), without and with the
agent. ``summarise_real`` / ``summarise_sim`` reduce a run to the same figures per phase,
``table`` prints them side by side.

Used by tests/test_xen_seed.py and tests/xen/compare.py; the pure parts (summaries,
table, plan) are tested without Xen.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SCENARIOS = HERE / "scenarios"
SRC = "/xnuma-src"  # the checkout, in dom0
DOM0_TOOL = f"{SRC}/tests/xen/xnuma_dom0.py"

CPUS_PER_NODE = 4
ALL_CPUS = frozenset(range(8))
GUESTS: tuple[tuple[str, int], ...] = (("A", 0), ("B", 1), ("C", 1))  # name, home node
HOME = dict(GUESTS)
GUEST_VCPUS = 3
DOM0_PINS = (0, 4)  # dom0 vCPU i -> pCPU
POLL_S = 2.0  # the agent's poll interval on the testbed
SAMPLE_S = 1.0
SIM_SEEDS = (1, 2, 3)  # the simulator's columns: the mean of one run per seed

# (phase, seconds after the previous step, the pauses and unpauses opening it). The
# simulator's scenarios play the same timeline (checked by tests/test_xen_seed.py).
PHASES: tuple[tuple[str, float, tuple[tuple[str, ...], ...]], ...] = (
    ("all running", 0.0, (("unpause", "A"), ("unpause", "B"), ("unpause", "C"))),
    ("A paused", 6.0, (("pause", "A"),)),
    ("A back", 10.0, (("unpause", "A"),)),
    ("B paused", 1.0, (("pause", "B"),)),
)
END_AFTER_S = 15.0  # length of the last phase


@dataclass(frozen=True)
class Setup:
    name: str
    title: str
    pool0: frozenset[int]  # Pool-0's pCPUs
    guest_pool: str | None  # the guests' cpupool; None: they share Pool-0
    guest_cpus: frozenset[int]
    guest_sched: str  # credit | credit2 (xl's names)

    @property
    def scenario(self) -> Path:
        return SCENARIOS / f"seed-testbed-{self.name}.toml"


SETUPS: tuple[Setup, ...] = (
    Setup("pool", "dom0 alone in Pool-0 (pCPUs 0,4); guests in a credit1 pool (1-3,5-7)",
          frozenset({0, 4}), "guests-credit1", frozenset({1, 2, 3, 5, 6, 7}), "credit"),
    Setup("shared", "dom0 (pinned to 0 and 4) shares Pool-0 (0-2,4-6) with the guests, credit1",
          frozenset({0, 1, 2, 4, 5, 6}), None, frozenset({0, 1, 2, 4, 5, 6}), "credit"),
    Setup("credit2", "dom0 alone in Pool-0 (pCPUs 0,4); guests in a credit2 pool (1-3,5-7)",
          frozenset({0, 4}), "guests-credit2", frozenset({1, 2, 3, 5, 6, 7}), "credit2"),
)
# The order the testbed runs them in: each step moves the guests once (Pool-0 first,
# where prepare() creates them).
RUN_ORDER = ("shared", "pool", "credit2")
SETUP = {s.name: s for s in SETUPS}


def node_of(cpu: int) -> int:
    return cpu // CPUS_PER_NODE


def cpulist(cpus: Iterable[int]) -> str:
    from agent.hypervisor.model import format_cpuset

    return format_cpuset(cpus)


def soft_of(home: int) -> str:
    first = home * CPUS_PER_NODE
    return f"{first}-{first + CPUS_PER_NODE - 1}"


# --- what dom0 runs -------------------------------------------------------------------------


def agent_files(run: str) -> dict[str, str]:
    base = f"/tmp/xnuma-{run}"
    return {"dir": base, "audit": f"{base}/audit.log", "journal": f"{base}/pins.journal"}


def agent_argv(files: Mapping[str, str], poll_s: float = POLL_S) -> list[str]:
    return ["python3", DOM0_TOOL, "run", "--backend", "xl", "--rules-dir", f"{SRC}/rules",
            "--audit-log", files["audit"], "--journal", files["journal"],
            "--poll-interval", f"{poll_s:g}"]


def audit_argv(log: str) -> list[str]:
    """``xnuma audit --json`` for what the checks read: events, actions, start and stop."""
    kinds = ("event", "action", "agent_start", "agent_stop")
    return ["python3", DOM0_TOOL, "audit", "--log", log, "--json",
            *(a for k in kinds for a in ("--kind", k))]


def plan(agent: Sequence[str] | None, collect: Mapping[str, str] | None = None
         ) -> dict[str, Any]:
    """The timeline for ``seed_dom0.py``; ``collect`` copies the agent's files after."""
    return {
        "domains": [name for name, _ in GUESTS],
        "sample_s": SAMPLE_S,
        "steps": [{"phase": name, "after_s": after, "ops": [list(c) for c in cmds]}
                  for name, after, cmds in PHASES],
        "end_after_s": END_AFTER_S,
        "agent": None if agent is None else {"argv": list(agent), "ready_timeout_s": 300,
                                             "stop_timeout_s": 120},
        "pause_after": [name for name, _ in GUESTS],
        "collect": None if collect is None else dict(collect),
    }


def read_audit(log: Path) -> list[dict[str, Any]]:
    """The records ``xnuma audit --json`` prints for ``log``: events, actions, start, stop."""
    from agent.audit.reader import read_entries
    from agent.audit.render import json_line

    kinds = ("event", "action", "agent_start", "agent_stop")
    return [json.loads(json_line(e)) for e in read_entries(log) if e.body.get("kind") in kinds]


# --- summaries (pure) -------------------------------------------------------------------------


@dataclass
class Summary:
    """One run reduced to what the table shows; real and simulated alike.

    ``locality[phase][domain]``: share of the domain's vCPU samples (real) or run time
    (simulator) on its home node, for domains running in that phase. ``settled_s``: how
    long into the last phase until every running guest vCPU was home for good (None:
    not by the end). ``off_at_end``: guest vCPUs off their home node at the end of the
    last phase (simulator: vCPU-equivalents of run time over its last second).
    """

    kind: str  # real | sim
    agent: bool
    phases: list[str]
    locality: dict[str, dict[str, float | None]]
    settled_s: float | None
    off_at_end: float
    actions: dict[str, int] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)


def _phase_bounds(out: Mapping[str, Any]) -> list[tuple[str, float, float]]:
    """(phase, start, end): from the end of the commands that open it to the start of the
    next phase's first command. A command takes effect somewhere while it runs (seconds
    under TCG), so samples taken meanwhile belong to no phase."""
    phases = out["phases"]
    ends = [p["commands"][0]["start_s"] if p["commands"] else p["start_s"]
            for p in phases[1:]] + [out["end_s"]]
    return [(p["name"], float(p["start_s"]), float(e)) for p, e in zip(phases, ends, strict=True)]


def _running_guest_vcpus(sample: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    """(domain, vCPU, pCPU) of every guest vCPU of a running guest in a sample."""
    out = []
    for name, _ in GUESTS:
        d = sample["domains"].get(name)
        if d is None or d["paused"]:
            continue
        for i, v in enumerate(d["vcpus"]):
            if v[0] is not None:
                out.append((name, i, int(v[0])))
    return out


def off_home(sample: Mapping[str, Any]) -> list[tuple[str, int, int]]:
    return [(n, i, c) for n, i, c in _running_guest_vcpus(sample) if node_of(c) != HOME[n]]


def summarise_real(out: Mapping[str, Any], audit: Sequence[Mapping[str, Any]] = ()) -> Summary:
    bounds = _phase_bounds(out)
    samples = out["samples"]
    locality: dict[str, dict[str, float | None]] = {}
    for name, start, end in bounds:
        home: dict[str, int] = {}
        seen: dict[str, int] = {}
        for s in samples:
            if not start <= s["t"] < end:
                continue
            for dom, _vcpu, cpu in _running_guest_vcpus(s):
                seen[dom] = seen.get(dom, 0) + 1
                home[dom] = home.get(dom, 0) + (node_of(cpu) == HOME[dom])
        locality[name] = {d: round(home[d] / seen[d], 3) for d in sorted(seen)}
    _, last_start, last_end = bounds[-1]
    last = [s for s in samples if last_start <= s["t"] < last_end]
    settled: float | None = None
    for s in reversed(last):
        if off_home(s):
            break
        settled = max(0.0, s["t"] - last_start)
    actions: dict[str, int] = {}
    for r in audit:
        if r.get("kind") == "action" and r.get("outcome") == "ok":
            actions[r["type"]] = actions.get(r["type"], 0) + 1
    return Summary("real", bool(out["plan"].get("agent")), [b[0] for b in bounds], locality,
                   settled, float(len(off_home(last[-1]))) if last else 0.0,
                   dict(sorted(actions.items())),
                   {"phase_s": [round(e - s, 1) for _, s, e in bounds],
                    "samples": len(samples)})


def summarise_sim(result: Any) -> Summary:
    """From an ``agent.sim.run.RunResult``."""
    d = result.to_dict()
    names = [p["name"] for p in d["phases"]]
    locality = {p["name"]: {n: v["locality"] for n, v in sorted(p["domains"].items())
                            if n in HOME and v["run_s"] > 0}
                for p in d["phases"]}
    last = result.phases[-1]
    buckets = [s for s in result.samples if s.start_ns >= last.start_ns]

    def off_ns(sample: Any) -> int:
        return sum(ns for dom, per_node in sample.run_ns.items() if dom in HOME
                   for node, ns in enumerate(per_node) if node != HOME[dom])

    settled: float | None = None
    for s in reversed(buckets):
        # A bucket counts as home when under 1 % of its run time is off home.
        total = sum(sum(v) for k, v in s.run_ns.items() if k in HOME)
        if total and off_ns(s) > 0.01 * total:
            break
        settled = (s.start_ns - last.start_ns) / 1e9
    tail = [s for s in buckets if s.end_ns > last.end_ns - 1_000_000_000]
    span = sum(s.end_ns - s.start_ns for s in tail)
    off_end = sum(off_ns(s) for s in tail) / span if span else 0.0
    return Summary("sim", bool(d["agent"]), names, locality, settled, round(off_end, 2),
                   {k: v for k, v in d["actions"].items()},
                   {"temporary_pins_outstanding": d["temporary_pins_outstanding"]})


# --- the table ---------------------------------------------------------------------------


COLUMNS = (("real", False, "Xen"), ("real", True, "Xen+agent"), ("sim", False, "sim"),
           ("sim", True, "sim+agent"))


def _cell(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}"


def _settled(s: Summary) -> str:
    n, never = s.extra.get("runs", 1), s.extra.get("never", 0)
    if s.settled_s is None:
        return f"never {never}/{n}" if n > 1 else "never"
    return f"{s.settled_s:.1f} s"


def table(setups: Mapping[str, Mapping[str, Summary]], titles: Mapping[str, str]) -> str:
    """Per setup: locality per phase and domain in the four runs, the last phase's
    settling time and leftovers, and what the agent did."""
    keys = [("real" if k == "real" else "sim") + ("_agent" if a else "") for k, a, _ in COLUMNS]
    w = 11
    lines = [
        "Seed A/B/C on Xen 4.17 under QEMU (2 nodes x 4 pCPUs) vs the simulator.",
        "Locality: share of a domain's vCPU samples (Xen, 1/s) or run time (sim) on its "
        "home node;",
        f"sim columns: mean of {len(SIM_SEEDS)} runs (seeds "
        f"{', '.join(map(str, SIM_SEEDS))}).",
    ]
    for name, runs in setups.items():
        lines += ["", f"[{name}] {titles.get(name, '')}",
                  f"  {'phase':<13}{'domain':<8}" + "".join(f"{h:>{w}}" for *_, h in COLUMNS)]
        phases = next(iter(runs.values())).phases
        for phase in phases:
            doms = sorted({d for k in keys if k in runs
                           for d in runs[k].locality.get(phase, {})})
            for i, dom in enumerate(doms):
                cells = [_cell(runs[k].locality.get(phase, {}).get(dom)) if k in runs else "?"
                         for k in keys]
                lines.append(f"  {phase if i == 0 else '':<13}{dom:<8}"
                             + "".join(f"{c:>{w}}" for c in cells))
        settled = [_settled(runs[k]) if k in runs else "?" for k in keys]
        off = [f"{runs[k].off_at_end:g}" if k in runs else "?" for k in keys]
        lines += [f"  {phases[-1]}: every guest vCPU home for good after / vCPUs off home "
                  "at its end",
                  f"  {'':<21}" + "".join(f"{c:>{w}}" for c in settled),
                  f"  {'':<21}" + "".join(f"{c:>{w}}" for c in off)]
        for k in ("real_agent", "sim_agent"):
            if k in runs:
                acts = ", ".join(f"{a} {n}" for a, n in runs[k].actions.items()) or "none"
                n = runs[k].extra.get("runs", 1)
                who = "Xen agent" if k == "real_agent" else "sim agent"
                lines.append(f"  {who} actions{f' ({n} runs)' if n > 1 else ''}: {acts}")
    return "\n".join(lines)


def summaries_to_json(setups: Mapping[str, Mapping[str, Summary]]) -> dict[str, Any]:
    return {name: {k: asdict(s) for k, s in runs.items()} for name, runs in setups.items()}


def summaries_from_json(data: Mapping[str, Any]) -> dict[str, dict[str, Summary]]:
    return {name: {k: Summary(**s) for k, s in runs.items()} for name, runs in data.items()}


# --- the simulator side -------------------------------------------------------------------


def combine(runs: Sequence[Summary]) -> Summary:
    """Several runs of one setup as one: mean locality and leftovers, actions summed;
    settled after the slowest run (None if any never settled); ``extra`` says how many
    runs, and how many never settled."""
    first = runs[0]
    locality: dict[str, dict[str, float | None]] = {}
    for phase in first.phases:
        doms = sorted({d for r in runs for d in r.locality.get(phase, {})})
        locality[phase] = {}
        for d in doms:
            vals = [v for r in runs if (v := r.locality.get(phase, {}).get(d)) is not None]
            locality[phase][d] = round(sum(vals) / len(vals), 3) if vals else None
    settled = [r.settled_s for r in runs]
    actions: dict[str, int] = {}
    for r in runs:
        for k, v in r.actions.items():
            actions[k] = actions.get(k, 0) + v
    n = len(runs)
    return Summary(first.kind, first.agent, first.phases, locality,
                   None if None in settled else max(s for s in settled if s is not None),
                   round(sum(r.off_at_end for r in runs) / n, 2),
                   dict(sorted(actions.items())), {"runs": n, "never": settled.count(None)})


def run_sim(setup: Setup, agent: bool, seeds: Sequence[int] = SIM_SEEDS,
            poll_s: float = POLL_S) -> Summary:
    """The setup's scenario once per seed (its workloads' randomness), combined: on this
    small host one run ends stuck or not almost by chance."""
    from agent.sim.run import Runner
    from agent.sim.scenario import load_scenario

    base = load_scenario(setup.scenario)
    runs = []
    for seed in seeds:
        scenario = base.with_overrides(seed=seed)
        if agent:
            from agent.daemon.simhost import run_virtual

            # The testbed's agent settings: poll every POLL_S, bursts of 0.1 s polls.
            result = run_virtual(scenario, poll_interval_s=poll_s, burst_interval_s=0.1).result
        else:
            result = Runner(scenario).run()
        runs.append(summarise_sim(result))
    return combine(runs)


# --- the real side ------------------------------------------------------------------------


_POOL_LINE = re.compile(r"^(\S+)\s+(\S*)\s*$")


def parse_cpupool_list_c(text: str) -> dict[str, frozenset[int]]:
    """``xl cpupool-list -c``: pool name -> pCPUs."""
    from agent.hypervisor.model import parse_cpuset

    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("Name"):
        raise ValueError(f"`xl cpupool-list -c`: no header in {text!r}")
    pools = {}
    for line in lines[1:]:
        m = _POOL_LINE.match(line)
        if m is None:
            raise ValueError(f"`xl cpupool-list -c`: bad line {line!r}")
        pools[m.group(1)] = parse_cpuset(m.group(2)) if m.group(2) else frozenset()
    return pools


def parse_list_c(text: str) -> dict[str, str]:
    """``xl list -c``: domain name -> cpupool."""
    lines = text.strip().splitlines()
    if not lines or not lines[0].startswith("Name"):
        raise ValueError(f"`xl list -c`: no header in {text!r}")
    out = {}
    for line in lines[1:]:
        parts = line.split()
        if len(parts) < 7:
            raise ValueError(f"`xl list -c`: bad line {line!r}")
        out[parts[0]] = parts[-1]
    return out


def hard_affinities(vcpu_list: str) -> dict[tuple[str, int], str]:
    """``xl vcpu-list``: (domain, vCPU) -> hard affinity as printed (``all``, ``0-3``)."""
    out = {}
    for line in vcpu_list.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 9 or parts[-2] != "/":
            raise ValueError(f"`xl vcpu-list`: bad line {line!r}")
        out[(parts[0], int(parts[2]))] = parts[-3]
    return out


def vcpu_states(vcpu_list: str) -> dict[tuple[str, int], str]:
    """``xl vcpu-list``: (domain, vCPU) -> state letters (``r--``, ``-b-``, ``--p``)."""
    out = {}
    for line in vcpu_list.splitlines()[1:]:
        parts = line.split()
        if len(parts) < 9:
            raise ValueError(f"`xl vcpu-list`: bad line {line!r}")
        out[(parts[0], int(parts[2]))] = parts[4]
    return out


class SeedBench:
    """The seed on a booted testbed (``testbed.Testbed``): guests, setups, runs."""

    def __init__(self, tb: Any, log: Any = print) -> None:
        self.tb = tb
        self.log = log
        self.timings: dict[str, float] = {}
        self.crashes: list[str] = []  # Xen died during a setup (then retried once)

    def xl(self, *args: str, timeout: float = 300.0) -> str:
        return str(self.tb.run(["xl", *args], timeout=timeout, check=True).stdout)

    def prepare(self) -> None:
        """dom0 pinned one vCPU per node; A, B, C created (paused, then run until their
        busy loops start, then paused again). Idempotent."""
        started = time.monotonic()
        for vcpu, cpu in enumerate(DOM0_PINS):
            self.xl("vcpu-pin", "0", str(vcpu), str(cpu), "-")
        existing = parse_list_c(self.xl("list", "-c"))
        # Side by side: dom0 has two vCPUs, and each `xl create` waits on itself a lot.
        with ThreadPoolExecutor(len(GUESTS)) as pool:
            for done in [pool.submit(self.tb.create_guest, name, vcpus=GUEST_VCPUS,
                                     mode="busy", soft=soft_of(home), paused=True, timeout=600)
                         for name, home in GUESTS if name not in existing]:
                done.result()
        for name, _ in GUESTS:
            self.tb.run(["xl", "unpause", name], timeout=120)  # rc 1 if running: fine
        self.wait_busy()
        for name, _ in GUESTS:
            self.xl("pause", name)
        self.timings["prepare_s"] = round(time.monotonic() - started, 1)

    def wait_busy(self, timeout: float = 120.0) -> None:
        """Until the guests' kernels have booted and every vCPU loops (none blocked, twice
        in a row: a booting kernel blocks now and then)."""
        deadline = time.monotonic() + timeout
        busy = 0
        while busy < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"guests not busy after {timeout:.0f} s:\n"
                                   f"{self.xl('vcpu-list')}")
            states = vcpu_states(self.xl("vcpu-list"))
            guest = [st for (dom, _), st in states.items() if dom in HOME]
            busy = busy + 1 if len(guest) == len(GUESTS) * GUEST_VCPUS and not any(
                "b" in st for st in guest) else 0
            time.sleep(2)

    def arrange(self, setup: Setup) -> None:
        """Pools and affinities of ``setup``; the guests paused, hard all, soft home.

        Pools are never destroyed: a pool left behind keeps no pCPU. (Xen 4.17.7 once
        crashed here, a page fault in credit1's csched_aff_cntl on `xl vcpu-pin`, after
        the guests had been moved out of a pool, the pool destroyed and its pCPUs given to
        Pool-0.) A pool hosting the guests keeps a pCPU until they have left it."""
        started = time.monotonic()
        pools = parse_cpupool_list_c(self.xl("cpupool-list", "-c"))
        where = {parse_list_c(self.xl("list", "-c"))[name] for name, _ in GUESTS}
        if len(where) != 1:
            raise RuntimeError(f"the guests are in several pools: {where}")
        here = where.pop()
        target = setup.guest_pool or "Pool-0"
        want = {"Pool-0": setup.pool0}
        if target != "Pool-0":
            want[target] = setup.guest_cpus

        def remove(pool: str, cpus: Iterable[int]) -> None:
            for cpu in sorted(cpus):
                self.xl("cpupool-cpu-remove", pool, str(cpu))
                pools[pool] = pools[pool] - {cpu}

        def add(pool: str, cpus: Iterable[int]) -> None:
            for cpu in sorted(cpus):
                self.xl("cpupool-cpu-add", pool, str(cpu))
                pools[pool] = pools[pool] | {cpu}

        if here != target:
            if target != "Pool-0":
                # pCPUs for the target pool, from wherever they are; the guests' pool
                # keeps one until they are gone.
                for pool, cpus in list(pools.items()):
                    give = cpus & setup.guest_cpus if pool != target else frozenset()
                    if pool == here and give == cpus:
                        give -= {min(give)}
                    remove(pool, give)
                taken = frozenset().union(*pools.values())
                free = setup.guest_cpus - taken
                if target in pools:
                    add(target, free)
                else:
                    self.xl("cpupool-create", f'name="{target}"',
                            f'sched="{setup.guest_sched}"', f'cpus="{cpulist(free)}"')
                    pools[target] = frozenset(free)
            for name, _ in GUESTS:
                self.xl("cpupool-migrate", name, target)
        # Every pool to its pCPUs (the others to none): first free, then give.
        for pool, cpus in list(pools.items()):
            remove(pool, cpus - want.get(pool, frozenset()))
        for pool, cpus in want.items():
            add(pool, cpus - pools[pool])
        # Moving pools resets affinities; set them in any case (after a failed run too).
        for name, home in GUESTS:
            self.xl("vcpu-pin", name, "all", "all", soft_of(home))
        self.timings[f"arrange_{setup.name}_s"] = round(time.monotonic() - started, 1)

    def run_setup(self, setup: Setup, retry: bool = True
                  ) -> dict[str, tuple[dict[str, Any], list[dict[str, Any]]]]:
        """Both runs of ``setup`` (``real``, ``real_agent``: seed_dom0's output and the
        agent's audit records). If Xen dies on the way, its console goes to
        ``crash-N.log`` beside it, the testbed is booted and prepared again, and the setup
        run once more (``retry``)."""
        try:
            out: dict[str, tuple[dict[str, Any], list[dict[str, Any]]]] = {}
            for agent in (False, True):
                self.arrange(setup)
                out["real_agent" if agent else "real"] = self.run(setup, agent)
            return out
        except Exception as exc:
            if not retry or not (self.tb.panicked() or not self.tb.is_running()):
                raise
            n = len(self.crashes) + 1
            log = self.tb.workdir / f"crash-{n}.log"
            log.write_text(f"{setup.name}: {exc}\n\n{self.tb.console_tail(400)}\n")
            self.crashes.append(f"{setup.name}: {str(exc).splitlines()[0]} (see {log})")
            self.tb.stop()
            self.timings[f"reboot_{n}_s"] = round(self.tb.start(), 1)
            self.prepare()
            return self.run_setup(setup, retry=False)

    def run(self, setup: Setup, agent: bool) -> tuple[dict[str, Any], list[dict[str, Any]]]:
        """One timeline; returns seed_dom0's output and the agent's audit records."""
        tag = f"{setup.name}-{'agent' if agent else 'plain'}"
        started = time.monotonic()
        argv = collect = None
        if agent:
            files = agent_files(tag)
            self.tb.run(["rm", "-rf", files["dir"]], check=True)
            self.tb.run(["mkdir", "-p", files["dir"]], check=True)
            argv = agent_argv(files)
            # The audit log is read here on the host, as `xnuma audit --json` reads it (in
            # dom0 that costs a Python start under TCG: tests/test_xen_agent.py does it).
            collect = {"from": files["dir"], "to": f"/cmd/out/{tag}-files"}
        for sub in ("plans", "out"):
            (self.tb.cmd_dir / sub).mkdir(exist_ok=True)
        (self.tb.cmd_dir / "plans" / f"{tag}.json").write_text(json.dumps(plan(argv, collect)))
        out_file = self.tb.cmd_dir / "out" / f"{tag}.json"
        out_file.unlink(missing_ok=True)
        self.tb.run(["python3", f"{SRC}/tests/xen/seed_dom0.py", f"/cmd/plans/{tag}.json",
                     f"/cmd/out/{tag}.json"], timeout=900, check=True)
        out: dict[str, Any] = json.loads(out_file.read_text())
        failed = [c for p in out["phases"] for c in p["commands"] if c["rc"] != 0]
        if failed:
            raise RuntimeError(f"{tag}: pause/unpause failed in dom0: {failed}")
        records: list[dict[str, Any]] = []
        if agent:
            records = read_audit(self.tb.cmd_dir / "out" / f"{tag}-files" / "audit.log")
        self.timings[f"run_{tag}_s"] = round(time.monotonic() - started, 1)
        return out, records
