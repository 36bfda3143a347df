"""The rate limiter's burst arithmetic (pure)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.ratelimit import burst_tolerance_ms


def test_a_burst_of_one_allows_no_run_ahead() -> None:
    """With a burst of 1, requests are spaced exactly one interval apart."""
    assert burst_tolerance_ms(20, 1) == pytest.approx(0, abs=0.01)


def test_the_tolerance_lets_burst_requests_through_at_once() -> None:
    """At 20/s with a burst of 5, TAT may run 4 intervals (200 ms) ahead of now."""
    assert burst_tolerance_ms(20, 5) == pytest.approx(200, abs=0.01)


@given(st.floats(min_value=0.1, max_value=100_000), st.integers(min_value=1, max_value=10_000))
def test_at_most_burst_requests_fit_in_the_tolerance(rate: float, burst: int) -> None:
    """Counting grants the way the script does, an idle limiter grants exactly `burst` at once."""
    interval = 1000 / rate
    tolerance = burst_tolerance_ms(rate, burst)
    tat, granted = 0.0, 0
    while tat <= tolerance and granted < burst + 5:
        tat += interval
        granted += 1
    assert granted == burst
