"""Bounded exponential backoff for the XenStore client, driven by tenacity.

Used twice: retrying a transaction that the daemon refused with EAGAIN, and
reconnecting after the daemon went away. Both sleep with ``trio.sleep`` so
they follow trio's clock (and a MockClock in tests). Jitter, when wanted,
comes from a seeded ``random.Random`` so a run can be replayed exactly.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import tenacity
import trio


@dataclass(frozen=True, slots=True)
class Backoff:
    """``attempts`` tries in all; before try n+1 wait
    ``min(maximum, initial * multiplier**(n-1))``, scaled by a factor drawn
    uniformly from ``[1 - jitter, 1]`` when ``jitter`` > 0."""

    attempts: int = 8
    initial: float = 0.01
    multiplier: float = 2.0
    maximum: float = 1.0
    jitter: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"Backoff.attempts must be >= 1, got {self.attempts}")
        if self.initial < 0 or self.maximum < 0:
            raise ValueError("Backoff.initial and Backoff.maximum must be >= 0")
        if self.multiplier < 1:
            raise ValueError(f"Backoff.multiplier must be >= 1, got {self.multiplier}")
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"Backoff.jitter must be within [0, 1], got {self.jitter}")

    def delays(self) -> list[float]:
        """The waits between the tries, in order (one fewer than attempts).
        Each call replays the same seeded sequence."""
        wait = _Wait(self)
        return [wait.delay(n) for n in range(1, self.attempts)]

    def retrying(
        self, retry: tenacity.retry_base, *, reraise: bool = True
    ) -> tenacity.AsyncRetrying:
        """A fresh tenacity controller for one retried operation."""
        return tenacity.AsyncRetrying(
            stop=tenacity.stop_after_attempt(self.attempts),
            wait=_Wait(self),
            retry=retry,
            sleep=trio.sleep,
            reraise=reraise,
        )


class _Wait(tenacity.wait.wait_base):
    """A tenacity wait strategy with its own seeded RNG (never the global one)."""

    def __init__(self, policy: Backoff) -> None:
        self._policy = policy
        self._rng = random.Random(policy.seed)

    def delay(self, attempt_number: int) -> float:
        p = self._policy
        base = min(p.maximum, p.initial * p.multiplier ** (attempt_number - 1))
        if p.jitter:
            base *= 1.0 - p.jitter * self._rng.random()
        return base

    def __call__(self, retry_state: tenacity.RetryCallState) -> float:
        return self.delay(retry_state.attempt_number)
