"""The production agent as ``xnuma run`` puts it together on a Xen host
(``standard_hooks`` over ``LinuxProcesses``), pinning real processes: child
processes stand in for a guest's backends, their pids are written where a
toolstack writes them in the embedded xenstored, and the agent (its loop, the
shipped rules, its audit log) binds every thread of each to the CPUs of its guest's
node. The hypervisor is the simulator (see ``test_backends_real``).

Real processes need trio's real clock; ``fail_after`` only guards against hangs.
"""

from __future__ import annotations

import os
from pathlib import Path

import test_backends_real
import trio
from test_backends_real import HANG_GUARD, children, two_node_host

from agent.audit.reader import read_entries
from agent.backends.procs import LinuxProcesses
from agent.daemon.build import open_agent, shipped_rules_dir, standard_hooks
from agent.daemon.config import AgentConfig
from agent.daemon.simhost import embedded_transport
from agent.sim.backend import SimHypervisor
from agent.xenstore.daemon import XenstoreDaemon
from agent.xenstore.hub import XenstoreHub

pytestmark = test_backends_real.pytestmark  # the same needs: CPUs 0 and 1


async def test_the_agent_pins_real_backends_to_their_guests_nodes(tmp_path: Path) -> None:
    host = two_node_host()
    a, b = host.domid_of("A"), host.domid_of("B")
    hub = XenstoreHub.of(XenstoreDaemon())
    toolstack = hub.session()
    socket = tmp_path / "placement.sock"
    config = AgentConfig(
        backend="xl", rules_dir=str(shipped_rules_dir()), audit_log=str(tmp_path / "audit.log"),
        journal=str(tmp_path / "pins.journal"), placement_socket=str(socket),
        poll_interval_s=0.1, burst_interval_s=0.05,
    ).check()
    mine = set(os.sched_getaffinity(0))
    with trio.fail_after(HANG_GUARD):
        async with children(("tapdisk",), ("qemu-system-i38", "-xen-domid", str(b))) as (
                tap_a, qemu_b), trio.open_nursery() as nursery:
            toolstack.write(f"/local/domain/0/backend/vbd3/{a}/51712/kthread-pid",
                            str(tap_a.pid))
            toolstack.write(f"/local/domain/{b}/image/device-model-pid", str(qemu_b.pid))
            toolstack.write(f"/local/domain/{a}/qemu-pid", str(os.getpid()))  # a decoy
            transport = embedded_transport(hub, nursery)
            with open_agent(config, xenstore=transport, watch_rule_files=False,
                            hooks=standard_hooks(config, LinuxProcesses())) as agent:
                nursery.start_soon(agent.run, SimHypervisor(host))
                while not (tap_a.masks() == {frozenset({0})}
                           and qemu_b.masks() == {frozenset({1})}):
                    await trio.sleep(0.05)
                assert socket.exists()  # and it serves placement requests meanwhile
                agent.stop("test over")
                while agent.exit_code is None:
                    await trio.sleep(0.05)
            nursery.cancel_scope.cancel()
    assert set(os.sched_getaffinity(0)) == mine  # the decoy: untouched
    assert not socket.exists()
    entries = list(read_entries(tmp_path / "audit.log"))
    pins = [(e.body["params"]["pid"], e.body["params"]["node"], e.body["outcome"])
            for e in entries if e.kind == "action" and e.body["type"] == "backend.pin"]
    assert sorted(pins) == sorted([(tap_a.pid, 0, "ok"), (qemu_b.pid, 1, "ok")])
    assert [e.body["type"] for e in entries if e.kind == "event"
            and e.body["type"] == "backend.rejected"] == ["backend.rejected"]
