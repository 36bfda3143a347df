"""The rate limiter's burst arithmetic (pure)."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dispatcher.ratelimit import burst_tolerance_ms, jitter_margin_ms


def test_a_burst_of_one_allows_no_run_ahead() -> None:
    """With a burst of 1, requests are spaced exactly one interval apart."""
    assert burst_tolerance_ms(20, 1) == pytest.approx(0, abs=0.01)


def test_the_tolerance_keeps_a_margin_for_jitter() -> None:
    """At 20/s with a burst of 5, TAT may run 4 intervals less 25 ms (175 ms) ahead of now;
    at 4/s a quarter interval (62.5 ms) is the larger margin."""
    assert burst_tolerance_ms(20, 5) == pytest.approx(175.0, abs=0.01)
    assert burst_tolerance_ms(4, 5) == pytest.approx(4 * 250 - 62.5, abs=0.01)


def grants_within(rate: float, burst: int, window_ms: float) -> int:
    """Grants the script would make from an idle start to `window_ms`, asked continuously."""
    interval = 1000 / rate
    tolerance = burst_tolerance_ms(rate, burst)
    tat, granted, now = 0.0, 0, 0.0
    while now <= window_ms:
        if tat < now:
            tat = now
        if tat - now <= tolerance:
            tat += interval
            granted += 1
        else:
            # The next moment a slot opens; the nudge keeps float rounding from stalling.
            now = max(now, tat - tolerance) + 1e-6
    return granted


@given(st.floats(min_value=0.5, max_value=1_000), st.integers(min_value=1, max_value=200))
def test_an_idle_limiter_lets_burst_requests_through_within_the_jitter_margin(
    rate: float, burst: int
) -> None:
    """From idle, `burst` requests go within the jitter margin (a quarter interval, or
    25 ms at high rates), and never one more."""
    interval = 1000 / rate
    # The margin never holds the burst back past one request per interval.
    until = min(jitter_margin_ms(rate), (burst - 1) * interval) + 0.01 * interval
    assert grants_within(rate, burst, until) == burst


@given(st.floats(min_value=1, max_value=200), st.integers(min_value=1, max_value=50))
def test_no_closed_second_holds_more_than_rate_plus_burst_minus_one(
    rate: float, burst: int
) -> None:
    """Even counting both ends of a one-second window, grants stay within rate + burst
    (the rate rounded up: at 92.9999/s the 94th grant falls a microsecond inside the window,
    as the float slack allows)."""
    assert grants_within(rate, burst, 1000.0) <= math.ceil(rate - 1e-9) + burst
