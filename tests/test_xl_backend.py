"""XlHypervisor against a fake `xl` on PATH that replays output captured from real Xen.

The fake is a real executable run by trio.run_process: these tests cover the argv the
backend builds, exit-status and stderr handling, retries, timeouts and the rate limit
of the memory dump. Which fixture answers which argv is the only thing faked.
"""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path

import pytest
import trio
import trio.testing

from agent.hypervisor import xl_parse as xp
from agent.hypervisor.interface import Hypervisor, NoSuchDomain
from agent.hypervisor.model import DomainInfo, DomainState, VcpuState
from agent.hypervisor.xl import XlError, XlHypervisor, XlPolicy, XlRejected, XlTimeout

C2 = Path(__file__).parent / "fixtures" / "xl" / "2node-credit"
SCHED = Path(__file__).parent / "fixtures" / "xl" / "2node-sched"

FAKE_XL = r"""
import json, os, sys, time
args = sys.argv[1:]
state = os.environ["FAKE_XL_STATE"]
fixtures = os.environ["FAKE_XL_FIXTURES"]
overrides = json.loads(os.environ.get("FAKE_XL_MAP", "{}"))
with open(os.path.join(state, "log"), "a") as f:
    f.write(json.dumps(args) + "\n")

def count(name):
    path = os.path.join(state, name)
    n = int(open(path).read()) if os.path.exists(path) else 0
    open(path, "w").write(str(n + 1))
    return n

def replay(name, rc=0):
    base = os.path.join(fixtures, overrides.get(name, name))
    sys.stdout.write(open(base).read())
    if os.path.exists(base + ".stderr"):
        sys.stderr.write(open(base + ".stderr").read())
    sys.exit(int(open(base + ".rc").read()) if os.path.exists(base + ".rc") else rc)

if count("calls") < int(os.environ.get("FAKE_XL_FAIL", "0")):
    sys.stderr.write("libxl: error: libxl_utils.c:1: transient failure\n")
    sys.exit(1)
if os.environ.get("FAKE_XL_HANG"):
    time.sleep(60)
if count("garbled") < int(os.environ.get("FAKE_XL_GARBLE", "0")):
    sys.stdout.write("Name ID\n???\n")
    sys.exit(0)
key = " ".join(args)
if key in ("info -n", "list -v -c", "list -l", "vcpu-list"):
    replay({"info -n": "info-n.txt", "list -v -c": "list-vc.txt",
            "list -l": "list-l.json", "vcpu-list": "vcpu-list.txt"}[key])
if args[:1] == ["vcpu-list"] and args[1] == "99":
    replay("err-vcpu-list-bad-domain.txt")
if args[:1] == ["vcpu-list"]:
    lines = open(os.path.join(fixtures, "vcpu-list.txt")).read().splitlines()
    print(lines[0])
    print("\n".join(l for l in lines[1:] if l.split()[1] == args[1]))
    sys.exit(0)
if key == "dmesg -c":
    open(os.path.join(state, "dumped"), "w").write("")
    print("(XEN) older messages")
    sys.exit(0)
if key == "debug-keys u":
    open(os.path.join(state, "dumped"), "w").write("u")
    sys.exit(0)
if key == "dmesg":
    if open(os.path.join(state, "dumped")).read() == "u":
        replay("dmesg-u.txt")
    sys.exit(0)
if args[:1] == ["vcpu-pin"]:
    if args[1] == "99":
        replay("err-vcpu-pin-bad-domain.txt")
    if args[2] == "7":
        replay("err-vcpu-pin-bad-vcpu.txt")
    sys.exit(0)
if key in ("sched-credit", "sched-credit2"):
    replay(key + ".txt")
sys.stderr.write("fake xl: no fixture for %r\n" % (args,))
sys.exit(2)
"""

FAST = XlPolicy(timeout_s=20.0, attempts=3, backoff_first_s=0.01, backoff_max_s=0.02)


class Fake:
    def __init__(self, tmp: Path, fixtures: Path = C2) -> None:
        self.bin = tmp / "bin"
        self.state = tmp / "state"
        self.bin.mkdir()
        self.state.mkdir()
        xl = self.bin / "xl"
        xl.write_text(f"#!{sys.executable}\n{FAKE_XL}")
        xl.chmod(xl.stat().st_mode | stat.S_IXUSR)
        self.fixtures = fixtures
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "FAKE_XL_STATE": str(self.state),
            "FAKE_XL_FIXTURES": str(fixtures),
        }

    def hv(self, policy: XlPolicy = FAST, **env: str) -> XlHypervisor:
        return XlHypervisor(policy=policy, env={**self.env, **env})

    def calls(self) -> list[list[str]]:
        log = self.state / "log"
        if not log.exists():
            return []
        return [json.loads(line) for line in log.read_text().splitlines()]


@pytest.fixture
def fake(tmp_path: Path) -> Fake:
    return Fake(tmp_path)


def r(a: int, b: int) -> frozenset[int]:
    return frozenset(range(a, b + 1))


def test_is_a_hypervisor() -> None:
    hv: Hypervisor = XlHypervisor()
    assert hv is not None
    with pytest.raises(ValueError):
        XlHypervisor(xl=[])


async def test_topology(fake: Fake) -> None:
    topo = await fake.hv().topology()
    assert topo == xp.parse_topology((C2 / "info-n.txt").read_text())
    assert fake.calls() == [["info", "-n"]]


async def test_domains_from_list_and_list_l(fake: Fake) -> None:
    doms = await fake.hv().domains()
    assert fake.calls() == [["list", "-v", "-c"], ["list", "-l"]]
    assert [(d.domid, d.name, d.vcpus, d.pool) for d in doms] == [
        (0, "Domain-0", 2, "Pool-0"),
        (1, "A", 2, "Pool-0"),
        (2, "B", 2, "Pool-0"),
        (3, "C", 1, "Pool-0"),
    ]
    assert doms[1].uuid == "d7712e41-54ac-4314-9485-d26ae9301264"


async def test_vcpus_all_and_paused(fake: Fake) -> None:
    # `xl list -v -c` answers with the capture where C is paused.
    hv = fake.hv(FAKE_XL_MAP=json.dumps({"list-vc.txt": "list-vc-paused.txt"}))
    vcpus = await hv.vcpus()
    assert fake.calls() == [["info", "-n"], ["vcpu-list"], ["list", "-v", "-c"]]
    states = {(v.domid, v.vcpu): v.state for v in vcpus}
    assert states[3, 0] is VcpuState.PAUSED
    assert states[1, 0] is VcpuState.RUNNING
    # Topology is read once, to resolve `all`.
    one = await hv.vcpus(1)
    assert [v.vcpu for v in one] == [0, 1]
    assert one[1].hard == r(0, 3)
    assert fake.calls()[3:] == [["vcpu-list", "1"], ["list", "-v", "-c"]]


async def test_vcpus_of_missing_domain(fake: Fake) -> None:
    with pytest.raises(NoSuchDomain):
        await fake.hv().vcpus(99)


async def test_set_vcpu_affinity_argv(fake: Fake) -> None:
    hv = fake.hv()
    await hv.set_vcpu_affinity(1, 1, r(0, 3), None)
    await hv.set_vcpu_affinity(2, 0, None, r(4, 7))
    await hv.set_vcpu_affinity(2, 1, frozenset({0, 2, 4, 5}), r(0, 7))
    await hv.set_vcpu_affinity(2, 1, None, None)  # nothing to do: no call
    assert fake.calls() == [
        ["vcpu-pin", "1", "1", "0-3", "-"],
        ["vcpu-pin", "2", "0", "-", "4-7"],
        ["vcpu-pin", "2", "1", "0,2,4-5", "0-7"],
    ]


async def test_set_vcpu_affinity_refuses_empty_masks(fake: Fake) -> None:
    with pytest.raises(XlRejected, match="empty soft affinity for d1v0"):
        await fake.hv().set_vcpu_affinity(1, 0, None, frozenset())
    assert fake.calls() == []


async def test_pin_missing_domain_is_not_retried(fake: Fake) -> None:
    with pytest.raises(NoSuchDomain, match="Could not get domain info"):
        await fake.hv().set_vcpu_affinity(99, 0, r(0, 3), None)
    assert len(fake.calls()) == 1


async def test_pin_bad_vcpu_is_rejected_not_retried(fake: Fake) -> None:
    with pytest.raises(XlRejected, match="Invalid argument"):
        await fake.hv().set_vcpu_affinity(1, 7, r(0, 3), None)
    assert len(fake.calls()) == 1


async def test_transient_failures_are_retried(fake: Fake) -> None:
    topo = await fake.hv(FAKE_XL_FAIL="2").topology()
    assert len(topo.nodes) == 2
    assert fake.calls() == [["info", "-n"]] * 3


async def test_retries_are_bounded(fake: Fake) -> None:
    with pytest.raises(XlError, match=r"`xl info -n` failed \(exit 1\): libxl: error"):
        await fake.hv(FAKE_XL_FAIL="10").topology()
    assert len(fake.calls()) == 3


async def test_garbled_output_is_parsed_again(fake: Fake) -> None:
    doms = await fake.hv(FAKE_XL_GARBLE="1").domains()
    assert len(doms) == 4
    assert fake.calls()[:2] == [["list", "-v", "-c"]] * 2


async def test_garbled_output_every_time_raises_the_parse_error(fake: Fake) -> None:
    with pytest.raises(xp.XlParseError, match="`xl list` output, line 1"):
        await fake.hv(FAKE_XL_GARBLE="99").domains()


async def test_timeout_kills_and_retries(fake: Fake) -> None:
    policy = XlPolicy(timeout_s=0.3, attempts=2, backoff_first_s=0.01, backoff_max_s=0.01)
    with pytest.raises(XlTimeout, match=r"timed out after 0\.3 s"):
        await fake.hv(policy, FAKE_XL_HANG="1").topology()
    assert fake.calls() == [["info", "-n"]] * 2


async def test_memory_dump_is_rate_limited(fake: Fake, mock_clock: trio.testing.MockClock) -> None:
    hv = fake.hv(XlPolicy(timeout_s=20.0, memory_dump_interval_s=30.0))
    assert await hv.memory_per_node(2) == (16384 * 4, 16384 * 4)
    dump_calls = [["dmesg", "-c"], ["debug-keys", "u"], ["dmesg"]]
    assert fake.calls() == dump_calls
    assert await hv.memory_per_node(3) == (0, 32768 * 4)  # same dump, no new call
    mock_clock.jump(29.0)
    assert await hv.memory_per_node(0) == (29956 * 4, 166652 * 4)
    assert fake.calls() == dump_calls
    mock_clock.jump(1.0)
    await hv.memory_per_node(1)
    assert fake.calls() == dump_calls * 2
    with pytest.raises(NoSuchDomain):
        await hv.memory_per_node(42)


async def test_concurrent_memory_queries_share_one_dump(fake: Fake) -> None:
    hv = fake.hv()
    results: dict[int, tuple[int, ...]] = {}

    async def ask(domid: int) -> None:
        results[domid] = await hv.memory_per_node(domid)

    async with trio.open_nursery() as nursery:
        for domid in range(4):
            nursery.start_soon(ask, domid)
    assert results[1] == (32768 * 4, 0)
    assert fake.calls().count(["debug-keys", "u"]) == 1


async def test_states_from_real_list(fake: Fake) -> None:
    doms = await fake.hv().domains()
    running, blocked = DomainState.RUNNING, DomainState.BLOCKED
    assert [d.state for d in doms] == [running, running, running, blocked]  # C idles


# --- scheduler weight and cap (tests/fixtures/xl/2node-sched: A weight 512, B cap 50,
# C weight 128 cap 25 in a credit2 pool) ----------------------------------------------------------


def weights(doms: list[DomainInfo]) -> dict[str, tuple[int, int]]:
    return {d.name: (d.weight, d.cap) for d in doms}


REAL_WEIGHTS = {"Domain-0": (256, 0), "A": (512, 0), "B": (256, 50), "C": (128, 25)}


async def test_weights_come_with_list_l(tmp_path: Path) -> None:
    fake = Fake(tmp_path, SCHED)
    doms = await fake.hv().domains()
    assert weights(doms) == REAL_WEIGHTS
    assert [d.pool for d in doms] == ["Pool-0", "Pool-0", "Pool-0", "c2"]
    assert fake.calls() == [["list", "-v", "-c"], ["list", "-l"]]  # no sched-credit run


def list_l_without(tmp_path: Path, name: str) -> Path:
    """2node-sched's `xl list -l` as xl prints it when it cannot retrieve one domain's
    configuration: that entry left out."""
    entries = json.loads((SCHED / "list-l.json").read_text())
    kept = [e for e in entries if e["config"]["c_info"]["name"] != name]
    assert len(kept) == len(entries) - 1
    path = tmp_path / "list-l-without.json"
    path.write_text(json.dumps(kept, indent=4))
    return path


async def test_weights_missing_from_list_l_read_from_sched_credit_rate_limited(
    tmp_path: Path, mock_clock: trio.testing.MockClock
) -> None:
    fake = Fake(tmp_path, SCHED)
    mapped = json.dumps({"list-l.json": str(list_l_without(tmp_path, "C"))})
    hv = fake.hv(XlPolicy(timeout_s=20.0, sched_interval_s=30.0), FAKE_XL_MAP=mapped)
    listing = [["list", "-v", "-c"], ["list", "-l"]]
    sched = [["sched-credit"], ["sched-credit2"]]
    assert weights(await hv.domains()) == REAL_WEIGHTS  # C's from `xl sched-credit2`
    assert fake.calls() == listing + sched
    mock_clock.jump(29.0)
    assert weights(await hv.domains()) == REAL_WEIGHTS
    assert fake.calls() == listing + sched + listing  # within the interval: no re-read
    mock_clock.jump(1.0)
    await hv.domains()
    assert fake.calls() == listing + sched + listing + listing + sched


async def test_weight_of_a_domain_in_no_listing_is_the_default_and_asked_once(
    tmp_path: Path,
) -> None:
    # B left out of `xl list -l` and of `xl sched-credit` (as for a domain in an RTDS
    # pool): xl's default, and no read on every pass for it.
    fake = Fake(tmp_path, SCHED)
    mapped = json.dumps({
        "list-l.json": str(list_l_without(tmp_path, "B")),
        "sched-credit.txt": str(SCHED / "sched-credit-dom0only.txt"),
    })
    hv = fake.hv(XlPolicy(timeout_s=20.0, sched_interval_s=30.0), FAKE_XL_MAP=mapped)
    assert weights(await hv.domains())["B"] == (256, 0)
    await hv.domains()
    assert fake.calls().count(["sched-credit"]) == 1


async def test_garbled_sched_credit_is_a_parse_error(tmp_path: Path) -> None:
    fake = Fake(tmp_path, SCHED)
    bad = tmp_path / "sched-credit-bad.txt"
    bad.write_text((SCHED / "sched-credit.txt").read_text().replace("512", "0"))
    mapped = json.dumps({"list-l.json": str(list_l_without(tmp_path, "A")),
                         "sched-credit.txt": str(bad)})
    with pytest.raises(xp.XlParseError, match=r"`xl sched-credit` output, line 4: weight 0"):
        await fake.hv(FAST, FAKE_XL_MAP=mapped).domains()
    assert fake.calls().count(["sched-credit"]) == FAST.attempts  # retried, bounded


async def test_an_action_runs_once_and_its_caller_retries(fake: Fake) -> None:
    # One retry policy bounds an action (agent/daemon/retry.py): the backend runs
    # `xl vcpu-pin` once, else the two loops would multiply attempts and timeouts.
    from agent.daemon.retry import RetryPolicy, Tries, call

    hv = fake.hv(FAKE_XL_FAIL="2")
    with pytest.raises(XlError, match="transient failure"):
        await hv.set_vcpu_affinity(1, 1, r(0, 3), None)
    assert len(fake.calls()) == 1
    tries = Tries()
    await call(RetryPolicy(attempts=3, first_wait_s=0.01), tries,
               lambda: hv.set_vcpu_affinity(1, 1, r(0, 3), None))
    assert tries.count == 2
    assert fake.calls()[1:] == [["vcpu-pin", "1", "1", "0-3", "-"]] * 2
