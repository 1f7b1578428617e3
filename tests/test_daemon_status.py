"""``xnuma status``: the host at a glance, from the simulator and from a Hypervisor."""

from __future__ import annotations

import argparse
import json

import pytest
import trio
import trio.testing

from agent.cli import status_cmd
from agent.hypervisor.model import DomainInfo, DomainState, Node, Topology, VcpuInfo, VcpuState
from agent.sim.backend import SimHypervisor
from agent.sim.engine import SimHost
from agent.sim.scenario import load_scenario

N0, N1 = frozenset(range(4)), frozenset(range(4, 8))
TOPO = Topology((Node(0, N0, 8 << 20, 2 << 20), Node(1, N1, 8 << 20, 6 << 20)),
                ((10, 20), (20, 10)))


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="xnuma")
    status_cmd.register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["status", *argv])


def test_rows_count_vcpus_per_node_and_name_the_soft_affinity() -> None:
    doms = [DomainInfo(1, "web", "u1", DomainState.RUNNING, 3, 4 << 20)]
    vcpus = [VcpuInfo(1, 0, 0, VcpuState.RUNNING, 0, N0 | N1, N0),
             VcpuInfo(1, 1, 5, VcpuState.RUNNING, 0, N0 | N1, N0),
             VcpuInfo(1, 2, None, VcpuState.OFFLINE, 0, N0 | N1, N0)]
    status = status_cmd.build_status(TOPO, doms, vcpus, {1: (3 << 20, 1 << 20)}, {1: 0.75},
                                     "last 5 s")
    (row,) = status.domains
    assert row.on_node == (1, 1) and row.offline == 1
    assert row.soft == "node 0" and row.memory_mib == (3072, 1024) and row.locality == 0.75
    text = status_cmd.render(status)
    assert "host: 2 NUMA nodes, 8 pCPUs" in text
    assert "node 1: pCPUs 4-7" in text and "6144 MiB free" in text
    assert "Locality (last 5 s)" in text
    line = next(ln for ln in text.splitlines() if ln.startswith("web"))
    assert line.split()[:9] == ["web", "1", "running", "3", "1", "1", "(+1", "off)", "node"]
    assert "3072/1024" in line and line.endswith("0.75")


def test_soft_affinity_in_words() -> None:
    assert status_cmd.soft_text(N0 | N1, TOPO) == "all"
    assert status_cmd.soft_text(N1, TOPO) == "node 1"
    assert status_cmd.soft_text(frozenset({1, 2}), TOPO) == "1-2"


def test_the_simulated_seed_at_25_s_shows_the_stuck_state(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert status_cmd.run(parse(["--backend", "sim", "--at", "25", "--json"])) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {d["name"]: d for d in doc["domains"]}
    assert rows["A"]["on_node"] == [0, 26] and rows["A"]["soft"] == "node 0"
    assert rows["C"]["on_node"] == [26, 0] and rows["C"]["soft"] == "node 1"
    assert rows["A"]["memory_mib"] == [32768, 0]
    assert rows["B"]["state"] == "paused"
    assert doc["locality_window"] == "0-25 s"
    assert 0.5 < rows["A"]["locality"] < 0.7  # home 10 s of the 14 it ran, off since 20 s


def test_xl_status_measures_locality_by_watching() -> None:
    scenario = load_scenario("seed-abc").with_overrides(seed=None, duration_s=1.0,
                                                        scheduler=None)
    host = SimHost(scenario.host)
    for name in scenario.initial:
        host.create_domain(scenario.domain(name))

    async def advance() -> None:
        while True:
            await trio.sleep(0.01)
            host.advance(host.now_ns + 10_000_000)

    async def main() -> status_cmd.Status:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(advance)
            status = await status_cmd.xl_status(SimHypervisor(host), 2.0)
            nursery.cancel_scope.cancel()
        return status

    status = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    rows = {d.name: d for d in status.domains}
    assert status.window == "last 2 s"
    assert rows["A"].locality == 1.0 and rows["B"].locality == 1.0
    assert rows["C"].locality is not None and rows["C"].locality < 0.9  # credit1's steals
    assert sum(rows["C"].on_node) == 26
