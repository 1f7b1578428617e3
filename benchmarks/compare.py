"""Policy comparison: every policy on every scenario of the suite, side by side.

    .venv/bin/python -m benchmarks.compare [--jobs N] [--only SCENARIO ...] [--write]

Runs each (scenario, policy) pair once (runs are deterministic: virtual time,
fixed seeds), in worker processes, and prints the tables; with ``--write`` it
also puts them into BENCHMARKS.md between its ``bench:compare`` markers and
draws the plots under docs/. ``make bench`` runs it through
``benchmarks/run_all.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a file: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.sim.scenario import Scenario, load_scenario
from agent.sim.spec import SchedulerName
from benchmarks.harness import RunRecord, run_policy
from benchmarks.policies import POLICIES, ROOT, Policy, policy
from benchmarks.report import machine, replace_between

SCENARIOS = ROOT / "benchmarks" / "scenarios"


@dataclass(frozen=True, slots=True)
class Entry:
    """One scenario of the suite: a shipped scenario or a file, maybe another scheduler."""

    key: str
    scenario: str  # shipped name or path relative to the repository
    title: str
    scheduler: SchedulerName | None = None

    def load(self) -> Scenario:
        ref = self.scenario if "/" not in self.scenario else str(ROOT / self.scenario)
        return load_scenario(ref).with_overrides(scheduler=self.scheduler)


SUITE: tuple[Entry, ...] = (
    Entry("seed-credit1", "seed-abc", "Seed A/B/C on credit1 (2 x 28 pCPUs)"),
    Entry("seed-credit2", "seed-abc", "Seed A/B/C on credit2", scheduler="credit2"),
    Entry("4node", "seed-abc-4node", "Seed twice on 4 nodes, asymmetric distances (12 / 32)"),
    Entry("bursty", "benchmarks/scenarios/bursty.toml", "Bursty on/off guests"),
    Entry("heavy-light", "benchmarks/scenarios/heavy-light.toml",
          "One heavy guest among light ones"),
    Entry("churn", "benchmarks/scenarios/churn.toml", "Domains created and destroyed"),
    Entry("mem-fallback", "benchmarks/scenarios/mem-fallback.toml",
          "Memory fell back to another node at boot"),
)
BASELINES = tuple(p.name for p in POLICIES if p.name != "xnuma")


def job_key(entry: Entry, pol: Policy) -> tuple[str, str | None, str]:
    """Runs that are the same run: a scheduler-alone policy ignores the entry's scheduler."""
    sched = pol.scheduler if pol.kind == "scheduler" else entry.scheduler
    return (entry.scenario, sched, pol.name)


def _run(args: tuple[Entry, str]) -> RunRecord:
    entry, name = args
    return run_policy(entry.load(), policy(name))


def run_suite(entries: Sequence[Entry], jobs: int) -> dict[tuple[str, str], RunRecord]:
    """Every policy on every entry: {(entry key, policy name): record}."""
    unique: dict[tuple[str, str | None, str], tuple[Entry, str]] = {}
    for entry in entries:
        for pol in POLICIES:
            unique.setdefault(job_key(entry, pol), (entry, pol.name))
    # Longest first (credit2 and the agent are the slow ones), for an even split.
    order = sorted(unique.items(), key=lambda kv: (kv[0][1] != "credit2", kv[0][2] != "xnuma"))
    done: dict[tuple[str, str | None, str], RunRecord] = {}
    if jobs <= 1:
        for key, args in order:
            done[key] = _run(args)
    else:
        with ProcessPoolExecutor(max_workers=jobs) as pool:
            for (key, _), rec in zip(order, pool.map(_run, [a for _, a in order]), strict=True):
                done[key] = rec
    return {(e.key, p.name): done[job_key(e, p)] for e in entries for p in POLICIES}


# -- tables ----------------------------------------------------------------------------------


def _f(x: float | None, digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _recovery(x: float | None) -> str:
    return "never" if x is None else f"{x:.2f} s"


def verdict(records: dict[tuple[str, str], RunRecord], key: str) -> str:
    """How xnuma's efficiency compares with the best baseline on one scenario."""
    mine = records[(key, "xnuma")].efficiency
    best = max(BASELINES, key=lambda b: records[(key, b)].efficiency)
    other = records[(key, best)].efficiency
    if round(mine, 4) >= round(other, 4):
        return f"yes (+{mine - other:.4f} over {best})"
    return f"**NO: {best} is {other - mine:.4f} higher**"


def _bold_best(values: Sequence[float]) -> list[str]:
    """Four decimals, the best of the row (as printed) in bold."""
    best = max(round(x, 4) for x in values)
    return [f"**{x:.4f}**" if round(x, 4) == best else f"{x:.4f}" for x in values]


def summary_table(entries: Sequence[Entry], records: dict[tuple[str, str], RunRecord]) -> str:
    head = "| scenario | " + " | ".join(p.label for p in POLICIES) + " | xnuma >= every baseline? |"
    lines = [head, "|" + "---|" * (len(POLICIES) + 2)]
    for e in entries:
        cells = _bold_best([records[(e.key, p.name)].efficiency for p in POLICIES])
        lines.append(f"| {e.key} | " + " | ".join(cells) + f" | {verdict(records, e.key)} |")
    return "\n".join(lines)


def fair_efficiency_table(entries: Sequence[Entry],
                          records: dict[tuple[str, str], RunRecord]) -> str:
    head = "| scenario | " + " | ".join(p.label for p in POLICIES) + " |"
    lines = [head, "|" + "---|" * (len(POLICIES) + 1)]
    for e in entries:
        cells = _bold_best([records[(e.key, p.name)].fair_efficiency for p in POLICIES])
        lines.append(f"| {e.key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def fairness_table(entries: Sequence[Entry], records: dict[tuple[str, str], RunRecord]) -> str:
    head = "| scenario | " + " | ".join(p.label for p in POLICIES) + " |"
    lines = [head, "|" + "---|" * (len(POLICIES) + 1)]
    for e in entries:
        cells = []
        for p in POLICIES:
            r = records[(e.key, p.name)]
            worst = "" if r.worst is None else f" ({r.worst[0]} {r.worst[1]:.2f})"
            cells.append(f"{r.jain:.3f}{worst}")
        lines.append(f"| {e.key} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def scenario_tables(e: Entry, records: dict[tuple[str, str], RunRecord]) -> str:
    recs = [records[(e.key, p.name)] for p in POLICIES]
    phases = recs[0].phases
    out = [f"#### {e.key}: {e.title}", ""]
    out.append("Efficiency / locality per phase, then the whole run:")
    out.append("")
    head = "| policy | " + " | ".join(
        f"{p.name} ({p.start_s:g}-{p.end_s:g} s)" for p in phases) + " | whole run |"
    out += [head, "|" + "---|" * (len(phases) + 2)]
    for p, r in zip(POLICIES, recs, strict=True):
        cells = [f"{ph.efficiency:.3f} / {_f(ph.locality, 2)}" for ph in r.phases]
        out.append(f"| {p.label} | " + " | ".join(cells)
                   + f" | {r.efficiency:.4f} / {_f(r.locality, 2)} |")
    out.append("")
    # Recovery: events at one instant open one phase and share its recovery time.
    instants: dict[float, list[str]] = {}
    for at, what, _ in recs[0].recovery_s:
        instants.setdefault(at, []).append(what)
    if instants:
        out.append("Recovery after each event (sliding 250 ms efficiency back to 0.99 for "
                   "good, within its phase):")
        out.append("")
        labels = []
        for at, whats in instants.items():
            short = whats[0] if len(whats) == 1 else f"{whats[0]} (+{len(whats) - 1})"
            labels.append(f"{at:g} s {short}")
        out += ["| policy | " + " | ".join(labels) + " |",
                "|" + "---|" * (len(labels) + 1)]
        for p, r in zip(POLICIES, recs, strict=True):
            seen: dict[float, float | None] = {}
            for at, _, rec in r.recovery_s:
                seen.setdefault(at, rec)
            out.append(f"| {p.label} | " + " | ".join(_recovery(seen[at]) for at in instants)
                       + " |")
        out.append("")
    out.append("Fairness per phase: Jain's index (the domain with the smallest share of its "
               "due, and that share):")
    out.append("")
    out += ["| policy | " + " | ".join(p.name for p in phases) + " |",
            "|" + "---|" * (len(phases) + 1)]
    for p, r in zip(POLICIES, recs, strict=True):
        cells = [f"{ph.jain:.3f}" + ("" if ph.worst is None
                                     else f" ({ph.worst[0]} {ph.worst[1]:.2f})")
                 for ph in r.phases]
        out.append(f"| {p.label} | " + " | ".join(cells) + " |")
    out.append("")
    out.append("Cost and fairness over the whole run:")
    out.append("")
    out += ["| policy | vCPU migrations (across nodes) | affinity calls | hard narrowings | "
            "still narrowed at end | actions | Jain | worst share |",
            "|---|---|---|---|---|---|---|---|"]
    for p, r in zip(POLICIES, recs, strict=True):
        acts = ", ".join(f"{k} {v}" for k, v in r.actions.items()) or "-"
        worst = "-" if r.worst is None else f"{r.worst[0]} {r.worst[1]:.2f}"
        out.append(f"| {p.label} | {r.migrations} ({r.node_moves}) | {r.affinity_calls} | "
                   f"{r.narrowings} | {r.narrowed_at_end} | {acts} | {r.jain:.3f} | {worst} |")
    return "\n".join(out)


def tables(entries: Sequence[Entry], records: dict[tuple[str, str], RunRecord],
           command: str, seconds: float) -> str:
    out = [f"Made by `{command}` on {machine()}; {seconds:.0f} s wall for "
           f"{len({id(r) for r in records.values()})} runs.", "",
           "### Efficiency, whole run (best of each row in bold)", "",
           summary_table(entries, records), "",
           "### Fair efficiency, whole run: useful work, each domain's counted up to its "
           "weight-fair share, / the best placement within those shares", "",
           fair_efficiency_table(entries, records), "",
           "### Fairness: Jain's index over each domain's CPU time / weight-fair share "
           "(the domain that got the smallest share)", "",
           fairness_table(entries, records), "", "### Per scenario", ""]
    for e in entries:
        out += [scenario_tables(e, records), ""]
    return "\n".join(out).rstrip() + "\n"


# -- plots ------------------------------------------------------------------------------------

PLOT_SEED = ROOT / "docs" / "bench-seed-efficiency.png"
PLOT_ALL = ROOT / "docs" / "bench-efficiency.png"


def plot(entries: Sequence[Entry], records: dict[tuple[str, str], RunRecord]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def panel(ax: Any, e: Entry) -> None:
        for p in POLICIES:
            r = records[(e.key, p.name)]
            xs = [t for t, _ in r.series]
            ys = [y for _, y in r.series]
            ax.plot(xs, ys, label=p.label, linewidth=2.2 if p.name == "xnuma" else 1.2)
        for at, _, _ in records[(e.key, "xnuma")].recovery_s:
            ax.axvline(at, color="grey", linestyle=":", linewidth=0.8)
        ax.set_title(f"{e.key}: {e.title}", fontsize=9)
        ax.set_ylim(0.5, 1.01)
        ax.set_xlabel("simulated s")
        ax.set_ylabel("efficiency (250 ms)")

    written = []
    seed = next((e for e in entries if e.key == "seed-credit1"), None)
    PLOT_SEED.parent.mkdir(parents=True, exist_ok=True)
    if seed is not None:
        fig, ax = plt.subplots(figsize=(9, 4.5))
        panel(ax, seed)
        ax.legend(loc="lower left", fontsize=8)
        fig.tight_layout()
        fig.savefig(PLOT_SEED, dpi=110)
        plt.close(fig)
        written.append(PLOT_SEED)
    cols = 2
    rows = -(-len(entries) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(12, 3.4 * rows), squeeze=False)
    for i, e in enumerate(entries):
        panel(axes[i // cols][i % cols], e)
    for j in range(len(entries), rows * cols):
        axes[j // cols][j % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower right", fontsize=9)
    fig.tight_layout()
    fig.savefig(PLOT_ALL, dpi=90)
    plt.close(fig)
    written.append(PLOT_ALL)
    return written


# -- main -----------------------------------------------------------------------------------

COMMAND = "make bench (benchmarks/run_all.py: python -m benchmarks.compare --write)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    parser.add_argument("--only", nargs="+", metavar="SCENARIO",
                        choices=[e.key for e in SUITE], help="run only these scenarios")
    parser.add_argument("--write", action="store_true",
                        help="write the tables into BENCHMARKS.md and the plots into docs/")
    args = parser.parse_args(argv)
    entries = [e for e in SUITE if not args.only or e.key in args.only]
    start = time.perf_counter()
    records = run_suite(entries, args.jobs)
    seconds = time.perf_counter() - start
    text = tables(entries, records, COMMAND, seconds)
    print(text)
    if args.write:
        if args.only:
            print("--write needs the whole suite (no --only)", file=sys.stderr)
            return 2
        replace_between(ROOT / "BENCHMARKS.md", "compare", text)
        for path in plot(entries, records):
            print(f"wrote {path.relative_to(ROOT)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
