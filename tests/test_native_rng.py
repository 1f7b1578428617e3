"""The native core's MT19937 and workload draws against Python's random and workload.py."""

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
