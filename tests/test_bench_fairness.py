"""Weight-fair shares and Jain's index (benchmarks/fairness.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.fairness import DomainUse, FairTally, fair_shares, jain


def test_equal_weights_split_evenly_when_all_want_more() -> None:
    shares = fair_shares(52.0, {"A": 26.0, "B": 26.0, "C": 26.0}, dict.fromkeys("ABC", 256.0))
    assert shares == pytest.approx({"A": 52 / 3, "B": 52 / 3, "C": 52 / 3})


def test_what_one_does_not_want_goes_to_the_others_by_weight() -> None:
    shares = fair_shares(10.0, {"small": 1.0, "a": 20.0, "b": 20.0},
                         {"small": 1.0, "a": 1.0, "b": 3.0})
    assert shares["small"] == pytest.approx(1.0)
    assert shares["a"] == pytest.approx(9.0 / 4)
    assert shares["b"] == pytest.approx(9.0 * 3 / 4)


def test_no_contention_gives_every_demand() -> None:
    assert fair_shares(100.0, {"a": 3.0, "b": 0.0}, {"a": 1.0, "b": 1.0}) == {"a": 3.0, "b": 0.0}


def test_bad_input_is_refused() -> None:
    with pytest.raises(ValueError, match="weight of a"):
        fair_shares(1.0, {"a": 1.0}, {"a": 0.0})
    with pytest.raises(ValueError, match="demand of a"):
        fair_shares(1.0, {"a": -1.0}, {"a": 1.0})


@settings(deadline=None, max_examples=200)
@given(st.floats(0, 1000), st.lists(st.tuples(st.floats(0, 500), st.integers(1, 1000)),
                                    min_size=1, max_size=8))
def test_shares_fill_capacity_or_demand_and_never_exceed_demand(
    capacity: float, domains: list[tuple[float, int]]
) -> None:
    demands = {f"d{i}": d for i, (d, _) in enumerate(domains)}
    weights = {f"d{i}": float(w) for i, (_, w) in enumerate(domains)}
    shares = fair_shares(capacity, demands, weights)
    assert sum(shares.values()) == pytest.approx(min(capacity, sum(demands.values())),
                                                 rel=1e-9, abs=1e-6)
    for name, share in shares.items():
        assert -1e-9 <= share <= demands[name] + 1e-6
    # Nobody short of its demand gets less per weight than anyone else gets.
    short = [n for n in demands if shares[n] < demands[n] - 1e-6]
    for n in short:
        for m in demands:
            assert shares[n] / weights[n] >= shares[m] / weights[m] - 1e-6


def test_jain() -> None:
    assert jain([1.0, 1.0, 1.0]) == pytest.approx(1.0)
    assert jain([3.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert jain([]) == 1.0


def test_tally_sums_buckets_per_pool() -> None:
    tally = FairTally()
    pools = {"Pool-0": 1, "guests": 2}
    pool_of = {"Domain-0": "Pool-0", "A": "guests", "B": "guests"}
    weights = {"Domain-0": 256.0, "A": 256.0, "B": 256.0}
    # Bucket 1: A and B both want the whole pool, A gets it all (B starved).
    tally.add_bucket(10, pools, pool_of, weights,
                     {"A": DomainUse(20, 20), "B": DomainUse(0, 20), "Domain-0": DomainUse(1, 1)})
    # Bucket 2: fair.
    tally.add_bucket(10, pools, pool_of, weights, {"A": DomainUse(10, 20), "B": DomainUse(10, 20)})
    ratios = tally.ratios()
    assert ratios["A"] == pytest.approx(30 / 20)
    assert ratios["B"] == pytest.approx(10 / 20)
    assert ratios["Domain-0"] == pytest.approx(1.0)
    assert tally.worst() == ("B", pytest.approx(0.5))
    assert tally.jain() < 0.9
