"""The native core module: its MT19937 and workload draws against Python's, its argument checks."""

from __future__ import annotations

import random

import pytest

from agent.sim import workload as wl
from agent.sim.spec import Bursty, CpuBound, Idle, IoLike, Workload

native = pytest.importorskip("agent.sim._native")

_KIND = {CpuBound: 0, Idle: 1, Bursty: 2, IoLike: 3}


def _params(w: Workload) -> tuple[float, float]:
    if isinstance(w, Bursty):
        return w.on_ms, w.off_ms
    if isinstance(w, IoLike):
        return w.run_us, w.block_us
    return 0.0, 0.0


def test_random_expovariate_randrange_getrandbits() -> None:
    rng = random.Random("x")
    calls: list[tuple[object, ...]] = []
    want: list[object] = []
    # > 624 draws of each so that the state regenerates at least once
    for i in range(700):
        calls.append(("random",))
        calls.append(("expovariate", 1.0 / (1000.0 + i)))
        calls.append(("randrange", 0, 448))
        calls.append(("randrange", 1, 30_000_000))
        calls.append(("randrange", 5, 6))
        calls.append(("getrandbits", i % 65))
    state = rng.getstate()
    for c in calls:
        op = c[0]
        if op == "random":
            want.append(rng.random())
        elif op == "expovariate":
            want.append(rng.expovariate(float(c[1])))  # type: ignore[arg-type]
        elif op == "randrange":
            want.append(rng.randrange(int(c[1]), int(c[2])))  # type: ignore[call-overload]
        else:
            want.append(rng.getrandbits(int(c[1])))  # type: ignore[call-overload]
    assert native._rng_draws(state, calls) == want


@pytest.mark.parametrize("index", [0, 1, 623, 624])
def test_state_index_is_continued(index: int) -> None:
    rng = random.Random(7)
    ver, words, gauss = rng.getstate()
    state = (ver, (*words[:624], index), gauss)
    rng.setstate(state)
    want = [rng.random() for _ in range(5)]
    assert native._rng_draws(state, [("random",)] * 5) == want


@pytest.mark.parametrize(
    "w",
    [CpuBound(), Idle(), Bursty(3.0, 7.0), Bursty(0.0004, 0.0007), IoLike(50.0, 150.0),
     IoLike(0.3, 2.0), IoLike(1234.5, 0.9)],
)
def test_workload_draws(w: Workload) -> None:
    for seed in range(20):
        rng = wl.vcpu_rng(seed, 3, 1)
        state = rng.getstate()
        kind = _KIND[type(w)]
        p1, p2 = _params(w)
        calls: list[tuple[object, ...]] = [("start", kind, p1, p2)]
        want: list[object] = [wl.start(w, rng)]
        for _ in range(10):
            calls += [("on_ns", kind, p1, p2), ("off_ns", kind, p1, p2)]
            want += [wl.on_ns(w, rng), wl.off_ns(w, rng)]
        assert native._rng_draws(state, calls) == want


def test_bad_state_is_refused() -> None:
    with pytest.raises(ValueError, match="state"):
        native._rng_draws((3, (1, 2), None), [("random",)])


def test_host_refuses_bad_arguments() -> None:
    state = random.Random(1).getstate()
    with pytest.raises(ValueError, match="pCPU 2 is in no pool"):
        native.Host([0, 0, 0], [1, 2, 4], [(0b11, "credit2", None)])
    with pytest.raises(ValueError, match="unknown scheduler"):
        native.Host([0], [1], [(1, "credit3", None)])
    with pytest.raises(ValueError, match="credit1 needs its rng state"):
        native.Host([0], [1], [(1, "credit1", None)])
    with pytest.raises(ValueError, match="sib_mask"):
        native.Host([0, 0], [1], [(3, "credit2", None)])
    with pytest.raises(ValueError, match="pools"):
        native.Host([0], [1], [(1 << native.MAX_CPUS, "credit2", None)])
    h = native.Host([0, 0, 1, 1], [1, 2, 4, 8], [(0b1111, "credit2", None)])
    d = h.add_domain(0, 1, 256)
    with pytest.raises(ValueError, match="weight"):
        h.add_domain(0, 2, 0)
    with pytest.raises(ValueError, match="cpu"):
        h.add_vcpu(d, 0, 0b1111, 0b1111, 4, 0, 0.0, 0.0, state)
    with pytest.raises(ValueError, match="hard"):
        h.add_vcpu(d, 0, -1, 0b1111, 0, 0, 0.0, 0.0, state)
    with pytest.raises(ValueError, match="p1, p2"):
        h.add_vcpu(d, 0, 0b1111, 0b1111, 0, 2, 0.0, 1.0, state)
    with pytest.raises(ValueError, match="rng_state"):
        h.add_vcpu(d, 0, 0b1111, 0b1111, 0, 0, 0.0, 0.0, (3, (), None))
    with pytest.raises(ValueError, match="v: 0 is out of range"):
        h.sleep(0, 1)  # no vCPU yet
    v = h.add_vcpu(d, 0, 0b1111, 0b1111, 0, 0, 0.0, 0.0, state)
    assert h.vcpu_view(v) == (2, False, h.vcpu_view(v)[2], 0)  # PAUSED, not run yet
    h.run_until(1000)
    with pytest.raises(ValueError, match="t: 999 is out of range"):
        h.run_until(999)  # before now
    with pytest.raises(ValueError, match="dom: 1 is out of range"):
        h.add_vcpu(d + 1, 1, 0b1111, 0b1111, 0, 0, 0.0, 0.0, state)  # no such domain


def test_host_runs_and_accounts_a_cpu_bound_vcpu() -> None:
    """A credit2 host with one cpu-bound vCPU: it runs all the time once unpaused."""
    h = native.Host([0, 0, 1, 1], [1, 2, 4, 8], [(0b1111, "credit2", None)], nnodes=3)
    h.start()
    d = h.add_domain(0, 5, 256)
    v = h.add_vcpu(d, 0, 0b1111, 0b1111, 2, 0, 0.0, 0.0, random.Random(1).getstate())
    h.run_until(1_000_000)
    assert h.take_accounting() == (0, 1_000_000, [], (0, 0, 0))  # paused: nothing
    h.wake(v, 2)
    h.flush()
    h.run_until(3_000_000)
    pflags, running, cpu, run = h.vcpu_view(v)
    assert (pflags, running, run) == (0, True, 2_000_000)
    start, end, rows, busy = h.take_accounting()
    node = 0 if cpu < 2 else 1
    want_run = tuple(2_000_000 if n == node else 0 for n in range(3))
    assert (start, end, busy) == (1_000_000, 3_000_000, want_run)
    assert rows == [(5, 0, want_run, 2_000_000, 0, 0)]
    h.sleep(v, 2)
    h.flush()
    assert h.vcpu_view(v)[:2] == (2, False)
    assert h.events_run >= 0 and h.now == 3_000_000
