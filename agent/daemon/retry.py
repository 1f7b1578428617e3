"""Bounded retries of hypervisor calls: transient failures only, on trio's clock.

A ``NoSuchDomain`` (the domain went away) or a request the toolstack rejects
(``Rejected``: a bad mask) cannot get better by asking again; anything else a
backend raises as ``HypervisorError`` (a timeout, an exit status, a lost race)
may (``agent.hypervisor.interface.transient``). This is the one retry policy of
actions: backends run an action once. The caller learns how many attempts it
took, for the audit record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import tenacity
import trio

from agent.hypervisor.interface import transient

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 3
    first_wait_s: float = 0.05
    max_wait_s: float = 1.0

    def __post_init__(self) -> None:
        if self.attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {self.attempts}")


@dataclass(slots=True)
class Tries:
    """How many attempts the calls of one action took, summed."""

    count: int = 0


async def call(
    policy: RetryPolicy, tries: Tries, fn: Callable[[], Awaitable[T]]
) -> T:
    """``await fn()``, again after a transient failure, at most ``policy.attempts`` times;
    the last failure is raised as it was."""
    retrying = tenacity.AsyncRetrying(
        sleep=trio.sleep,
        stop=tenacity.stop_after_attempt(policy.attempts),
        wait=tenacity.wait_exponential(multiplier=policy.first_wait_s, max=policy.max_wait_s),
        retry=tenacity.retry_if_exception(transient),
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            tries.count += 1
            return await fn()
    raise AssertionError("unreachable: tenacity reraises")
