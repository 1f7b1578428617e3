"""`xnuma run --backend xl` inside the Xen testbed's dom0 (marker `xen`, `make xen-test`).

The agent runs from this checkout (tests/xen/xnuma_dom0.py, dependencies from build.sh)
as a background process (tests/xen/dom0_bg.py) and its audit log is read with `xnuma
audit --json` in dom0. Two runs on the testbed shared with tests/test_xen_seed.py:

- polling every 2 s: a guest's pause and unpause, which no xenstore watch reports,
  reach the audit log within a few polls of the `xl` command;
- polling and ticks off (an hour apart): a guest's create and destroy still reach it
  within seconds, through the @introduceDomain / @releaseDomain watches, and a pause is
  not seen at all (so the first run's pauses came from polling).

Both runs end with SIGTERM and exit 0.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).parent / "xen"))
from seed import DOM0_TOOL, SRC, audit_argv, parse_list_c
from testbed import Testbed

pytestmark = [pytest.mark.xen, pytest.mark.timeout(1500)]

BG = f"{SRC}/tests/xen/dom0_bg.py"
POLL_S = 2.0
# An agent scan under TCG takes about a second; a few polls and a scan is "real time" here.
WITHIN_S = 4 * POLL_S
WATCH_WITHIN_S = 15.0  # the watch fires during `xl create`; the scan after it is quick


@pytest.fixture(scope="module")
def tb() -> Testbed:
    from shared import bench

    return bench().tb


class Agent:
    """One `xnuma run` in dom0, in the background, with its own files."""

    def __init__(self, tb: Testbed, name: str, **settings: Any) -> None:
        self.tb, self.name = tb, name
        self.dir = f"/tmp/xnuma-{name}"
        self.audit_log = f"{self.dir}/audit.log"
        config = {"backend": "xl", "rules_dir": f"{SRC}/rules", "audit_log": self.audit_log,
                  "journal": f"{self.dir}/pins.journal", **settings}
        (tb.cmd_dir / f"{name}.toml").write_text(
            "".join(f"{k} = {json.dumps(v)}\n" for k, v in config.items()))
        self.config = f"/cmd/{name}.toml"

    def start(self) -> float:
        self.tb.run(["rm", "-rf", self.dir], check=True)
        self.tb.run(["mkdir", "-p", self.dir], check=True)
        argv = ["python3", DOM0_TOOL, "run", "--config", self.config]
        self.tb.run(["python3", BG, "start", "--notify", self.name, "--", *argv], check=True)
        res = self.tb.run(["python3", BG, "wait-ready", self.name, "--timeout", "300"],
                          timeout=400)
        assert res.rc == 0, res.stderr
        return float(json.loads(res.stdout)["ready_s"])

    def stop(self) -> dict[str, Any]:
        res = self.tb.run(["python3", BG, "stop", self.name, "--timeout", "120"], timeout=200,
                          check=True)
        out: dict[str, Any] = json.loads(res.stdout)
        return out

    def records(self) -> list[dict[str, Any]]:
        res = self.tb.run(audit_argv(self.audit_log), timeout=300, check=True)
        return [json.loads(line) for line in res.stdout.splitlines() if line]

    def events(self, records: list[dict[str, Any]], type_: str, domain: str) -> list[float]:
        """Wall times (dom0's) of the ``type_`` events about ``domain``."""
        return [r["t"] for r in records if r["kind"] == "event" and r["type"] == type_
                and r["subject"].get("domain") == domain]


def dom0_time(tb: Testbed) -> float:
    return float(tb.run(["date", "+%s.%N"], check=True).stdout)


def timed(tb: Testbed, action: Callable[[], object]) -> tuple[float, float]:
    """dom0's wall clock just before and just after ``action``."""
    before = dom0_time(tb)
    action()
    return before, dom0_time(tb)


def xl(tb: Testbed, *args: str) -> None:
    tb.run(["xl", *args], timeout=300, check=True)


def seen_after(times: list[float], before: float, after: float) -> float:
    """Seconds from the end of a command (``after``) to the first event at or after its
    start (``before``); fails if there is none."""
    later = [t for t in times if t >= before]
    assert later, f"no event after {before} (events at {times})"
    return min(later) - after


def test_pause_and_unpause_seen_by_polling(tb: Testbed) -> None:
    """B (paused between the seed's runs) is unpaused and paused again."""
    agent = Agent(tb, "agent-poll", poll_interval_s=POLL_S)
    agent.start()
    done: dict[str, tuple[float, float]] = {}
    try:
        for verb in ("unpause", "pause"):
            done[verb] = timed(tb, lambda v=verb: xl(tb, v, "B"))  # type: ignore[misc]
            time.sleep(WITHIN_S)
    finally:
        stopped = agent.stop()
    assert stopped["rc"] == 0 and not stopped["killed"], stopped["stderr"][-2000:]
    records = agent.records()
    for verb, (before, after) in done.items():
        lag = seen_after(agent.events(records, f"domain.{verb}", "B"), before, after)
        assert lag <= WITHIN_S, f"{verb} seen {lag:.1f} s after `xl {verb}` returned"
    stops = [r for r in records if r["kind"] == "agent_stop"]
    assert [(r["reason"], r["exit_code"]) for r in stops] == [("SIGTERM", 0)]


def test_create_and_destroy_seen_through_watches(tb: Testbed) -> None:
    # Polls and ticks an hour apart: within this test only xenstore watches wake the agent.
    agent = Agent(tb, "agent-watch", poll_interval_s=3600.0, tick_interval_s=3600.0)
    if "D" in parse_list_c(tb.run(["xl", "list", "-c"], check=True).stdout):
        xl(tb, "destroy", "D")  # left by an interrupted run
    agent.start()
    try:
        create = timed(tb, lambda: tb.create_guest("D", vcpus=1, mode="idle", timeout=600))
        # Past the burst of fast polls a domain event starts (burst_s, 3 s), then a pause,
        # which fires no watch: with polling off the agent must not see it.
        time.sleep(5.0)
        pause = timed(tb, lambda: xl(tb, "pause", "D"))
        time.sleep(10.0)
        destroy = timed(tb, lambda: xl(tb, "destroy", "D"))
        time.sleep(5.0)
    finally:
        stopped = agent.stop()
    assert stopped["rc"] == 0 and not stopped["killed"], stopped["stderr"][-2000:]
    records = agent.records()
    lag = seen_after(agent.events(records, "domain.create", "D"), *create)
    assert lag <= WATCH_WITHIN_S, f"create seen {lag:.1f} s after `xl create` returned"
    lag = seen_after(agent.events(records, "domain.destroy", "D"), *destroy)
    assert lag <= WATCH_WITHIN_S, f"destroy seen {lag:.1f} s after `xl destroy` returned"
    assert [t for t in agent.events(records, "domain.pause", "D") if t >= pause[0]] == []
