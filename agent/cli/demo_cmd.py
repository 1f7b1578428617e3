"""``xnuma demo``: the seed scenario without and with the agent, side by side.

Each scenario runs twice on the simulated host: without an agent, and with the
production agent (the code ``xnuma run`` runs) beside it in simulated time,
talking to the simulator's embedded xenstored over an in-memory stream and to
its Hypervisor backend. The table compares locality, useful work and CPU time
against the weight-fair share per domain and phase; efficiency, fair efficiency
and Jain's index per phase; each event's recovery time (efficiency and fair
efficiency) and the agent's actions; the PNG shows where each domain's vCPUs
ran, both runs side by side. The agent is held to fair efficiency: where a pool
is overcommitted, the most useful work would starve a domain.
Variants (the other scheduler; the 4-node scenario) are summarised after it
and carried in ``--json``. Runs go to worker processes, two at a time by default.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from typing import Any

from agent.sim.scenario import SCHEDULERS, ScenarioError, load_scenario
from agent.sim.spec import SchedulerName

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

DEFAULT_SCENARIO = "seed-abc"
FOUR_NODE = "seed-abc-4node"
RECOVERY_BAR_S = 2.0  # "fair efficiency back to >= 0.99 within 2 simulated seconds"
PIN_SLACK = 0.10  # "no more temporary pins than off-node vCPUs + 10 %"


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="the seed scenario without and with the agent, side by side",
        description="Run the seed scenario on the simulated host twice, without and with the "
        "xnuma agent (in simulated time), print both side by side and draw both runs. "
        "Variants (the other scheduler, the 4-node scenario) follow in summary.",
    )
    parser.add_argument("--json", action="store_true",
                        help='print {"scenario", "scheduler", "runs": {"without_agent", '
                        '"with_agent"}, "variants": [...]} instead of the tables')
    parser.add_argument("--plot", metavar="FILE.png", default="demo.png",
                        help="where to draw both runs (default demo.png; '' for no plot)")
    parser.add_argument("--scenario", default=DEFAULT_SCENARIO, metavar="NAME",
                        help=f"a shipped scenario or a file (default {DEFAULT_SCENARIO})")
    parser.add_argument("--scheduler", choices=SCHEDULERS,
                        help="run every cpupool under this scheduler")
    parser.add_argument("--no-variants", action="store_true",
                        help="only the main scenario, no variants")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1), metavar="N",
                        help="runs at once, in worker processes (default 2)")
    parser.set_defaults(func=run)


def _error(message: str) -> None:
    print(f"xnuma demo: error: {message}", file=sys.stderr)


@dataclass(frozen=True, slots=True)
class Job:
    scenario: str
    scheduler: SchedulerName | None
    agent: bool


@dataclass(slots=True)
class Outcome:
    job: Job
    result: Any  # agent.sim.run.RunResult (pickled across processes)
    agent_stats: dict[str, int]


def _run_job(job: Job) -> Outcome:
    """One run, in a worker process."""
    from agent.daemon.simhost import run_virtual, run_without_agent

    scenario = load_scenario(job.scenario).with_overrides(seed=None, duration_s=None,
                                                          scheduler=job.scheduler)
    if not job.agent:
        return Outcome(job, run_without_agent(scenario), {})

    run = run_virtual(scenario)
    s = run.agent.stats
    stats = {"pins_made": s.pins_made, "max_pins_held": s.max_pins,
             "off_node_episodes": s.off_node_episodes,
             "misplaced_episodes": s.misplaced_episodes, "scans": s.scans,
             "events": s.events}
    return Outcome(job, run.result, stats)


def _variants(
    scenario: str, scheduler: SchedulerName | None
) -> list[tuple[str, SchedulerName | None]]:
    main_sched = scheduler or load_scenario(scenario).scheduler_label()
    out: list[tuple[str, SchedulerName | None]] = []
    other: SchedulerName = "credit2" if main_sched != "credit2" else "credit1"
    out.append((scenario, other))
    if scenario == DEFAULT_SCENARIO:
        out.append((FOUR_NODE, scheduler))
    return out


def checks(without: Outcome, with_agent: Outcome) -> dict[str, Any]:
    """The bars the agent is held to, measured on this pair of runs."""
    doc = with_agent.result.to_dict()
    alone = without.result.to_dict()
    recoveries = [e["recovery_s"] for e in doc["events"]]
    fair = [e["fair_recovery_s"] for e in doc["events"]]
    stats = with_agent.agent_stats
    episodes = stats.get("misplaced_episodes", 0)
    pins = stats.get("pins_made", 0)

    def within(values: list[float | None]) -> bool:
        return all(r is not None and r <= RECOVERY_BAR_S for r in values)

    return {
        # the bar: fair efficiency (every domain kept at its weight-fair share)
        "recovered_within_2s": within(fair),
        "fair_recovery_s": fair,
        "fair_recovery_s_without_agent": [e["fair_recovery_s"] for e in alone["events"]],
        "efficiency_recovered_within_2s": within(recoveries),
        "recovery_s": recoveries,
        "recovery_s_without_agent": [e["recovery_s"] for e in alone["events"]],
        "pins_made": pins,
        "misplaced_episodes": episodes,
        "off_node_episodes": stats.get("off_node_episodes", 0),
        "pins_within_misplaced_plus_10pct": pins <= episodes * (1 + PIN_SLACK),
        "max_pins_held": stats.get("max_pins_held", 0),
        "temporary_pins_outstanding": doc["temporary_pins_outstanding"],
        "efficiency": {"without_agent": alone["efficiency"], "with_agent": doc["efficiency"]},
        "fair_efficiency": {"without_agent": alone["fair_efficiency"],
                            "with_agent": doc["fair_efficiency"]},
        "jain": {"without_agent": alone["jain"], "with_agent": doc["jain"]},
    }


def run(args: argparse.Namespace) -> int:
    try:
        import scipy.optimize  # noqa: F401  (the efficiency LP)
    except ImportError:
        _error("the simulator's metrics need scipy, an optional extra: pip install 'xnuma[sim]'")
        return EXIT_USAGE
    if args.plot:
        from agent.sim.plot import PlotUnavailable, require_matplotlib

        try:
            require_matplotlib()
        except PlotUnavailable as exc:
            _error(str(exc))
            return EXIT_USAGE
    if args.jobs < 1:
        _error(f"--jobs must be >= 1, got {args.jobs}")
        return EXIT_USAGE
    try:
        load_scenario(args.scenario)
        pairs: list[tuple[str, SchedulerName | None]] = [(args.scenario, args.scheduler)]
        if not args.no_variants:
            pairs += _variants(args.scenario, args.scheduler)
        for name, _ in pairs:
            load_scenario(name)
    except ScenarioError as exc:
        for line in str(exc).splitlines():
            _error(line)
        return EXIT_USAGE
    jobs = [Job(name, sched, agent) for name, sched in pairs for agent in (False, True)]
    outcomes = _run_all(jobs, args.jobs)
    by_job = {o.job: o for o in outcomes}
    main = (by_job[jobs[0]], by_job[jobs[1]])
    variants = [(by_job[jobs[i]], by_job[jobs[i + 1]]) for i in range(2, len(jobs), 2)]
    if args.plot:
        try:
            plot_pair(main[0].result, main[1].result, args.plot)
        except OSError as exc:
            _error(f"cannot write {args.plot}: {exc.strerror or exc}")
            return EXIT_FAILED
        print(f"plot written to {args.plot}", file=sys.stderr)
    if args.json:
        print(json.dumps(to_json(main, variants), indent=2, allow_nan=False))
    else:
        print(table(main, variants))
    return EXIT_OK


def _run_all(jobs: Sequence[Job], workers: int) -> list[Outcome]:
    if workers == 1:
        return [_run_job(j) for j in jobs]
    # Longest first (credit2 and agent runs cost most), so the pool ends together.
    order = sorted(jobs, key=lambda j: (j.scheduler != "credit2", not j.agent))
    with ProcessPoolExecutor(max_workers=workers) as pool:
        return list(pool.map(_run_job, order))


def _pair_json(pair: tuple[Outcome, Outcome]) -> dict[str, Any]:
    without, with_agent = pair
    doc = with_agent.result.to_dict()
    return {
        "scenario": doc["scenario"],
        "scheduler": doc["scheduler"],
        "runs": {"without_agent": without.result.to_dict(), "with_agent": doc},
        "checks": checks(without, with_agent),
    }


def to_json(
    main: tuple[Outcome, Outcome], variants: list[tuple[Outcome, Outcome]]
) -> dict[str, Any]:
    out = _pair_json(main)
    out["variants"] = [_pair_json(v) for v in variants]
    return out


# -- the table -------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 4) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _rec(x: float | None) -> str:
    return "never" if x is None else f"{x:.3f} s"


def _cpu(d: dict[str, Any]) -> str:
    """CPU time / weight-fair share, s."""
    if not d:
        return "-"
    return f"{d['run_s']:.1f}/{d['fair_s']:.1f}"


def table(main: tuple[Outcome, Outcome], variants: list[tuple[Outcome, Outcome]]) -> str:
    without, with_agent = (o.result.to_dict() for o in main)
    lines = [
        f"{without['scenario']}: {without['scheduler']}, seed {without['seed']}, "
        f"{without['duration_s']:g} s simulated -- without the agent | with the agent",
        "",
        f"{'phase / domain':<34}{'efficiency':>22}{'fair efficiency':>22}{'Jain':>16}"
        f"{'locality':>20}{'useful work (s)':>24}{'CPU / fair share (s)':>30}",
        f"{'':<34}{'without':>11}{'with':>11}{'without':>11}{'with':>11}{'without':>8}"
        f"{'with':>8}{'without':>10}{'with':>10}{'without':>12}{'with':>12}"
        f"{'without':>15}{'with':>15}",
    ]
    for p0, p1 in zip(without["phases"], with_agent["phases"], strict=True):
        head = f"{p0['name']} ({p0['start_s']:g}-{p0['end_s']:g} s)"
        lines.append(f"{head:<34}{_f(p0['efficiency']):>11}{_f(p1['efficiency']):>11}"
                     f"{_f(p0['fair_efficiency']):>11}{_f(p1['fair_efficiency']):>11}"
                     f"{_f(p0['jain'], 3):>8}{_f(p1['jain'], 3):>8}"
                     f"{_f(p0['host_locality']):>10}{_f(p1['host_locality']):>10}")
        names = [n for n in p0["domains"] if n in p1["domains"]]
        names += [n for n in p1["domains"] if n not in p0["domains"]]
        for name in names:
            d0, d1 = p0["domains"].get(name, {}), p1["domains"].get(name, {})
            lines.append(f"  {name:<32}{'':>60}{_f(d0.get('locality')):>10}"
                         f"{_f(d1.get('locality')):>10}{_f(d0.get('useful_s'), 2):>12}"
                         f"{_f(d1.get('useful_s'), 2):>12}{_cpu(d0):>15}{_cpu(d1):>15}")
    lines += ["", "recovery after each event (over 250 ms back to >= 0.99 for good)",
              f"{'':<34}{'efficiency':>22}{'fair efficiency':>22}",
              f"{'':<34}{'without':>11}{'with':>11}{'without':>11}{'with':>11}"]
    for e0, e1 in zip(without["events"], with_agent["events"], strict=True):
        what = f"{e0['at_s']:.3f} s  {e0['what']}"
        lines.append(f"  {what:<32}{_rec(e0['recovery_s']):>11}{_rec(e1['recovery_s']):>11}"
                     f"{_rec(e0['fair_recovery_s']):>11}{_rec(e1['fair_recovery_s']):>11}")
    lines += ["", f"whole run: efficiency {_f(without['efficiency'])} -> "
              f"{_f(with_agent['efficiency'])}, fair efficiency "
              f"{_f(without['fair_efficiency'])} -> {_f(with_agent['fair_efficiency'])}, "
              f"Jain {_f(without['jain'], 3)} -> {_f(with_agent['jain'], 3)}, host locality "
              f"{_f(without['host_locality'])} -> {_f(with_agent['host_locality'])}"]
    lines += _agent_lines(main)
    for pair in variants:
        lines += ["", *_variant_lines(pair)]
    return "\n".join(lines)


def _agent_lines(pair: tuple[Outcome, Outcome]) -> list[str]:
    doc = pair[1].result.to_dict()
    c = checks(*pair)
    acts = ", ".join(f"{k} {v}" for k, v in doc["actions"].items()) or "none"
    return [
        f"agent actions: {acts}",
        f"pins made {c['pins_made']} for {c['misplaced_episodes']} vCPUs seen misplaced "
        f"({c['off_node_episodes']} seen off their soft affinity); at most "
        f"{c['max_pins_held']} held at once; outstanding at the end: "
        f"{c['temporary_pins_outstanding']}",
        "dom0 backend threads on their guest's home node at the end: "
        f"{_backends(pair[0].result.to_dict())} -> {_backends(doc)}",
    ]


def _backends(run: dict[str, Any]) -> str:
    b = run.get("backends")
    return "-" if b is None else f"{b['on_home']} of {b['total']}"


def _variant_lines(pair: tuple[Outcome, Outcome]) -> list[str]:
    without, with_agent = (o.result.to_dict() for o in pair)
    lines = [f"variant {without['scenario']} ({without['scheduler']}): without | with the agent"]
    for p0, p1 in zip(without["phases"], with_agent["phases"], strict=True):
        lines.append(f"  {p0['name']:<32} efficiency {_f(p0['efficiency'])} | "
                     f"{_f(p1['efficiency'])}   fair {_f(p0['fair_efficiency'])} | "
                     f"{_f(p1['fair_efficiency'])}   Jain {_f(p0['jain'], 3)} | "
                     f"{_f(p1['jain'], 3)}   locality {_f(p0['host_locality'])} | "
                     f"{_f(p1['host_locality'])}")
    for e0, e1 in zip(without["events"], with_agent["events"], strict=True):
        what = f"{e0['at_s']:.3f} s {e0['what']}"
        lines.append(f"  {what:<32} recovery {_rec(e0['recovery_s'])} | {_rec(e1['recovery_s'])}"
                     f"   fair {_rec(e0['fair_recovery_s'])} | {_rec(e1['fair_recovery_s'])}")
    lines.append(f"  whole run: efficiency {_f(without['efficiency'])} | "
                 f"{_f(with_agent['efficiency'])}   fair efficiency "
                 f"{_f(without['fair_efficiency'])} | {_f(with_agent['fair_efficiency'])}   "
                 f"Jain {_f(without['jain'], 3)} | {_f(with_agent['jain'], 3)}")
    lines += ["  " + line for line in _agent_lines(pair)]
    return lines


# -- the plot ---------------------------------------------------------------------------------


def plot_pair(without: Any, with_agent: Any, path: str) -> None:
    """Per domain (rows), the share of its running vCPUs on each node over time, without
    the agent (left) and with it (right); the timeline's events marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from agent.sim.plot import shares_over_time
    from agent.sim.scenario import NS_PER_S

    runs = (without, with_agent)
    series = [shares_over_time(r) for r in runs]
    names = [n for n in series[0][1] if n in series[1][1]]
    nodes = len(without.shape.node_cpus)
    colours = [plt.get_cmap("tab10")(n % 10) for n in range(nodes)]
    fig, axes = plt.subplots(max(1, len(names)), 2, sharex=True, sharey=True, squeeze=False,
                             figsize=(14, 1.4 + 1.3 * max(1, len(names))))
    end_s = without.scenario.duration_ns / NS_PER_S
    for col, (run_, (times, shares)) in enumerate(zip(runs, series, strict=True)):
        for row, name in enumerate(names):
            ax = axes[row][col]
            bottom = [0.0] * len(times)
            for node in range(nodes):
                vals = [0.0 if v is None else v for v in shares[name][node]]
                top = [b + v for b, v in zip(bottom, vals, strict=True)]
                ax.fill_between(times, bottom, top, step="mid", color=colours[node],
                                linewidth=0, label=f"node {node}")
                bottom = top
            ax.set_ylim(0, 1)
            ax.set_xlim(0, end_s)
            ax.set_yticks([0, 0.5, 1])
            if col == 0:
                ax.set_ylabel(name, rotation=0, ha="right", va="center")
            for event in run_.events:
                ax.axvline(event.at_ns / NS_PER_S, color="black", linewidth=0.8,
                           linestyle="--")
        eff, fair = run_.total.efficiency, run_.total.fair_efficiency
        axes[0][col].set_title(("without the agent" if col == 0 else "with the agent")
                               + f" (efficiency {eff:.4f}, fair {fair:.4f})", fontsize=10)
        axes[-1][col].set_xlabel("simulated time (s)")
    axes[0][1].legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    sc = without.scenario
    fig.suptitle(f"{sc.name} ({sc.scheduler_label()}, seed {sc.seed}): share of each domain's "
                 "running vCPUs on each node", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
