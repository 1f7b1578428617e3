"""One run of a timeline inside the testbed's dom0: guests paused and unpaused at set
times, where every vCPU runs sampled through libxenctrl, and optionally the agent beside it.

    python3 /xnuma-src/tests/xen/seed_dom0.py PLAN.json OUT.json

PLAN (JSON, written by the host, see tests/xen/seed.py):

    {"domains": ["A", "B", "C"],          # sampled, with Domain-0
     "sample_s": 1.0,
     "steps": [{"phase": "all running", "after_s": 0, "ops": [["unpause", "A"], ...]},
               {"phase": "A paused", "after_s": 20, "ops": [["pause", "A"]]}, ...],
     "end_after_s": 30,                   # after the last step's commands
     "agent": null | {"argv": [...], "ready_timeout_s": 300, "stop_timeout_s": 120},
     "pause_after": ["A", "C"],           # optional: pause these once it is all over
     "collect": {"from": DIR, "to": DIR}} # optional: then copy the agent's files (to /cmd)

Each step waits ``after_s`` from the end of the previous step's operations (pause and
unpause through libxenctrl, as `xl pause` does for a PV guest, in milliseconds where `xl`
takes seconds under TCG). The agent (if any) is started first and
the timeline waits for its READY=1 (systemd notify protocol, on a socket of our own);
after the timeline it gets SIGTERM, which restores every pin it holds. OUT holds the
phases with the measured time of every operation, the samples, the agent's exit status and
the tail of its log, and `xl vcpu-list` after it stopped. Times are seconds since T0,
the start of the first step, on dom0's monotonic clock (``t0_wall``: dom0's wall clock
then, to line up with the agent's audit records).

Standard library plus this checkout's libxenctrl wrapper (no trio): it runs under load.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from typing import Any

sys.path.insert(0, os.environ.get("XNUMA_SRC", "/xnuma-src"))

from agent.hypervisor.model import format_cpuset
from agent.hypervisor.xenctrl import DOMINF_PAUSED, LIBXENCTRL, NoSuchDomain, Xenctrl

NOTIFY = "/run/xnuma-seed-notify.sock"


class Sampler(threading.Thread):
    """Every ``period`` seconds: each sampled domain's paused flag and, per vCPU, the
    pCPU it runs (or last ran) on, running/blocked, and its hard and soft affinity."""

    def __init__(self, names: list[str], period: float, origin: list[float]) -> None:
        super().__init__(daemon=True)
        self.names = {"Domain-0", *names}
        self.period = period
        self.origin = origin  # [T0], set once the timeline starts (samples before are < 0)
        self.samples: list[dict[str, Any]] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.xc = Xenctrl()
        self._names: dict[tuple[int, str], str | None] = {}

    def sample(self) -> dict[str, Any]:
        t = time.monotonic() - self.origin[0]
        doms: dict[str, Any] = {}
        for d in self.xc.domains():
            key = (d.domid, d.uuid)
            if key not in self._names:
                self._names[key] = self.xc.xs_read(f"/local/domain/{d.domid}/name")
            name = self._names[key]
            if name not in self.names:
                continue
            vcpus = []
            try:
                for v in range(d.vcpus):
                    online, running, blocked, _time_ns, cpu = self.xc.vcpu(d.domid, v)
                    hard, soft = self.xc.affinity(d.domid, v)
                    vcpus.append([cpu if online else None, running, blocked,
                                  format_cpuset(hard), format_cpuset(soft)])
            except NoSuchDomain:
                continue
            doms[name] = {"domid": d.domid, "paused": bool(d.flags & DOMINF_PAUSED),
                          "vcpus": vcpus}
        return {"t": round(t, 3), "domains": doms}

    def run(self) -> None:
        next_at = time.monotonic()
        while not self.stop_event.is_set():
            try:
                self.samples.append(self.sample())
            except Exception as e:  # keep sampling; report what went wrong
                self.errors.append(repr(e))
            next_at += self.period
            self.stop_event.wait(max(0.0, next_at - time.monotonic()))


class Ops:
    """Pause and unpause by name, as `xl pause` / `xl unpause` do for a PV guest (one
    hypercall, ``xc_domain_pause``), without `xl`'s seconds of start-up under TCG: the
    phases start when planned."""

    def __init__(self) -> None:
        self.xc = Xenctrl()
        lib = ctypes.CDLL(LIBXENCTRL, use_errno=True)
        lib.xc_interface_open.restype = ctypes.c_void_p
        lib.xc_interface_open.argtypes = (ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint)
        for fn in (lib.xc_domain_pause, lib.xc_domain_unpause):
            fn.argtypes = (ctypes.c_void_p, ctypes.c_uint32)
        self.lib = lib
        self.handle = ctypes.c_void_p(lib.xc_interface_open(None, None, 0))

    def domid(self, name: str) -> int:
        for d in self.xc.domains():
            if self.xc.xs_read(f"/local/domain/{d.domid}/name") == name:
                return d.domid
        raise LookupError(f"no domain named {name}")

    def run(self, op: list[str], origin: float) -> dict[str, Any]:
        verb, name = op
        fn = {"pause": self.lib.xc_domain_pause, "unpause": self.lib.xc_domain_unpause}[verb]
        domid = self.domid(name)
        start = time.monotonic()
        rc = fn(self.handle, domid)
        end = time.monotonic()
        return {"op": op, "rc": rc, "errno": ctypes.get_errno() if rc else 0,
                "start_s": round(start - origin, 3), "end_s": round(end - origin, 3)}


def start_agent(spec: dict[str, Any], log_path: str) -> tuple[subprocess.Popen[bytes], float]:
    """Start the agent and wait for its READY=1; return it and how long that took."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(NOTIFY)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(NOTIFY)
    started = time.monotonic()
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(spec["argv"], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                env={**os.environ, "NOTIFY_SOCKET": NOTIFY})
    deadline = started + float(spec.get("ready_timeout_s", 300))
    try:
        while True:
            left = deadline - time.monotonic()
            if left <= 0 or proc.poll() is not None:
                proc.kill()
                proc.wait()
                with open(log_path, errors="replace") as f:
                    tail = f.read()[-3000:]
                raise SystemExit(f"seed_dom0: agent not ready (rc {proc.returncode}):\n{tail}")
            sock.settimeout(min(left, 1.0))
            try:
                msg = sock.recv(4096).decode(errors="replace")
            except TimeoutError:
                continue
            if "READY=1" in msg.splitlines():
                return proc, time.monotonic() - started
    finally:
        sock.close()


def main() -> int:
    plan_path, out_path = sys.argv[1:3]
    with open(plan_path) as f:
        plan = json.load(f)
    origin = [time.monotonic() + 1e6]  # until T0, sample times are far negative
    agent_spec = plan.get("agent")
    agent = None
    out: dict[str, Any] = {"plan": plan, "phases": []}
    log_path = "/tmp/seed-agent.log"
    if agent_spec:
        agent, ready_s = start_agent(agent_spec, log_path)
        out["agent_ready_s"] = round(ready_s, 2)
    ops = Ops()
    sampler = Sampler(plan["domains"], float(plan.get("sample_s", 1.0)), origin)
    t0 = time.monotonic()
    origin[0] = t0
    out["t0_wall"] = time.time()
    sampler.start()
    last_end = t0
    for step in plan["steps"]:
        wait = last_end + float(step["after_s"]) - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        commands = [ops.run(op, t0) for op in step["ops"]]
        last_end = time.monotonic()
        out["phases"].append({"name": step["phase"], "start_s": round(last_end - t0, 3),
                              "commands": commands})
    time.sleep(max(0.0, last_end + float(plan["end_after_s"]) - time.monotonic()))
    out["end_s"] = round(time.monotonic() - t0, 3)
    if agent is not None:
        agent.send_signal(signal.SIGTERM)
        try:
            out["agent_rc"] = agent.wait(timeout=float(agent_spec.get("stop_timeout_s", 120)))
        except subprocess.TimeoutExpired:
            agent.kill()
            out["agent_rc"] = None
        out["agent_stopped_s"] = round(time.monotonic() - t0, 3)
        with open(log_path, errors="replace") as f:
            out["agent_log_tail"] = f.read()[-4000:]
    sampler.stop_event.set()
    sampler.join()
    out["samples"] = sampler.samples
    out["sampler_errors"] = sampler.errors[:20]
    # The state left behind (after the agent restored its pins), sampled once more and as
    # `xl vcpu-list` prints it.
    out["after"] = sampler.sample()
    out["vcpu_list_after"] = subprocess.run(["xl", "vcpu-list"], capture_output=True,
                                            text=True, timeout=300).stdout
    # Then quiet (paused guests cost no CPU), so what follows runs at dom0's full speed.
    out["paused_after"] = [ops.run(["pause", name], t0) for name in plan.get("pause_after", ())
                           if not out["after"]["domains"].get(name, {}).get("paused", True)]
    if plan.get("collect"):  # the agent's files (audit log, journal), for the host to read
        shutil.rmtree(plan["collect"]["to"], ignore_errors=True)
        shutil.copytree(plan["collect"]["from"], plan["collect"]["to"])
    tmp = out_path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(out, f)
    os.rename(tmp, out_path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
