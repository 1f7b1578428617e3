"""``xnuma sim --plot``: where each domain's vCPUs ran, over time.

One panel per domain: the share of its running vCPUs on each node (stacked,
so a domain running entirely at home is one solid colour), with the timeline's
events marked. matplotlib is an optional extra (``pip install 'xnuma[plot]'``)
imported only here and only when a plot is asked for.
"""

from __future__ import annotations

from pathlib import Path

from agent.sim.run import RunResult
from agent.sim.scenario import NS_PER_S

BIN_NS = 100_000_000  # 100 ms per plotted point: readable over a minute-long run


class PlotUnavailable(RuntimeError):
    """matplotlib is not installed."""


def require_matplotlib() -> None:
    """Raise ``PlotUnavailable`` with the fix if matplotlib cannot be imported."""
    try:
        import matplotlib  # noqa: F401
    except ImportError as exc:
        raise PlotUnavailable(
            "plotting needs matplotlib, an optional extra: pip install 'xnuma[plot]'"
        ) from exc


def shares_over_time(
    result: RunResult, bin_ns: int = BIN_NS
) -> tuple[list[float], dict[str, list[list[float | None]]]]:
    """Bin mid-times (s), and per domain per node the share of its run time in each bin
    (None where the domain did not run)."""
    nodes = len(result.shape.node_cpus)
    end = result.scenario.duration_ns
    bins = max(1, -(-end // bin_ns))
    sums: dict[str, list[list[int]]] = {}
    for sample in result.samples:
        b = min(sample.start_ns // bin_ns, bins - 1)
        for name, run in sample.run_ns.items():
            acc = sums.setdefault(name, [[0] * nodes for _ in range(bins)])
            for node, ns in enumerate(run):
                acc[b][node] += ns
    times = [(min((b + 1) * bin_ns, end) + b * bin_ns) / 2 / NS_PER_S for b in range(bins)]
    shares: dict[str, list[list[float | None]]] = {}
    for name in result.domain_names:
        if name not in sums:
            continue
        per_node: list[list[float | None]] = [[] for _ in range(nodes)]
        for row in sums[name]:
            total = sum(row)
            for node in range(nodes):
                per_node[node].append(row[node] / total if total else None)
        shares[name] = per_node
    return times, shares


def plot_run(result: RunResult, path: str | Path) -> None:
    """Write the per-domain node-share plot of ``result`` to ``path`` (PNG, SVG, PDF...)."""
    require_matplotlib()
    import matplotlib

    matplotlib.use("Agg")  # no display needed
    import matplotlib.pyplot as plt

    times, shares = shares_over_time(result)
    names = list(shares)
    nodes = len(result.shape.node_cpus)
    fig, axes = plt.subplots(max(1, len(names)), 1, sharex=True, squeeze=False,
                             figsize=(10, 1.2 + 1.4 * max(1, len(names))))
    colours = [plt.get_cmap("tab10")(n % 10) for n in range(nodes)]
    end_s = result.scenario.duration_ns / NS_PER_S
    for ax, name in zip([a[0] for a in axes], names, strict=False):
        bottom = [0.0] * len(times)
        for node in range(nodes):
            vals = [0.0 if v is None else v for v in shares[name][node]]
            top = [b + v for b, v in zip(bottom, vals, strict=True)]
            ax.fill_between(times, bottom, top, step="mid", color=colours[node], linewidth=0,
                            label=f"node {node}")
            bottom = top
        ax.set_ylim(0, 1)
        ax.set_xlim(0, end_s)
        ax.set_ylabel(name, rotation=0, ha="right", va="center")
        ax.set_yticks([0, 0.5, 1])
        for event in result.events:
            ax.axvline(event.at_ns / NS_PER_S, color="black", linewidth=0.8, linestyle="--")
    top_ax = axes[0][0]
    instants = sorted({e.at_ns for e in result.events})
    for i, at_ns in enumerate(instants):
        label = "; ".join(e.what for e in result.events if e.at_ns == at_ns)
        # Alternate heights so that labels of close events do not overwrite each other.
        top_ax.annotate(label, (at_ns / NS_PER_S, 1.0), xytext=(2, 3 + 9 * (i % 2)),
                        textcoords="offset points", fontsize=7, va="bottom")
    top_ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), fontsize=8)
    axes[-1][0].set_xlabel("simulated time (s)")
    sc = result.scenario
    fig.suptitle(f"{sc.name} ({sc.scheduler_label()}, seed {sc.seed}): share of each "
                 "domain's running vCPUs on each node", fontsize=10)
    fig.tight_layout()
    fig.savefig(str(path), dpi=110)
    plt.close(fig)
