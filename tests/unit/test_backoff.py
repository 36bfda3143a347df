"""Exponential backoff with full jitter, and Retry-After as a floor."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dispatcher.backoff import backoff_ceiling_ms, backoff_delay_ms

FAST = settings(max_examples=200, deadline=None, database=None)


def lowest(a: float, b: float) -> float:
    return a


def highest(a: float, b: float) -> float:
    return b


def test_ceilings_double_from_min_and_cap_at_max() -> None:
    """With the contract's defaults the ceiling is 1s, 2s, 4s, ... until it stays at 600s."""
    ceilings = [backoff_ceiling_ms(attempt, 1_000, 600_000) for attempt in range(1, 14)]
    assert ceilings == [
        1_000,
        2_000,
        4_000,
        8_000,
        16_000,
        32_000,
        64_000,
        128_000,
        256_000,
        512_000,
        600_000,
        600_000,
        600_000,
    ]


def test_huge_attempt_numbers_stay_at_max() -> None:
    """An absurd attempt count is capped, not an overflow or a giant integer."""
    assert backoff_ceiling_ms(10**9, 1_000, 600_000) == 600_000
    assert backoff_delay_ms(10**9, 1_000, 600_000, uniform=highest) == 600_000


@pytest.mark.parametrize("attempt", [0, -1, -100])
def test_invalid_attempt_raises(attempt: int) -> None:
    """Attempts are 1-based; zero or negative raises ValueError naming the value."""
    with pytest.raises(ValueError, match=f"got {attempt}"):
        backoff_ceiling_ms(attempt, 1_000, 600_000)
    with pytest.raises(ValueError, match="attempt must be at least 1"):
        backoff_delay_ms(attempt, 1_000, 600_000)


def test_delay_is_drawn_between_min_and_ceiling() -> None:
    """The delay is uniform(min, ceiling): the injected draw decides it."""
    seen: list[tuple[float, float]] = []

    def recording(a: float, b: float) -> float:
        seen.append((a, b))
        return (a + b) / 2

    assert backoff_delay_ms(3, 1_000, 600_000, uniform=recording) == 2_500
    assert seen == [(1_000, 4_000)]
    assert backoff_delay_ms(3, 1_000, 600_000, uniform=lowest) == 1_000
    assert backoff_delay_ms(3, 1_000, 600_000, uniform=highest) == 4_000


def test_first_attempt_waits_exactly_min() -> None:
    """When the ceiling equals min there is nothing to draw: the delay is min."""

    def never(a: float, b: float) -> float:
        raise AssertionError("uniform must not be called")

    assert backoff_delay_ms(1, 1_000, 600_000, uniform=never) == 1_000


def test_retry_after_is_a_floor() -> None:
    """Retry-After raises a shorter delay to itself and leaves a longer delay alone."""
    assert backoff_delay_ms(1, 1_000, 600_000, retry_after_s=30, uniform=lowest) == 30_000
    assert backoff_delay_ms(1, 1_000, 600_000, retry_after_s=0.25, uniform=lowest) == 1_000
    assert backoff_delay_ms(5, 1_000, 600_000, retry_after_s=2, uniform=highest) == 16_000


def test_retry_after_may_exceed_max() -> None:
    """The server's Retry-After is honoured even beyond the backoff maximum."""
    assert backoff_delay_ms(1, 1_000, 10_000, retry_after_s=3600, uniform=lowest) == 3_600_000


def test_retry_after_zero_changes_nothing() -> None:
    """Retry-After: 0 leaves the jittered delay as it is."""
    assert backoff_delay_ms(4, 1_000, 600_000, retry_after_s=0, uniform=highest) == 8_000


@FAST
@given(
    attempt=st.integers(min_value=1, max_value=1000),
    min_ms=st.integers(min_value=0, max_value=10**7),
    spread=st.integers(min_value=0, max_value=10**9),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_delay_always_within_min_and_ceiling(
    attempt: int, min_ms: int, spread: int, seed: int
) -> None:
    """For any attempt and ordered bounds, min <= delay <= ceiling <= max."""
    max_ms = min_ms + spread
    ceiling = backoff_ceiling_ms(attempt, min_ms, max_ms)
    assert min_ms <= ceiling <= max_ms
    delay = backoff_delay_ms(attempt, min_ms, max_ms, uniform=random.Random(seed).uniform)
    assert min_ms <= delay <= ceiling
    assert isinstance(delay, int)


@FAST
@given(
    attempt=st.integers(min_value=1, max_value=1000),
    min_ms=st.integers(min_value=1, max_value=10**7),
    spread=st.integers(min_value=0, max_value=10**9),
)
def test_ceiling_is_min_doubled_then_capped(attempt: int, min_ms: int, spread: int) -> None:
    """The ceiling is min * 2**(attempt-1), capped at max, and never decreases with attempts."""
    max_ms = min_ms + spread
    ceiling = backoff_ceiling_ms(attempt, min_ms, max_ms)
    assert ceiling == min(max_ms, min_ms * 2 ** (attempt - 1))
    assert backoff_ceiling_ms(attempt + 1, min_ms, max_ms) >= ceiling


@FAST
@given(
    attempt=st.integers(min_value=1, max_value=1000),
    min_ms=st.integers(min_value=0, max_value=10**6),
    spread=st.integers(min_value=0, max_value=10**8),
    retry_after_s=st.floats(min_value=0, max_value=10**6, allow_nan=False),
    seed=st.integers(min_value=0, max_value=2**32 - 1),
)
def test_retry_after_floor_property(
    attempt: int, min_ms: int, spread: int, retry_after_s: float, seed: int
) -> None:
    """With Retry-After the delay is at least it and otherwise the jittered delay."""
    max_ms = min_ms + spread
    delay = backoff_delay_ms(
        attempt,
        min_ms,
        max_ms,
        retry_after_s=retry_after_s,
        uniform=random.Random(seed).uniform,
    )
    jittered = backoff_delay_ms(attempt, min_ms, max_ms, uniform=random.Random(seed).uniform)
    assert delay == max(jittered, int(retry_after_s * 1000))
    assert delay >= min_ms
