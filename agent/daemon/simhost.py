"""The agent against the simulated host: its xenstored in memory, its backend, its clock.

The simulator's toolstack (``SimToolstack``) fills an embedded xenstored as
libxl would; the agent's xenstore client reaches it through an in-memory
stream (``embedded_transport``), and its hypervisor calls go to the
``SimHypervisor``. Under trio's ``MockClock`` the whole run takes simulated
time (the demo, the tests); under the real clock it runs as slowly as a real
host would (``xnuma run --backend sim``).
"""

from __future__ import annotations

import functools
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Generic, TypeVar

import trio
import trio.testing

from agent.audit.writer import AuditLogError
from agent.daemon.build import open_agent, shipped_rules_dir, standard_hooks
from agent.daemon.config import AgentConfig
from agent.daemon.loop import Agent
from agent.hypervisor.interface import Hypervisor
from agent.journal import JournalError
from agent.rules import RuleLoadError
from agent.sdnotify import Notifier
from agent.sim.engine import SimHost
from agent.sim.run import Agent as SimAgent
from agent.sim.run import AgentReport, BackendTally, Host, Runner, RunResult
from agent.sim.scenario import Scenario
from agent.sim.spec import HostSpec
from agent.sim.toolstack import SimToolstack
from agent.xenstore.hub import XenstoreHub
from agent.xenstore.server import serve_stream
from agent.xenstore.transport import Transport


class AgentSetupError(Exception):
    """The agent cannot start: its rules, journal or audit log (the message says which)."""


# The agent's settings for simulated runs (demo, `xnuma sim --agent`): a fast poll,
# which the simulator makes cheap, so that one-second phases are seen in time.
SIM_POLL_S = 0.1


def embedded_transport(hub: XenstoreHub, nursery: trio.Nursery) -> Transport:
    """Connections to the embedded xenstored over in-memory streams, served in ``nursery``."""

    async def connect() -> trio.abc.Stream:
        client_end, daemon_end = trio.testing.memory_stream_pair()
        nursery.start_soon(serve_stream, hub, daemon_end)
        return client_end

    return connect


def sim_config(work_dir: Path, **overrides: object) -> AgentConfig:
    """The agent's config for a simulated run, with its files in ``work_dir``."""
    base = AgentConfig(
        backend="sim", scenario="(in process)", rules_dir=str(shipped_rules_dir()),
        audit_log=None, journal=str(work_dir / "pins.journal"), placement_socket=None,
        poll_interval_s=SIM_POLL_S,
        burst_interval_s=SIM_POLL_S / 2, tick_interval_s=1.0,
    )
    return replace(base, **overrides).check("simulated run")  # type: ignore[arg-type]


A = TypeVar("A", bound=SimAgent)


class Delayed(Generic[A]):
    """An agent, started ``delay_s`` into the run: the scenario's events fall on round
    seconds, and an agent polling in step with them would see each one at once."""

    def __init__(
        self, agent: A, delay_s: float, on_stopped: Callable[[A], None] | None = None
    ) -> None:
        self.agent = agent
        self.delay_s = delay_s
        self.on_stopped = on_stopped

    async def run(self, hypervisor: Hypervisor) -> None:
        await trio.sleep(self.delay_s)
        await self.agent.run(hypervisor)
        if self.on_stopped is not None:  # it returned: stopped (SIGTERM), not cancelled
            self.on_stopped(self.agent)

    def report(self) -> AgentReport:
        return self.agent.report()


@dataclass(slots=True)
class AgentRun:
    result: RunResult
    agent: Agent
    toolstack: SimToolstack
    runner: Runner


async def run_with_agent(
    scenario: Scenario, config: AgentConfig, *, keep_records: bool = False,
    start_delay_s: float | None = None, notifier: Notifier | None = None,
    handle_signals: bool = False, on_agent: Callable[[Agent], None] | None = None,
    on_stopped: Callable[[Agent], None] | None = None,
    clock: Callable[[], float] | None = None,
    host_factory: Callable[[HostSpec], Host] | None = None,
    hypervisor_for: Callable[[Runner], Hypervisor] | None = None,
) -> AgentRun:
    """Run ``scenario`` with the production agent beside it, under the current clock.

    The agent starts ``start_delay_s`` in (default: a poll interval less 1 ms, so it
    polls just before each round second and sees an event there almost a whole
    poll interval late, as unlucky as it gets). ``host_factory`` builds the host
    (default ``SimHost``); ``hypervisor_for`` gives the agent its hypervisor on the
    runner's host (default: the simulator's own), e.g. one that counts calls."""
    if start_delay_s is None:
        start_delay_s = max(config.poll_interval_s - 0.001, 0.0)
    toolstack = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, host_factory, listeners=[toolstack])
    hypervisor = hypervisor_for(runner) if hypervisor_for is not None else None
    async with trio.open_nursery() as nursery:
        transport = embedded_transport(toolstack.hub, nursery)
        with open_agent(config, xenstore=transport, watch_rule_files=handle_signals,
                        keep_records=keep_records, notifier=notifier,
                        handle_signals=handle_signals, clock=clock,
                        hooks=standard_hooks(config, toolstack.dom0)) as agent:
            if on_agent is not None:
                on_agent(agent)
            result = await runner.run_async(Delayed(agent, start_delay_s, on_stopped),
                                            hypervisor=hypervisor)
        nursery.cancel_scope.cancel()
    result.backends = backend_tally(toolstack, runner.host)
    return AgentRun(result, agent, toolstack, runner)


def backend_tally(toolstack: SimToolstack, host: Host) -> BackendTally | None:
    """Where dom0's backend threads may run now, against their guests' home nodes
    (None for a host that is not the simulator's own)."""
    if not isinstance(host, SimHost):
        return None
    placements = toolstack.dom0.placements(host)
    return BackendTally(sum(p.on_home for p in placements), len(placements))


def host_on(core: str) -> Callable[[HostSpec], SimHost]:
    """A host factory for one simulator core: "auto", "python" or "native"."""
    return functools.partial(SimHost, core=core)


def run_without_agent(scenario: Scenario, *, core: str = "auto") -> RunResult:
    """The scenario alone, its guests built by the simulated toolstack (so that
    their dom0 backend threads exist, unplaced, as the agent would find them)."""
    toolstack = SimToolstack.for_host(scenario.host)
    runner = Runner(scenario, host_on(core), listeners=[toolstack])
    result = runner.run()
    result.backends = backend_tally(toolstack, runner.host)
    return result


def run_virtual(
    scenario: Scenario, *, audit_log: str | None = None, core: str = "auto",
    **overrides: object,
) -> AgentRun:
    """``run_with_agent`` in virtual time, with a scratch journal. Raises
    ``AgentSetupError`` when the rules or the audit log cannot be used."""
    with tempfile.TemporaryDirectory(prefix="xnuma-sim-") as tmp:
        config = sim_config(Path(tmp), audit_log=audit_log, **overrides)

        async def main() -> AgentRun:
            # Records carry the simulated time (MockClock starts at 0 with the run).
            return await run_with_agent(scenario, config, clock=trio.current_time,
                                        host_factory=host_on(core))

        try:
            return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        except (RuleLoadError, AuditLogError, JournalError) as exc:
            raise AgentSetupError(str(exc)) from exc
