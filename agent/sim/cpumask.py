"""pCPU masks as Python ints (bit n = pCPU n), with Xen's cpumask helpers.

The schedulers do all their set arithmetic on ints: ``&``, ``|`` and ``& ~``
on a few hundred bits are far cheaper than frozensets, and the helpers below
reproduce the iteration orders Xen's ``cpumask_*`` functions give.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator


def mask_of(cpus: Iterable[int]) -> int:
    m = 0
    for c in cpus:
        m |= 1 << c
    return m


def cpus_of(mask: int) -> list[int]:
    """The set bits, lowest first."""
    out: list[int] = []
    while mask:
        low = mask & -mask
        out.append(low.bit_length() - 1)
        mask ^= low
    return out


def first(mask: int) -> int:
    """``cpumask_first``: lowest set bit, or -1 if empty."""
    return (mask & -mask).bit_length() - 1


def cycle(n: int, mask: int) -> int:
    """``cpumask_cycle``: the next set bit after ``n``, wrapping; -1 if empty."""
    hi = mask >> (n + 1)
    if hi:
        return n + (hi & -hi).bit_length()
    return (mask & -mask).bit_length() - 1


def test_or_cycle(n: int, mask: int) -> int:
    """``cpumask_test_or_cycle``: ``n`` itself if set, else ``cycle(n, mask)``."""
    if mask >> n & 1:
        return n
    return cycle(n, mask)


def weight(mask: int) -> int:
    return mask.bit_count()


def iter_cyclic(start: int, mask: int) -> Iterator[int]:
    """Set bits from ``start`` (inclusive) upwards, wrapping once."""
    hi = mask >> start << start
    lo = mask ^ hi
    for part in (hi, lo):
        while part:
            low = part & -part
            yield low.bit_length() - 1
            part ^= low
