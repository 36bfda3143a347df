"""Delays between send attempts: exponential growth, full jitter. Pure."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass


def backoff_ceiling_ms(attempt: int, min_ms: int, max_ms: int) -> int:
    """The largest delay after failed attempt number `attempt` (1-based)."""
    if attempt < 1:
        raise ValueError(f"attempt must be at least 1, got {attempt}")
    # Capping the exponent keeps the arithmetic small for absurd attempt counts.
    exponent = min(attempt - 1, 62)
    return min(max_ms, min_ms * (1 << exponent))


def backoff_delay_ms(
    attempt: int,
    min_ms: int,
    max_ms: int,
    *,
    retry_after_s: float | None = None,
    uniform: Callable[[float, float], float] = random.uniform,
) -> int:
    """A delay drawn uniformly between `min_ms` and the ceiling for this attempt.

    Full jitter spreads the retries of many workers that failed together, so they do not
    come back in lockstep. A server's `Retry-After` is a floor: never retry sooner.
    """
    ceiling = backoff_ceiling_ms(attempt, min_ms, max_ms)
    delay = int(uniform(min_ms, ceiling)) if ceiling > min_ms else min_ms
    if retry_after_s is not None:
        delay = max(delay, int(retry_after_s * 1000))
    return delay


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How many attempts an intent gets, and how long to wait between them.

    The one policy of the worker: the deliverer applies it to Catapush's answers and the
    consumer to attempts that crashed, so both spend the same budget the same way.
    """

    max_attempts: int
    min_ms: int
    max_ms: int

    def exhausted(self, attempt: int) -> bool:
        """Whether failed attempt number `attempt` was the last one allowed."""
        return attempt >= self.max_attempts

    def delay_ms(
        self,
        attempt: int,
        *,
        retry_after_s: float | None = None,
        uniform: Callable[[float, float], float] = random.uniform,
    ) -> int:
        """The delay before the attempt after failed attempt number `attempt`."""
        return backoff_delay_ms(
            attempt, self.min_ms, self.max_ms, retry_after_s=retry_after_s, uniform=uniform
        )
